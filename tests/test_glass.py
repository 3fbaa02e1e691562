"""Gland pixels on open glass: src_model.tissue.open_glass and predict-slide's drop_open_glass."""
from __future__ import annotations

import numpy as np
from _slides import write_pyramidal_tiff

from src_model.io import read_image
from src_model.progress import drain
from src_model.slide_predict import predict_slide
from src_model.slide_store import open_store
from src_model.tissue import open_glass, tissue_mask

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
