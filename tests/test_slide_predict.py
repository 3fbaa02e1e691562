"""Streamed whole-slide prediction (src_model.slide_predict, cdma predict-slide) into an OME-Zarr store."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import zarr
from _slides import chunk_files, glas_mosaic, write_pyramidal_tiff

from src_model.progress import drain
from src_model.slide_predict import predict_slide, window_span
from src_model.slide_store import StoreError, open_store

# tile 128, overlap 0.25: stride 96; 512 = 128 + 4 x 96, so predict()'s own tiling of the whole
# image is the uniform grid the streamed path uses, and the two must agree
TILE, OVERLAP, CHUNK = 128, 0.25, 256
ARRAYS = ("0", "1", "labels/glands/0", "labels/glands/1", "uncertainty/0", "uncertainty/1")
LEVEL0 = ("0", "labels/glands/0", "uncertainty/0")


@pytest.fixture(scope="module")
def small_slide(tmp_path_factory, glas_dir):
    image = glas_mosaic(glas_dir, 512, 512)
    return write_pyramidal_tiff(tmp_path_factory.mktemp("slide") / "small.tif", image, levels=2), image


@pytest.fixture(scope="module", params=["chunk", "strip"])
def mode(request):
    """predict_slide's mode: each chunk with its halo, or strips of chunk rows in one pass."""
    return request.param


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, small_slide, lite_checkpoint, mode):
    out = tmp_path_factory.mktemp("store") / f"small_{mode}.zarr"
    summary = drain(predict_slide(small_slide[0], out, model_path=lite_checkpoint, chunk=CHUNK, tile=TILE,
                                  overlap=OVERLAP, min_tissue=0.0, mode=mode))
    assert summary.chunks_done == summary.chunks_total == 4 and summary.chunks_computed == 4
    return out


def _same_store(a, b):
    ra, rb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    for name in ARRAYS:
        np.testing.assert_array_equal(ra[name][:], rb[name][:], err_msg=name)
    np.testing.assert_array_equal(ra["chunks"][:], rb["chunks"][:])


def test_window_covers_exactly_the_grid_tiles_touching_the_chunk():
    # 1000 px, tile 128, stride 96: tiles at 0, 96, ..., 960 (the last reaches past the edge)
    assert window_span(0, 256, 1000, 128, 0.25) == (0, 192 + 128)  # tiles 0, 96, 192 start before 256
    assert window_span(256, 512, 1000, 128, 0.25) == (192, 480 + 128)  # tile 192 ends at 320 > 256; 96 at 224
    assert window_span(768, 1000, 1000, 128, 0.25) == (672, 960 + 128)
    assert window_span(0, 100, 100, 128, 0.25) == (0, 128)  # smaller than a tile: one padded tile


def test_streamed_prediction_equals_the_in_memory_prediction(small_slide, small_store, lite_checkpoint):
    from src_model.checkpoint import load_model
    from src_model.inference import predict

    _, image = small_slide
    ref = predict(load_model(lite_checkpoint), image, tile=TILE, overlap=OVERLAP)
    store = open_store(small_store)
    glands = store.glands[0][:]
    unc = store.uncertainty[0][:].astype(int)
    ref_glands = (ref.labels > 0).astype(np.uint8)
    # labels may only differ where the two classes tie to float rounding
    tie = np.abs(ref.probability[1] - ref.probability[0]) < 1e-4
    assert not ((glands != ref_glands) & ~tie).any()
    assert 0 < glands.mean() < 1  # the random model predicts both classes: the comparison means something
    assert np.abs(unc - np.round(ref.uncertainty * 255)).max() <= 1
    # the pyramid: nearest for labels, the RGB image is the slide's
    np.testing.assert_array_equal(store.glands[1][:], glands[::2, ::2])
    np.testing.assert_array_equal(np.moveaxis(store.image[0][:], 0, 2), image)
    assert store.info.downsample == 1.0 and store.info.settings["tile"] == TILE


