"""Uncertainty from the three branches (spec section 4) and the review ranking ("look here next").

All maps are in [0, 1]. Branch probabilities are stacked on a leading branch axis K, the class
axis is the one after it: shape (K, C, H, W) or (K, B, C, H, W).

The review ranking cuts an image into squares of :data:`REVIEW_SIZE` pixels (the "review tiles";
unrelated to the tiles of tiled inference) and ranks them by their disagreement over tissue
(:func:`src_model.tissue.tissue_mask`).
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple, Union

import numpy as np
import torch

from .tiling import REVIEW_SIZE

ArrayLike = Union[torch.Tensor, Sequence[torch.Tensor]]
_EPS = 1e-12


def _stack(probs: ArrayLike) -> torch.Tensor:
    p = probs if isinstance(probs, torch.Tensor) else torch.stack(list(probs))
    if p.dim() not in (4, 5):
        raise ValueError(f"expected branch probabilities (K, C, H, W) or (K, B, C, H, W), got {tuple(p.shape)}")
    return p.float()


def _entropy(p: torch.Tensor, dim: int) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(_EPS))).sum(dim=dim)


def entropy(probs: ArrayLike) -> torch.Tensor:
    """Total predictive uncertainty H(p_mean) / ln C. Shape: (K, [B,] C, H, W) -> ([B,] H, W)."""
    p = _stack(probs)
    return _entropy(p.mean(0), dim=0 if p.dim() == 4 else 1) / math.log(p.shape[1 if p.dim() == 4 else 2])


def disagreement(probs: ArrayLike) -> torch.Tensor:
    """Jensen-Shannon divergence of the branches, (H(p_mean) - mean_k H(p_k)) / ln C, in [0, 1]."""
    p = _stack(probs)
    cdim = 1 if p.dim() == 4 else 2
    ln_c = math.log(p.shape[cdim])
    js = _entropy(p.mean(0), dim=cdim - 1) - _entropy(p, dim=cdim).mean(0)
    return (js / ln_c).clamp_(0.0, 1.0)


def vote(probs: ArrayLike) -> torch.Tensor:
    """Fraction of branches whose argmax differs from the argmax of p_mean."""
    p = _stack(probs)
    cdim = 1 if p.dim() == 4 else 2
    mean_arg = p.mean(0).argmax(dim=cdim - 1)
    return (p.argmax(dim=cdim) != mean_arg.unsqueeze(0)).float().mean(0)


def tile_score(disagreement_map: np.ndarray, tissue: np.ndarray, percentile: float = 90.0,
               min_tissue_fraction: float = 0.05) -> float:
    """Robust disagreement summary of one review square: a high percentile over its tissue pixels.

    Squares with less than ``min_tissue_fraction`` tissue score 0, so glass never ranks high.
    """
    d = np.asarray(disagreement_map, dtype=np.float32)
    t = np.asarray(tissue, dtype=bool)
    if d.shape != t.shape:
        raise ValueError(f"map and tissue mask differ in shape: {d.shape} vs {t.shape}")
    if t.size == 0 or t.mean() < min_tissue_fraction:
        return 0.0
    return float(np.percentile(d[t], percentile))


def rank_tiles(disagreement_map: np.ndarray, tissue: np.ndarray, review_size: int = REVIEW_SIZE,
               percentile: float = 90.0) -> List[Tuple[float, Tuple[int, int, int, int]]]:
    """Score every square of a ``review_size`` grid; ``[(score, (y0, x0, y1, x1)), ...]``, highest first.

    Squares at the bottom and right edges are cut to the image. Scores: :func:`tile_score`.
    """
    if review_size < 1:
        raise ValueError(f"review_size must be >= 1 pixel, got {review_size}")
    h, w = np.shape(disagreement_map)
    out = []
    for y0 in range(0, h, review_size):
        for x0 in range(0, w, review_size):
            y1, x1 = min(h, y0 + review_size), min(w, x0 + review_size)
            s = tile_score(disagreement_map[y0:y1, x0:x1], tissue[y0:y1, x0:x1], percentile)
            out.append((s, (y0, x0, y1, x1)))
    out.sort(key=lambda item: -item[0])
    return out
