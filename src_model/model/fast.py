"""Fast eval-only MTNet for inference: batch norms folded into convolutions, channels-last layout.

:class:`FastMTNet` gives the plain model's outputs to within float rounding (tested to 1e-4).
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .encoder import BasicBlock, Bottleneck
from .mtnet import MTNet
from .norms import FrozenBatchNorm2d


def _fold_conv_bn(conv: nn.Conv2d, bn: nn.Module) -> None:
    """Fold an eval-mode batch norm into ``conv`` in place: y = scale * conv(x) + shift."""
    scale = bn.weight.detach() * torch.rsqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() - bn.running_mean * scale
    with torch.no_grad():
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        if conv.bias is None:
            conv.bias = nn.Parameter(shift.clone())
        else:
            conv.bias.copy_(conv.bias * scale + shift)


def _is_foldable_bn(m: nn.Module) -> bool:
    if isinstance(m, FrozenBatchNorm2d):
        return True
    return isinstance(m, nn.BatchNorm2d) and m.track_running_stats and m.running_mean is not None and m.affine


def fold_batchnorm(encoder: nn.Module) -> int:
    """Fold every batch norm of a ResNet encoder into its convolution, in place (eval only).

    Folds (conv, norm) neighbours of ``nn.Sequential`` containers and the ``convN``/``bnN``
    pairs of residual blocks, replacing the norm by ``nn.Identity``. Group norms are left alone.

    Returns:
        the number of norms folded.
    """
    folded = 0
    for module in list(encoder.modules()):
        if isinstance(module, nn.Sequential):
            items = list(module._modules.items())
            for (_, a), (name_b, b) in zip(items, items[1:], strict=False):
                if isinstance(a, nn.Conv2d) and _is_foldable_bn(b):
                    _fold_conv_bn(a, b)
                    module._modules[name_b] = nn.Identity()
                    folded += 1
        elif isinstance(module, (BasicBlock, Bottleneck)):
            for i in (1, 2, 3):
                conv, bn = getattr(module, f"conv{i}", None), getattr(module, f"bn{i}", None)
                if isinstance(conv, nn.Conv2d) and bn is not None and _is_foldable_bn(bn):
                    _fold_conv_bn(conv, bn)
                    setattr(module, f"bn{i}", nn.Identity())
                    folded += 1
    return folded


class FastMTNet(nn.Module):
    """Eval-only copy of an :class:`MTNet` for inference; the source model is not touched.

    Batch norms of the encoder are folded into its convolutions (``encoder_norm`` "batch" or
    "frozen_bn"), weights and activations are channels-last (faster oneDNN kernels on CPU), only
    the requested decoders run, and their stride-4 logits are upsampled in one call.

    Args:
        model: the trained network.
        branches: 1-based decoders to run, e.g. (1, 2, 3) or (1,).
        channels_last: use the channels-last memory layout.

    Call with x float (B, 3, H, W) in [0, 1]; returns logits (B, K, C, H, W), K = len(branches),
    equal to ``torch.stack([model(x)[k - 1] for k in branches], 1)`` up to float rounding.
    """

    def __init__(self, model: MTNet, branches: Sequence[int] = (1, 2, 3), channels_last: bool = True) -> None:
        super().__init__()
        if not branches or any(b not in (1, 2, 3) for b in branches):
            raise ValueError(f"branches must be a non-empty subset of (1, 2, 3), got {tuple(branches)}")
        net = copy.deepcopy(model).eval()
        self.branches = tuple(branches)
        self.encoder = net.encoder
        self.aspp = net.aspp
        self.decoders = nn.ModuleList([net.decoders[b - 1] for b in self.branches])
        self.num_classes = net.config.num_classes
        self.folded = fold_batchnorm(self.encoder) if net.config.encoder_norm in ("batch", "frozen_bn") else 0
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        low, high = self.encoder(x)
        feats = self.aspp(high)
        logits = torch.cat([dec(feats, low) for dec in self.decoders], dim=1)
        logits = F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=True)
        b, _, h, w = logits.shape
        return logits.view(b, len(self.branches), self.num_classes, h, w)


__all__ = ["FastMTNet", "fold_batchnorm"]
