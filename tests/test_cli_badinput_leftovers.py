"""The leftovers of the headless bad-input audit of `cdma`: each is one clear line (exit 2 for bad input, no
traceback) and loses nothing; files are put in place whole (temp file + rename), never half-written.

Real `cdma` subprocesses on real files; a full disk is RLIMIT_FSIZE in the child (as tests/test_cli_badinput_disk.py).
"""
from __future__ import annotations

import json
import resource
import signal
import struct
import subprocess
import sys

import numpy as np


def cdma(*args, limit=None):
    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "src_model.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, preexec_fn=limited if limit else None)


def _error(proc, code=2):
    """The last stderr line, after checking the exit status and that there is no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


def _tree(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ 1. predict-slide on a TIFF whose header lies

def _lying_tiff(path, rows):
    """An uncompressed 600 x 600 RGB TIFF in one strip whose header then says it has ``rows`` rows."""
    import tifffile

    img = np.random.default_rng(0).integers(0, 256, (600, 600, 3), dtype=np.uint8)
    tifffile.imwrite(path, img, photometric="rgb", rowsperstrip=600)
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags["ImageLength"]
        offset, fmt = tag.valueoffset, "<H" if tag.dtype == 3 else "<I"
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, rows)
    path.write_bytes(bytes(data))
    return path


def _garbled_tiff(path):
    """A tiled zlib TIFF (256 px tiles) whose first tile's compressed bytes are zeroed: its header is true."""
    import tifffile

    img = np.random.default_rng(0).integers(0, 256, (600, 600, 3), dtype=np.uint8)
    tifffile.imwrite(path, img, tile=(256, 256), photometric="rgb", compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    data = bytearray(path.read_bytes())
    data[offset:offset + count] = b"\0" * count
    path.write_bytes(bytes(data))
    return path


def _predict_slide(slide, out, model, *extra):
    return cdma("predict-slide", slide, "--out", out, "--model", model, "--chunk", 256, "--tile", 128, *extra)


def test_predict_slide_on_a_tiff_whose_header_lies_creates_no_store(tmp_path, lite_checkpoint):
    slide = _lying_tiff(tmp_path / "lies.tif", 1200)  # 1200 rows said, one strip of 600 rows held
    out = tmp_path / "lies.zarr"
    error = _error(_predict_slide(slide, out, lite_checkpoint))
    assert error.startswith(f"cdma predict-slide: error: {slide}: truncated"), error
    assert not out.exists()


def test_predict_slide_on_damaged_tile_data_removes_the_store_it_made(tmp_path, lite_checkpoint):
    slide = _garbled_tiff(tmp_path / "garbled.tif")
    out = tmp_path / "garbled.zarr"
    error = _error(_predict_slide(slide, out, lite_checkpoint))
    assert error.startswith(f"cdma predict-slide: error: {slide}: cannot read level 0 region"), error
    assert not out.exists()  # nothing was predicted: the store skeleton it made is gone


def test_predict_slide_never_removes_a_store_that_was_there(tmp_path, lite_checkpoint):
    """A store an earlier run made (one chunk predicted) is resumed; the run then fails on the damaged tile: the store
    stays, its description and the chunk predicted first byte for byte."""
    import tifffile

    slide = tmp_path / "garbled.tif"
    img = np.random.default_rng(0).integers(0, 256, (600, 600, 3), dtype=np.uint8)
    tifffile.imwrite(slide, img, tile=(256, 256), photometric="rgb", compression="zlib")
    out = tmp_path / "garbled.zarr"
    first = _predict_slide(slide, out, lite_checkpoint, "--max-chunks", 1, "--mode", "chunk")
    assert first.returncode == 0, first.stderr[-2000:]
    with tifffile.TiffFile(slide) as tif:  # now damage the last tile, which the first run did not read
        offset, count = tif.pages[0].dataoffsets[-1], tif.pages[0].databytecounts[-1]
    data = bytearray(slide.read_bytes())
    data[offset:offset + count] = b"\0" * count
    slide.write_bytes(bytes(data))
    before = _tree(out)
    error = _error(_predict_slide(slide, out, lite_checkpoint, "--mode", "chunk"))
    assert "cannot read level 0 region" in error, error
    after = _tree(out)
    assert set(after) >= set(before)  # every file of the store is still there
    # review 18 finding 4: the files the failed run must not touch, compared byte for byte (the done map, the
    # pyramid's lower levels and the other chunks are the run's to write): the store's description (zarr.json) and
    # the first chunk's labels, uncertainty and image (level 0: one 256 x 256 chunk a file)
    kept = ["zarr.json", "labels/glands/0/c/0/0", "uncertainty/0/c/0/0", "0/c/0/0/0"]
    assert set(kept) <= set(before), sorted(before)
    assert [name for name in kept if after[name] != before[name]] == []

    from src_model.slide_store import open_store

    assert open_store(out).done()[0, 0]  # with the chunk the first run predicted


# ------------------------------------------------------------------ 2. split.json and JOB.json written whole

def test_split_record_on_a_full_disk_keeps_the_earlier_one(tmp_path, glas_dir):
    out = tmp_path / "run"
    args = ("train", "--data", glas_dir, "--labelled-ids", "train_1", "--supervised-only", "--preset", "lite",
            "--patch", 64, "--batch", 1, "--device", "cpu", "--out", out)
    first = cdma(*args, "--steps", 2)
    assert first.returncode == 0, first.stderr[-2000:]
    split = (out / "split.json").read_bytes()
    assert len(split) > 32
    proc = cdma(*args, "--steps", 4, "--resume", limit=32)  # split.json is rewritten first: it does not fit
    error = _error(proc, 1)
    assert error == f"cdma train: error: {out}/split.json: File too large; free space there or write elsewhere", error
    assert (out / "split.json").read_bytes() == split  # was truncated to 0 bytes by an in-place rewrite
    assert sorted(p.name for p in out.iterdir()) == ["final.pt", "last.pt", "split.json"]  # no temp file left


def _project(path, glas_dir, lite_checkpoint):
    """A project store: a random lite model as v0001 and one accepted region of testA_1."""
    from PIL import Image

    from napari_cdma.project.store import ProjectStore

    store = ProjectStore.open(path)
    store.add_model(lite_checkpoint, parent=None, note="random lite", promoted=True)
    image = np.asarray(Image.open(glas_dir / "images" / "testA_1.png").convert("RGB"))
    mask = (np.asarray(Image.open(glas_dir / "masks" / "testA_1.png")) > 0).astype(np.uint8)
    y0, x0, y1, x1 = 128, 224, 224, 320
    store.accept_region(image, (y0, x0, y1, x1), mask[y0:y1, x0:x1], np.zeros((y1 - y0, x1 - x0), np.uint8),
                        model_version="v0001", source_path=glas_dir / "images" / "testA_1.png", image_name="testA_1")
    return store


def test_retrain_job_file_on_a_full_disk_is_not_left_half_written(tmp_path, glas_dir, lite_checkpoint):
    store = _project(tmp_path / "store", glas_dir, lite_checkpoint)
    out = tmp_path / "retrain-run"
    proc = cdma("retrain", store.root, "--steps", 1, "--promote", "no", "--device", "cpu", "--out", out, limit=64)
    error = _error(proc, 1)
    assert error == f"cdma retrain: error: {out}/JOB.json: File too large; free space there or write elsewhere", error
    assert list(out.iterdir()) == []  # no half-written JOB.json (the worker never started)


# ------------------------------------------------------------------ 3. retrain on a damaged model file

def test_retrain_on_a_damaged_model_file_says_what_to_do(tmp_path, glas_dir, lite_checkpoint):
    store = _project(tmp_path / "store", glas_dir, lite_checkpoint)
    model = store.root / "models" / "v0001.pt"
    with model.open("r+b") as f:
        f.seek(100)
        f.write(b"\0" * 16)
    proc = cdma("retrain", store.root, "--steps", 1, "--promote", "no", "--device", "cpu", "--out", tmp_path / "r")
    error = _error(proc, 2)
    assert error == (f"cdma retrain: error: model v0001: {model} does not match its recorded checksum (damaged "
                     f"file); restore it from a backup, or make another version current (the dock's Model versions "
                     f"panel: Roll back to selected)"), error


# ------------------------------------------------------------------ 4. bool and complex images

def test_bool_and_complex_images_get_their_dtype_error_and_no_greyscale_warning(tmp_path, lite_checkpoint):
    import tifffile

    files = {"mask.npy": np.zeros((40, 40), bool), "waves.npy": np.zeros((40, 40), np.complex64)}
    for name, arr in files.items():
        np.save(tmp_path / name, arr)
    tifffile.imwrite(tmp_path / "mask.tif", np.zeros((40, 40), bool))
    tifffile.imwrite(tmp_path / "waves.tif", np.zeros((40, 40), np.complex64))
    expected = {"mask.npy": "boolean array is a mask, not an image (shape (40, 40), dtype bool)",
                "mask.tif": "boolean array is a mask, not an image (shape (40, 40), dtype bool)",
                "waves.npy": "unsupported image dtype (shape (40, 40), dtype complex64)",
                "waves.tif": "unsupported image dtype (shape (40, 40), dtype complex64)"}
    for name, message in expected.items():
        out = tmp_path / f"preds-{name}"
        proc = cdma("predict", tmp_path / name, "--model", lite_checkpoint, "--out", out)
        assert proc.returncode == 2, (name, proc.stderr)
        assert proc.stderr.strip().splitlines() == [f"cdma predict: error: {tmp_path / name}: {message}"], proc.stderr
        assert not out.exists()


# ------------------------------------------------------------------ 5. resume of a run of the other kind

def _train(glas_dir, out, *extra):
    return cdma("train", "--data", glas_dir, "--labelled-ids", "train_1", "--supervised-only", "--patch", 64,
                "--batch", 1, "--device", "cpu", "--out", out, *extra)


def test_fine_tune_resume_of_a_from_scratch_run_is_refused(tmp_path, glas_dir, lite_checkpoint):
    run = tmp_path / "scratch"
    first = _train(glas_dir, run, "--preset", "lite", "--steps", 2)
    assert first.returncode == 0, first.stderr[-2000:]
    before = _tree(run)
    error = _error(_train(glas_dir, run, "--init", lite_checkpoint, "--steps", 4, "--resume"))
    assert error == (f"cdma train: error: {run}/last.pt: a from-scratch training run, not a fine-tuning run; "
                     f"continue it with cdma train --resume without --init, or fine-tune from it with "
                     f"--init {run}/last.pt and another --out"), error
    assert _tree(run) == before


def test_train_resume_of_a_fine_tuning_run_is_refused(tmp_path, glas_dir, lite_checkpoint):
    run = tmp_path / "tuned"
    first = _train(glas_dir, run, "--init", lite_checkpoint, "--steps", 2)
    assert first.returncode == 0, first.stderr[-2000:]
    before = _tree(run)
    error = _error(_train(glas_dir, run, "--preset", "lite", "--steps", 4, "--resume"))
    assert error == (f"cdma train: error: {run}/last.pt: a fine-tuning run (--init {lite_checkpoint}), not a "
                     f"from-scratch training run; continue it with cdma train --resume --init {lite_checkpoint}, "
                     f"or choose another --out"), error
    assert _tree(run) == before
    ok = _train(glas_dir, run, "--init", lite_checkpoint, "--steps", 3, "--resume")  # its own kind resumes
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads(ok.stdout.strip().splitlines()[-1])["steps"] == 3


def test_fine_tuning_resume_with_another_init_is_refused(tmp_path, glas_dir, lite_checkpoint):
    """Review 18 finding 1: a fine-tuning run continued from another model's --init, and its provenance then named
    that model. It resumes only with its own --init (compared as resolved paths: the run records the value given)."""
    import torch

    import src_model
    from src_model.checkpoint import read_checkpoint, save_checkpoint

    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    save_checkpoint(other, src_model.build_model("lite"), provenance={"torch": str(torch.__version__)})
    run = tmp_path / "tuned"
    first = _train(glas_dir, run, "--init", lite_checkpoint, "--steps", 2)
    assert first.returncode == 0, first.stderr[-2000:]
    before = _tree(run)
    proc = _train(glas_dir, run, "--init", other, "--steps", 4, "--resume")
    error = _error(proc)
    assert error == (f"cdma train: error: {run}/last.pt: the run was started from --init {lite_checkpoint}, not "
                     f"--init {other}; continue it with cdma train --resume --init {lite_checkpoint}, or start a "
                     f"run from --init {other} with another --out"), error
    assert [line for line in proc.stderr.splitlines() if "error" in line] == [error]
    assert _tree(run) == before  # nothing written
    same = lite_checkpoint.parent / ".." / lite_checkpoint.parent.name / lite_checkpoint.name  # its own, spelt apart
    ok = _train(glas_dir, run, "--init", same, "--steps", 3, "--resume")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads(ok.stdout.strip().splitlines()[-1])["steps"] == 3
    assert read_checkpoint(run / "final.pt")["provenance"]["init"] == str(same)


def test_predict_slide_on_an_uncompressed_tiff_short_of_its_headers_bytes_creates_no_store(tmp_path, lite_checkpoint):
    """Review 18 finding 3: the check of an uncompressed TIFF's byte count (as many strips as its header's size needs,
    too few bytes in them): one strip of 600 rows, a header saying 1200 rows and RowsPerStrip 2**32 - 1 (one strip
    for the whole image, so the strip count matches and only the bytes are short)."""
    import tifffile

    slide = tmp_path / "short.tif"
    img = np.random.default_rng(0).integers(0, 256, (600, 600, 3), dtype=np.uint8)
    tifffile.imwrite(slide, img, photometric="rgb", rowsperstrip=600)
    data = bytearray(slide.read_bytes())
    with tifffile.TiffFile(slide) as tif:
        for name, value in (("ImageLength", 1200), ("RowsPerStrip", 0xFFFFFFFF)):
            tag = tif.pages[0].tags[name]
            struct.pack_into("<H" if tag.dtype == 3 else "<I", data, tag.valueoffset,
                             min(value, 0xFFFF) if tag.dtype == 3 else value)
    slide.write_bytes(bytes(data))
    with tifffile.TiffFile(slide) as tif:  # the file is as meant: one strip, the header's 1200 rows
        assert len(tif.pages[0].dataoffsets) == 1 and tif.pages[0].imagelength == 1200
    out = tmp_path / "short.zarr"
    error = _error(_predict_slide(slide, out, lite_checkpoint))
    assert error == (f"cdma predict-slide: error: {slide}: truncated: level 0 holds {600 * 600 * 3} bytes of "
                     f"uncompressed image data where its header's 1200 x 600 size needs {1200 * 600 * 3}"), error
    assert not out.exists()
