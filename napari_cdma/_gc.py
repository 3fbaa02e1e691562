"""Short garbage collections in the viewer process.

Once the dock has imported what a prediction needs (torch, the engine, napari's labels modules), the
napari process tracks about half a million container objects, nearly all of them made at import time
and alive until it exits. Python's full (generation 2) collection walks every one of them: 250-285 ms of
GUI-thread time on a quiet 2-core machine, more on a busy one, at moments nobody chooses (a full
collection starts after enough allocations: while layers are built, a prediction is handed over, the
slide is panned). :func:`freeze_when_warm` moves the objects alive when the dock opens, and again at the
end of its warm-up, into the collector's permanent generation (:func:`gc.freeze`), which collections
skip; later objects (layers, predictions, shapes) are collected as before, and cheaply.

A frozen object that becomes garbage is not collected until it is unfrozen. The layers the viewer held at
freeze time are the ones that matter (an H&E image's array is freed only by a collection, because a
layer's events refer back to it): once removed frozen layers hold :data:`REFREEZE_BYTES` of data,
:class:`Freezer` unfreezes, collects once and freezes again, in a later event-loop turn (a stall as long as
a full collection took before, where it frees memory). The layers then in the viewer are frozen from then on.

``NAPARI_CDMA_GC_FREEZE=0`` turns this off (the test suite does, except where it tests it).
"""
from __future__ import annotations

import gc
import os
import time
import weakref
from typing import Any, Callable, List, Optional

from qtpy.QtCore import QObject, QTimer

#: every live Freezer: after any freeze each remembers its viewer's layers (frozen now, whoever froze them)
_FREEZERS: "weakref.WeakSet[Freezer]" = weakref.WeakSet()

ENV = "NAPARI_CDMA_GC_FREEZE"
#: How often the warm-up is checked for its end.
POLL_MS = 250
#: Bytes of removed frozen layers' data that make a collection worth its stall (smaller ones wait for more).
REFREEZE_BYTES = 32 * 2**20


def enabled() -> bool:
    """Whether the dock freezes the collector's long-lived objects (:data:`ENV`, on unless "0")."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class Freezer:
    """Freezes the process's objects once ``ready()`` is true (polled every :data:`POLL_MS`), and keeps
    the layers of ``viewer`` frozen then collectable (see the module docstring). One per viewer;
    :attr:`frozen_at` is when it froze (``time.perf_counter``), :attr:`refreezes` the collections done for
    a removed frozen layer, each ``(seconds, objects collected)``."""

    def __init__(self, viewer: Any, ready: Callable[[], bool], parent: Optional[QObject] = None) -> None:
        self.viewer = viewer
        self.ready = ready
        self.frozen_at: Optional[float] = None
        self.refreezes: List[tuple] = []
        self._layers: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._pending = False
        self._removed_bytes = 0  # data of frozen layers removed since the last collection
        self._timer = QTimer(parent)  # stops with the dock
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        self._timer.start()
        viewer.layers.events.removed.connect(self._on_removed)  # napari holds a weak reference to self
        _FREEZERS.add(self)
        # napari's own objects at once: the full collections during the warm-up's imports then skip them
        _freeze()

    def _poll(self) -> None:
        if not self.ready():
            return
        self._timer.stop()
        # no collection first: at this point one took 145 ms of GUI time and found 15 garbage objects (a quiet
        # 2-core machine), so the freeze keeps next to nothing that is dead
        _freeze()
        self.frozen_at = time.perf_counter()

    def _remember_layers(self) -> None:
        self._layers = weakref.WeakSet(list(self.viewer.layers))

    def _on_removed(self, event: Any) -> None:
        layer = getattr(event, "value", None)
        if layer is None or layer not in self._layers:  # _layers: filled at a freeze
            return
        self._layers.discard(layer)
        self._removed_bytes += data_bytes(getattr(layer, "data", None))
        if self._pending or self._removed_bytes < REFREEZE_BYTES:
            return
        self._pending = True  # several layers removed at once: one collection for all of them
        QTimer.singleShot(0, self.refreeze)

    def refreeze(self) -> None:
        """Unfreeze, collect everything once and freeze again (a frozen layer was removed)."""
        self._pending = False
        self._removed_bytes = 0
        t0 = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        _freeze()
        self.refreezes.append((time.perf_counter() - t0, found))


def data_bytes(data: Any) -> int:
    """Bytes of a layer's data: an array, or a list of arrays (multiscale levels, shapes)."""
    if hasattr(data, "nbytes"):
        return int(data.nbytes)
    if isinstance(data, (list, tuple)):
        return sum(data_bytes(d) for d in data)
    return 0


def _freeze() -> None:
    gc.freeze()
    for freezer in list(_FREEZERS):  # the layers of every viewer are frozen now, whoever froze them
        freezer._remember_layers()


def freeze_when_warm(viewer: Any, ready: Callable[[], bool], parent: Optional[QObject] = None) -> Optional[Freezer]:
    """A :class:`Freezer` for ``viewer`` (None when :func:`enabled` is false)."""
    if not enabled():
        return None
    return Freezer(viewer, ready, parent)


__all__ = ["ENV", "REFREEZE_BYTES", "Freezer", "data_bytes", "enabled", "freeze_when_warm"]
