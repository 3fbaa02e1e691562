"""The CDMA losses (spec section 2).

Shapes: logits (B, C, H, W); targets (B, H, W) integer class indices.
"""
from __future__ import annotations

import math
from itertools import permutations
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F

DICE_SMOOTH = 1e-5


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, smooth: float = DICE_SMOOTH,
                   valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """1 - soft Dice per class over the whole batch (squared denominator), averaged over classes.

    Args:
        probs: (B, C, H, W) softmax probabilities.
        target: (B, H, W) class indices.
        valid: optional (B, H, W) bool: only these pixels count (the labelled part of a correction in context).
    """
    onehot = F.one_hot(target.long(), probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    if valid is not None:
        keep = valid.unsqueeze(1).to(probs.dtype)
        probs, onehot = probs * keep, onehot * keep
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = (probs * probs).sum(dims) + (onehot * onehot).sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    return 1.0 - dice.mean()


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                           pixel_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cross-entropy averaged over pixels; with ``pixel_weight`` (B, H, W), the weighted mean
    sum(w * ce) / sum(w) (so a weight map of ones gives the plain mean)."""
    if pixel_weight is None:
        return F.cross_entropy(logits, target.long())
    ce = F.cross_entropy(logits, target.long(), reduction="none")
    w = pixel_weight.to(ce.dtype)
    return (ce * w).sum() / w.sum().clamp_min(1e-8)


def supervised_loss(logits: Sequence[torch.Tensor], target: torch.Tensor,
                    pixel_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sum over branches of 0.5 * Dice + 0.5 * CE, divided by the number of branches.

    ``pixel_weight`` (B, H, W), optional, weights the CE term per pixel (boundary-aware training:
    :func:`~src_model.data.touching_border`); the Dice term is unweighted, except that pixels of weight 0
    (unlabelled context, :data:`~src_model.data.IGNORE`) are left out of it too.
    """
    valid = None if pixel_weight is None or bool((pixel_weight > 0).all()) else pixel_weight > 0
    total = 0.0
    for z in logits:
        total = total + 0.5 * soft_dice_loss(torch.softmax(z, dim=1), target, valid=valid) + \
            0.5 * weighted_cross_entropy(z, target, pixel_weight)
    return total / len(logits)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 10.0) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), averaged over pixels; teacher detached."""
    t = temperature
    log_s = F.log_softmax(student / t, dim=1)
    log_t = F.log_softmax(teacher.detach() / t, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=1)  # (B, H, W)
    return t * t * kl.mean()


def cdkd_loss(logits: Sequence[torch.Tensor], temperature: float = 10.0) -> torch.Tensor:
    """Cross-decoder distillation: every branch learns from each other one; sum of pairs / 3."""
    total = 0.0
    for s, t in permutations(range(len(logits)), 2):
        total = total + kd_loss(logits[s], logits[t], temperature)
    return total / len(logits)


def entropy_loss(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over pixels of the entropy of p_mean = mean_k softmax(z_k), divided by ln C."""
    p = torch.stack([torch.softmax(z, dim=1) for z in logits]).mean(0)
    ent = -(p * torch.log(p.clamp_min(1e-8))).sum(dim=1)
    return ent.mean() / math.log(p.shape[1])


def ramp_weight(step: int, warmup_steps: int, schedule: str = "step", ramp_steps: int = 0) -> float:
    """Weight w(t) of the unsupervised terms.

    ``"step"`` (release): 0 before ``warmup_steps``, then 1. ``"sigmoid"``: exp(-5 (1 - t)^2)
    ramp over ``ramp_steps`` after the warm-up.
    """
    if step < warmup_steps:
        return 0.0
    if schedule == "step" or ramp_steps <= 0:
        return 1.0
    if schedule == "sigmoid":
        t = min(1.0, (step - warmup_steps) / ramp_steps)
        return float(math.exp(-5.0 * (1.0 - t) ** 2))
    raise ValueError(f"unknown ramp schedule {schedule!r}; valid: step, sigmoid")


def cdma_loss(logits: Sequence[torch.Tensor], target: torch.Tensor, n_labelled: int, weight: float,
              temperature: float = 10.0, cdkd_weight: float = 0.1, ent_weight: float = 0.1,
              pixel_weight: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """Total CDMA loss for a batch whose first ``n_labelled`` samples carry labels.

    ``pixel_weight`` (the labelled samples' (n_labelled, H, W) CE weights) is optional. A term whose
    weight is 0 is not computed (reported as 0). Returns a dict with ``loss`` (to back-propagate) and
    its parts ``sup``, ``cdkd``, ``ent``.
    """
    sup = supervised_loss([z[:n_labelled] for z in logits], target[:n_labelled], pixel_weight)
    zero = torch.zeros((), device=sup.device)
    cd = cdkd_loss(logits, temperature) if weight > 0 and cdkd_weight > 0 else zero
    ent = entropy_loss(logits) if weight > 0 and ent_weight > 0 else zero
    loss = sup + weight * (cdkd_weight * cd + ent_weight * ent)
    return {"loss": loss, "sup": sup.detach(), "cdkd": cd.detach(), "ent": ent.detach()}
