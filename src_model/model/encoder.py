"""ResNet-style encoder with strides (2, 2, 2, 1): output stride 16, no dilation.

Module names follow the official implementation's ``stage1..stage5`` so its weights map 1:1:
``stage1`` = conv/norm/relu/maxpool, ``stage2..5`` = the four residual layers (each wrapped in a
one-element Sequential, hence keys like ``stage2.0.0.conv1.weight``).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from ..config import MTNetConfig
from .norms import encoder_norm


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), expansion 4."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, norm: str, groups: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = encoder_norm(norm, width, groups)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = encoder_norm(norm, width, groups)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = encoder_norm(norm, cout, groups)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride, norm, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs), expansion 1."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, norm: str, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = encoder_norm(norm, width, groups)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = encoder_norm(norm, width, groups)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, width, stride, norm, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def _shortcut(cin: int, cout: int, stride: int, norm: str, groups: int):
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), encoder_norm(norm, cout, groups))


class ResNetEncoder(nn.Module):
    """Encoder returning (low-level feature at stride 4, high-level feature at stride 16)."""

    STRIDES = (1, 2, 2, 1)  # per residual layer; with the stem's 4 this gives (2, 2, 2, 1) overall

    def __init__(self, cfg: MTNetConfig) -> None:
        super().__init__()
        block = Bottleneck if cfg.block == "bottleneck" else BasicBlock
        groups = cfg.norm_groups
        self.stage1 = nn.Sequential(
            nn.Conv2d(3, cfg.stem_width, 7, stride=2, padding=3, bias=False),
            encoder_norm(cfg.encoder_norm, cfg.stem_width, groups),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        cin = cfg.stem_width
        stages = []
        for n_blocks, width, stride in zip(cfg.layers, cfg.widths, self.STRIDES, strict=True):
            blocks = []
            for i in range(n_blocks):
                blocks.append(block(cin, width, stride if i == 0 else 1, cfg.encoder_norm, groups))
                cin = width * block.expansion
            stages.append(nn.Sequential(nn.Sequential(*blocks)))
        self.stage2, self.stage3, self.stage4, self.stage5 = stages
        self.low_channels = cfg.widths[0] * block.expansion
        self.high_channels = cin

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        low = self.stage2(self.stage1(x))
        high = self.stage5(self.stage4(self.stage3(low)))
        return low, high
