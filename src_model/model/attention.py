"""Attention modules of the three CDMA decoders: channel (CA), spatial (SA) and both (CBAM)."""
from __future__ import annotations

import torch
from torch import nn

from ..config import BRANCH_KINDS


class ChannelAttention(nn.Module):
    """Channel attention: a shared bias-free MLP on the spatial mean and max, summed, sigmoid.

    Args:
        channels: input channels C.
        reduction: hidden width is ``max(1, C // reduction)``.

    Shape: (B, C, H, W) -> (B, C, H, W), the input scaled per channel.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.fc2(self.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        mx = self.fc2(self.relu(self.fc1(x.amax(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """Spatial attention: conv of the [channel-mean, channel-max] maps, sigmoid.

    Args:
        kernel_size: 7 (released) or 3.

    Shape: (B, C, H, W) -> (B, C, H, W), the input scaled per pixel.
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size not in (3, 7):
            raise ValueError(f"kernel_size must be 3 or 7, got {kernel_size}")
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv1(maps))


class CBAM(nn.Module):
    """Channel attention followed by spatial attention (CSA)."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.ca = ChannelAttention(channels, reduction)
        self.sa = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sa(self.ca(x))


def make_attention(kind: str, channels: int, reduction: int, kernel_size: int) -> nn.Module:
    """Build the attention module named ``kind`` (one of :data:`src_model.config.BRANCH_KINDS`)."""
    if kind == "cbam":
        return CBAM(channels, reduction, kernel_size)
    if kind == "sa":
        return SpatialAttention(kernel_size)
    if kind == "ca":
        return ChannelAttention(channels, reduction)
    raise ValueError(f"unknown attention {kind!r}; valid: {', '.join(BRANCH_KINDS)}")
