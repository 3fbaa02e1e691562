"""The attention decoder of one CDMA branch."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import make_attention
from .norms import group_norm


class AttentionDecoder(nn.Module):
    """DeepLabv3+-style decoder with an attention module before and after its first 3x3 conv.

    low -> 1x1 conv -> GN -> ReLU; ASPP output upsampled to stride 4 and concatenated first ->
    A(cat) -> 3x3 conv -> GN -> A -> ReLU -> dropout 0.5 -> 3x3 conv -> ReLU (no norm, as released)
    -> dropout 0.1 -> 1x1 conv to classes.

    Shape: high (B, aspp_ch, h, w), low (B, low_ch, 4h, 4w) -> logits (B, C, 4h, 4w).
    """

    def __init__(self, attention: str, low_in: int, aspp_ch: int, low_ch: int, dec_ch: int,
                 num_classes: int, groups: int, reduction: int, sa_kernel: int) -> None:
        super().__init__()
        cat_ch = aspp_ch + low_ch
        self.conv1 = nn.Conv2d(low_in, low_ch, 1, bias=False)
        self.bn1 = group_norm(low_ch, groups)
        self.relu = nn.ReLU(inplace=True)
        self.attention = make_attention(attention, cat_ch, reduction, sa_kernel)
        self.conv2 = nn.Conv2d(cat_ch, dec_ch, 3, padding=1, bias=False)
        self.bn2 = group_norm(dec_ch, groups)
        self.attention1 = make_attention(attention, dec_ch, reduction, sa_kernel)
        self.dropout1 = nn.Dropout(0.5)
        self.conv3 = nn.Conv2d(dec_ch, dec_ch, 3, padding=1, bias=False)
        self.dropout2 = nn.Dropout(0.1)
        self.conv4 = nn.Conv2d(dec_ch, num_classes, 1, bias=True)

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        low = self.relu(self.bn1(self.conv1(low)))
        high = F.interpolate(high, size=low.shape[2:], mode="bilinear", align_corners=True)
        x = self.attention(torch.cat([high, low], dim=1))
        x = self.dropout1(self.relu(self.attention1(self.bn2(self.conv2(x)))))
        x = self.dropout2(self.relu(self.conv3(x)))
        return self.conv4(x)
