"""The reference check of fine-tuning: how much of a fine-tuning's change of the weights to keep, decided on
labelled tissue outside the project.

A retrain on a few corrections can shift the model on tissue nobody corrected (the simulated annotation
sessions measured untouched images losing several Dice points, ``benchmarks/results/annotation_session.md``).
The replay pack (:mod:`src_model.replay_pack`) ships reference crops of GlaS training images with their expert
masks. After fine-tuning, :func:`guarded_keep` scores the previous model on them, then the fine-tuned weights
moved back towards the previous ones (``previous + keep * (tuned - previous)``,
:func:`src_model.finetune.interpolate`) for each ``keep`` of :data:`KEEPS`, largest first, and keeps the first
whose pooled Dice on the crops is at most ``max_drop`` below the previous model's. ``keep = 0`` is the previous
model itself, so a fine-tuning that only does harm there changes nothing.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .inference import predict
from .metrics import pooled_dice

log = logging.getLogger(__name__)

#: The shares of the fine-tuning's change tried, largest first (the last, 0, is the previous model).
KEEPS: Tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.0)


@dataclass
class CheckResult:
    """What :func:`guarded_keep` decided.

    Attributes:
        keep: the share of the change kept.
        previous_dice: pooled Dice of the previous model on the reference crops.
        tried: ``{keep: pooled Dice}`` of each interpolation scored, in the order tried.
        max_drop: the allowed drop.
    """

    keep: float
    previous_dice: float
    max_drop: float
    tried: Dict[float, float] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, object]:
        return {"keep": self.keep, "previous_dice": round(self.previous_dice, 5), "max_drop": self.max_drop,
                "tried": {f"{k:g}": round(v, 5) for k, v in self.tried.items()}}


def reference_dice(model: torch.nn.Module, crops: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                   device: str = "cpu") -> float:
    """Pooled gland Dice of ``model``'s labels (mean of its branches) on ``crops`` against ``masks``."""
    if len(crops) != len(masks) or not crops:
        raise ValueError(f"need as many masks as crops (at least one), got {len(crops)} crops, {len(masks)} masks")
    was_training = model.training
    try:
        pairs = [(predict(model, np.asarray(c), device=device).labels > 0, np.asarray(m) > 0)
                 for c, m in zip(crops, masks, strict=True)]
    finally:
        model.train(was_training)
    return pooled_dice(pairs)


def guarded_keep(previous: torch.nn.Module, tuned: torch.nn.Module, crops: Sequence[np.ndarray],
                 masks: Sequence[np.ndarray], max_drop: float, *, keeps: Sequence[float] = KEEPS,
                 device: str = "cpu", cancel: Optional[Callable[[], bool]] = None) -> CheckResult:
    """Move ``tuned`` (in place) back towards ``previous`` as little as the reference crops allow.

    Args:
        previous: the model before fine-tuning (not changed).
        tuned: the fine-tuned model; on return it holds the interpolation kept.
        crops, masks: the reference tissue (RGB uint8) and its expert masks (> 0 = gland).
        max_drop: the largest drop of pooled Dice (0..1) accepted against ``previous``.
        keeps: the shares tried, in order; a share of 0 always passes.
        cancel: checked between scorings; when it returns True the remaining shares are skipped and the
            previous model's weights are kept (nothing unchecked is returned).

    Returns:
        the :class:`CheckResult`.
    """
    from .finetune import interpolate  # finetune imports this module

    if max_drop < 0:
        raise ValueError(f"max_drop must be >= 0, got {max_drop}")
    base = reference_dice(previous, crops, masks, device)
    tuned_state = copy.deepcopy(tuned.state_dict())
    result = CheckResult(keep=0.0, previous_dice=base, max_drop=max_drop)
    for keep in keeps:
        if keep <= 0.0 or (cancel is not None and cancel()):
            break
        tuned.load_state_dict(tuned_state)
        interpolate(previous, tuned, keep)
        score = result.tried[keep] = reference_dice(tuned, crops, masks, device)
        if score >= base - max_drop:
            result.keep = keep
            break
    if result.keep <= 0.0:  # no share passed (or cancelled): the previous model's weights
        tuned.load_state_dict(tuned_state)
        interpolate(previous, tuned, 0.0)
    log.info("reference check: previous %.4f, tried %s, kept %g of the change", base,
             {f"{k:g}": round(v, 4) for k, v in result.tried.items()}, result.keep)
    return result


def pack_reference() -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """The bundled replay pack's crops and masks (:mod:`src_model.replay_pack`)."""
    from .replay_pack import load_pack, load_pack_masks

    return load_pack(), load_pack_masks()


__all__ = ["KEEPS", "CheckResult", "reference_dice", "guarded_keep", "pack_reference"]
