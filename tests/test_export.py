"""Export of a predict-slide store (src_model.export, cdma export): QuPath GeoJSON and instance labels."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import zarr
from _slides import predicted_mosaic
from scipy import ndimage as ndi

from src_model.export import GlandExtractor, rasterize
from src_model.slide_store import StoreInfo, create_store, open_store

CHUNK = 256


@pytest.fixture(scope="module")
def predicted_store(tmp_path_factory, glas_dir):
    """The bundled model's prediction of a 768 x 768 GlaS mosaic, in 9 chunks."""
    return predicted_mosaic(glas_dir, tmp_path_factory.mktemp("export"), 768, CHUNK)


def _features(store, **kwargs):
    extractor = GlandExtractor(open_store(store), **kwargs)
    return list(extractor.features()), extractor


def _best_iou(component: np.ndarray, raster: np.ndarray) -> float:
    ids = np.bincount(raster[component])
    if len(ids) < 2 or not ids[1:].any():
        return 0.0
    other = raster == ids[1:].argmax() + 1
    return float((component & other).sum() / (component | other).sum())


def test_geojson_round_trips_to_the_predicted_glands(predicted_store):
    store = open_store(predicted_store)
    glands = store.glands[0][:] > 0
    unc = store.uncertainty[0][:] / 255.0
    components, n = ndi.label(glands)
    assert n >= 8, "the bundled model finds glands in GlaS tissue"
    features, _ = _features(predicted_store, split_h=0, min_area=0)  # connected components, specks kept
    assert len(features) == n  # one feature per gland, a gland crossing chunk sides included
    crossing = [i for i in range(1, n + 1) if len({(y // CHUNK, x // CHUNK)
                                                   for y, x in zip(*np.nonzero(components == i), strict=True)}) > 1]
    assert crossing, "some glands cross chunk sides: their parts must be joined"
    raster = rasterize(features, glands.shape)
    ious = [_best_iou(components == i, raster) for i in range(1, n + 1)]
    assert min(ious) >= 0.99, sorted(ious)[:3]
    for f in features:
        props = f["properties"]
        assert f["type"] == "Feature" and f["geometry"]["type"] in ("Polygon", "MultiPolygon")
        assert props["objectType"] == "annotation" and props["classification"]["name"] == "Gland"
        gland = components == components[raster == props["measurements"]["gland_id"]][0]
        assert props["measurements"]["area_px"] == gland.sum()
        assert props["measurements"]["mean_uncertainty"] == pytest.approx(unc[gland].mean(), abs=1e-9)


def test_touching_glands_are_split_across_chunk_sides(tmp_path):
    """Two round glands joined by a neck, lying across a chunk corner: one object as connected
    components, two with the default split (the dock's), and the polygons still cover the mask."""
    info = StoreInfo(slide="synthetic", slide_level=0, downsample=1.0, height=256, width=256, chunk=128, n_levels=1,
                     mpp=None, settings={"min_tissue": 0.0})
    store = create_store(tmp_path / "touching.zarr", info)
    yy, xx = np.mgrid[:256, :256]
    glands = ((np.hypot(yy - 100, xx - 100) < 45) | (np.hypot(yy - 160, xx - 160) < 45)).astype(np.uint8)
    assert ndi.label(glands)[1] == 1  # the two discs touch
    for cy, cx in store.all_chunks():
        y0, x0, y1, x1 = store.chunk_box(cy, cx)
        g = glands[y0:y1, x0:x1]
        store.write_chunk(cy, cx, np.full(g.shape + (3,), 200, np.uint8), g, g * 50, 1.0)
    merged, _ = _features(store.path, split_h=0)
    split, _ = _features(store.path)
    assert len(merged) == 1 and len(split) == 2
    raster = rasterize(split, glands.shape)
    np.testing.assert_array_equal(raster > 0, glands > 0)
    for centre in ((100, 100), (160, 160)):  # each gland keeps most of its disc
        assert raster[centre] > 0 and (raster == raster[centre]).sum() > 0.7 * np.pi * 45 ** 2
    assert raster[100, 100] != raster[160, 160]


def test_split_export_covers_the_predicted_glands(predicted_store):
    store = open_store(predicted_store)
    glands = store.glands[0][:] > 0
    n = ndi.label(glands)[1]
    features, _ = _features(predicted_store, min_area=0)
    assert len(features) >= n
    raster = rasterize(features, glands.shape)
    np.testing.assert_array_equal(raster > 0, glands)


def test_holes_downsample_and_min_area(tmp_path):
    """A ring-shaped gland across four chunks keeps its hole; coordinates scale to level-0 pixels."""
    info = StoreInfo(slide="synthetic", slide_level=1, downsample=2.0, height=128, width=160, chunk=64, n_levels=1,
                     mpp=0.25, settings={"min_tissue": 0.0})
    store = create_store(tmp_path / "synthetic.zarr", info)
    yy, xx = np.mgrid[:128, :160]
    r = np.hypot(yy - 64, xx - 64)
    glands = ((r < 30) & (r >= 12)).astype(np.uint8)
    glands[100:104, 140:150] = 1  # 40 px at this level = 160 level-0 px
    for cy, cx in store.all_chunks():
        y0, x0, y1, x1 = store.chunk_box(cy, cx)
        g = glands[y0:y1, x0:x1]
        store.write_chunk(cy, cx, np.full(g.shape + (3,), 200, np.uint8), g, g * 100, 1.0)
    features, _ = _features(store.path, min_area=0)
    assert len(features) == 2
    ring = max(features, key=lambda f: f["properties"]["measurements"]["area_px"])
    assert ring["geometry"]["type"] == "Polygon" and len(ring["geometry"]["coordinates"]) == 2  # shell + hole
    xs = [x for x, _ in ring["geometry"]["coordinates"][0]]
    assert max(xs) == pytest.approx(2 * (64 + 30), abs=2)  # level-0 pixels: twice the store's
    components, _ = ndi.label(glands)
    raster = rasterize(features, glands.shape, downsample=2.0)
    np.testing.assert_array_equal(raster > 0, glands > 0)
    m = ring["properties"]["measurements"]
    assert m["area_px"] == 4 * ((r < 30) & (r >= 12)).sum() and m["area_um2"] == pytest.approx(m["area_px"] / 16)
    assert m["mean_uncertainty"] == pytest.approx(100 / 255)
    small, _ = _features(store.path, min_area=161)
    assert len(small) == 1 and small[0]["properties"]["measurements"]["gland_id"] == 1


@pytest.mark.parametrize("downsample", [1.0, 2.0])
def test_default_drops_the_specks_the_dock_drops(tmp_path, downsample):
    """By default a slide's export drops glands under DEFAULT_INSTANCES.min_size pixels of the predicted
    level (the dock's clean-up of an image's prediction), whatever the level's downsample, and keeps the
    rest; min_area=0 keeps all."""
    from src_model.postprocess import DEFAULT_INSTANCES

    info = StoreInfo(slide="synthetic", slide_level=1, downsample=downsample, height=256, width=256, chunk=128,
                     n_levels=1, mpp=None, settings={"min_tissue": 0.0})
    store = create_store(tmp_path / "specks.zarr", info)
    min_size = DEFAULT_INSTANCES.min_size
    kept = np.zeros((256, 256), np.uint8)
    kept[110:150, 105:145] = 1  # 1600 px, across four chunks: kept
    glands = kept.copy()
    glands[10:10 + 36, 10:10 + 36] = 1  # 1296 px: just under min_size, dropped
    glands[200:210, 200:210] = 1  # a 100 px speck: dropped
    assert 36 * 36 < min_size <= 40 * 40
    for cy, cx in store.all_chunks():
        y0, x0, y1, x1 = store.chunk_box(cy, cx)
        g = glands[y0:y1, x0:x1]
        store.write_chunk(cy, cx, np.full(g.shape + (3,), 200, np.uint8), g, g * 100, 1.0)
    default, extractor = _features(store.path)
    assert extractor.min_area_px == min_size * downsample ** 2
    assert len(default) == 1
    assert default[0]["properties"]["measurements"]["area_px"] == 1600 * downsample ** 2
    raster = rasterize(default, glands.shape, downsample=downsample)
    np.testing.assert_array_equal(raster > 0, kept > 0)
    every, _ = _features(store.path, min_area=0)
    assert len(every) == 3


def test_cli_writes_geojson_ome_zarr_and_tiff_labels(tmp_path, capsys, predicted_store):
    from src_model.cli import main

    out = {"geojson": tmp_path / "glands.geojson", "ome_zarr": tmp_path / "labels.ome.zarr",
           "tiff": tmp_path / "labels.tif"}
    assert main(["export", str(predicted_store), "--geojson", str(out["geojson"]), "--ome-zarr",
                 str(out["ome_zarr"]), "--tiff", str(out["tiff"])]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    collection = json.loads(out["geojson"].read_text())
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == report["glands"]
    labels = zarr.open_group(str(out["ome_zarr"]), mode="r")
    from_zarr = labels["0"][:]
    from_tiff = tifffile.imread(out["tiff"])
    np.testing.assert_array_equal(from_zarr, from_tiff)
    np.testing.assert_array_equal(from_zarr, rasterize(collection["features"], from_zarr.shape))
    assert from_zarr.dtype == np.uint32 and from_zarr.max() == report["glands"]
    np.testing.assert_array_equal(labels["1"][:], from_zarr[::2, ::2])
    assert "multiscales" in labels.attrs["ome"]
    with tifffile.TiffFile(out["tiff"]) as tif:
        assert len(tif.series[0].levels) == len(open_store(predicted_store).glands)


def test_cli_export_errors_are_one_line(tmp_path, capsys, predicted_store):
    from src_model.cli import main

    assert main(["export", str(tmp_path / "nothing.zarr"), "--geojson", str(tmp_path / "a.geojson")]) == 2
    (tmp_path / "taken.zarr").mkdir()
    assert main(["export", str(predicted_store), "--ome-zarr", str(tmp_path / "taken.zarr")]) == 2
    assert main(["export", str(predicted_store)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and "nothing.zarr" in lines[0] and "taken.zarr" in lines[1] and "--geojson" in lines[2]
    assert not (tmp_path / "a.geojson").exists()
