"""Walk 20, Whole slide panel: a box reads the same everywhere. The panel wrote height x width at (y, x) (status
"1585 x 1515 px at (744, 779)", review rows "0.924 - (320, 1856), 128 x 128", window rows "r0001 (744, 779) 1585 x
1515 v1") where the dock's lists and the image review write width x height at x, y ("1515 x 1585 px at x 779, y
744"); its review rows now read as the image review's ("1. score 0.69, 163 x 128 px at x 230, y 394").

A real napari viewer (pytest-xvfb), the real dock and project store, a real slide file and its predicted store.
"""
from __future__ import annotations

from _dock import slide_in_dock
from qtpy.QtWidgets import QApplication
from test_widget_slide import _accept, _edit

from napari_cdma._widget_review import box_text, tile_row


def _turn(qtbot, n=5):
    for _ in range(n):
        QApplication.processEvents()
        qtbot.wait(10)


def test_the_slide_panel_writes_boxes_as_the_dock_does(make_napari_viewer, qtbot, tmp_path, predicted_slide):
    viewer, dock, panel = slide_in_dock(make_napari_viewer, qtbot, predicted_slide, tmp_path / "project")
    qtbot.waitUntil(lambda: panel.tile_list.count() > 0 and panel._reopening is None and not panel._steps,
                    timeout=120_000)
    rows = [panel.tile_list.item(i).text() for i in range(panel.tile_list.count())]
    # before: "0.924 - (320, 1856), 128 x 128"
    assert rows == [tile_row(i, s, b) for i, (s, b) in enumerate(panel.tiles, start=1)], rows
    panel.go_to(0)
    _turn(qtbot)
    assert _edit(qtbot, panel) is not None, panel.last_message
    box = panel.window["box"]
    assert box[2] - box[0] != box[3] - box[1] or box[0] != box[1], box  # a box whose two ways read apart
    # before: "It is 512 x 640 px at (0, 0) (store pixels)"
    assert f"It is {box_text(box)} (store pixels)" in panel.last_message, panel.last_message
    record = _accept(qtbot, panel)
    assert record is not None, panel.last_message
    _turn(qtbot)
    assert f"the window is {box_text(box)} (store pixels)" in panel.last_message, panel.last_message
    row = panel.window_list.item(0).text()
    # the dock's accepted-region list writes the same box the same way (before: "r0001  (0, 0) 512 x 640  v1")
    assert f"{record.region_id}  {box_text(record.bbox)}  v{record.version}" in row, row
    assert box_text(record.bbox) in dock.review_panel.region_text(record)
