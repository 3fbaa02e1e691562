"""What a pathologist sees of the Whole slide panel: its status line next to the job buttons (in view when they
are), and the outlines of review regions and accepted windows a few screen pixels wide at every zoom, an accepted
window's outside its pixels. A real napari viewer shown on Xvfb, a real slide file and store, the bundled model."""
from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPoint, QRect
from qtpy.QtWidgets import QScrollArea
from test_slide_withdraw_worker import _accepted_window
from test_widget_slide import _predict, _slide_in_dock, _view

from napari_cdma._layers import names_for
from napari_cdma._widget_slide import OUTLINE_PX


def _in_view(scroll, widget):
    """Whether all of ``widget`` lies in the visible part (viewport) of the scroll area."""
    top_left = widget.mapTo(scroll.viewport(), widget.rect().topLeft())
    return scroll.viewport().rect().contains(QRect(top_left, widget.size()))


def test_the_status_line_is_in_view_with_the_job_buttons(make_napari_viewer, qtbot, tmp_path, slide_path):
    """In a window of the default size, the dock scrolled down to the Whole slide panel (its top at the top of the
    dock), the status line is in view with the job buttons; scrolled down from the top only as far as the
    Withdraw window button, it is still in view. Its tooltip holds the whole message."""
    viewer, _, dock, panel = _slide_in_dock(make_napari_viewer, tmp_path, slide_path, show=True)
    scroll = panel.parentWidget()
    while not isinstance(scroll, QScrollArea):
        scroll = scroll.parentWidget()
    # the dock's layout settles a few event-loop turns after the window shows (slower on a loaded machine): until
    # then its contents are wider than the scroll area
    qtbot.waitUntil(lambda: scroll.widget().width() <= scroll.viewport().width(), timeout=10_000)
    assert panel.withdraw_window() is False  # nothing selected: the status line says so
    assert panel.status.text() == "Select an accepted window to withdraw." == panel.status.toolTip()
    bar = scroll.verticalScrollBar()
    bar.setValue(panel.mapTo(scroll.widget(), QPoint(0, 0)).y())
    qtbot.wait(50)
    assert bar.value() > 0  # the panel lies below the top of the dock
    for widget in (panel.predict_button, panel.edit_button, panel.accept_button, panel.progress, panel.status):
        assert _in_view(scroll, widget), (widget, scroll.viewport().height())
    bar.setValue(0)
    scroll.ensureWidgetVisible(panel.withdraw_button)  # scrolls down until the button is 50 px above the bottom
    qtbot.wait(50)
    assert _in_view(scroll, panel.withdraw_button)
    assert _in_view(scroll, panel.status), scroll.viewport().height()


def _screen_width(layer, zoom):
    """The edge widths of a Shapes layer's outlines, screen pixels at ``zoom``."""
    return np.asarray(layer.edge_width, dtype=float) * zoom


def outlined_slide(make_napari_viewer, qtbot, tmp_path, slide_path):
    """A slide in the dock, a view predicted and a window accepted: (viewer, panel, the accepted region, the review
    regions' outline layer, the accepted windows' outline layer)."""
    viewer, slide_layer, dock, panel = _slide_in_dock(make_napari_viewer, tmp_path, slide_path)
    _view(viewer, (200.0, 260.0), 240)
    _predict(qtbot, panel)
    record = _accepted_window(qtbot, panel)
    tiles = viewer.layers[names_for(slide_layer.name)["tiles"]]
    accepted = viewer.layers[names_for(slide_layer.name)["accepted"]]
    assert len(tiles.data) == len(panel.tiles) > 0 and len(accepted.data) == 1
    return viewer, panel, record, tiles, accepted


def test_outlines_keep_their_screen_width_and_an_accepted_window_is_framed_outside(make_napari_viewer, qtbot,
                                                                                     tmp_path, slide_path):
    viewer, panel, record, tiles, accepted = outlined_slide(make_napari_viewer, qtbot, tmp_path, slide_path)
    np.testing.assert_allclose(accepted.edge_color[0], [1.0, 0.0, 0.0, 1.0])  # red, as accepted image regions
    # from the slide's detail to a whole-slide zoom: the outlines stay a few screen pixels wide
    for zoom in (viewer.camera.zoom, viewer.camera.zoom / 10, viewer.camera.zoom / 100):
        viewer.camera.zoom = zoom
        qtbot.wait(10)
        for layer in (tiles, accepted):
            width = _screen_width(layer, zoom)
            assert np.all((width >= OUTLINE_PX / 1.5) & (width <= OUTLINE_PX * 1.5)), (layer.name, zoom, width)
        # the accepted window's frame runs just outside its pixels (pixel i spans [i - 0.5, i + 0.5])
        y0, x0, y1, x1 = record.bbox
        half = float(np.asarray(accepted.edge_width)[0]) / 2.0
        corners = np.asarray(accepted.data[0])
        np.testing.assert_allclose(corners.min(axis=0), [y0 - 0.5 - half, x0 - 0.5 - half])
        np.testing.assert_allclose(corners.max(axis=0), [y1 - 0.5 + half, x1 - 0.5 + half])
    # review regions are outlined inside their own pixels (at most to their middle)
    for (_, (y0, x0, y1, x1)), corners in zip(panel.tiles, tiles.data, strict=True):
        lo, hi = np.asarray(corners).min(axis=0), np.asarray(corners).max(axis=0)
        assert np.all(lo >= [y0 - 0.5, x0 - 0.5]) and np.all(hi <= [y1 - 0.5, x1 - 0.5])
