"""Which pixels are tissue: H&E-stained tissue versus near-white empty glass."""
from __future__ import annotations

from typing import Sequence

import numpy as np


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
    # elementwise over the channel planes (a reduction over a 3-long last axis is ~20x slower),
    # and the saturation only where it matters: on bright pixels
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    mn = np.minimum(np.minimum(r, g), b)
    bright = mn >= white_level
    tissue = np.ones(mn.shape, bool)
    if bright.any():
        mx = np.maximum(np.maximum(r[bright], g[bright]), b[bright]).astype(np.float32)
        saturation = (mx - mn[bright]) / np.maximum(mx, 1.0)
        tissue[bright] = saturation >= min_saturation
    return tissue

#: Glass enclosed by tissue with at least this many pixels (of the predicted level) is open glass, not a
#: lumen: the largest glass regions inside glands of the 79 GlaS training images are under 70 000 px.
OPEN_GLASS_AREA = 200_000


def open_glass(image: np.ndarray, sides: Sequence[bool] = (True, True, True, True), pixel_area: float = 1.0,
               min_area: float = OPEN_GLASS_AREA) -> np.ndarray:
    """Glass (:func:`tissue_mask`) that is not a lumen: its connected region reaches one of the ``sides``
    of ``image`` (top, bottom, left, right: a side that has more slide beyond it), or covers at least
    ``min_area`` pixels (``pixel_area`` pixels of the predicted level per pixel of ``image``). A lumen is
    glass-white too, but enclosed by epithelium and far smaller; read ``image`` with enough context
    around the pixels in question that no lumen reaches its sides.

    Returns:
        bool (H, W).
    """
    from scipy import ndimage as ndi

    regions, n = ndi.label(~tissue_mask(image))
    if n == 0:
        return np.zeros(regions.shape, bool)
    keep = np.bincount(regions.ravel(), minlength=n + 1) * pixel_area >= min_area
    for on, edge in zip(sides, (regions[0], regions[-1], regions[:, 0], regions[:, -1]), strict=True):
        if on:
            keep[edge] = True
    keep[0] = False
    return keep[regions]


__all__ = ["OPEN_GLASS_AREA", "open_glass", "tissue_mask"]
