"""The README's main job, as a real subprocess: napari + plugin + sample + bundled model -> screenshot."""
import os
import subprocess
import sys

import numpy as np
from PIL import Image


def test_main_job_predicts_and_writes_a_screenshot(tmp_path):
    assert os.environ.get("DISPLAY"), "GUI tests run under Xvfb (pytest-xvfb)"
    shot = tmp_path / "screenshot.png"
    proc = subprocess.run([sys.executable, "-m", "napari_cdma", "--screenshot", str(shot), "--quit",
                           "--project", str(tmp_path / "project")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "predict done" in proc.stderr
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[0] > 300 and img.shape[1] > 600
    assert img.reshape(-1, 3).std(axis=0).mean() > 10  # a rendered window, not a blank frame
