"""Uncertainty from the three branches (spec section 4) and the review ranking ("look here next").

All maps are in [0, 1]. Branch probabilities are stacked on a leading branch axis K, the class
axis is the one after it: shape (K, C, H, W) or (K, B, C, H, W).

Which map finds the model's errors was measured on validation images
(``benchmarks/uncertainty_choice.py``, results in ``benchmarks/results/uncertainty.md``): branch
disagreement barely does (cross distillation trains the branches to agree; it stays below ~0.08),
the entropies do; ``Prediction.uncertainty`` is :func:`expected_entropy` (or the entropy of the
test-time-augmentation mean with ``predict(..., tta=...)``).

Review ("look here next"): :func:`review_regions` proposes non-overlapping boxes, at least
``min_size`` pixels a side and always inside the image, centred on uncertain glands, uncertainty
blobs or the most uncertain squares, most uncertain first. The older
:func:`rank_tiles` cuts the image into a fixed grid of
:data:`REVIEW_SIZE` squares (clipped at the edges, so edge squares can be slivers).

For the plugin: :func:`display_range` (contrast limits of a map over tissue),
:func:`gland_table` (per-gland area, mean uncertainty and box; instance labels from
:func:`src_model.postprocess.instance_labels`).
"""
from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from scipy import ndimage as ndi

from .contrast import display_range as display_range  # re-exported: torch-free in .contrast
from .gland_table import gland_table as gland_table  # re-exported: the plugin and tests use it from here
from .tiling import REVIEW_SIZE

Box = Tuple[int, int, int, int]
#: Order of the power mean that scores review regions (chosen on validation among 1, 2, 4, 8, 16).
REVIEW_SHARPEN = 8.0
#: Map value from which a pixel counts as fully uncertain in that score; 1.0 = off. A saturation of
#: 0.5 (with an 8-px grid, context 16 and sharpen 1) won on the validation images (top-3 lift 2.52 vs
#: 1.98) but lost on test (2.09 vs 2.22), so it is not the default (benchmarks/results/uncertainty.md).
REVIEW_SATURATION = 1.0

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


def expected_entropy(probs: ArrayLike) -> torch.Tensor:
    """Mean of the branch entropies, mean_k H(p_k) / ln C, in [0, 1]; shape as :func:`entropy`.

    The default ``Prediction.uncertainty`` (chosen on validation, benchmarks/uncertainty_choice.py):
    it ranks the model's wrong pixels far better than :func:`disagreement` (validation AUROC 0.85
    vs 0.58 with the bundled model). ``entropy - disagreement`` equals it.
    """
    p = _stack(probs)
    cdim = 1 if p.dim() == 4 else 2
    return (_entropy(p, dim=cdim).mean(0) / math.log(p.shape[cdim])).clamp_(0.0, 1.0)


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


# --------------------------------------------------------------------------- review regions

def _place(cy: float, cx: float, hy: int, hx: int, h: int, w: int) -> Box:
    """A box of hy x hx centred near (cy, cx), shifted (never shrunk) to lie inside h x w."""
    y0 = int(round(cy - hy / 2.0))
    x0 = int(round(cx - hx / 2.0))
    y0 = min(max(0, y0), h - hy)
    x0 = min(max(0, x0), w - hx)
    return y0, x0, y0 + hy, x0 + hx


def _side(extent: int, min_size: int, context: int, limit: int) -> int:
    return min(limit, max(min_size, extent + 2 * context))


def _integral(a: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0] + 1, a.shape[1] + 1))
    out[1:, 1:] = a.cumsum(0).cumsum(1)
    return out


