"""Atrous spatial pyramid pooling, shared by the three decoders."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .norms import group_norm


class _ASPPBranch(nn.Module):
    def __init__(self, cin: int, cout: int, dilation: int, groups: int) -> None:
        super().__init__()
        k = 1 if dilation == 1 else 3
        self.atrous_conv = nn.Conv2d(cin, cout, k, padding=0 if k == 1 else dilation, dilation=dilation, bias=False)
        self.bn = group_norm(cout, groups)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.atrous_conv(x)))


class ASPP(nn.Module):
    """Four atrous branches + image pooling, concatenated, projected, GN, ReLU, dropout 0.5.

    Shape: (B, cin, h, w) -> (B, channels, h, w).
    """

    def __init__(self, cin: int, channels: int, dilations: Sequence[int], groups: int) -> None:
        super().__init__()
        self.aspp1, self.aspp2, self.aspp3, self.aspp4 = (_ASPPBranch(cin, channels, d, groups) for d in dilations)
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(cin, channels, 1, bias=False),
            group_norm(channels, groups),
            nn.ReLU(inplace=True),
        )
        self.conv1 = nn.Conv2d(5 * channels, channels, 1, bias=False)
        self.bn1 = group_norm(channels, groups)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.global_avg_pool(x), size=x.shape[2:], mode="bilinear", align_corners=True)
        out = torch.cat([self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x), pooled], dim=1)
        return self.dropout(self.relu(self.bn1(self.conv1(out))))
