"""Contrast limits for showing a map (uncertainty, disagreement) over tissue; torch-free, so that the plugin can
set a layer's contrast (a reopened prediction's) without importing torch on the GUI thread."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


def display_range(uncertainty_map: np.ndarray, tissue: Optional[np.ndarray] = None,
                  percentiles: Tuple[float, float] = (2.0, 99.5)) -> Tuple[float, float]:
    """Contrast limits ``(lo, hi)`` for showing a map: robust percentiles over tissue pixels.

    Args:
        uncertainty_map: float (H, W), e.g. ``Prediction.uncertainty`` or ``.disagreement``.
        tissue: bool (H, W) (:func:`src_model.tissue.tissue_mask`); None = all pixels. When it
            holds no pixel, all pixels are used.
        percentiles: lower and upper percentile (default 2nd and 99.5th).

    Returns:
        floats with ``lo < hi`` always (a constant map gives ``(v, v + 1e-6)``), so they can be
        given to napari's ``contrast_limits`` directly. Maps with a tiny range (branch
        disagreement rarely exceeds 0.08) become visible.
    """
    m = np.asarray(uncertainty_map, dtype=np.float32)
    if tissue is not None:
        t = np.asarray(tissue, dtype=bool)
        if t.shape != m.shape:
            raise ValueError(f"map and tissue mask differ in shape: {m.shape} vs {t.shape}")
        vals = m[t] if t.any() else m.ravel()
    else:
        vals = m.ravel()
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(vals, percentiles))
    if not hi > lo:
        hi = max(float(vals.max()), lo)
        if not hi > lo:
            hi = lo + 1e-6
    return lo, hi