def _box_sums(integral: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Sums over boxes (N, 4) of (y0, x0, y1, x1) from an integral image, vectorised."""
    y0, x0, y1, x1 = boxes.T
    return integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]


def review_regions(prediction: Any, image: Optional[np.ndarray] = None, n: int = 10, min_size: int = 128,
                   context: int = 32, *, uncertainty_map: Optional[np.ndarray] = None,
                   instances: Optional[np.ndarray] = None, tissue: Optional[np.ndarray] = None,
                   blob_sigma: float = 4.0, blob_quantile: float = 0.9, window_stride: Optional[int] = None,
                   saturation: float = REVIEW_SATURATION, sharpen: float = REVIEW_SHARPEN
                   ) -> List[Tuple[float, Box]]:
    """Where to look next: ``[(score, (y0, x0, y1, x1)), ...]``, most uncertain first.

    Candidate boxes are

    * squares of ``min_size`` px on a grid of stride ``window_stride`` (default ``min_size // 4``),
      so an uncertain spot between glands is found too;
    * each predicted gland (instances from :func:`src_model.postprocess.instance_labels` with
      :data:`~src_model.postprocess.DEFAULT_INSTANCES`): its bounding box plus ``context`` px, so a
      gland uncertain all round is shown whole;
    * each uncertainty blob (connected pixels where the map, smoothed with a Gaussian of
      ``blob_sigma`` px, is above its ``blob_quantile`` over tissue): its box plus ``context``.

    Every box is at least ``min_size`` px a side (the whole image side when the image is smaller)
    and is shifted, never shrunk, to lie inside the image, so no box is a sliver.

    Score of a box: the power mean of order ``sharpen`` (default 8) of the map over the box, glass
    counting as 0: ``(sum over tissue of v**sharpen / box area) ** (1 / sharpen)`` with
    ``v = min(1, u / saturation)`` (``saturation`` 1 = the map itself), in [0, 1]; ties go to the
    higher mean of the map. A high order lets the most uncertain pixels, not the broad band of
    moderate uncertainty along every gland border, decide (order 8 was chosen on the validation
    images). The alternative ``saturation=0.5, sharpen=1, window_stride=8, context=16`` (the share
    of the box that is uncertain tissue) placed more wrong pixels in the top 3 boxes on the 8
    validation images (2.52x vs 1.98x their area share) but fewer on the 80 test images (2.09x vs
    2.22x), so it is an option, not the default (benchmarks/results/uncertainty.md).
    Boxes are taken greedily by score; one that overlaps a box already taken is skipped, so the
    result never overlaps.

    Args:
        prediction: a :class:`~src_model.inference.Prediction` (its ``uncertainty``, else
            ``entropy``, and ``labels`` are used), or None when ``uncertainty_map`` and
            ``instances`` are given.
        image: the RGB image (H, W, 3), for the tissue mask (:func:`src_model.tissue.tissue_mask`);
            None = every pixel is tissue (or pass ``tissue``).
        n: most regions returned (fewer when no more fit without overlap).
        min_size: smallest box side in pixels.
        context: pixels added on each side of a gland or blob.
        sharpen: order of the power mean (> 0; 1 = plain mean).
        saturation: map value from which a pixel counts as fully uncertain (> 0; 1 = off for a map
            in [0, 1]).
        window_stride: step of the grid of ``min_size`` squares (default ``min_size // 4``).
        uncertainty_map: float (H, W) used instead of the prediction's map.
        instances: int (H, W) gland labels used instead of those of the prediction.
        tissue: bool (H, W) used instead of the tissue mask of ``image``.

    Returns:
        up to ``n`` pairs ``(score, (y0, x0, y1, x1))`` with y1, x1 exclusive, scores non-increasing.
    """
    from .postprocess import instance_labels

    if n < 1:
        return []
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1 pixel, got {min_size}")
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    if sharpen <= 0:
        raise ValueError(f"sharpen must be > 0, got {sharpen}")
    if saturation <= 0:
        raise ValueError(f"saturation must be > 0, got {saturation}")
    if uncertainty_map is None:
        if prediction is None:
            raise ValueError("give a prediction or an uncertainty_map")
        uncertainty_map = getattr(prediction, "uncertainty", None)
        if uncertainty_map is None:
            uncertainty_map = prediction.entropy
    u = np.asarray(uncertainty_map, dtype=np.float64)
    if u.ndim != 2:
        raise ValueError(f"expected an uncertainty map (H, W), got shape {u.shape}")
    h, w = u.shape
    if tissue is None:
        if image is not None:
            from .tissue import tissue_mask

            tissue = tissue_mask(image)
        else:
            tissue = np.ones((h, w), bool)
    t = np.asarray(tissue, dtype=bool)
    if t.shape != u.shape:
        raise ValueError(f"map and tissue mask differ in shape: {u.shape} vs {t.shape}")
    if instances is None and prediction is not None and getattr(prediction, "labels", None) is not None:
        instances = instance_labels(prediction)
    u = np.clip(np.nan_to_num(u), 0.0, None)
    on_tissue = np.where(t, u, 0.0)
    level = np.minimum(on_tissue / saturation, 1.0)
    if sharpen != 1.0:
        level **= sharpen

    sy, sx = min(min_size, h), min(min_size, w)
    boxes: List[Box] = []
    objects = []  # (slices) of glands and blobs
    if instances is not None:
        lab = np.asarray(instances)
        if lab.shape != u.shape:
            raise ValueError(f"instances and map differ in shape: {lab.shape} vs {u.shape}")
        if lab.max() > 0:
            objects += [sl for sl in ndi.find_objects(lab.astype(np.int64, copy=False)) if sl is not None]
    if t.any():
        smooth = ndi.gaussian_filter(on_tissue, blob_sigma) if blob_sigma > 0 else on_tissue
        cut = float(np.quantile(smooth[t], blob_quantile))
        blobs, nb = ndi.label((smooth > cut) & t)
        if nb:
            objects += [sl for sl in ndi.find_objects(blobs) if sl is not None]
    for sl in objects:
        hy = _side(sl[0].stop - sl[0].start, sy, context, h)
        hx = _side(sl[1].stop - sl[1].start, sx, context, w)
        boxes.append(_place((sl[0].start + sl[0].stop) / 2.0, (sl[1].start + sl[1].stop) / 2.0, hy, hx, h, w))
    stride = max(1, window_stride or max(1, min_size // 4))
    ys = np.unique(np.r_[np.arange(0, h - sy + 1, stride), h - sy])
    xs = np.unique(np.r_[np.arange(0, w - sx + 1, stride), w - sx])
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    grid = np.stack([gy.ravel(), gx.ravel(), gy.ravel() + sy, gx.ravel() + sx], axis=1)
    cand = np.unique(np.concatenate([grid, np.asarray(boxes, np.int64).reshape(-1, 4)]).astype(np.int64), axis=0)
    area = ((cand[:, 2] - cand[:, 0]) * (cand[:, 3] - cand[:, 1])).astype(np.float64)
    score = np.clip(_box_sums(_integral(level), cand) / area, 0.0, 1.0) ** (1.0 / sharpen)
    tie = _box_sums(_integral(on_tissue), cand) / area
    # best first; ties: higher mean of the map, then top-left (cand is sorted by box, lexsort is stable)
    order = np.lexsort((-tie, -score))
    cand, score = cand[order], score[order]
    alive = np.ones(len(cand), bool)
    chosen: List[Tuple[float, Box]] = []
    while len(chosen) < n and alive.any():
        i = int(np.argmax(alive))
        box = tuple(int(v) for v in cand[i])
        chosen.append((float(score[i]), box))
        alive &= ~((cand[:, 0] < box[2]) & (box[0] < cand[:, 2]) & (cand[:, 1] < box[3]) & (box[1] < cand[:, 3]))
    return chosen
