"""The dock's worker threads, made so that a finished worker keeps nothing alive.

napari registers every worker made by ``napari.qt.threading.create_worker`` in the viewer's task list,
with the worker's ``quit`` as the task's cancel callback, and never removes it; its status slots hold the
worker's function. A finished worker therefore lives as long as the viewer, and with it whatever it refers
to: its function's arguments (an image, an edited slide window), a bound method's object and the slots
connected to its signals. Each Predict kept its image array alive after the image was closed
(pathologist walk: RSS stayed at 721 MB after every layer was removed).

So the dock's workers run module-level functions (napari's slots then hold nothing else), their slots hold
no data (bound methods of the panels, which keep what a run needs on themselves until it ends), and
:func:`create_worker` drops the call's arguments and generator once the worker has finished. Slots are never
disconnected: a disconnection while the ``finished`` signal's queued calls are being delivered (napari's
activity dialog runs ``processEvents`` inside them) dropped the panel's own ``finished`` call, and the job never
ended (a slide test hung).
"""
from __future__ import annotations

from typing import Any, Callable


def create_worker(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``napari.qt.threading.create_worker(func, *args, **kwargs)`` that drops its function, arguments and
    generator once it has finished (:func:`release`)."""
    from napari.qt.threading import create_worker as napari_create_worker

    worker = napari_create_worker(func, *args, **kwargs)
    worker.finished.connect(lambda: release(worker))
    return worker


def release(worker: Any) -> None:
    """Drop the call a finished ``worker`` ran: its function, arguments and (spent) generator."""
    for attr, empty in (("_func", None), ("_args", ()), ("_kwargs", {}), ("_gen", None)):
        if hasattr(worker, attr):
            setattr(worker, attr, empty)


__all__ = ["create_worker", "release"]
