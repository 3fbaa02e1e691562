"""The dock loads the glyphs a Shapes layer's first draw measures its font with into the canvas's font cache
once it has opened and its warm-up threads have finished (run beside their imports, which hold the GIL, 40-70 ms
of glyph work stalled the event loop for 360-400 ms), so that the first review-region layer of a prediction does
not (napari_cdma/_predict_stream.py, warm_glyphs)."""
from __future__ import annotations

from napari_cdma import _predict_stream
from napari_cdma._predict_stream import MEASURE_GLYPHS, warm_finished
from tests._dock import open_dock


def _canvas_glyphs(viewer):
    info = viewer.window._qt_viewer.canvas.font_info()
    return set(info.font_manager.get_font(info.face)._glyphs)


def test_the_dock_loads_the_font_measuring_glyphs_after_its_warm_up(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    assert not set(MEASURE_GLYPHS) & _canvas_glyphs(viewer)  # a fresh canvas has none
    widget = open_dock(viewer)
    panel = widget.predict_panel
    # the warm-up imports torch and loads a model: slow on a busy machine
    qtbot.waitUntil(lambda: set(MEASURE_GLYPHS) <= _canvas_glyphs(viewer), timeout=120_000)
    assert warm_finished()
    ended = [_predict_stream.warm_ended[t.name] for t in (*_predict_stream._warming, *_predict_stream._warming_engine)]
    assert panel.glyphs_at is not None and panel.glyphs_at >= max(ended)
