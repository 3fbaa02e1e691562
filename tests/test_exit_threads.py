"""A process that exits while one of the dock's daemon threads is still in torch's C++ must not abort.

Python ends such a thread with ``pthread_exit`` once finalization began; inside torch's C++ that aborted the
process ("terminate called without an active exception", exit code 134): a script that opened the dock and exited
while the warm-up thread was still loading the model (walk 20). Real subprocesses, real torch.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def test_exit_waits_for_a_thread_busy_in_torch():
    # the dock's own once-per-process thread starter, with a torch workload that lasts 3 s (a stand-in for the
    # model load, whose length depends on the machine); the script exits 0.3 s in
    r = _run("""
        import time
        import torch
        from napari_cdma import _predict_stream as ps

        def busy():
            a = torch.ones(600, 600)
            end = time.monotonic() + 3.0
            while time.monotonic() < end:
                a = torch.mm(a, a).clamp_(0, 1)

        thread = ps._start_once([], busy, "busy-in-torch")
        time.sleep(0.3)
        print("alive at exit:", thread.is_alive(), flush=True)
        """)
    assert "alive at exit: True" in r.stdout
    assert r.returncode == 0 and "terminate called" not in r.stderr, (r.returncode, r.stderr[-2000:])


def test_exit_while_the_engine_warms_up_does_not_abort():
    # the real warm-up: imports the engine, then loads the bundled model; exit once its last import is there
    r = _run("""
        import sys, time
        from napari_cdma import _predict_stream as ps

        thread = ps.warm_engine()
        while "napari_cdma.project.store" not in sys.modules:
            time.sleep(0.002)
        time.sleep(0.3)
        print("alive at exit:", thread.is_alive(), flush=True)
        """)
    assert r.returncode == 0 and "terminate called" not in r.stderr, (r.returncode, r.stdout, r.stderr[-2000:])
