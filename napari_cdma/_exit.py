"""Worker threads at interpreter exit.

napari asks its workers to quit and waits for them when its application quits (File > Exit), but not when a
script closes the viewer and Python then exits. A worker thread of the dock still running then (reading a
store, watching a numbering process) meets Qt objects that Python's teardown has already deleted, and PyQt
aborts the process (pathologist walk: exit code 134 in 2 of 3 runs after `viewer.close()` during a slide's
numbering). :func:`install` registers, once, an exit hook that asks every running worker to quit and waits
for them a bounded time, while Python and Qt are still whole.
"""
from __future__ import annotations

import atexit
import logging
import threading

logger = logging.getLogger(__name__)

#: How long the exit hook waits for running workers to finish after asking them to quit.
EXIT_WAIT_MS = 5000

_installed = False


def quit_workers(wait_ms: int = EXIT_WAIT_MS) -> bool:
    """Ask every running superqt / napari worker to quit and wait up to ``wait_ms``; True when all ended."""
    from superqt.utils import WorkerBase

    try:
        WorkerBase.await_workers(wait_ms)
    except RuntimeError as exc:  # a worker that never yields cannot be stopped: say so and go on exiting
        logger.warning("at exit: %s", exc)
        return False
    return True


#: How long the exit waits for a thread of the dock's own (:func:`join_at_exit`) still running.
THREAD_EXIT_WAIT_S = 30.0


def join_at_exit(thread: threading.Thread, timeout: float = THREAD_EXIT_WAIT_S) -> None:
    """Wait at interpreter exit, up to ``timeout`` seconds, for a daemon ``thread`` of the dock still running.

    Python (3.11, 3.12) ends a daemon thread that wants the GIL back after finalization began with ``pthread_exit``;
    inside torch's C++ (releasing and taking back the GIL around an operation) that unwinds through a ``noexcept``
    frame and the process aborts: "terminate called without an active exception", exit code 134. A script that
    opened the dock and exited while its warm-up thread was still loading the model aborted so (walk 20: a test
    run; ``tests/test_exit_threads.py``). Registered with :mod:`atexit`, which runs while Python is whole.
    """
    def join() -> None:
        if thread.is_alive():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("at exit: thread %r still running after %.0f s", thread.name, timeout)

    atexit.register(join)


def install() -> None:
    """Register :func:`quit_workers` to run at interpreter exit (once per process)."""
    global _installed
    if not _installed:
        atexit.register(quit_workers)
        _installed = True


__all__ = ["EXIT_WAIT_MS", "quit_workers", "install"]
