"""Review 18: whole-slide prediction scales uint16 by the slide's effective bit depth, as cdma predict, training and
the dock do (src_model.io.uint16_bits): a 12-bit camera's 0..4095 is 0..255, not 0..16 (the old / 257). The bit
depth is decided once per slide, from its smallest level, and holds for every tile and every Dask worker."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from _slides import glas_mosaic, write_pyramidal_tiff

from src_model.progress import drain
from src_model.slide import open_slide
from src_model.slide_predict import predict_slide
from src_model.slide_store import open_store

TILE, OVERLAP, CHUNK = 128, 0.25, 256


@pytest.fixture(scope="module")
def slides(tmp_path_factory, glas_dir):
    image = glas_mosaic(glas_dir, 512, 512)
    folder = tmp_path_factory.mktemp("slides")
    return image, {
        "8bit": write_pyramidal_tiff(folder / "s8.tif", image, levels=3),
        "12bit": write_pyramidal_tiff(folder / "s12.tif", image.astype(np.uint16) * 16, levels=3),
        "16bit": write_pyramidal_tiff(folder / "s16.tif", image.astype(np.uint16) * 257, levels=3),
    }


def _glands(slide, out, **extra):
    summary = drain(predict_slide(slide, out, model_path=extra.pop("model"), chunk=CHUNK, tile=TILE, overlap=OVERLAP,
                                  min_tissue=0.0, **extra))
    assert summary.chunks_done == summary.chunks_total == 4
    store = open_store(out)
    return store.glands[0][:] > 0, np.moveaxis(store.image[0][:], 0, 2)


def _dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum())


def test_a_12_bit_slide_reads_as_the_8_bit_one_at_every_level(slides, caplog):
    image, paths = slides
    with caplog.at_level(logging.INFO, logger="src_model.slide"):
        with open_slide(paths["12bit"]) as slide:
            for k in range(3):
                got = slide.read_region(k, 0, 0, *slide.levels[k].shape[:2]).astype(int)
                assert np.abs(got - image[::2 ** k, ::2 ** k]).max() <= 1, k
        with open_slide(paths["12bit"]):
            pass
    notes = [r.getMessage() for r in caplog.records if "12-bit" in r.getMessage()]
    assert notes == [f"{paths['12bit']}: Converted from 12-bit in 16-bit storage (max 4080; \u00d7 255/4095)."]
    with open_slide(paths["16bit"]) as slide:
        np.testing.assert_array_equal(slide.read_region(0, 0, 0, 512, 512), image)


def test_a_single_level_slide_is_sampled_for_its_bit_depth(tmp_path, glas_dir):
    import tifffile

    image = glas_mosaic(glas_dir, 2100, 2048)  # over 4 Mpx and no smaller level: sampled
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, image.astype(np.uint16) * 4, tile=(256, 256), photometric="rgb", compression="zlib")
    with open_slide(path) as slide:
        assert len(slide.levels) == 1
        got = slide.read_region(0, 0, 0, 2100, 2048).astype(int)
    assert np.abs(got - image).max() <= 1


def test_predict_slide_gives_the_8_bit_mask_for_12_and_16_bit_slides(tmp_path, slides, lite_checkpoint):
    image, paths = slides
    ref, ref_image = _glands(paths["8bit"], tmp_path / "s8.zarr", model=lite_checkpoint)
    np.testing.assert_array_equal(ref_image, image)
    assert ref.any()
    for name in ("12bit", "16bit"):
        glands, stored = _glands(paths[name], tmp_path / f"{name}.zarr", model=lite_checkpoint)
        assert np.abs(stored.astype(int) - image).max() <= 1, name
        assert _dice(glands, ref) > 0.98, name
    # a Dask worker opens the slide itself: it decides the same scale
    glands, stored = _glands(paths["12bit"], tmp_path / "w12.zarr", model=lite_checkpoint, workers=1)
    assert np.abs(stored.astype(int) - image).max() <= 1
    assert _dice(glands, ref) > 0.98
