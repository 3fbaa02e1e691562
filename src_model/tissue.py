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
    rgb = img[..., :3].astype(np.float32)
    mx = rgb.max(axis=2)
    mn = rgb.min(axis=2)
    saturation = (mx - mn) / np.maximum(mx, 1.0)
    return ~((mn >= white_level) & (saturation < min_saturation))


__all__ = ["tissue_mask"]
