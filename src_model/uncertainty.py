"""Uncertainty from the three branches (spec section 4) and the tile score for "look here next".

All maps are in [0, 1]. Branch probabilities are stacked on a leading branch axis K, the class
axis is the one after it: shape (K, C, H, W) or (K, B, C, H, W).
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import torch

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


def uncertainty_maps(probs: ArrayLike) -> Dict[str, torch.Tensor]:
    """All three maps at once: ``{"disagreement", "entropy", "vote"}``."""
    p = _stack(probs)
    return {"disagreement": disagreement(p), "entropy": entropy(p), "vote": vote(p)}


def tissue_mask(image: np.ndarray, white_level: int = 215, min_saturation: float = 0.07) -> np.ndarray:
    """Pixels that are tissue, not near-white glass: not (bright and unsaturated).

    Args:
        image: RGB uint8 (H, W, 3).
    Returns:
        bool (H, W).
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {img.shape}")
    rgb = img[..., :3].astype(np.float32)
    mx = rgb.max(axis=2)
    mn = rgb.min(axis=2)
    saturation = (mx - mn) / np.maximum(mx, 1.0)
    return ~((mn >= white_level) & (saturation < min_saturation))


def tile_score(disagreement_map: np.ndarray, tissue: np.ndarray, percentile: float = 90.0,
               min_tissue_fraction: float = 0.05) -> float:
    """Robust disagreement summary of one tile: a high percentile over its tissue pixels.

    Tiles with less than ``min_tissue_fraction`` tissue score 0, so glass never ranks high.
    """
    d = np.asarray(disagreement_map, dtype=np.float32)
    t = np.asarray(tissue, dtype=bool)
    if d.shape != t.shape:
        raise ValueError(f"map and tissue mask differ in shape: {d.shape} vs {t.shape}")
    if t.size == 0 or t.mean() < min_tissue_fraction:
        return 0.0
    return float(np.percentile(d[t], percentile))


def rank_tiles(disagreement_map: np.ndarray, tissue: np.ndarray, tile: int = 256,
               percentile: float = 90.0) -> List[Tuple[float, Tuple[int, int, int, int]]]:
    """Score every tile of a grid and return ``[(score, (y0, x0, y1, x1)), ...]``, highest first."""
    h, w = np.shape(disagreement_map)
    out = []
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
            s = tile_score(disagreement_map[y0:y1, x0:x1], tissue[y0:y1, x0:x1], percentile)
            out.append((s, (y0, x0, y1, x1)))
    out.sort(key=lambda item: -item[0])
    return out
