"""The numbered glands of a slide store (src_model.export.write_instances): one label per gland across chunk
sides, numbered as cdma export, written atomically into STORE/labels/instances, reused and invalidated."""
from __future__ import annotations

import numpy as np
import pytest
import zarr
from _slides import predicted_mosaic
from scipy import ndimage as ndi

from src_model.export import (
    GlandExtractor,
    glands_fingerprint,
    instance_levels,
    instance_table,
    instances_current,
    instances_info,
    write_instances,
    write_labels_ome_zarr,
)
from src_model.progress import drain
from src_model.slide_store import open_store

CHUNK = 256


@pytest.fixture(scope="module")
def slide_store(tmp_path_factory, glas_dir):
    """The bundled model's prediction of a 768 x 768 GlaS mosaic, in 9 chunks of 256 px."""
    folder = tmp_path_factory.mktemp("instances")
    predicted_mosaic(glas_dir, folder, 768, CHUNK)
    return folder


def _copy(folder, tmp_path):
    import shutil

    shutil.copytree(folder / "pred.zarr", tmp_path / "pred.zarr")
    return open_store(tmp_path / "pred.zarr", mode="r+")


def _chunks_of(mask: np.ndarray) -> set:
    ys, xs = np.nonzero(mask)
    return set(zip((ys // CHUNK).tolist(), (xs // CHUNK).tolist(), strict=True))


def test_numbered_glands_are_the_exports_instance_labels(slide_store, tmp_path):
    store = _copy(slide_store, tmp_path)
    assert instances_info(store) is None
    out = drain(write_instances(store))
    assert not out["reused"] and not out["stale"]
    levels = instance_levels(store)
    assert len(levels) == store.info.n_levels and all(a.dtype == np.uint32 for a in levels)
    lab = levels[0][:]
    # cdma export --ome-zarr writes the same numbers (the GeoJSON's order)
    export = GlandExtractor(open_store(store.path))
    features = list(export.features())  # as cdma export: the GeoJSON first, then the labels numbered as it
    assert len(features) == out["n_glands"]
    write_labels_ome_zarr(export, tmp_path / "export.ome.zarr")
    exported = zarr.open_group(str(tmp_path / "export.ome.zarr"), mode="r")
    np.testing.assert_array_equal(lab, exported["0"][:])
    for k in range(1, store.info.n_levels):  # the pyramid: every 2^k-th pixel, as labels/glands
        np.testing.assert_array_equal(levels[k][:], lab[::1 << k, ::1 << k])
    ids = np.unique(lab[lab > 0])
    assert out["n_glands"] == len(ids) == ids.max() >= 8  # 1..N, every number used
    assert not np.any(lab[store.glands[0][:] == 0]), "instances lie inside the gland labels"
    # the per-gland table: one row per number, the area and box of its pixels (level-0 = store pixels here)
    rows = instance_table(store)
    assert [r["id"] for r in rows] == list(range(1, out["n_glands"] + 1))
    unc = store.uncertainty[0][:] / 255.0
    for r, sl in zip(rows, ndi.find_objects(lab), strict=True):
        gland = lab == r["id"]
        assert r["area"] == gland.sum()
        assert r["mean_uncertainty"] == pytest.approx(unc[gland].mean(), abs=1e-9)
        y0, x0, y1, x1 = r["bbox"]
        assert y0 <= sl[0].start and x0 <= sl[1].start and y1 >= sl[0].stop and x1 >= sl[1].stop
        assert y1 - y0 <= sl[0].stop - sl[0].start + 1 and x1 - x0 <= sl[1].stop - sl[1].start + 1
    # NGFF: an image-label listed in labels/
    assert "instances" in zarr.open_group(str(store.path / "labels"), mode="r").attrs["ome"]["labels"]
    assert "image-label" in zarr.open_group(str(store.path / "labels" / "instances"), mode="r").attrs["ome"]


def test_a_gland_cut_by_chunk_sides_is_one_label(slide_store, tmp_path):
    store = _copy(slide_store, tmp_path)
    # connected components (no split, no size filter): exactly the components of the whole mask, one label each
    drain(write_instances(store, GlandExtractor(store, split_h=0, min_area=0)))
    lab = instance_levels(store)[0][:]
    components, n = ndi.label(store.glands[0][:] > 0)
    crossing = 0
    for i, sl in enumerate(ndi.find_objects(components), start=1):
        comp = components[sl] == i
        numbers = np.unique(lab[sl][comp])
        assert len(numbers) == 1 and numbers[0] > 0, (i, numbers)
        crossing += len(_chunks_of(components == i)) > 1
    assert crossing >= 3, "the mosaic has glands across chunk sides"
    assert len(np.unique(lab[lab > 0])) == n
    # the dock's post-processing (split, size filter): every numbered gland is one connected piece, and the
    # glands that cross chunk sides are numbered once
    drain(write_instances(store))
    lab = instance_levels(store)[0][:]
    crossing = 0
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        assert ndi.label(lab[sl] == i)[1] == 1, f"gland {i} is in pieces"
        crossing += len(_chunks_of(lab == i)) > 1
    assert crossing >= 3


def test_numbered_glands_are_reused_and_invalidated_by_an_edit(slide_store, tmp_path):
    store = _copy(slide_store, tmp_path)
    first = drain(write_instances(store))
    files = {p: p.stat().st_mtime_ns for p in (store.path / "labels" / "instances").rglob("*") if p.is_file()}
    again = drain(write_instances(store))
    assert again["reused"] and again["n_glands"] == first["n_glands"] and instances_current(store)
    assert files == {p: p.stat().st_mtime_ns for p in (store.path / "labels" / "instances").rglob("*")
                     if p.is_file()}, "reused: nothing rewritten"
    # an edit of the gland labels (as Accept window writes them): the numbers are out of date, then recomputed
    lab = instance_levels(store)[0][:]
    gland = int(np.bincount(lab.ravel())[1:].argmax()) + 1
    cy, cx = np.argwhere(lab == gland)[0] // CHUNK
    y0, x0, y1, x1 = store.chunk_box(int(cy), int(cx))
    chunk = store.glands[0][y0:y1, x0:x1].copy()
    chunk[lab[y0:y1, x0:x1] == gland] = 0
    store.write_glands(int(cy), int(cx), chunk)
    assert not instances_current(store)
    third = drain(write_instances(store))
    assert not third["reused"] and instances_current(store)
    new = instance_levels(store)[0][:]
    assert not np.any(new[lab == gland] & (store.glands[0][:][lab == gland] == 0))
    assert third["n_glands"] <= first["n_glands"]
    assert np.array_equal(new > 0, (lab > 0) & (store.glands[0][:] > 0)) or third["n_glands"] < first["n_glands"]


def test_labels_changed_while_numbering_are_not_committed_and_a_stopped_run_leaves_the_old(slide_store, tmp_path):
    store = _copy(slide_store, tmp_path)
    drain(write_instances(store))
    before = instance_levels(store)[0][:]
    key = instances_info(store)["source"]
    # a run stopped half-way (the dock's Cancel, a crash): the numbered glands are the old ones
    y0, x0, y1, x1 = store.chunk_box(0, 0)
    store.write_glands(0, 0, np.zeros((y1 - y0, x1 - x0), np.uint8))
    gen = write_instances(store)
    next(gen)
    assert list((store.path / "labels").glob("instances.partial-*")), "written beside the numbers in place"
    gen.close()
    assert instances_info(store)["source"] == key and not instances_current(store)
    assert not list((store.path / "labels").glob("instances.partial-*")), "a stopped run leaves nothing"
    np.testing.assert_array_equal(instance_levels(store)[0][:], before)
    # labels written while the run reads them: nothing replaced, the run says so
    gen = write_instances(store)
    next(gen)
    y0, x0, y1, x1 = store.chunk_box(2, 2)
    store.write_glands(2, 2, np.zeros((y1 - y0, x1 - x0), np.uint8))
    out = drain(gen)
    assert out["stale"] and instances_info(store)["source"] == key
    np.testing.assert_array_equal(instance_levels(store)[0][:], before)
    assert not list((store.path / "labels").glob("instances.*"))
    # the next run numbers what the store holds now
    out = drain(write_instances(store))
    assert not out["stale"] and instances_info(store)["source"] == glands_fingerprint(store)
    lab = instance_levels(store)[0][:]
    assert not lab[:CHUNK, :CHUNK].any() and not lab[2 * CHUNK:, 2 * CHUNK:].any()


def test_cdma_export_in_store_numbers_once_and_reuses(slide_store, tmp_path, capsys):
    import json

    from src_model.cli import main

    store = _copy(slide_store, tmp_path)
    assert main(["export", str(store.path), "--in-store"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["glands"] >= 8 and not first["reused"] and instances_current(open_store(store.path))
    assert main(["export", str(store.path), "--in-store", "--progress", "json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert lines[-1]["reused"] and lines[-1]["glands"] == first["glands"]
    assert not [e for e in lines if e["event"] == "progress"]  # nothing computed again
    assert main(["export", str(store.path), "--in-store", "--geojson", str(tmp_path / "g.geojson")]) != 0


def test_a_killed_runs_folder_is_removed_and_two_runs_at_once_leave_complete_numbers(slide_store, tmp_path):
    import subprocess
    import sys

    store = _copy(slide_store, tmp_path)
    # what a killed run leaves: its folder named by its (now gone) process
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = store.path / "labels" / f"instances.partial-{int(dead.stdout)}-0000"
    left.mkdir()
    (left / "zarr.json").write_text("{}")
    a, b = write_instances(store), write_instances(open_store(store.path, mode="r+"))
    next(a)
    next(b)
    assert not left.exists()
    before = (store.path / "labels" / "instances" / "zarr.json").exists()
    first = drain(a)
    mid = instance_levels(store)[0][:]
    second = drain(b)
    assert not before and not first["stale"] and not second["stale"]  # each put in place in turn: b's stand
    np.testing.assert_array_equal(instance_levels(store)[0][:], mid)  # the same labels, the same numbers
    assert instances_current(store) and not list((store.path / "labels").glob("instances.*"))
    assert drain(write_instances(store))["reused"]
