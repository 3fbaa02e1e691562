"""`cdma train` never replaces what a run folder holds without being asked: a run killed before its end (last.pt,
no final.pt) is not restarted over without --resume.

Real subprocesses on the checked-in GlaS images; the run folder is made by a real `cdma train`.
"""
from __future__ import annotations

import json
import subprocess
import sys


def cdma(*args):
    return subprocess.run([sys.executable, "-m", "src_model.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def _train(glas_dir, out, *extra):
    return cdma("train", "--data", glas_dir, "--supervised-only", "--preset", "lite", "--patch", 64, "--batch", 1,
                "--device", "cpu", "--out", out, *extra)


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_killed_run_is_not_restarted_over_without_resume(tmp_path, glas_dir):
    out = tmp_path / "run"
    proc = _train(glas_dir, out, "--labelled-ids", "train_1", "--steps", 2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (out / "final.pt").unlink()  # as a run killed after its last checkpoint: last.pt, split.json, no final.pt
    before = _snapshot(out)
    again = _train(glas_dir, out, "--labelled-ids", "train_1", "--steps", 2)
    assert again.returncode == 2, again.stderr[-2000:]
    assert again.stderr.strip().splitlines() == [
        f"cdma train: error: {out}/last.pt exists (a run that did not finish); pass --resume to continue it or "
        f"choose another --out"]
    assert _snapshot(out) == before
    resumed = _train(glas_dir, out, "--labelled-ids", "train_1", "--steps", 3, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (out / "final.pt").is_file()


def test_resume_on_other_images_keeps_the_runs_record(tmp_path, glas_dir):
    out = tmp_path / "run"
    proc = _train(glas_dir, out, "--labelled-ids", "train_1", "--steps", 2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before = _snapshot(out)
    other = _train(glas_dir, out, "--labelled-ids", "train_2,train_3", "--steps", 4, "--resume")
    assert other.returncode == 2, other.stderr[-2000:]
    lines = other.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cdma train: error: {out}/split.json: the run was started on "
                                                    f"other images (1 labelled, 0 unlabelled; now 2 and 0)"), lines
    assert _snapshot(out) == before  # split.json still says what the checkpoints were trained on
    same = _train(glas_dir, out, "--labelled-ids", "train_1", "--steps", 3, "--resume")
    assert same.returncode == 0, same.stderr[-2000:]
    assert json.loads((out / "split.json").read_text())["labelled"] == ["train_1"]


def test_a_partial_checkpoint_of_a_killed_save_is_removed_and_the_run_resumes(tmp_path, glas_dir):
    out = tmp_path / "run"
    proc = _train(glas_dir, out, "--labelled-ids", "train_1", "--steps", 2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (out / "final.pt").unlink()
    last = (out / "last.pt").read_bytes()
    partial = out / "last.pt.k1ll3d00.tmp"  # what a SIGKILL during atomic_write_bytes leaves: half a checkpoint
    partial.write_bytes(last[: len(last) // 2])
    mine = out / "notes.tmp"
    mine.write_text("not a checkpoint")
    resumed = _train(glas_dir, out, "--labelled-ids", "train_1", "--steps", 3, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"removed {partial}" in resumed.stderr
    assert sorted(p.name for p in out.iterdir()) == ["final.pt", "last.pt", "notes.tmp", "split.json"]
