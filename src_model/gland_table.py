"""The per-gland table of an instance label image (id, area, mean uncertainty, box).

NumPy and SciPy only (no torch), so the plugin can build it for a stored prediction before any
model is loaded; :mod:`src_model.uncertainty` re-exports it.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence, Union

import numpy as np
from scipy import ndimage as ndi

from .postprocess import DEFAULT_INSTANCES

#: What counts as a gland in the gland table and its CSV, in the dock and in the whole-slide path alike: a labelled
#: object of at least this many pixels, the engine's minimum object size (:data:`~src_model.postprocess.
#: DEFAULT_INSTANCES` ``.min_size``, which drops smaller objects from every prediction, tile or slide). A smaller piece
#: left by a correction (a pixel or two cut off by a split line) is no gland: the table does not list it (walk 24:
#: a 1 px speck was row 1 of the table and of the CSV). Its pixels stay in the labels and in the stored correction.
MIN_GLAND_PIXELS = int(DEFAULT_INSTANCES.min_size)


def gland_table(instances: np.ndarray, uncertainty_map: np.ndarray) -> List[Dict[str, Any]]:
    """One row per gland of an instance label image, ordered by id.

    Args:
        instances: int (H, W), 0 = background, 1..N = glands
            (:func:`src_model.postprocess.instance_labels`).
        uncertainty_map: float (H, W), e.g. ``Prediction.uncertainty``.

    Returns:
        ``[{"id": int, "area": int (pixels), "mean_uncertainty": float,
        "bbox": (y0, x0, y1, x1)}, ...]`` (y1, x1 exclusive); plain Python types, ready for a
        table or ``csv.DictWriter``.
    """
    lab = np.asarray(instances)
    u = np.asarray(uncertainty_map, dtype=np.float64)
    if lab.shape != u.shape:
        raise ValueError(f"instances and map differ in shape: {lab.shape} vs {u.shape}")
    lab = lab.astype(np.int64, copy=False)
    if lab.size == 0 or lab.max() <= 0:
        return []
    n = int(lab.max())
    area = np.bincount(lab.ravel(), minlength=n + 1)
    total = np.bincount(lab.ravel(), weights=u.ravel(), minlength=n + 1)
    rows = []
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None or area[i] == 0:
            continue
        rows.append({"id": i, "area": int(area[i]), "mean_uncertainty": float(total[i] / area[i]),
                     "bbox": (int(sl[0].start), int(sl[1].start), int(sl[0].stop), int(sl[1].stop))})
    return rows


def glands_only(rows: Iterable[Dict[str, Any]], min_area: int = MIN_GLAND_PIXELS) -> tuple:
    """Split :func:`gland_table`'s rows into the glands (``area`` >= ``min_area``, :data:`MIN_GLAND_PIXELS` by
    default) and the number of smaller pieces, which are not glands. Returns ``(glands, n_pieces)``; the rows are
    kept, not copied."""
    glands: List[Dict[str, Any]] = []
    pieces = 0
    for row in rows:
        if int(row.get("area", 0)) >= int(min_area):
            glands.append(row)
        else:
            pieces += 1
    return glands, pieces


#: The CSV's columns (:func:`write_csv`): a row's box as its left and top pixel and its width and height in pixels
#: (the dock writes boxes "W x H px at x X, y Y"), not the "bbox" "y0 x0 y1 x1" that needed its convention told
#: (walk 20); the image each row is of, the accepted (corrected) regions the gland lies in, and the model whose gland
#: it is. Other keys of a row follow the box.
CSV_FIRST = ("id", "area", "mean_uncertainty", "box_left", "box_top", "box_width", "box_height")
CSV_LAST = ("image", "accepted_region", "model")


def csv_rows(glands: Iterable[Dict[str, Any]], image: str = "", model: str = "") -> Iterable[Dict[str, Any]]:
    """The rows of :func:`gland_table` as the CSV writes them: "bbox" (y0, x0, y1, x1; y1, x1 exclusive) as
    box_left, box_top, box_width, box_height; ``image`` on every row; ``accepted_region``: the ids of the accepted
    regions the gland lies in, in part or whole (a row's "accepted_region" key; "" if none), and ``model`` ("" if not
    known) only on the rows of glands in no accepted region: a gland in one is the pathologist's correction, not the
    model's gland (walk 24: a gland painted by hand was written as the bundled model's)."""
    for gland in glands:
        row = {k: v for k, v in gland.items() if k not in ("bbox", "accepted_region")}
        box = gland.get("bbox")
        if box is not None and len(box) == 4:
            y0, x0, y1, x1 = (int(v) for v in box)
            row.update(box_left=x0, box_top=y0, box_width=x1 - x0, box_height=y1 - y0)
        accepted = str(gland.get("accepted_region") or "")
        row.update(image=image, accepted_region=accepted, model="" if accepted else model)
        yield row


def write_csv(path: Union[str, Path], glands: Sequence[Dict[str, Any]], image: str = "", model: str = "") -> Path:
    """Write ``glands`` (:func:`gland_table`'s rows) to the CSV file ``path``: one row per gland, columns
    :data:`CSV_FIRST`, any other keys of the rows, then :data:`CSV_LAST`. Returns the path."""
    path = Path(path)
    others = [k for k in (glands[0] if glands else {}) if k != "bbox" and k not in CSV_FIRST + CSV_LAST]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[*CSV_FIRST, *others, *CSV_LAST], extrasaction="ignore")
        writer.writeheader()
        for row in csv_rows(glands, image, model):
            writer.writerow({k: " ".join(str(x) for x in v) if isinstance(v, (tuple, list)) else v
                             for k, v in row.items()})
    return path


__all__ = ["CSV_FIRST", "CSV_LAST", "MIN_GLAND_PIXELS", "csv_rows", "gland_table", "glands_only", "write_csv"]
