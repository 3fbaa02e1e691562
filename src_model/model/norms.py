"""Normalisation layers used by the encoder and the new modules."""
from __future__ import annotations

import torch
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """Batch norm that always uses its running statistics; the affine weight and bias train.

    Keeps the ``num_batches_tracked`` buffer so that state dicts of ``nn.BatchNorm2d`` load.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


def encoder_norm(kind: str, channels: int, groups: int) -> nn.Module:
    """The encoder's norm layer: ``frozen_bn``, ``batch`` or ``group``."""
    if kind == "frozen_bn":
        return FrozenBatchNorm2d(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(groups, channels)
    raise ValueError(f"unknown encoder norm {kind!r}")


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm of the new modules (ASPP, decoders); 4 groups in the paper."""
    return nn.GroupNorm(groups, channels)
