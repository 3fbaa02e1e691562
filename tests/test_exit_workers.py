"""A script that closes the viewer and exits while a worker thread runs: the dock's exit hook
(napari_cdma._exit) asks the worker to quit and waits for it while Python and Qt are still whole, so the
worker ends cleanly instead of running into Qt objects that Python's teardown deleted (which aborted the
process in a pathologist walk: exit code 134 after `viewer.close()` during a slide's numbering)."""
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    import napari
    from qtpy.QtWidgets import QApplication
    from superqt.utils import create_worker
    if sys.argv[2] == "dock":
        import napari_cdma._widget  # noqa: F401  the dock's module installs the exit hook

    def slow():
        for n in range(400):
            time.sleep(0.05)
            Path(sys.argv[1]).write_text(str(n))  # how far it got
            yield n

    viewer = napari.Viewer(show=False)
    worker = create_worker(slow)
    worker.yielded.connect(lambda n: None)
    worker.start()
    for _ in range(30):
        QApplication.processEvents()
        time.sleep(0.01)
    viewer.close()
''')


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs the X display that pytest-xvfb provides")
def test_a_running_worker_ends_cleanly_when_a_script_exits(tmp_path):
    script = tmp_path / "exit.py"
    script.write_text(SCRIPT)
    done = tmp_path / "done.txt"
    proc = subprocess.run([sys.executable, str(script), str(done), "dock"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "NAPARI_CONFIG": str(tmp_path / "napari.yaml")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "aborted thread" not in proc.stderr, proc.stderr[-2000:]
    assert int(done.read_text()) < 100  # the worker ran, and stopped when asked: not after its 400 steps
