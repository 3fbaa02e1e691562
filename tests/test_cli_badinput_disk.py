"""A disk that cannot take the output (full, or a quota / file-size limit) during `cdma train` and `cdma predict`:
one line naming the file or folder, exit status 1, no Python traceback, and nothing lost (an earlier checkpoint or
earlier outputs stay as they were, no partial files left).

The write failure is real: the child process runs under RLIMIT_FSIZE, so the kernel refuses every write past
the limit (EFBIG), as a full disk refuses them with ENOSPC; no root or tmpfs needed.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys

LIMIT = 256 * 1024  # bytes any one file may grow to: split.json fits, a checkpoint or a map does not


def _limited():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def cdma(*args, limited=False):
    return subprocess.run([sys.executable, "-m", "src_model.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, preexec_fn=_limited if limited else None)


def _train(glas_dir, out, steps, *extra, limited=False):
    return cdma("train", "--data", glas_dir, "--labelled-ids", "train_1", "--supervised-only", "--preset", "lite",
                "--patch", 64, "--batch", 1, "--steps", steps, "--device", "cpu", "--out", out, *extra,
                limited=limited)


def test_train_checkpoint_on_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path, glas_dir):
    out = tmp_path / "run"
    first = _train(glas_dir, out, 2)
    assert first.returncode == 0, first.stderr[-2000:]
    last = (out / "last.pt").read_bytes()
    proc = _train(glas_dir, out, 4, "--resume", limited=True)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("cdma train: error: "), error
    assert error.endswith(f"{out}/final.pt: File too large; free space there or write elsewhere"), error
    assert (out / "last.pt").read_bytes() == last  # the checkpoint to resume from is intact
    assert sorted(p.name for p in out.iterdir()) == ["final.pt", "last.pt", "split.json"]  # no temp file left


def test_predict_on_a_full_disk_names_the_output_folder(tmp_path, glas_dir, lite_checkpoint):
    out = tmp_path / "preds"
    proc = cdma("predict", glas_dir / "images" / "testA_2.png", "--model", lite_checkpoint, "--out", out,
                "--tile", 128, limited=True)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error == f"cdma predict: error: {out}: File too large; free space there or write elsewhere", error
    assert list(out.iterdir()) == []  # no partial maps left


def test_predict_force_replaces_each_output_whole(tmp_path, glas_dir, lite_checkpoint):
    """--force puts every new output file in place by a rename: the old file is never rewritten in place, where a
    kill or a full disk half-way would leave it truncated. A hard link to each old file keeps its old bytes."""
    image = glas_dir / "images" / "testA_2.png"
    out = tmp_path / "preds"
    first = cdma("predict", image, "--model", lite_checkpoint, "--out", out, "--tile", 128)
    assert first.returncode == 0, first.stderr[-2000:]
    kept = tmp_path / "kept"
    kept.mkdir()
    old = {}
    for p in sorted(out.iterdir()):
        os.link(p, kept / p.name)
        old[p.name] = p.read_bytes()
    (out / "testA_2_summary.json").write_text('{"note": "my edited summary"}')  # in place: the link sees it
    old["testA_2_summary.json"] = (kept / "testA_2_summary.json").read_bytes()
    again = cdma("predict", image, "--model", lite_checkpoint, "--out", out, "--tile", 128, "--force")
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in sorted(kept.iterdir())} == old
    assert json.loads((out / "testA_2_summary.json").read_text())["image"] == str(image)


def _export_limited(*args):
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # any GeoJSON or TIFF of the test slide is larger
    return subprocess.run([sys.executable, "-m", "src_model.cli", "export", *map(str, args)], capture_output=True,
                          text=True, timeout=600, preexec_fn=limit)


def test_export_on_a_full_disk_names_the_file(tmp_path, predicted_slide):
    out = tmp_path / "exports"
    out.mkdir()
    for option, name in (("--geojson", "glands.geojson"), ("--tiff", "glands.tif")):
        proc = _export_limited(predicted_slide, option, out / name)
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines() == [
            f"cdma export: error: {out / name}: File too large; free space there or write elsewhere"]
        assert list(out.iterdir()) == []  # no partial file
