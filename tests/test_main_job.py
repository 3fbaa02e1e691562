"""The README's main job, as a real subprocess: napari + plugin + sample + bundled model -> screenshot."""
import json
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


def test_the_main_job_leaves_the_store_a_pathologist_opened_last_alone(tmp_path):
    """Walk 26: a new dock starts on the store opened last; the demo must not predict the sample into that (a lab's)
    store, nor become the store remembered: it uses ~/napari-cdma-project. Real subprocess, $HOME in tmp_path."""
    from napari_cdma._widget_store import CONFIG_ENV, LAST_STORE_FILE
    from napari_cdma.project.store import ProjectStore

    home, config, lab = tmp_path / "home", tmp_path / "config", tmp_path / "lab_store"
    home.mkdir()
    config.mkdir()
    ProjectStore.open(lab, create=True)
    before = sorted(str(p.relative_to(lab)) for p in lab.rglob("*"))
    (config / LAST_STORE_FILE).write_text(json.dumps({"store": str(lab)}))
    env = {k: v for k, v in os.environ.items() if k != "NAPARI_CDMA_PROJECT"}
    env.update(HOME=str(home), **{CONFIG_ENV: str(config)})
    proc = subprocess.run([sys.executable, "-m", "napari_cdma", "--quit"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(str(p.relative_to(lab)) for p in lab.rglob("*")) == before  # nothing written into the lab's store
    assert json.loads((config / LAST_STORE_FILE).read_text()) == {"store": str(lab)}  # still the one remembered
    assert any((home / "napari-cdma-project" / "predictions").iterdir())  # the sample went to the demo's store
