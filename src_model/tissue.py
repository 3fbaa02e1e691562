"""Which pixels are tissue: H&E-stained tissue versus near-white empty glass."""
from __future__ import annotations

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

__all__ = ["tissue_mask"]
