"""Evaluation of a model: GlaS metrics on a data folder, pooled Dice on held-out regions.

Both use the released evaluation tiling, :data:`EVAL_TILE` pixels with overlap
:data:`EVAL_OVERLAP` (defined in :mod:`src_model.tiling`; interactive prediction uses larger
tiles), so scores are comparable across uses.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, Generator, List, Optional, Sequence, Tuple, Union

from .data import SplitRow, image_path, read_split
from .io import read_image, read_mask
from .postprocess import PostprocessConfig, to_instances
from .progress import EtaClock, Progress
from .tiling import EVAL_OVERLAP, EVAL_TILE

log = logging.getLogger(__name__)

#: Key of the aggregate over all evaluated images in :func:`summarize`.
ALL = "all"


def select_rows(data_dir: Path, split: str = "test", ids: Optional[Sequence[str]] = None) -> List[SplitRow]:
    """Rows of the split file to evaluate: a split/subset name ("test", "testA", "train", ...) or ids."""
    rows = read_split(data_dir)
    if ids is not None:
        wanted = set(ids)
        chosen = [r for r in rows if r.id in wanted]
        missing = wanted - {r.id for r in chosen}
        if missing:
            raise ValueError(f"ids not in {data_dir}/split.csv: {sorted(missing)[:5]}")
        return chosen
    chosen = [r for r in rows if r.split == split or r.subset == split]
    if not chosen:
        raise ValueError(f"no images with split or subset {split!r} in {data_dir}/split.csv")
    return chosen


def summarize(per_image: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
    """Aggregate per-image results by subset, and all of them together under :data:`ALL`.

    Args:
        per_image: non-empty; dicts of :func:`~src_model.metrics.evaluate_image` with a
            ``subset`` key (as in the report of :func:`evaluate_model`).

    Returns:
        ``{subset: aggregate, ..., "all": aggregate}`` (subsets sorted, "all" last); see
        :func:`~src_model.metrics.aggregate`.
    """
    from .metrics import aggregate

    subsets = sorted({r["subset"] for r in per_image})
    if ALL in subsets:
        raise ValueError(f"a subset is named {ALL!r}, like the aggregate over all images; rename it in split.csv")
    summary = {subset: aggregate([r for r in per_image if r["subset"] == subset]) for subset in subsets}
    summary[ALL] = aggregate(per_image)
    return summary


def evaluate_model(model, data_dir: Union[str, Path], split: str = "test", ids: Optional[Sequence[str]] = None,
                   branch: Union[str, int] = "mean", tile: int = EVAL_TILE, overlap: float = EVAL_OVERLAP,
                   postprocess: Optional[PostprocessConfig] = None) -> Generator[Progress, None, Dict]:
    """Predict each image of ``split`` and score it; yields progress, returns the report.

    Tiling follows the released evaluation protocol (:data:`EVAL_TILE`, :data:`EVAL_OVERLAP`) by
    default. ``postprocess`` cleans each predicted mask before scoring (none by default).

    Yields:
        ``Progress("evaluate", k, n_images, {"dice": <image k's Dice>}, eta_s)`` after each image.

    Returns:
        ``{"per_image": [{"id", "subset", metrics...}], "summary": summarize(per_image),
        "branch", "postprocess"}``
    """
    from .inference import predict
    from .metrics import evaluate_image

    data_dir = Path(data_dir)
    rows = select_rows(data_dir, split, ids)
    clock = EtaClock(len(rows))
    per_image = []
    for k, row in enumerate(rows, start=1):
        image = read_image(image_path(data_dir, row.id))
        gt = read_mask(data_dir / "masks" / f"{row.id}.png")
        pred = predict(model, image, tile=tile, overlap=overlap, branch=branch)
        if postprocess is None:
            scores = evaluate_image(pred.labels > 0, gt)
        else:
            scores = evaluate_image(to_instances(pred.labels > 0, postprocess), gt, pred_instances=True)
        per_image.append({"id": row.id, "subset": row.subset, **scores})
        yield Progress("evaluate", k, len(rows), {"dice": scores["dice"]}, clock.eta(k))
    return {"per_image": per_image, "summary": summarize(per_image), "branch": branch,
            "postprocess": None if postprocess is None else vars(postprocess)}


def predict_regions(model, regions: Sequence[Tuple[Any, ...]], *, tile: int = EVAL_TILE,
                    overlap: float = EVAL_OVERLAP, branch: Union[str, int] = "mean", device: str = "cpu",
                    cancel: Optional[Callable[[], bool]] = None) -> Generator[Progress, None, Optional[List[Any]]]:
    """The model's labels of each region (what :func:`score_regions` scores), in order.

    Args:
        model: an MTNet (or any model :func:`~src_model.inference.predict` accepts).
        regions: (RGB uint8 (h, w, 3), mask (h, w), > 0 = foreground) pairs; or ``(image, mask, box)``
            triples, the image being the region with context around it and ``box`` ``(y0, x0, y1, x1)`` the
            region inside it (the mask's shape): the model sees the context, only the box is kept (an image
            object given for several regions in a row is predicted once).
        cancel: checked before each region; when it returns True, prediction stops.

    Yields:
        ``Progress("evaluate", k, n_regions, eta_s=...)`` after each region.

    Returns:
        one label map per region (the mask's shape), or None when cancelled.
    """
    from .inference import predict

    clock = EtaClock(len(regions))
    out = []
    last: Tuple[Any, Any] = (None, None)  # consecutive regions of one image: it is predicted once
    for k, (image, _mask, *box) in enumerate(regions, start=1):
        if cancel is not None and cancel():
            return None
        if image is not last[0]:
            last = (image, predict(model, image, tile=tile, overlap=overlap, branch=branch, device=device).labels)
        labels = last[1]
        if box:
            y0, x0, y1, x1 = (int(v) for v in box[0])
            labels = labels[y0:y1, x0:x1]
        out.append(labels)
        yield Progress("evaluate", k, len(regions), eta_s=clock.eta(k))
    return out


def score_regions(model, regions: Sequence[Tuple[Any, ...]], *, tile: int = EVAL_TILE,
                  overlap: float = EVAL_OVERLAP, branch: Union[str, int] = "mean", device: str = "cpu",
                  cancel: Optional[Callable[[], bool]] = None) -> Generator[Progress, None, Optional[float]]:
    """Pooled foreground Dice of a model on regions (e.g. held-out corrections), predicted as
    :func:`predict_regions` predicts them (same arguments): pooled over the pixels of all regions
    (:func:`~src_model.metrics.pooled_dice`), so the score of a new model and of its parent on the same
    regions can be compared. Returns the Dice in [0, 1] (1.0 for no foreground anywhere), or None when
    cancelled."""
    from .metrics import pooled_dice

    labels = yield from predict_regions(model, regions, tile=tile, overlap=overlap, branch=branch, device=device,
                                        cancel=cancel)
    return None if labels is None else pooled_dice([(lab, r[1]) for lab, r in zip(labels, regions, strict=True)])


__all__ = ["EVAL_TILE", "EVAL_OVERLAP", "select_rows", "summarize", "evaluate_model", "predict_regions",
           "score_regions"]
