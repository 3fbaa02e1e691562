"""Gland pixels on open glass: src_model.tissue.open_glass and predict-slide's drop_open_glass; an image's open
glass (image_open_glass, clear_open_glass: the dock's image path)."""
from __future__ import annotations

import numpy as np
from _slides import write_pyramidal_tiff
from scipy import ndimage as ndi

from src_model.io import read_image
from src_model.progress import drain
from src_model.slide_predict import predict_slide
from src_model.slide_store import open_store
from src_model.tissue import (
    OPEN_GLASS_AREA,
    block_mean,
    clear_open_glass,
    image_open_glass,
    open_glass,
    tissue_mask,
)

GLASS = 240  # near-white, unsaturated: tissue_mask calls it glass
PINK = (200, 120, 170)


def _ring_image() -> np.ndarray:
    """Tissue with an enclosed white lumen (a ring of tissue around it) and a glass margin on the right."""
    img = np.full((200, 300, 3), PINK, np.uint8)
    yy, xx = np.mgrid[:200, :300]
    img[np.hypot(yy - 100, xx - 90) < 40] = GLASS  # the lumen: enclosed by tissue
    img[20:180, 240:] = GLASS  # glass reaching the right side only
    return img


def test_open_glass_is_glass_that_reaches_a_side_or_is_too_large_for_a_lumen():
    img = _ring_image()
    glass = ~tissue_mask(img)
    lumen = glass.copy()
    lumen[:, 200:] = False
    out = open_glass(img)
    np.testing.assert_array_equal(out, glass & ~lumen)  # the margin is open glass, the lumen is not
    # a side with no slide beyond it does not make glass open
    assert not open_glass(img, sides=(True, True, True, False)).any()
    # ... but size does: the margin is 9600 px, 192 000 px of the predicted level at 20 per pixel
    assert not open_glass(img, sides=(False,) * 4, pixel_area=20).any()
    big = open_glass(img, sides=(False,) * 4, pixel_area=21)
    np.testing.assert_array_equal(big, glass & ~lumen)
    # the lumen is open glass only once it is larger than the largest GlaS lumens
    assert open_glass(img, sides=(False,) * 4, pixel_area=1, min_area=lumen.sum())[lumen].all()


def test_predict_slide_leaves_no_gland_on_the_glass_around_tissue(tmp_path, glas_dir, monkeypatch):
    """A GlaS image on a glass margin: the bundled model takes part of the glass for gland (checked
    here with the rule switched off); predict-slide's store keeps no gland and no uncertainty on it, and
    the image's glands are as without the rule up to a few lumen pixels open to the margin."""
    import src_model.slide_predict as sp

    image = read_image(glas_dir / "images" / "testA_2.png")
    h, w = image.shape[:2]
    slide = np.full((h + 256, w + 256, 3), GLASS, np.uint8)
    slide[128:128 + h, 128:128 + w] = image
    inside = np.zeros(slide.shape[:2], bool)
    inside[128:128 + h, 128:128 + w] = True
    glands, unc = {}, {}
    for rule in (True, False):
        path = write_pyramidal_tiff(tmp_path / f"{rule}.tif", slide, levels=3)
        if not rule:
            monkeypatch.setattr(sp, "drop_open_glass", lambda slide, level, y0, x0, rgb, glands, unc: (glands, unc))
        drain(predict_slide(path, tmp_path / f"{rule}.zarr", chunk=256))
        store = open_store(tmp_path / f"{rule}.zarr")
        glands[rule], unc[rule] = store.glands[0][:] > 0, np.asarray(store.uncertainty[0][:])
    assert (glands[False] & ~inside).sum() > 10_000  # without the rule: gland out on the glass
    assert not (glands[True] & ~inside).any()
    # nor uncertainty to draw the eye (and the review regions) to the glass; the tissue's is untouched
    assert (unc[False][~inside] > 0).sum() > 10_000 and not unc[True][~inside].any()
    assert (unc[True][inside] == unc[False][inside]).mean() > 0.99
    changed = (glands[True] ^ glands[False]) & inside
    assert changed.sum() <= 0.01 * glands[False][inside].sum()
    assert not (glands[True] & ~glands[False]).any()  # the rule only removes gland


# --------------------------------------------------------------------------- an image's open glass (the dock)

def _on_glass(image: np.ndarray, shape, at, seed: int = 0):
    """``image`` pasted at ``at`` on a canvas of ``shape`` whose pixels are its own glass pixels drawn at random;
    (canvas, bool mask of the pasted image)."""
    glass = image[~tissue_mask(image)]
    canvas = glass[np.random.default_rng(seed).integers(0, len(glass), shape[0] * shape[1])].reshape(*shape, 3)
    (y, x), (h, w) = at, image.shape[:2]
    canvas[y:y + h, x:x + w] = image
    inside = np.zeros(shape, bool)
    inside[y:y + h, x:x + w] = True
    return canvas, inside


def _touching_sides(glass: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """The regions of ``glass`` (an image's) that reach its sides, placed where ``inside`` puts the image."""
    regions, _ = ndi.label(glass)
    edge = np.unique(np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]]))
    out = np.zeros(inside.shape, bool)
    out[inside] = np.isin(regions, edge[edge > 0]).ravel()
    return out


