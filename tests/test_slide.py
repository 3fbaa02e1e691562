"""Reading whole slides lazily (src_model.slide) and opening them in napari (the reader contribution)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from _slides import glas_mosaic, pyramid, write_ome_zarr, write_pyramidal_tiff

from src_model.slide import SlideError, have_openslide, is_pyramid, open_slide


@pytest.fixture(scope="module")
def mosaic(glas_dir):
    return glas_mosaic(glas_dir, 600, 900)


@pytest.fixture(scope="module")
def tiff_slide(tmp_path_factory, mosaic):
    return write_pyramidal_tiff(tmp_path_factory.mktemp("tiff") / "mosaic.tif", mosaic, levels=3)


@pytest.fixture(scope="module")
def zarr_slide(tmp_path_factory, mosaic):
    return write_ome_zarr(tmp_path_factory.mktemp("zarr") / "mosaic.ome.zarr", mosaic, levels=3)


def _check_levels(slide, mosaic):
    source = pyramid(mosaic, 3)
    assert len(slide.levels) == 3 and slide.shape == mosaic.shape
    for k, level in enumerate(source):
        assert slide.levels[k].shape == level.shape and slide.levels[k].dtype == np.uint8
        np.testing.assert_array_equal(np.asarray(slide.levels[k]), level)
        h, w = level.shape[:2]
        box = (h // 5, w // 7, h // 5 + h // 2, w // 7 + w // 3)
        np.testing.assert_array_equal(slide.read_region(k, *box), level[box[0]:box[2], box[1]:box[3]])
    assert slide.downsamples[0] == 1.0
    np.testing.assert_allclose(slide.downsamples, [1.0, 2.0, 4.0], rtol=0.01)


def test_pyramidal_tiff_levels_are_the_source_pixels(tiff_slide, mosaic):
    with open_slide(tiff_slide) as slide:
        assert slide.format == "tiff"
        _check_levels(slide, mosaic)
        assert slide.mpp == pytest.approx(0.5)


def test_ome_zarr_levels_are_the_source_pixels(zarr_slide, mosaic):
    with open_slide(zarr_slide) as slide:
        assert slide.format == "ome-zarr"
        _check_levels(slide, mosaic)
        assert slide.downsamples == [1.0, 2.0, 4.0]  # from the metadata's scales, exactly
        assert slide.mpp == pytest.approx(0.5)


def test_opening_reads_no_pixels(tmp_path, mosaic):
    """Lazy: a slide whose tile data is all zeros on disk except the headers opens without decoding
    (corrupting one tile is found only when that region is read)."""
    path = write_pyramidal_tiff(tmp_path / "lazy.tif", mosaic, levels=2)
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.series[0].levels[0].pages[0]
        offset, count = page.dataoffsets[-1], page.databytecounts[-1]
    data = bytearray(path.read_bytes())
    data[offset:offset + count] = b"\xff" * count  # the last tile of level 0: undecodable zlib data
    path.write_bytes(bytes(data))
    with open_slide(path) as slide:  # opens: nothing decoded yet
        np.testing.assert_array_equal(slide.read_region(0, 0, 0, 64, 64), mosaic[:64, :64])
        with pytest.raises(SlideError, match="lazy.tif.*level 0") as err:
            slide.read_region(0, 500, 800, 600, 900)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(not have_openslide(), reason="openslide-python / openslide-bin not installed")
def test_openslide_reads_a_vendor_suffix(tmp_path, mosaic):
    path = write_pyramidal_tiff(tmp_path / "mosaic.svs", mosaic, levels=3, subifds=False)
    with open_slide(path) as slide:
        assert slide.format == "openslide"
        _check_levels(slide, mosaic)


def _one_line_error(path, match):
    with pytest.raises(SlideError, match=match) as err:
        with open_slide(path) as slide:
            np.asarray(slide.levels[-1])
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    return str(err.value)


def test_corrupt_and_truncated_slides_are_one_line_errors(tmp_path, tiff_slide, zarr_slide):
    rng = np.random.default_rng(0)
    noise = tmp_path / "noise.tif"
    noise.write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    _one_line_error(noise, "cannot read TIFF")

    cut = tmp_path / "cut.tif"
    cut.write_bytes(tiff_slide.read_bytes()[: tiff_slide.stat().st_size // 2])
    _one_line_error(cut, "truncated|corrupt")

    import shutil

    bad_meta = tmp_path / "bad_meta.ome.zarr"
    shutil.copytree(zarr_slide, bad_meta)
    (bad_meta / "zarr.json").write_text("{not json")
    _one_line_error(bad_meta, "OME-Zarr")

    bad_chunk = tmp_path / "bad_chunk.ome.zarr"
    shutil.copytree(zarr_slide, bad_chunk)
    meta = json.loads((bad_chunk / "zarr.json").read_text())
    last = meta["attributes"]["ome"]["multiscales"][0]["datasets"][-1]["path"]
    chunk = next(p for p in (bad_chunk / last).rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[:7])  # a truncated chunk file
    _one_line_error(bad_chunk, "cannot read level 2")

    _one_line_error(tmp_path / "missing.tif", "no such file")
    plain = tmp_path / "slide.png"
    plain.write_bytes(b"x")
    _one_line_error(plain, "unsupported slide type")


def test_reader_claims_pyramids_and_single_level_tiffs_only(glas_dir, tmp_path, tiff_slide, zarr_slide, mosaic):
    import tifffile

    from napari_cdma._reader import get_reader, read_plain_tiff

    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, mosaic[:100, :100])
    assert get_reader(str(glas_dir / "images" / "testA_1.png")) is None
    # a single-level TIFF is no slide: it opens as an ordinary image layer (walk 26), not as a multiscale one
    assert not is_pyramid(flat) and get_reader(str(flat)) is read_plain_tiff
    assert get_reader(str(tmp_path)) is None  # a folder that is no OME-Zarr image
    assert get_reader(str(tiff_slide)) is not None and get_reader(str(zarr_slide)) is not None


def test_drag_and_drop_opens_a_multiscale_rgb_layer(make_napari_viewer, tiff_slide, zarr_slide, mosaic):
    viewer = make_napari_viewer()
    for path in (tiff_slide, zarr_slide):
        (layer,) = viewer.open(str(path), plugin="napari-cdma")
        assert layer.multiscale and layer.rgb and len(layer.data) == 3
        assert layer.metadata["cdma_slide"] == str(path)
        np.testing.assert_array_equal(np.asarray(layer.data[1][:50, :60]), mosaic[::2, ::2][:50, :60])


def test_a_prediction_store_opens_with_its_glands_and_uncertainty(make_napari_viewer, tmp_path, mosaic):
    """A store (written chunk by chunk, as predict-slide does) at slide level 1: its layers carry the
    slide's level-0 scale, the glands as multiscale labels."""
    from src_model.slide_store import StoreInfo, create_store

    image = mosaic[::2, ::2][:256, :256]
    info = StoreInfo(slide="synthetic.tif", slide_level=1, downsample=2.0, height=256, width=256, chunk=128,
                     n_levels=2, settings={"min_tissue": 0.0})
    store = create_store(tmp_path / "pred.zarr", info)
    glands = (image[:, :, 0] < 150).astype(np.uint8)
    for cy, cx in store.all_chunks():
        y0, x0, y1, x1 = store.chunk_box(cy, cx)
        store.write_chunk(cy, cx, image[y0:y1, x0:x1], glands[y0:y1, x0:x1], glands[y0:y1, x0:x1] * 9, 1.0)
    viewer = make_napari_viewer()
    layers = viewer.open(str(store.path), plugin="napari-cdma")
    kinds = {type(layer).__name__: layer for layer in layers}
    assert set(kinds) == {"Image", "Labels"} and len(layers) == 3
    labels = kinds["Labels"]
    assert labels.multiscale and list(labels.scale) == [2.0, 2.0]
    np.testing.assert_array_equal(np.asarray(labels.data[0]), glands)
    np.testing.assert_array_equal(np.asarray(labels.data[1]), glands[::2, ::2])
    rgb = next(layer for layer in layers if getattr(layer, "rgb", False))
    np.testing.assert_array_equal(np.asarray(rgb.data[0]), image)


def test_planar_ome_tiff_pyramid(tmp_path, mosaic):
    """An OME-TIFF with planar channels (axes CYX), as converters such as bfconvert write them."""
    import tifffile

    path = tmp_path / "planar.ome.tif"
    levels = pyramid(mosaic, 2)
    with tifffile.TiffWriter(path) as tw:
        tw.write(np.moveaxis(levels[0], 2, 0), tile=(128, 128), subifds=1, metadata={"axes": "CYX"},
                 photometric="minisblack")
        tw.write(np.moveaxis(levels[1], 2, 0), tile=(128, 128), subfiletype=1, photometric="minisblack")
    with open_slide(path) as slide:
        assert len(slide.levels) == 2
        for k, level in enumerate(levels):
            np.testing.assert_array_equal(np.asarray(slide.levels[k]), level)
