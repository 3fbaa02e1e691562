"""The per-gland table of an instance label image (id, area, mean uncertainty, box).

NumPy and SciPy only (no torch), so the plugin can build it for a stored prediction before any
model is loaded; :mod:`src_model.uncertainty` re-exports it.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
from scipy import ndimage as ndi


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


__all__ = ["gland_table"]
