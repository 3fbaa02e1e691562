"""Whole-image evaluation of a model on a GlaS-layout data folder (tiled inference + metrics)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Generator, List, Optional, Sequence, Union

from .data import SplitRow, image_path, read_split
from .io import read_image, read_mask
from .postprocess import PostprocessConfig, to_instances
from .progress import EtaClock, Progress

log = logging.getLogger(__name__)


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


def evaluate_model(model, data_dir: Union[str, Path], split: str = "test", ids: Optional[Sequence[str]] = None,
                   branch: Union[str, int] = "mean", tile: int = 256, overlap: float = 0.25,
                   postprocess: Optional[PostprocessConfig] = None) -> Generator[Progress, None, Dict]:
    """Predict each image of ``split`` and score it; yields progress, returns the report.

    Tiling follows the released evaluation protocol (256-px tiles, overlap 0.25) by default.

    ``postprocess`` cleans each predicted mask before scoring (none by default).

    Returns:
        ``{"per_image": [{"id", "subset", metrics...}], "summary": {subset: aggregate, "all": aggregate}}``
    """
    from .inference import predict
    from .metrics import aggregate, evaluate_image

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
    summary = {}
    for subset in sorted({r["subset"] for r in per_image}):
        summary[subset] = aggregate([r for r in per_image if r["subset"] == subset])
    summary["all"] = aggregate(per_image)
    return {"per_image": per_image, "summary": summary, "branch": branch,
            "postprocess": None if postprocess is None else vars(postprocess)}