def test_dask_workers_give_the_same_store_for_any_number(tmp_path, small_slide, small_store, lite_checkpoint, mode):
    """Workers run one torch thread each, so 1 or 2 local workers, or the worker of a cluster given by its
    scheduler address, compute bit-identical chunks; this process (more threads) agrees to float rounding."""
    stores = {}
    for n in (1, 2):
        stores[n] = tmp_path / f"workers{n}.zarr"
        summary = drain(predict_slide(small_slide[0], stores[n], model_path=lite_checkpoint, chunk=CHUNK, tile=TILE,
                                      overlap=OVERLAP, min_tissue=0.0, workers=n, mode=mode, strip_rows=1))
        assert summary.chunks_computed == 4
    _same_store(stores[1], stores[2])
    # an existing cluster, by its scheduler's address (--scheduler)
    from dask.distributed import LocalCluster

    environ = dict(os.environ)
    try:
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            drain(predict_slide(small_slide[0], tmp_path / "scheduler.zarr", model_path=lite_checkpoint, chunk=CHUNK,
                                tile=TILE, overlap=OVERLAP, min_tissue=0.0, scheduler=cluster.scheduler_address,
                                mode=mode, strip_rows=1))
    finally:
        os.environ.clear()
        os.environ.update(environ)
    _same_store(tmp_path / "scheduler.zarr", stores[1])
    a, b = open_store(stores[2]), open_store(small_store)
    assert np.mean(a.glands[0][:] != b.glands[0][:]) < 1e-3
    assert np.abs(a.uncertainty[0][:].astype(int) - b.uncertainty[0][:]).max() <= 1


def test_max_chunks_stops_early_and_the_next_run_finishes(tmp_path, small_slide, small_store, lite_checkpoint, mode):
    out = tmp_path / "partial.zarr"
    opts = dict(model_path=lite_checkpoint, chunk=CHUNK, tile=TILE, overlap=OVERLAP, min_tissue=0.0, mode=mode)
    first = drain(predict_slide(small_slide[0], out, max_chunks=1, **opts))
    assert (first.chunks_computed, first.chunks_done) == (1, 1)
    rest = drain(predict_slide(small_slide[0], out, **opts))
    assert (rest.chunks_computed, rest.chunks_done) == (3, 4)
    _same_store(out, small_store)


def test_strip_mode_equals_chunk_mode_and_does_not_depend_on_the_strip_height(tmp_path, small_slide,
                                                                             lite_checkpoint):
    """Strips of 1 or 2 chunk rows give bit-identical stores (every forward pass is a full batch); chunk
    mode, whose short last batches round differently, gives the same labels away from float ties and the
    same uncertainty to 1/255."""
    from src_model.checkpoint import load_model
    from src_model.inference import predict

    opts = dict(model_path=lite_checkpoint, chunk=CHUNK, tile=TILE, overlap=OVERLAP, min_tissue=0.0)
    for name, extra in {"chunk": dict(mode="chunk"), "strip1": dict(mode="strip", strip_rows=1),
                        "strip2": dict(mode="strip", strip_rows=2)}.items():
        summary = drain(predict_slide(small_slide[0], tmp_path / f"{name}.zarr", **opts, **extra))
        assert summary.chunks_computed == 4
    _same_store(tmp_path / "strip1.zarr", tmp_path / "strip2.zarr")
    strip, chunk = open_store(tmp_path / "strip1.zarr"), open_store(tmp_path / "chunk.zarr")
    ref = predict(load_model(lite_checkpoint), small_slide[1], tile=TILE, overlap=OVERLAP)
    tie = np.abs(ref.probability[1] - ref.probability[0]) < 1e-4
    assert not ((strip.glands[0][:] != chunk.glands[0][:]) & ~tie).any()
    assert np.abs(strip.uncertainty[0][:].astype(int) - chunk.uncertainty[0][:]).max() <= 1
    np.testing.assert_array_equal(strip.image[0][:], chunk.image[0][:])
    np.testing.assert_array_equal(strip.chunk_stats()[:, :, :3], chunk.chunk_stats()[:, :, :3])


def test_resuming_with_other_settings_is_refused(small_slide, small_store, lite_checkpoint):
    with pytest.raises(StoreError, match="tile") as err:
        drain(predict_slide(small_slide[0], small_store, model_path=lite_checkpoint, chunk=CHUNK, tile=160,
                            overlap=OVERLAP, min_tissue=0.0))
    assert "\n" not in str(err.value)


def _cli(*args):
    return [sys.executable, "-m", "src_model.cli", "predict-slide", *map(str, args)]


