"""No-regression check of a fine-tuned model: does it still agree with the model it replaces on tissue
that nobody corrected?

A fine-tune on a few corrections should change the prediction where it was corrected and little
elsewhere. :func:`agreement` predicts bounded crops of uncorrected tissue (:func:`tissue_crops`, the
corrected boxes left out) with both models and returns the Dice of the two label maps, pooled and per
image (:func:`label_agreement`), and the worst image (:func:`worst_image`); the plugin's promotion rule
refuses a candidate whose pooled agreement is below :data:`MIN_AGREEMENT`. :func:`gland_matches` (the
glands each model kept of the other's) is for the calibration benchmarks; the check does not spend
time on it.

The default recipe distils the new model towards the old one on that same tissue, so a model can agree
there and still forget elsewhere (the test sessions of ``benchmarks/results/annotation_session.md``:
agreement 0.98-0.99 for models that lost up to 4.7 points on untouched images). A **check strip**
(:func:`check_box`, the last :data:`CHECK_SHARE` of each image's longer side) can be kept out of the
fine-tune (``finetune(..., reserve_check=True)``, :func:`distill_part`) and compared alone
(``agreement(..., reserved=True)``). Both are off by default: on the calibration sessions (training and
validation images only, ``benchmarks/annotation_session.py --split trainval``) the strip check did not
separate the models that forgot from the others better than the check on all uncorrected tissue, and it
was noisier (fewer compared pixels).

What the check can and cannot tell (``benchmarks/promotion_check.py``,
``benchmarks/results/promotion_check.md``). Over every round of the simulated annotation sessions, no
statistic that is available at promotion time separated the models whose untouched images lost more than
0.5 point of Dice from the others. The statistics tried: agreement pooled, per worst image and on the pixels
where the current model was confident; glands kept; change of the gland fraction and of the uncertainty;
change of the weights; and the held-out score. The two chosen on the training / validation sessions,
applied once to the test sessions, reached an AUROC of 0.50 and 0.54; all of them together spanned
0.46-0.64. Even the truth on the project's uncorrected tissue tracked that forgetting weakly (Spearman
+0.44). A round's change on 9 untouched test images barely predicted its change on the other 9 (Spearman
0.12). The check catches gross change only: a model that rewrote a third of the gland pixels.
:data:`MIN_AGREEMENT` is a guard against that, not a guarantee against a loss of a point or two.
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
#: An image enters the worst-image agreement only with at least this many gland pixels (old and new
#: model together) in its compared crops: below it a few pixels swing the Dice.
MIN_IMAGE_GLAND_PX = 4000
#: Share of each stored image's longer side kept out of fine-tuning for the check (:func:`check_box`).
CHECK_SHARE = 0.25
#: Images whose longer side is shorter than this are not split (:func:`check_box`).
MIN_CHECK_SIDE = 512


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


def check_box(shape: Tuple[int, ...]) -> Optional[BBox]:
    """The strip of an image kept for the no-regression check: the last :data:`CHECK_SHARE` of its
    longer side, ``(y0, x0, y1, x1)``; None for an image whose longer side is under
    :data:`MIN_CHECK_SIDE` (too small to split: all of it trains, and all of it is compared).

    Fine-tuning never trains on this strip (:func:`distill_part`), so the check compares the two
    models on tissue that the distillation did not pull back to the old answers."""
    h, w = int(shape[0]), int(shape[1])
    if max(h, w) < MIN_CHECK_SIDE:
        return None
    if w >= h:
        return (0, w - max(1, round(w * CHECK_SHARE)), h, w)
    return (h - max(1, round(h * CHECK_SHARE)), 0, h, w)


def distill_part(image: np.ndarray) -> np.ndarray:
    """``image`` without its check strip (:func:`check_box`): what fine-tuning may use as unlabelled
    tissue (a view, no copy); the whole image when it has no strip."""
    box = check_box(image.shape)
    if box is None:
        return image
    y0, x0, _, _ = box
    return image[:, :x0] if x0 > 0 else image[:y0]


def _cover(lo: int, hi: int, size: int, length: int) -> List[int]:
    """Starts of crops of ``size`` (within ``[0, length)``) that together cover ``[lo, hi)``."""
    if hi - lo >= size:
        return [lo + s for s in _starts(hi - lo, size)]
    return [max(0, min(lo, length - size))] if hi - lo > 0 else []


def tissue_crops(image: np.ndarray, n: int, exclude: Sequence[BBox] = (), size: int = AGREEMENT_CROP,
                 min_tissue: float = MIN_CROP_TISSUE, within: Optional[BBox] = None) -> List[BBox]:
    """Up to ``n`` crops ``(y0, x0, y1, x1)`` of a grid over ``image`` (over the box ``within`` when
    given: crops that cover it, compared on its pixels only), the ones with the most tissue outside the
    ``exclude`` boxes (at least ``min_tissue`` of the crop's compared pixels), in image order.
    Deterministic."""
    h, w = image.shape[:2]
    area = np.ones((h, w), bool) if within is None else excluded_mask((h, w), [within])
    usable = tissue_mask(image) & ~excluded_mask((h, w), exclude) & area
    wy0, wx0, wy1, wx1 = (0, 0, h, w) if within is None else within
    scored = []
    for y in _cover(wy0, wy1, size, h):
        for x in _cover(wx0, wx1, size, w):
            box = (y, x, min(h, y + size), min(w, x + size))
            inside = int(area[box[0]:box[2], box[1]:box[3]].sum())
            frac = float(usable[box[0]:box[2], box[1]:box[3]].sum()) / max(1, inside)
            if inside and frac >= min_tissue:
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


def gland_matches(a: np.ndarray, b: np.ndarray, valid: Optional[np.ndarray] = None) -> Tuple[int, int]:
    """``(kept, n)``: of the ``n`` glands of label map ``a`` (post-processed instances, > 0 = gland;
    :func:`src_model.postprocess.instance_labels`), how many have more than half of their pixels covered
    by gland in ``b``, counted over the ``valid`` pixels (a gland with no valid pixel is not counted)."""
    from .postprocess import instance_labels

    inst = instance_labels(np.asarray(a) > 0)
    cover = np.asarray(b) > 0
    if valid is not None:
        inst = np.where(valid, inst, 0)
    n_lab = int(inst.max())
    if n_lab == 0:
        return 0, 0
    size = np.bincount(inst.ravel(), minlength=n_lab + 1)[1:]
    hit = np.bincount(inst.ravel(), weights=cover.ravel(), minlength=n_lab + 1)[1:]
    present = size > 0
    return int(np.count_nonzero(hit[present] * 2 > size[present])), int(np.count_nonzero(present))


def agreement(old_model, new_model, images: Sequence[Tuple[str, np.ndarray, Sequence[BBox]]], *,
              max_crops: int = AGREEMENT_MAX_CROPS, size: int = AGREEMENT_CROP, device: str = "cpu",
              cancel: Optional[Callable[[], bool]] = None, reserved: bool = False
              ) -> Generator[Progress, None, Optional[Dict[str, Any]]]:
    """Agreement (Dice of the label maps) of ``new_model`` with ``old_model`` on uncorrected tissue.

    Args:
        images: ``(name, RGB uint8 (H, W, 3), corrected boxes)``; the boxes are left out.
        max_crops: crops over all images, spread evenly (at least one per image while they last).
        reserved: compare on each image's check strip only (:func:`check_box`: the tissue a fine-tune
            with ``reserve_check=True`` kept out of its training); False (the default, what the retrain
            worker runs): on all uncorrected tissue.

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
        within = check_box(image.shape) if reserved else None
        for box in tissue_crops(image, min(per_image, max_crops - len(plan)), boxes, size, within=within):
            plan.append((name, image, box, boxes, within))
    clock = EtaClock(len(plan))
    sums: Dict[str, List[int]] = {}
    for k, (name, image, (y0, x0, y1, x1), boxes, within) in enumerate(plan, start=1):
        if cancel is not None and cancel():
            return None
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        shifted = [(a - y0, b - x0, c - y0, d - x0) for a, b, c, d in boxes]
        valid = ~excluded_mask(crop.shape[:2], shifted)
        if within is not None:
            a, b, c, d = within
            valid &= excluded_mask(crop.shape[:2], [(a - y0, b - x0, c - y0, d - x0)])
        old = predict(old_model, crop, tile=EVAL_TILE, overlap=EVAL_OVERLAP, device=device).labels
        new = predict(new_model, crop, tile=EVAL_TILE, overlap=EVAL_OVERLAP, device=device).labels
        num, den = label_agreement(old, new, valid)
        s = sums.setdefault(name, [0] * 4)
        for i, v in enumerate((num, den, int(valid.sum()), 1)):
            s[i] += v
        yield Progress("agreement", k, len(plan), eta_s=clock.eta(k))
    per = {name: {"agreement": _ratio(s[0], s[1]), "pixels": s[2], "crops": s[3], "gland_px": s[1]}
           for name, s in sums.items()}
    num, den = sum(s[0] for s in sums.values()), sum(s[1] for s in sums.values())
    return {"pooled": _ratio(num, den) if plan else None, "crops": len(plan), "per_image": per,
            **worst_image(per)}


def worst_image(per_image: Dict[str, Dict[str, Any]], min_gland_px: int = MIN_IMAGE_GLAND_PX) -> Dict[str, Any]:
    """``{"worst": lowest per-image agreement, "worst_image": its name}`` over the images whose compared
    tissue holds at least ``min_gland_px`` gland pixels (both models together); both None without one."""
    scored = [(v["agreement"], name) for name, v in per_image.items() if v.get("gland_px", 0) >= min_gland_px]
    if not scored:
        return {"worst": None, "worst_image": None}
    value, name = min(scored)
    return {"worst": value, "worst_image": name}


__all__ = ["AGREEMENT_CROP", "AGREEMENT_MAX_CROPS", "MIN_AGREEMENT", "MIN_IMAGE_GLAND_PX", "CHECK_SHARE",
           "tissue_crops", "label_agreement", "gland_matches", "agreement", "worst_image", "excluded_mask",
           "check_box", "distill_part"]
