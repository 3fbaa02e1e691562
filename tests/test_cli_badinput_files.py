"""Input files the `cdma` commands are given by mistake: each is one line that says what the file is and what to
do, exit status 2, no traceback, nothing written. Real subprocesses on real files.
"""
from __future__ import annotations

import subprocess
import sys


def cdma(*args):
    return subprocess.run([sys.executable, "-m", "src_model.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def one_line(proc, expected):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.strip().splitlines() == [expected]


def test_import_official_of_a_napari_cdma_checkpoint_says_so(tmp_path, lite_checkpoint):
    out = tmp_path / "imported.pt"
    proc = cdma("import-official", lite_checkpoint, "--out", out)
    one_line(proc, f"cdma import-official: error: {lite_checkpoint}: already a napari-cdma checkpoint; use it as it is")
    assert not out.exists()
