"""Simulated annotation: ground truth standing in for the pathologist's corrections.

Used by ``benchmarks/annotation_session.py`` (issue 9): pick regions to correct (the review ranking
of :func:`src_model.uncertainty.review_regions`, or random boxes of the same sizes as the control),
paste the expert mask into them as the correction, and make a "new lab" by a fixed stain shift.

Boxes are ``(y0, x0, y1, x1)`` with y1, x1 exclusive, as everywhere in the engine.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .data import hed_jitter
from .tiling import boxes_overlap as _overlaps
from .uncertainty import Box

#: (image key, score, box) of one region picked for correction.
Pick = Tuple[str, float, Box]


def paste_correction(labels: np.ndarray, truth: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """The corrected map: ``truth > 0`` inside every box, ``labels > 0`` elsewhere; uint8 (H, W) 0/1.

    Args:
        labels: the prediction that is being corrected, (H, W), > 0 = gland.
        truth: the expert mask, (H, W), > 0 = gland.
        boxes: the corrected regions.
    """
    pred = np.asarray(labels)
    gt = np.asarray(truth)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"labels and truth must be (H, W) of one shape, got {pred.shape} and {gt.shape}")
    out = (pred > 0).astype(np.uint8)
    for y0, x0, y1, x1 in boxes:
        out[y0:y1, x0:x1] = gt[y0:y1, x0:x1] > 0
    return out


def top_regions(ranked: Dict[str, Sequence[Tuple[float, Box]]], n: int,
                taken: Optional[Dict[str, Sequence[Box]]] = None) -> List[Pick]:
    """The ``n`` highest-scoring review regions over several images, skipping ones that overlap a box
    already corrected (``taken``) or already picked in the same image.

    Args:
        ranked: per image key, the output of :func:`~src_model.uncertainty.review_regions`.
        n: regions to pick.
        taken: per image key, boxes corrected in earlier rounds.

    Returns:
        up to ``n`` picks ``(key, score, box)``, highest score first (ties: key, then box).
    """
    taken = {k: list(v) for k, v in (taken or {}).items()}
    pool = sorted(((float(s), key, tuple(int(v) for v in b)) for key, items in ranked.items() for s, b in items),
                  key=lambda item: (-item[0], item[1], item[2]))
    picks: List[Pick] = []
    for score, key, box in pool:
        if len(picks) >= n:
            break
        if any(_overlaps(box, other) for other in taken.get(key, [])):
            continue
        picks.append((key, score, box))
        taken.setdefault(key, []).append(box)
    return picks


def random_regions(rng: np.random.Generator, sizes: Sequence[Tuple[int, int]], shapes: Dict[str, Tuple[int, int]],
                   taken: Optional[Dict[str, Sequence[Box]]] = None, tries: int = 1000) -> List[Pick]:
    """Random boxes of the given sizes (the control of a ranked choice at equal corrected area).

    Each box goes to a uniformly drawn image and position where it fits inside the image and
    overlaps no box of ``taken`` nor one placed before it.

    Args:
        rng: the random source.
        sizes: ``(height, width)`` of each box, e.g. those of the ranked picks.
        shapes: per image key, its ``(H, W)``.
        taken: per image key, boxes already corrected.
        tries: draws per box before giving up.

    Returns:
        one pick ``(key, nan, box)`` per size, in the order of ``sizes``.

    Raises:
        ValueError: a box fits nowhere after ``tries`` draws.
    """
    keys = sorted(shapes)
    taken = {k: list(v) for k, v in (taken or {}).items()}
    picks: List[Pick] = []
    for hy, hx in sizes:
        fits = [k for k in keys if shapes[k][0] >= hy and shapes[k][1] >= hx]
        for _ in range(tries if fits else 0):
            key = fits[int(rng.integers(len(fits)))]
            h, w = shapes[key]
            y0, x0 = int(rng.integers(0, h - hy + 1)), int(rng.integers(0, w - hx + 1))
            box = (y0, x0, y0 + hy, x0 + hx)
            if not any(_overlaps(box, other) for other in taken.get(key, [])):
                picks.append((key, float("nan"), box))
                taken.setdefault(key, []).append(box)
                break
        else:
            raise ValueError(f"no free place for a {hy}x{hx} box after {tries} draws")
    return picks


def stain_shift(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """A fixed HED stain shift of an RGB uint8 image (a "new lab"); uint8 (H, W, 3).

    The same ``(sigma, seed)`` draws the same stain scales and offsets
    (:func:`~src_model.data.hed_jitter`) for every image, so a set of images shifts as one.
    """
    x = np.asarray(image, dtype=np.float32) / 255.0
    shifted = hed_jitter(np.random.default_rng(seed), x, sigma)
    return (np.clip(shifted, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


__all__ = ["Pick", "paste_correction", "top_regions", "random_regions", "stain_shift"]
