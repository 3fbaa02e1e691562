"""Walk 20, Whole slide panel. 1. A box reads the same everywhere. The panel wrote height x width at (y, x) (status
"1585 x 1515 px at (744, 779)", review rows "0.924 - (320, 1856), 128 x 128", window rows "r0001 (744, 779) 1585 x
1515 v1") where the dock's lists and the image review write width x height at x, y ("1515 x 1585 px at x 779, y
744"); its review rows now read as the image review's ("1. score 0.69, 163 x 128 px at x 230, y 394").
2. On a fresh slide Edit window, Accept window, Withdraw window and Export were on before anything was predicted, and
a click only said what was missing; now each job button is on only when it can act, a disabled one's tooltip saying
what it needs first (as the image review's buttons), and they follow a job's start and end, an edit window opened or
closed, an accepted window selected.

A real napari viewer (pytest-xvfb), the real dock and project store, a real slide file and its predicted store.
"""
from __future__ import annotations

from _dock import slide_in_dock
from qtpy.QtWidgets import QApplication
from test_widget_slide import _accept, _edit, _slide_in_dock

from napari_cdma._widget_review import box_text, tile_row
from napari_cdma._widget_slide import NEEDS, TIPS


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


# ---------------------------------- 2. the job buttons are on only when they can act, the reason in the tooltip
def _off(button, why):
    assert not button.isEnabled() and button.toolTip().startswith(why), (button.text(), button.toolTip())


def test_the_slide_panel_buttons_are_on_only_when_they_can_act(make_napari_viewer, qtbot, tmp_path, slide_path):
    viewer, slide_layer, dock, panel = _slide_in_dock(make_napari_viewer, tmp_path, slide_path)
    panel.chunk = 256  # the whole 640 x 768 slide in one Predict view (6 chunks)
    # a fresh slide: only Predict view can act (before: all on, a click said "Open an edit window first")
    assert panel.predict_button.isEnabled() and panel.predict_button.toolTip() == TIPS["predict"]
    _off(panel.edit_button, NEEDS["predict"])
    _off(panel.accept_button, NEEDS["window"])
    _off(panel.withdraw_button, NEEDS["select"])
    _off(panel.export_button, NEEDS["store"])
    assert panel.predict_view(), panel.last_message
    for button in panel._buttons.values():  # while it runs: each says why it is off
        _off(button, "A prediction is running; wait for it to end or cancel it.")
    assert panel.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not panel.running and not panel._steps, timeout=180_000)
    assert panel.last_message.startswith("Predicted"), panel.last_message
    # the review regions' outline layer, made now, does not take the layer controls (walk 20: it was left active)
    assert viewer.layers.selection.active is not viewer.layers[f"{slide_layer.name} review tiles"]
    assert panel.edit_button.isEnabled() and panel.export_button.isEnabled() and not panel.cancel_button.isEnabled()
    assert panel.edit_button.toolTip() == TIPS["edit"] and panel.export_button.toolTip() == TIPS["export"]
    _off(panel.accept_button, NEEDS["window"])
    layer = _edit(qtbot, panel)  # Accept window on once the window is open
    assert layer is not None and panel.accept_button.toolTip() == TIPS["accept"]
    record = _accept(qtbot, panel)
    assert record is not None, panel.last_message
    qtbot.waitUntil(lambda: panel.window_list.count() == 1 and not panel._steps, timeout=30_000)
    panel.window_list.setCurrentRow(-1)
    _off(panel.withdraw_button, NEEDS["select"])
    panel.window_list.setCurrentRow(0)  # a window selected: Withdraw window can act on it
    assert panel.withdraw_button.isEnabled() and panel.withdraw_button.toolTip() == TIPS["withdraw"]
    viewer.layers.remove(layer.name)  # the edit window closed: nothing to accept
    _off(panel.accept_button, NEEDS["window"])
    assert panel.withdraw_window() is True, panel.last_message
    qtbot.waitUntil(lambda: not panel.running and panel.window_list.count() == 0 and not panel._steps,
                    timeout=60_000)
    _off(panel.withdraw_button, NEEDS["select"])  # none left to select
    assert panel.edit_button.isEnabled() and panel.predict_button.isEnabled() and panel.export_button.isEnabled()
