"""Import of checkpoints saved by the official CDMA implementation (HiLab-git/CDMA).

The official ``MTNet("resnet50", num_classes=2, use_group_norm=True)`` stores the encoder twice
(``model.*`` and ``stage1..5.*``), builds six attention modules it never uses, and a ``bn3`` in
each decoder that its forward never applies. We keep one copy of the encoder and drop the rest.
"""
from __future__ import annotations

import re
from typing import Dict, Mapping

import torch

from .config import MTNetConfig, get_config
from .model import MTNet

_UNUSED = re.compile(r"^(CBAM|SA|CA|CBAM2|SA2|CA2)\.|^decoder[123]\.bn3\.")
_MODEL_TO_STAGE = [
    (re.compile(r"^model\.conv1\."), "stage1.0."),
    (re.compile(r"^model\.bn1\."), "stage1.1."),
    (re.compile(r"^model\.layer([1-4])\."), None),
]


class OfficialCheckpointError(ValueError):
    """The state dict is not one the official MTNet saves."""


def _model_key_to_stage(key: str) -> str | None:
    for pattern, repl in _MODEL_TO_STAGE:
        m = pattern.match(key)
        if m:
            if repl is None:
                return f"stage{int(m.group(1)) + 1}.0." + key[m.end():]
            return repl + key[m.end():]
    return None


def convert_official_state_dict(official: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map an official state dict onto the key names of our :class:`MTNet` (``paper`` preset).

    Uses the ``stage*`` copy of the encoder, or the ``model.*`` copy if only that one is there.
    """
    has_stage = any(k.startswith("stage1.") for k in official)
    out: Dict[str, torch.Tensor] = {}
    for key, value in official.items():
        if _UNUSED.match(key):
            continue
        if key.startswith("model."):
            if has_stage:
                continue
            key = _model_key_to_stage(key)
            if key is None:  # e.g. the torchvision fc head, which MTNet does not use
                continue
        if key.startswith("stage"):
            key = "encoder." + key
        out[key] = value
    return out


def model_from_official(official: Mapping[str, torch.Tensor], config: MTNetConfig | None = None) -> MTNet:
    """Build an MTNet and load an official state dict into it; every weight must match.

    Raises:
        OfficialCheckpointError: keys are missing or unexpected, or shapes differ.
    """
    if not isinstance(official, Mapping) or not official:
        raise OfficialCheckpointError("not a state_dict (expected a non-empty mapping of tensors)")
    if config is None:
        num_classes = official.get("decoder1.conv4.bias")
        config = get_config("paper", num_classes=int(num_classes.shape[0]) if num_classes is not None else 2)
    model = MTNet(config)
    converted = convert_official_state_dict(official)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    if missing or unexpected:
        raise OfficialCheckpointError(
            f"not an official MTNet state_dict: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    bad = [k for k in expected if tuple(expected[k].shape) != tuple(converted[k].shape)]
    if bad:
        k = bad[0]
        raise OfficialCheckpointError(
            f"shape mismatch for {k}: checkpoint {tuple(converted[k].shape)} vs model {tuple(expected[k].shape)}"
        )
    model.load_state_dict(converted, strict=True)
    return model.eval()