@pytest.mark.parametrize("cli_mode, kill_at", [("chunk", 2), ("strip", 5)])
def test_a_killed_run_resumes_without_recomputing_finished_chunks(tmp_path, glas_dir, lite_checkpoint, cli_mode,
                                                                  kill_at):
    """Strip mode: both chunk rows are one strip; its 2 glass chunks are written first, then the 3 tissue
    chunks of row 0 once the band has passed it; killed after those, the rerun computes only row 1."""
    image = glas_mosaic(glas_dir, 512, 1024, glass=256)  # the right column of chunks is glass
    slide = write_pyramidal_tiff(tmp_path / "wide.tif", image, levels=2)
    args = (slide, "--model", lite_checkpoint, "--chunk", CHUNK, "--tile", TILE, "--overlap", OVERLAP,
            "--mode", cli_mode)
    out = tmp_path / "killed.zarr"
    proc = subprocess.Popen(_cli(*args, "--out", out, "--progress", "json"), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if json.loads(line).get("step", 0) >= kill_at:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(timeout=60)
    store = open_store(out)
    done_before = store.done()
    assert kill_at <= done_before.sum() < done_before.size, f"the run was killed after {kill_at} chunks, before the end"
    record_before = store.chunk_stats()
    files_before = chunk_files(out, LEVEL0)

    rerun = subprocess.run(_cli(*args, "--out", out), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    result = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert result["chunks_computed"] == done_before.size - done_before.sum()
    assert result["chunks_done"] == result["chunks_total"] == 8 and result["chunks_glass"] == 2
    files_after = chunk_files(out, LEVEL0)
    finished = {name: mtime for name, mtime in files_before.items()
                if done_before[tuple(int(v) for v in name.split("/")[-2:])]}  # key .../c/[0/]<cy>/<cx>
    assert finished and all(files_after[name] == mtime for name, mtime in finished.items()), \
        "a finished chunk was written again"
    np.testing.assert_array_equal(open_store(out).chunk_stats()[done_before], record_before[done_before])

    clean = tmp_path / "clean.zarr"  # a run without interruption, in the same kind of process
    assert subprocess.run(_cli(*args, "--out", clean), capture_output=True, timeout=600).returncode == 0
    _same_store(out, clean)
    glands = open_store(out).glands[0][:]
    assert not glands[:, -256:].any()  # glass: not predicted


@pytest.mark.parametrize("argv, option", [
    (["--level", "-1"], "--level"), (["--workers", "two"], "--workers"), (["--chunk", "1000"], "--chunk"),
    (["--chunk", "128"], "--chunk"), (["--overlap", "0.95"], "--overlap"), (["--min-tissue", "1.5"], "--min-tissue"),
    (["--tile", "8"], "--tile"), (["--batch", "0"], "--batch"), (["--max-chunks", "0"], "--max-chunks"),
    (["--scheduler", "not an address"], "--scheduler"),
    (["--workers", "2", "--scheduler", "tcp://h:8786"], "--scheduler"),
])
def test_cli_options_are_range_checked(tmp_path, capsys, argv, option):
    from src_model.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["predict-slide", "slide.tif", "--out", str(tmp_path / "s.zarr"), *argv])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and option in err and "\n" not in err
    assert not (tmp_path / "s.zarr").exists()


def test_cli_bad_slide_and_level_are_one_line(tmp_path, capsys, small_slide):
    from src_model.cli import main

    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage")
    assert main(["predict-slide", str(bad), "--out", str(tmp_path / "a.zarr")]) == 2
    assert main(["predict-slide", str(small_slide[0]), "--out", str(tmp_path / "b.zarr"), "--level", "5"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "bad.tif" in lines[0] and "--level 5" in lines[1]
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "b.zarr").exists()


@pytest.mark.parametrize("command", ["predict-slide", "export"])
def test_help_imports_neither_torch_nor_dask(command):
    code = ("import sys\nfrom src_model.cli import main\ntry:\n    main([%r, '--help'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0\n"
            "heavy = [m for m in ('torch', 'dask', 'openslide', 'ome_zarr') if m in sys.modules]\n"
            "assert not heavy, heavy\n") % command
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-1000:]
    assert f"usage: cdma {command}" in proc.stdout
