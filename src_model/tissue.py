"""Which pixels are tissue: H&E-stained tissue versus near-white empty glass."""
from __future__ import annotations

from typing import Sequence, Tuple

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

    glass = ~tissue_mask(image)
    if not any(sides) and glass.sum() * pixel_area < min_area:  # no region can be that large
        return np.zeros(glass.shape, bool)
    regions, n = ndi.label(glass)
    if n == 0:
        return np.zeros(regions.shape, bool)
    keep = np.bincount(regions.ravel(), minlength=n + 1) * pixel_area >= min_area
    for on, edge in zip(sides, (regions[0], regions[-1], regions[:, 0], regions[:, -1]), strict=True):
        if on:
            keep[edge] = True
    keep[0] = False
    return keep[regions]


#: An image's open glass is found on its block mean with at most this many pixels a side (:func:`image_open_glass`).
GLASS_SIDE = 1000


def block_mean(image: np.ndarray, factor: int, rows: int = 128) -> np.ndarray:
    """RGB uint8 mean of each ``factor`` x ``factor`` block of ``image`` (the last blocks may be smaller),
    ``rows`` block rows at a time (bounded temporaries); ``image`` itself (its RGB) at factor 1."""
    img = np.asarray(image)[..., :3]
    if factor == 1:
        return img
    h, w = img.shape[:2]
    xs = np.arange(0, w, factor)
    out = np.empty((-(-h // factor), xs.size, 3), np.uint8)
    cols = np.minimum(factor, w - xs)
    for i in range(0, out.shape[0], rows):
        part = img[i * factor:(i + rows) * factor]
        ys = np.arange(0, part.shape[0], factor)
        sums = np.add.reduceat(np.add.reduceat(part, ys, axis=0, dtype=np.uint32), xs, axis=1)
        counts = np.minimum(factor, part.shape[0] - ys)[:, None] * cols[None, :]
        out[i:i + ys.size] = np.rint(sums / counts[..., None])
    return out


def image_open_glass(image: np.ndarray, side: int = GLASS_SIDE) -> Tuple[np.ndarray, int]:
    """Open glass of a whole image, on a coarse grid: ``(mask, factor)``, ``mask[i, j]`` for the block of
    ``factor`` x ``factor`` pixels at ``(i * factor, j * factor)``.

    :func:`open_glass` of the image's :func:`block_mean` (at most ``side`` pixels a side). An image's
    borders are its own (no slide beyond them): only glass regions of at least :data:`OPEN_GLASS_AREA`
    pixels are open glass, so a lumen at the border of a GlaS field is not. The mask is widened by
    one coarse pixel (slack for the coarse grid); :func:`clear_open_glass` keeps only pixels that are
    glass themselves.
    """
    from scipy import ndimage as ndi

    h, w = np.asarray(image).shape[:2]
    factor = max(1, -(-max(h, w) // side))
    mask = open_glass(block_mean(image, factor), sides=(False,) * 4, pixel_area=factor * factor)
    if mask.any():
        mask = ndi.binary_dilation(mask, structure=np.ones((3, 3), bool))
    return mask, factor


def clear_open_glass(glass: np.ndarray, factor: int, r0: int, rgb: np.ndarray, *maps: np.ndarray,
                     c0: int = 0) -> int:
    """Set ``maps`` (rows ``r0 ..``, columns ``c0 ..`` of the pixels the coarse mask ``glass`` covers, ``factor``
    pixels a coarse pixel; ``rgb`` those pixels; changed in place) to 0 where the pixel is glass
    (:func:`tissue_mask`) and ``glass`` (:func:`image_open_glass`, or a slide's) says open glass; the number
    of pixels set."""
    n, w = rgb.shape[:2]
    ys = np.minimum(np.arange(r0, r0 + n) // factor, glass.shape[0] - 1)
    band = glass[ys[0]:ys[-1] + 1] if n else glass[:0]
    if not band.any():
        return 0
    xs = np.minimum(np.arange(c0, c0 + w) // factor, glass.shape[1] - 1)
    drop = band[(ys - ys[0])[:, None], xs[None, :]] & ~tissue_mask(rgb)
    for m in maps:
        m[drop] = 0
    return int(drop.sum())


__all__ = ["GLASS_SIDE", "OPEN_GLASS_AREA", "block_mean", "clear_open_glass", "image_open_glass", "open_glass",
           "tissue_mask"]
