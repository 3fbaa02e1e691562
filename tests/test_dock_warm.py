"""The dock loads the glyphs a Shapes layer's first draw measures its font with into the canvas's font cache
once it has opened, so that the first review-region layer of a prediction does not (napari_cdma/_predict_stream.py,
warm_glyphs)."""
from __future__ import annotations

from napari_cdma._predict_stream import MEASURE_GLYPHS
from tests._dock import open_dock


def _canvas_glyphs(viewer):
    info = viewer.window._qt_viewer.canvas.font_info()
    return set(info.font_manager.get_font(info.face)._glyphs)


def test_the_dock_loads_the_font_measuring_glyphs_after_it_opens(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    assert not set(MEASURE_GLYPHS) & _canvas_glyphs(viewer)  # a fresh canvas has none
    open_dock(viewer)
    qtbot.waitUntil(lambda: set(MEASURE_GLYPHS) <= _canvas_glyphs(viewer), timeout=10_000)
