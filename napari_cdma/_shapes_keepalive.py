"""Keep the canvas visuals of removed Shapes layers alive, so that removing one cannot crash napari.

With napari 0.9.2 and vispy 0.17 on Mesa's software OpenGL (Xvfb, as in CI and on headless machines), removing a
Shapes layer and then adding any layer kills the process with a segmentation fault inside ``glDrawArrays`` at the
next draw. It takes nothing of this plugin: a plain viewer that shows an image, adds an empty Shapes layer,
removes it and adds an image crashes the same way. A pathologist walk hit it in the dock: Next (or
anything that hides an image), then a switch of project store (which removes the review-region Shapes layers),
then Predict (which adds layers). napari's issue tracker reports the same class of crash after a Points layer was
deleted, on Windows (napari/napari#6472). The crash follows the deletion of the removed layer's vispy visual
(its OpenGL objects): holding a reference to that visual avoided it in every probe, so a removed Shapes layer's
visual is kept here for the life of the process. Each is a few small vertex buffers (the dock's Shapes layers hold
a handful of rectangles); the layer's data stays in memory with it.
"""
from __future__ import annotations

import logging
import warnings
import weakref
from typing import Any, List

log = logging.getLogger(__name__)

#: The visuals of removed Shapes layers, never released (see the module's docstring).
KEPT: List[Any] = []
#: The viewers already watched. A dock opened through npe2 gets napari's ``PublicOnlyProxy`` of the viewer, which
#: refuses new attributes, so the record lives here, keyed by the viewer behind the proxy.
_WATCHED: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _canvas_visuals(viewer: Any) -> Any:
    """napari's layer -> vispy layer mapping of the viewer's canvas (private napari API; None if not found)."""
    try:
        with warnings.catch_warnings():  # napari warns that plugins should not reach its Qt viewer: no public way
            warnings.simplefilter("ignore", FutureWarning)
            return viewer.window._qt_viewer.canvas.layer_to_visual
    except Exception:  # no window (a headless ViewerModel) or another napari
        return None


def keep_removed_shapes_visuals(viewer: Any) -> bool:
    """From now on, keep the visual of each Shapes layer removed from ``viewer`` (once per viewer). Returns whether
    the viewer is watched."""
    viewer = getattr(viewer, "__wrapped__", viewer)  # the real viewer behind npe2's proxy
    if viewer in _WATCHED:
        return True
    try:
        from napari.layers import Shapes
    except Exception:  # pragma: no cover - napari always has Shapes
        return False

    def removing(event: Any) -> None:
        try:
            layer = viewer.layers[event.index]
        except Exception:
            return
        if not isinstance(layer, Shapes):
            return
        visuals = _canvas_visuals(viewer)
        visual = visuals.get(layer) if visuals is not None else None
        if visual is not None:
            KEPT.append(visual)

    try:
        viewer.layers.events.removing.connect(removing)
        _WATCHED.add(viewer)
    except Exception as exc:  # keep going: the crash is a driver bug, not this plugin's
        log.warning("could not watch removed Shapes layers: %s", exc)
        return False
    return True


__all__ = ["KEPT", "keep_removed_shapes_visuals"]
