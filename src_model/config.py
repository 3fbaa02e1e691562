"""Typed model configuration and the named presets.

A model is built by name (``build_model("lite")``) or from an :class:`MTNetConfig`.
Unknown names raise an error that lists the valid ones.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Tuple

ENCODER_NORMS = ("frozen_bn", "batch", "group")
BLOCKS = ("bottleneck", "basic")
ATTENTION_KERNELS = (3, 7)
#: Attention of a decoder branch: CBAM (channel then spatial), SA (spatial), CA (channel). The
#: CDMA model has one branch of each, in this order.
BRANCH_KINDS = ("cbam", "sa", "ca")


@dataclass(frozen=True)
class MTNetConfig:
    """Structure of an MTNet: shared ResNet-style encoder, shared ASPP, three attention decoders.

    Attributes:
        num_classes: output classes C (2 = background / gland).
        block: encoder residual block, ``"bottleneck"`` (ResNet-50) or ``"basic"``.
        layers: number of blocks in each of the four encoder stages.
        stem_width: channels of the stem convolution.
        widths: base width of each encoder stage (bottleneck output = 4 x width).
        encoder_norm: ``"frozen_bn"`` (running statistics always, affine trains), ``"batch"`` or
            ``"group"`` (GroupNorm, ``norm_groups`` groups).
        aspp_channels: width of every ASPP branch and of its projection (256 in the paper).
        aspp_dilations: dilations of the four atrous branches (the first is a 1x1 conv).
        low_level_channels: width of the decoder's 1x1 projection of the low-level feature (48).
        decoder_channels: width of the decoder's two 3x3 convolutions (256).
        norm_groups: groups of every GroupNorm in the new modules (4).
        attention_reduction: channel-attention MLP reduction ratio (16).
        sa_kernel: spatial-attention kernel size (7 as released, 3 allowed).
        branches: attention of each decoder branch, in order (CDMA: CBAM, SA, CA). A single
            entry gives the one-decoder baseline used by the benchmark.
        feature_noise: half-width of the uniform feature noise for branches 2 and 3 during
            training (0 = off, as released; the paper describes 0.3).
    """

    num_classes: int = 2
    block: str = "bottleneck"
    layers: Tuple[int, int, int, int] = (3, 4, 6, 3)
    stem_width: int = 64
    widths: Tuple[int, int, int, int] = (64, 128, 256, 512)
    encoder_norm: str = "frozen_bn"
    aspp_channels: int = 256
    aspp_dilations: Tuple[int, int, int, int] = (1, 6, 12, 18)
    low_level_channels: int = 48
    decoder_channels: int = 256
    norm_groups: int = 4
    attention_reduction: int = 16
    sa_kernel: int = 7
    branches: Tuple[str, ...] = BRANCH_KINDS
    feature_noise: float = 0.0

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {self.block!r}")
        if self.encoder_norm not in ENCODER_NORMS:
            raise ValueError(f"encoder_norm must be one of {ENCODER_NORMS}, got {self.encoder_norm!r}")
        if self.sa_kernel not in ATTENTION_KERNELS:
            raise ValueError(f"sa_kernel must be one of {ATTENTION_KERNELS}, got {self.sa_kernel}")
        if len(self.layers) != 4 or len(self.widths) != 4 or min(self.layers) < 1:
            raise ValueError("layers and widths need four entries, each layer count >= 1")
        if not 0.0 <= self.feature_noise < 1.0:
            raise ValueError(f"feature_noise must be in [0, 1), got {self.feature_noise}")
        if not self.branches or any(b not in BRANCH_KINDS for b in self.branches):
            raise ValueError(f"branches must be a non-empty sequence of {', '.join(map(repr, BRANCH_KINDS))}; "
                             f"got {self.branches!r}")
        for name in ("aspp_channels", "low_level_channels", "decoder_channels", "stem_width"):
            if getattr(self, name) % self.norm_groups:
                raise ValueError(f"{name} must be divisible by norm_groups={self.norm_groups}")

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1

    def to_dict(self) -> Dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "MTNetConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown MTNetConfig fields: {sorted(unknown)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)


PRESETS: Dict[str, MTNetConfig] = {
    # ResNet-50, output stride 16, frozen backbone norms: the configuration of the paper.
    "paper": MTNetConfig(),
    # Same MTNet structure, small widths, trainable batch norm in the encoder (no ImageNet
    # statistics exist to freeze when training from scratch): CPU-first.
    "lite": MTNetConfig(
        block="basic",
        layers=(1, 1, 1, 1),
        stem_width=24,
        widths=(24, 48, 96, 128),
        encoder_norm="batch",
        aspp_channels=64,
        low_level_channels=24,
        decoder_channels=48,
    ),
}


def get_config(name: str, **overrides: Any) -> MTNetConfig:
    """Return the preset ``name``, with fields replaced by ``overrides``."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}")
    return dataclasses.replace(PRESETS[name], **overrides)