def _upsampled(mask: np.ndarray, factor: int, shape) -> np.ndarray:
    return np.repeat(np.repeat(mask, factor, axis=0), factor, axis=1)[:shape[0], :shape[1]]


def test_block_mean_is_the_rounded_mean_of_each_block_the_last_ones_smaller():
    img = np.random.default_rng(1).integers(0, 256, (100, 71, 3), dtype=np.uint8)
    out = block_mean(img, 7, rows=3)  # several passes of 3 block rows
    assert out.shape == (15, 11, 3) and out.dtype == np.uint8
    for i, j in ((0, 0), (4, 9), (14, 10), (14, 3), (2, 10)):
        block = img[i * 7:(i + 1) * 7, j * 7:(j + 1) * 7].reshape(-1, 3).astype(float)
        np.testing.assert_array_equal(out[i, j], np.rint(block.mean(axis=0)))
    np.testing.assert_array_equal(block_mean(img, 1), img)


def test_a_glas_field_has_no_open_glass_though_lumens_reach_its_borders(glas_dir):
    image = read_image(glas_dir / "images" / "testA_1.png")
    assert _touching_sides(~tissue_mask(image), np.ones(image.shape[:2], bool)).sum() > 10_000  # lumens at its borders
    glass, factor = image_open_glass(image)
    assert factor == 1 and glass.shape == image.shape[:2] and not glass.any()


def test_image_open_glass_finds_the_glass_around_a_pasted_field_on_a_coarse_grid(glas_dir):
    image = read_image(glas_dir / "images" / "testA_1.png")
    canvas, inside = _on_glass(image, (1500, 2100), (500, 700))
    glass, factor = image_open_glass(canvas)
    assert factor == 3 and glass.shape == (500, 700)  # at most GLASS_SIDE px a side
    up = _upsampled(glass, factor, canvas.shape[:2])
    assert up[~inside].all()  # all the glass around the field
    # the lumens the field encloses are not open glass, but for a few pixels that the coarse grid joins to the
    # glass its border cuts open
    lumens = inside & ~tissue_mask(canvas) & ~_touching_sides(~tissue_mask(image), inside)
    assert lumens.sum() > 100_000 and up[lumens].sum() < 0.05 * lumens.sum()


def test_size_alone_makes_enclosed_glass_open_counted_in_full_resolution_pixels():
    img = np.full((2000, 2000, 3), PINK, np.uint8)
    img[100:100 + 500, 100:100 + 500] = GLASS  # 250 000 px >= OPEN_GLASS_AREA: open glass
    img[1000:1000 + 440, 1000:1000 + 440] = GLASS  # 193 600 px: a lumen's size, however white
    glass, factor = image_open_glass(img)
    assert factor == 2 and OPEN_GLASS_AREA > 440 * 440
    up = _upsampled(glass, factor, img.shape[:2])
    assert up[100:600, 100:600].all() and not up[1000:1440, 1000:1440].any()
    assert not up[700:900, 700:900].any()  # tissue far from the glass


def test_clear_open_glass_band_by_band_equals_one_call_and_spares_tissue_on_the_glass(glas_dir):
    image = read_image(glas_dir / "images" / "testA_1.png")
    canvas, inside = _on_glass(image, (1200, 1300), (300, 260))
    canvas[50:60, 50:60] = PINK  # a speck of tissue on the glass
    glass, factor = image_open_glass(canvas)
    rng = np.random.default_rng(2)
    labels, unc = rng.integers(1, 3, canvas.shape[:2]).astype(np.uint8), rng.random(canvas.shape[:2], np.float32) + 0.5
    whole = labels.copy(), unc.copy()
    n = clear_open_glass(glass, factor, 0, canvas, *whole)
    bands = labels.copy(), unc.copy()
    total, r0 = 0, 0
    for height in (1, 37, 256, 300, 1200):  # odd heights, not aligned to the coarse grid
        r1 = min(r0 + height, canvas.shape[0])
        total += clear_open_glass(glass, factor, r0, canvas[r0:r1], bands[0][r0:r1], bands[1][r0:r1])
        r0 = r1
    assert r0 == canvas.shape[0] and total == n
    for a, b in zip(whole, bands, strict=True):
        np.testing.assert_array_equal(a, b)
    cleared = whole[0] == 0
    np.testing.assert_array_equal(cleared, whole[1] == 0)
    assert n == cleared.sum() and cleared[~inside].sum() == (~inside).sum() - 100  # all the glass...
    assert (whole[0][50:60, 50:60] > 0).all()  # ... but the tissue speck on it
    assert not (cleared & tissue_mask(canvas)).any()  # never tissue
    # in the field, the glass its border cuts open to the canvas's glass goes; the lumens it encloses stay (but for
    # a few pixels that the coarse grid joins to the open ones)
    open_lumens = _touching_sides(~tissue_mask(image), inside)
    lumens = inside & ~tissue_mask(canvas) & ~open_lumens
    assert cleared[open_lumens].sum() > 0.95 * open_lumens.sum() and cleared[lumens].sum() < 0.05 * lumens.sum()
    # nothing to clear: nothing changed, nothing counted
    none = np.zeros_like(glass)
    assert clear_open_glass(none, factor, 0, canvas, labels) == 0 and labels.min() >= 1
