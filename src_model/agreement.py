"""No-regression check of a fine-tuned model: does it still agree with the model it replaces on tissue
that nobody corrected?

A fine-tune on a few corrections should change the prediction where it was corrected and little
elsewhere. :func:`agreement` predicts bounded crops of uncorrected tissue (:func:`tissue_crops`, the
corrected boxes left out) with both models and returns the Dice of the two label maps per image
(:func:`label_agreement`); the plugin's promotion rule refuses a candidate whose pooled agreement is
below :data:`MIN_AGREEMENT`. The threshold is measured in ``benchmarks/forgetting.py``
(``benchmarks/results/forgetting.md``).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Generator, List, Optional, Sequence, Tuple

import numpy as np

from .progress import EtaClock, Progress
from .tiling import EVAL_OVERLAP, EVAL_TILE
from .tissue import tissue_mask

BBox = Tuple[int, int, int, int]

#: Side of the crops of uncorrected tissue that both models predict (pixels).
AGREEMENT_CROP = 384
#: At most this many crops over all images (bounds the time of the check: ~0.3 s per crop and model on a CPU).
AGREEMENT_MAX_CROPS = 16
#: Least share of tissue (not glass) in a crop, outside the corrected boxes.
MIN_CROP_TISSUE = 0.3
#: A candidate whose pooled agreement with the current model on uncorrected tissue is below this is not
#: promoted by the rule (chosen in benchmarks/forgetting.py: see benchmarks/results/forgetting.md).
MIN_AGREEMENT = 0.95


def _starts(length: int, size: int) -> List[int]:
    if length <= size:
        return [0]
    n = math.ceil(length / size)
    return sorted({round(i * (length - size) / (n - 1)) for i in range(n)})


def excluded_mask(shape: Tuple[int, int], boxes: Sequence[BBox]) -> np.ndarray:
    """bool (H, W): True inside any of ``boxes`` ``(y0, x0, y1, x1)``."""
    out = np.zeros(shape, bool)
    for y0, x0, y1, x1 in boxes:
        out[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
    return out


def tissue_crops(image: np.ndarray, n: int, exclude: Sequence[BBox] = (), size: int = AGREEMENT_CROP,
                 min_tissue: float = MIN_CROP_TISSUE) -> List[BBox]:
    """Up to ``n`` crops ``(y0, x0, y1, x1)`` of a grid over ``image``, the ones with the most tissue
    outside the ``exclude`` boxes (at least ``min_tissue`` of the crop), in image order. Deterministic."""
    h, w = image.shape[:2]
    usable = tissue_mask(image) & ~excluded_mask((h, w), exclude)
    scored = []
    for y in _starts(h, size):
        for x in _starts(w, size):
            box = (y, x, min(h, y + size), min(w, x + size))
            frac = float(usable[box[0]:box[2], box[1]:box[3]].mean())
            if frac >= min_tissue:
                scored.append((-frac, box))
    return sorted(box for _, box in sorted(scored)[:max(0, n)])


def label_agreement(a: np.ndarray, b: np.ndarray, valid: Optional[np.ndarray] = None) -> Tuple[int, int]:
    """``(2 |A & B|, |A| + |B|)`` of two label maps (> 0 = foreground) over the ``valid`` pixels;
    their ratio is the Dice of the two (pool the pairs of several crops before dividing)."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    if valid is not None:
        a, b = a & valid, b & valid
    return 2 * int(np.count_nonzero(a & b)), int(np.count_nonzero(a)) + int(np.count_nonzero(b))


def _ratio(num: int, den: int) -> float:
    return 1.0 if den == 0 else num / den


def agreement(old_model, new_model, images: Sequence[Tuple[str, np.ndarray, Sequence[BBox]]], *,
              max_crops: int = AGREEMENT_MAX_CROPS, size: int = AGREEMENT_CROP, device: str = "cpu",
              cancel: Optional[Callable[[], bool]] = None
              ) -> Generator[Progress, None, Optional[Dict[str, Any]]]:
    """Agreement (Dice of the label maps) of ``new_model`` with ``old_model`` on uncorrected tissue.

    Args:
        images: ``(name, RGB uint8 (H, W, 3), corrected boxes)``; the boxes are left out.
        max_crops: crops over all images, spread evenly (at least one per image while they last).

    Yields:
        ``Progress("agreement", k, n_crops)`` after each crop.

    Returns:
        ``{"pooled": Dice over every crop (None without a crop), "crops": n, "per_image": {name:
        {"agreement": Dice, "pixels": compared pixels, "crops": n}}}`` (images with a crop of enough
        tissue only); None when cancelled.
    """
    from .inference import predict

    per_image = max(1, max_crops // max(1, len(images)))
    plan = []
    for name, image, boxes in images:
        if len(plan) >= max_crops:
            break
        for box in tissue_crops(image, min(per_image, max_crops - len(plan)), boxes, size):
            plan.append((name, image, box, boxes))
    clock = EtaClock(len(plan))
    sums: Dict[str, List[int]] = {}
    for k, (name, image, (y0, x0, y1, x1), boxes) in enumerate(plan, start=1):
        if cancel is not None and cancel():
            return None
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        shifted = [(a - y0, b - x0, c - y0, d - x0) for a, b, c, d in boxes]
        valid = ~excluded_mask(crop.shape[:2], shifted)
        old = predict(old_model, crop, tile=EVAL_TILE, overlap=EVAL_OVERLAP, device=device).labels
        new = predict(new_model, crop, tile=EVAL_TILE, overlap=EVAL_OVERLAP, device=device).labels
        num, den = label_agreement(old, new, valid)
        s = sums.setdefault(name, [0, 0, 0, 0])
        s[0] += num
        s[1] += den
        s[2] += int(valid.sum())
        s[3] += 1
        yield Progress("agreement", k, len(plan), eta_s=clock.eta(k))
    per = {name: {"agreement": _ratio(s[0], s[1]), "pixels": s[2], "crops": s[3]} for name, s in sums.items()}
    num, den = sum(s[0] for s in sums.values()), sum(s[1] for s in sums.values())
    return {"pooled": _ratio(num, den) if plan else None, "crops": len(plan), "per_image": per}


__all__ = ["AGREEMENT_CROP", "AGREEMENT_MAX_CROPS", "MIN_AGREEMENT", "tissue_crops", "label_agreement",
           "agreement", "excluded_mask"]
