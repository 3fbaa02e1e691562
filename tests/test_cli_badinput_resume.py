"""`cdma train --resume` on a run folder whose last.pt does not fit the command (another preset, another schedule):
one line naming the checkpoint and what to do, exit status 2, no traceback, and the checkpoint left as it was.

Real subprocesses on the checked-in GlaS images; the run folder is made by a real 2-step `cdma train`.
"""
from __future__ import annotations

import subprocess
import sys

import pytest


def cdma(*args):
    return subprocess.run([sys.executable, "-m", "src_model.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def _train(glas_dir, out, *extra):
    return cdma("train", "--data", glas_dir, "--labelled-ids", "train_1", "--supervised-only", "--patch", 64,
                "--batch", 1, "--device", "cpu", "--out", out, *extra)


@pytest.fixture
def lite_run(tmp_path, glas_dir):
    out = tmp_path / "run"
    proc = _train(glas_dir, out, "--preset", "lite", "--steps", 2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def _refused(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("cdma train: error: "), error
    for needle in needles:
        assert needle in error, (needle, error)


def test_resume_with_another_preset_names_the_checkpoint(lite_run, glas_dir):
    last = (lite_run / "last.pt").read_bytes()
    proc = _train(glas_dir, lite_run, "--preset", "paper", "--steps", 4, "--resume")
    _refused(proc, f"{lite_run}/last.pt", "another structure", "--preset")
    assert (lite_run / "last.pt").read_bytes() == last


def test_resume_with_another_schedule_names_the_checkpoint(lite_run, glas_dir):
    last = (lite_run / "last.pt").read_bytes()
    proc = _train(glas_dir, lite_run, "--preset", "lite", "--schedule", "release", "--steps", 4, "--resume")
    _refused(proc, f"{lite_run}/last.pt", "optimiser state")
    assert (lite_run / "last.pt").read_bytes() == last
