"""What the ``cdma`` commands write: never an existing output replaced without --force, an output folder that cannot
take files said before the work, nothing written into a folder that is not a project store, warnings and other
libraries' notes kept off stdout and out of one-line errors (a walk of the README's commands found each of these).

Real subprocesses, real GlaS images, a real predict-slide store and a real (damaged) pyramidal TIFF.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from src_model.cli import _log_levels


def cdma(*args):
    return subprocess.run([sys.executable, "-m", "src_model.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def one_line(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_predict_into_a_folder_with_its_outputs_needs_force(tmp_path, glas_dir, lite_checkpoint):
    img = glas_dir / "images" / "testA_2.png"
    out = tmp_path / "preds"
    first = cdma("predict", img, "--model", lite_checkpoint, "--out", out, "--tile", 128)
    assert first.returncode == 0, first.stderr
    before = _snapshot(out)
    assert "testA_2_mask.png" in before and "testA_2_summary.json" in before
    again = cdma("predict", img, "--model", lite_checkpoint, "--out", out, "--tile", 128)
    one_line(again, "--force", "testA_2_")
    assert _snapshot(out) == before  # nothing replaced
    other = cdma("predict", glas_dir / "images" / "testA_1.png", "--model", lite_checkpoint, "--out", out,
                 "--tile", 128)
    assert other.returncode == 0, other.stderr  # another image's outputs beside them are fine
    forced = cdma("predict", img, "--model", lite_checkpoint, "--out", out, "--tile", 128, "--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads((out / "testA_2_summary.json").read_text())["image"] == str(img)


def test_evaluate_refuses_an_existing_report_before_evaluating(tmp_path, glas_dir, lite_checkpoint):
    report = tmp_path / "eval.json"
    report.write_text("my earlier report")
    proc = cdma("evaluate", "--data", glas_dir, "--ids", "testA_2", "--model", lite_checkpoint, "--out", report)
    one_line(proc, "--out", "eval.json", "--force")
    assert proc.stdout == ""  # refused before the work: no table
    assert report.read_text() == "my earlier report"
    forced = cdma("evaluate", "--data", glas_dir, "--ids", "testA_2", "--model", lite_checkpoint, "--out", report,
                  "--force")
    assert forced.returncode == 0, forced.stderr
    assert "summary" in json.loads(report.read_text())


def test_an_output_folder_that_cannot_take_files_is_said_before_the_work(tmp_path, glas_dir, lite_checkpoint):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    proc = cdma("evaluate", "--data", glas_dir, "--ids", "testA_2", "--model", lite_checkpoint,
                "--out", blocker / "eval.json")
    one_line(proc, "--out", "cannot write", "a_file")
    assert proc.stdout == ""


def test_export_keeps_existing_files_and_warns_on_stderr(tmp_path, glas_dir):
    from _slides import glas_mosaic, write_pyramidal_tiff

    from src_model.progress import drain
    from src_model.slide_predict import predict_slide

    slide = write_pyramidal_tiff(tmp_path / "mosaic.tif", glas_mosaic(glas_dir, 512, 512), levels=2)
    store = tmp_path / "pred.zarr"
    drain(predict_slide(slide, store, chunk=256, max_chunks=2))  # 2 of 4 chunks predicted
    unrelated = tmp_path / "fake.pt"
    unrelated.write_bytes(b"not yours to replace")
    proc = cdma("export", store, "--geojson", unrelated)
    one_line(proc, "--geojson", "fake.pt", "--force")
    assert unrelated.read_bytes() == b"not yours to replace"
    tif = tmp_path / "labels.tif"
    tif.write_bytes(b"old")
    one_line(cdma("export", store, "--tiff", tif), "--tiff", "--force")
    ok = cdma("export", store, "--geojson", tmp_path / "glands.geojson")
    assert ok.returncode == 0, ok.stderr
    assert "not predicted yet" in ok.stderr and "not predicted yet" not in ok.stdout
    assert json.loads(ok.stdout.strip().splitlines()[-1])["event"] == "done"
    forced = cdma("export", store, "--geojson", unrelated, "--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(unrelated.read_text())["type"] == "FeatureCollection"


@pytest.mark.parametrize("kind", ["empty", "training run"])
def test_retrain_writes_nothing_into_a_folder_that_is_not_a_store(tmp_path, kind):
    folder = tmp_path / "folder"
    folder.mkdir()
    if kind == "training run":
        (folder / "final.pt").write_bytes(b"weights")
    before = sorted(p.name for p in folder.rglob("*"))
    proc = cdma("retrain", folder)
    one_line(proc, "not a napari-cdma project store")
    assert "not empty" not in proc.stderr  # the store's own message for a new store's folder does not apply
    assert sorted(p.name for p in folder.rglob("*")) == before


def test_a_damaged_slide_is_one_line_without_the_tiff_readers_notes(tmp_path):
    rng = np.random.default_rng(0)
    slide = tmp_path / "slide.tif"
    with tifffile.TiffWriter(slide) as tif:
        tif.write((rng.random((1024, 1024, 3)) * 255).astype(np.uint8), tile=(256, 256), photometric="rgb",
                  compression="zlib", subifds=1)
        tif.write((rng.random((512, 512, 3)) * 255).astype(np.uint8), tile=(256, 256), photometric="rgb",
                  compression="zlib", subfiletype=1)
    data = slide.read_bytes()
    slide.write_bytes(data[: len(data) // 2])
    proc = cdma("predict-slide", slide, "--out", tmp_path / "out.zarr")
    one_line(proc, "slide.tif")
    assert not (tmp_path / "out.zarr").exists()


def test_log_levels_keep_other_libraries_quiet_and_ours_informative():
    import logging

    _log_levels(False)
    assert logging.getLogger("ome_zarr.reader").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("distributed.scheduler").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("tifffile").getEffectiveLevel() > logging.ERROR
    assert logging.getLogger("src_model.slide_predict").getEffectiveLevel() == logging.INFO
    assert logging.getLogger("cdma").getEffectiveLevel() == logging.INFO


def test_retrain_names_the_images_trained_on_that_its_table_has_no_row_for(tmp_path, glas_dir):
    """As the dock's line under its table: an image accepted whole (nothing of it held out, no uncorrected tissue of
    it to compare) is named, so that it does not read as left out of the training."""
    import torch

    from napari_cdma.project.store import ProjectStore
    from src_model import build_model
    from src_model.checkpoint import save_checkpoint
    from src_model.io import read_image, read_mask

    root = tmp_path / "store"
    store = ProjectStore.open(root)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "init.pt", build_model("lite"), provenance={"torch": str(torch.__version__)})
    store.add_model(ckpt, parent=None, note="random lite", promoted=True)
    boxes = {"testA_2": [None],  # whole (accepted first: the store holds out every fifth region)
             "testA_1": [(40, 50, 136, 150), (200, 300, 264, 428), (100, 400, 228, 500), (300, 120, 380, 200)]}
    for name, regions in boxes.items():
        image, mask = read_image(glas_dir / "images" / f"{name}.png"), read_mask(glas_dir / "masks" / f"{name}.png")
        for box in regions:
            y0, x0, y1, x1 = box or (0, 0, *image.shape[:2])
            gt = mask[y0:y1, x0:x1]
            store.accept_region(image, (y0, x0, y1, x1), gt, np.zeros_like(gt),
                                model_version=store.current_model_version, source_path=f"{name}.png")
    proc = cdma("retrain", root, "--steps", 1, "--promote", "no", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    done = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = {r["image"] for r in done["per_image"]}
    assert "testA_1.png" in rows and "testA_2.png" not in rows, rows
    notes = [line for line in proc.stderr.splitlines() if line.startswith("not in the table")]
    assert len(notes) == 1 and "testA_2.png" in notes[0] and "testA_1.png" not in notes[0], proc.stderr[-1500:]
