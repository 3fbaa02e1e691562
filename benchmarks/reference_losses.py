"""Plain reference implementation of the CDMA loss terms (spec section 2), for the benchmark.

Written the straightforward way, from the formulas: explicit exp / sum softmax, explicit
log-softmax, loops over branches, classes and ordered branch pairs, no fused library losses.
``benchmarks/bench_engine.py`` checks that it gives the same values as ``src_model.losses``
before timing both.

Shapes: logits (B, C, H, W) per branch; target (B, H, W) integer classes.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

import torch


def softmax(z: torch.Tensor) -> torch.Tensor:
    """exp(z - max) / sum exp(z - max) over the class axis. (B, C, H, W) -> (B, C, H, W)."""
    e = torch.exp(z - z.max(dim=1, keepdim=True).values)
    return e / e.sum(dim=1, keepdim=True)


def log_softmax(z: torch.Tensor) -> torch.Tensor:
    """z - max - log(sum exp(z - max)) over the class axis. (B, C, H, W) -> (B, C, H, W)."""
    shifted = z - z.max(dim=1, keepdim=True).values
    return shifted - torch.log(torch.exp(shifted).sum(dim=1, keepdim=True))


def dice_loss(z: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """1 - mean over classes of (2 sum p g + s) / (sum p^2 + sum g^2 + s), over the whole batch."""
    p = softmax(z)
    dices: List[torch.Tensor] = []
    for c in range(z.shape[1]):
        pc = p[:, c]
        gc = (target == c).to(z.dtype)
        inter = (pc * gc).sum()
        denom = (pc * pc).sum() + (gc * gc).sum()
        dices.append((2.0 * inter + smooth) / (denom + smooth))
    return 1.0 - torch.stack(dices).mean()


def cross_entropy(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of -log p[target]."""
    logp = log_softmax(z)
    picked = torch.zeros_like(target, dtype=z.dtype)
    for c in range(z.shape[1]):
        picked = picked + torch.where(target == c, logp[:, c], torch.zeros_like(picked))
    return -picked.mean()


def supervised(logits: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """(sum over branches of 0.5 Dice + 0.5 CE) / number of branches."""
    total = torch.zeros((), dtype=logits[0].dtype)
    for z in logits:
        total = total + 0.5 * dice_loss(z, target) + 0.5 * cross_entropy(z, target)
    return total / len(logits)


def kd(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """T^2 * mean over pixels of sum_c q_c (log q_c - log p_c), q = softmax(teacher / T) detached."""
    log_q = log_softmax(teacher.detach() / t)
    log_p = log_softmax(student / t)
    q = torch.exp(log_q)
    kl = torch.zeros_like(student[:, 0])
    for c in range(student.shape[1]):
        kl = kl + q[:, c] * (log_q[:, c] - log_p[:, c])
    return t * t * kl.mean()


def cdkd(logits: Sequence[torch.Tensor], t: float = 10.0) -> torch.Tensor:
    """Sum of KD over the ordered pairs (student s, teacher t), s != t, divided by 3."""
    total = torch.zeros((), dtype=logits[0].dtype)
    for s in range(len(logits)):
        for k in range(len(logits)):
            if s != k:
                total = total + kd(logits[s], logits[k], t)
    return total / len(logits)


def mean_entropy(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over pixels of H(p_mean) / ln C, p_mean = (p_1 + p_2 + p_3) / 3."""
    p_mean = sum(softmax(z) for z in logits) / len(logits)
    c = p_mean.shape[1]
    h = torch.zeros_like(p_mean[:, 0])
    for k in range(c):
        pk = p_mean[:, k]
        h = h - pk * torch.log(pk.clamp_min(1e-8))
    return h.mean() / math.log(c)


def reference_cdma_loss(logits: Sequence[torch.Tensor], target: torch.Tensor, n_labelled: int, weight: float,
                        temperature: float = 10.0, cdkd_weight: float = 0.1,
                        ent_weight: float = 0.1) -> Dict[str, torch.Tensor]:
    """L = L_sup(labelled) + w * (0.1 L_cdkd + 0.1 L_ent), with the parts, like ``cdma_loss``."""
    sup = supervised([z[:n_labelled] for z in logits], target[:n_labelled])
    cd = cdkd(logits, temperature)
    ent = mean_entropy(logits)
    loss = sup + weight * (cdkd_weight * cd + ent_weight * ent)
    return {"loss": loss, "sup": sup.detach(), "cdkd": cd.detach(), "ent": ent.detach()}
