"""MTNet: one shared encoder + ASPP, three attention decoders (CBAM, SA, CA)."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MTNetConfig
from .aspp import ASPP
from .decoder import AttentionDecoder
from .encoder import ResNetEncoder
from .norms import FrozenBatchNorm2d


class MTNet(nn.Module):
    """The CDMA segmentation network.

    Args:
        cfg: the structure (see :class:`~src_model.config.MTNetConfig`).

    Call with a float tensor (B, 3, H, W) in [0, 1]; returns a tuple of logits tensors, one per
    branch, each (B, C, H, W): branch 1 (CBAM), 2 (SA), 3 (CA) by default.
    """

    def __init__(self, cfg: MTNetConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = ResNetEncoder(cfg)
        self.aspp = ASPP(self.encoder.high_channels, cfg.aspp_channels, cfg.aspp_dilations, cfg.norm_groups)
        for i, kind in enumerate(cfg.branches, start=1):
            dec = AttentionDecoder(kind, self.encoder.low_channels, cfg.aspp_channels, cfg.low_level_channels,
                                   cfg.decoder_channels, cfg.num_classes, cfg.norm_groups,
                                   cfg.attention_reduction, cfg.sa_kernel)
            self.add_module(f"decoder{i}", dec)
        self._init_weights()

    @property
    def decoders(self) -> Tuple[nn.Module, ...]:
        return tuple(getattr(self, f"decoder{i}") for i in range(1, len(self.config.branches) + 1))

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, FrozenBatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _noisy(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.empty_like(x).uniform_(-self.config.feature_noise, self.config.feature_noise)
        return x + x * noise

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        size = x.shape[2:]
        low, high = self.encoder(x)
        feats = self.aspp(high)
        use_noise = self.training and self.config.feature_noise > 0
        outs = []
        for i, dec in enumerate(self.decoders):
            f = self._noisy(feats) if use_noise and i > 0 else feats
            logits = dec(f, low)
            outs.append(F.interpolate(logits, size=size, mode="bilinear", align_corners=True))
        return tuple(outs)
