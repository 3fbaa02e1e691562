"""Whole slide panel, pathologist walk under Xvfb: a slide opened after other images is framed (it stayed where the
view was, and Predict view predicted 1 of its 12 chunks); an accepted window's review regions leave the review list
and their outlines go (they were still listed and drawn as regions to review); the status lines put the key fact
first, on the two lines they show; the lists below the status lines do not move when a slide's first job shows its
legend and readout (they moved down by 104 px), nor do the rows above them while the dock's layout catches up
(the Slide / Store / Level rows squashed by 22 px for about half a second at the end of a job).

A real napari viewer shown on Xvfb, real slide files and prediction stores, the real dock and project store.
"""
from __future__ import annotations

import numpy as np
from _dock import PLUGIN, open_dock, slide_in_dock
from qtpy.QtCore import QPoint
from qtpy.QtWidgets import QApplication
from test_widget_slide import _accept, _edit

from napari_cdma._layers import names_for
from napari_cdma._widget_review import tile_row


def _turn(qtbot, n=3):
    for _ in range(n):
        QApplication.processEvents()
        qtbot.wait(10)


def _covers(view, box):
    """Whether the world box ``view`` holds all of the pixel box ``box`` (pixel i spans [i - 0.5, i + 0.5])."""
    return view[0] <= box[0] - 0.5 and view[1] <= box[1] - 0.5 and view[2] >= box[2] - 0.5 and view[3] >= box[3] - 0.5


def test_a_slide_opened_after_other_images_is_chosen_and_framed(make_napari_viewer, qtbot, tmp_path, slide_path):
    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer, tmp_path / "project")
    panel = dock.slide_panel
    viewer.add_image(np.zeros((64, 64), np.uint8), name="small image")  # napari frames the first layer opened
    _turn(qtbot)
    (slide,) = viewer.open(str(slide_path), plugin=PLUGIN)
    _turn(qtbot)
    assert panel.slide_layer is not None and panel.slide_layer.name == slide.name
    h, w = slide.data[0].shape[:2]
    view = panel.view_box()
    assert _covers(view, (0, 0, h, w)), (view, (h, w))  # before: the 64 px image's view, a corner of the slide
    # framed, not lost in the canvas: the slide fills most of it one way
    assert min((view[2] - view[0]) / h, (view[3] - view[1]) / w) < 1.2, view
    # an image opened after the slide leaves the view where it is
    viewer.add_image(np.zeros((16, 16), np.uint8), name="another image")
    _turn(qtbot)
    assert panel.view_box() == view and panel.slide_layer.name == slide.name


def test_review_regions_under_an_accepted_window_leave_the_list_and_come_back_when_withdrawn(
        make_napari_viewer, qtbot, tmp_path, predicted_slide):
    viewer, dock, panel = slide_in_dock(make_napari_viewer, qtbot, predicted_slide, tmp_path / "project")
    # the store's review regions listed and outlined, the slide's digest read (its accepted windows: none yet)
    qtbot.waitUntil(lambda: panel.tile_list.count() > 0 and panel._reopening is None and not panel._steps,
                    timeout=120_000)
    layer = panel.slide_layer
    ranked = list(panel.tiles)
    tiles_layer = viewer.layers[names_for(layer.name)["tiles"]]
    assert len(tiles_layer.data) == panel.tile_list.count() == len(ranked) > 1
    first = ranked[0]
    panel.go_to(0)  # the camera on the most uncertain region: the edit window covers it
    _turn(qtbot)
    assert _edit(qtbot, panel) is not None, panel.last_message
    record = _accept(qtbot, panel)
    assert record is not None, panel.last_message
    _turn(qtbot, 5)
    ds = panel._store_downsample(panel.last_result)
    window = tuple(int(round(v * ds)) for v in record.bbox)
    assert _covers((window[0] - 0.5, window[1] - 0.5, window[2] - 0.5, window[3] - 0.5), first[1])
    # the accepted region is reviewed: neither listed nor outlined (before: still listed and drawn)
    assert first not in panel.tiles, (first, window, panel.tiles)
    assert panel.tile_list.count() == len(panel.tiles) == len(tiles_layer.data) < len(ranked)
    assert panel.tile_list.item(0).text() == tile_row(1, *panel.tiles[0]) if panel.tiles else True
    assert panel.window_list.count() == 1
    # withdrawn, its regions are to review again
    assert panel.withdraw_window(record.region_id) is True, panel.last_message
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    _turn(qtbot, 5)
    assert panel.window_list.count() == 0, panel.last_message
    assert first in panel.tiles and panel.tile_list.count() == len(panel.tiles) == len(tiles_layer.data)


def _ys(dock, panel, names):
    inner = dock._scroll.widget()
    return {name: getattr(panel, name).mapTo(inner, QPoint(0, 0)).y() for name in names}


ABOVE = ("predict_button", "cancel_button", "edit_button", "accept_button", "status", "number_status")
BELOW = ("tile_list", "window_list", "withdraw_button", "export_button")


def _places(dock, panel):
    """Where the panel's rows and controls are in the dock's scrolled content: (y, height) each."""
    inner = dock._scroll.widget()
    widgets = {"Slide": panel.slide_choice.native, "Store": panel.store_edit, "Level": panel.level_spin,
               **{name: getattr(panel, name) for name in ABOVE + BELOW}}
    return {name: (w.mapTo(inner, QPoint(0, 0)).y(), w.height()) for name, w in widgets.items()}


def test_nothing_moves_when_a_slides_first_prediction_shows_its_legend(make_napari_viewer, qtbot, tmp_path,
                                                                       slide_path):
    """A slide not predicted yet: no legend nor readout. Its first Predict view shows them; at no turn of the event
    loop from the press to the job's end does a row or control of the panel move or shrink (before: the lists
    below the status lines moved down 104 px, and the Slide / Store / Level rows were squashed by 22 px for a turn
    of the event loop and the job's next step)."""
    import time

    from test_widget_slide import CHUNK, _view

    viewer, dock, panel = slide_in_dock(make_napari_viewer, qtbot, slide_path, tmp_path / "project")
    panel.chunk = CHUNK
    _turn(qtbot, 5)
    assert not panel.legend.isVisibleTo(panel) and not panel.readout.isVisibleTo(panel)
    _view(viewer, (200.0, 260.0), 240)
    _turn(qtbot)
    before = _places(dock, panel)
    seen = []
    assert panel.predict_view() is True, panel.last_message
    while panel.running:  # one turn of the event loop at a time, as the walk sampled the dock
        QApplication.processEvents()
        seen.append(_places(dock, panel))
        time.sleep(0.002)
    for _ in range(20):
        QApplication.processEvents()
        seen.append(_places(dock, panel))
    assert panel.last_message.startswith("Predicted"), panel.last_message
    assert panel.legend.isVisibleTo(panel) and panel.readout.isVisibleTo(panel)
    above = [{k: p[k] for k in ("Slide", "Store", "Level", *ABOVE)} for p in seen]
    want = {k: before[k] for k in ("Slide", "Store", "Level", *ABOVE)}
    moved = [p for p in above if p != want]
    assert not moved, (want, moved[:3])  # before: the rows squashed for a turn
    below = {tuple(p[k] for k in BELOW) for p in seen}
    assert below == {tuple(before[k] for k in BELOW)}, (before, below)  # before: 104 px down
    # the legend and readout sit under the controls, right below them (no empty gap)
    inner = dock._scroll.widget()
    bottom = panel.export_button.mapTo(inner, QPoint(0, panel.export_button.height())).y()
    legend_top = panel.legend.mapTo(inner, QPoint(0, 0)).y()
    assert 0 <= legend_top - bottom <= 20, (bottom, legend_top)


def _shown(line):
    """What a status line shows, its two lines joined."""
    return " ".join(line.shown_text().split())


def test_the_status_lines_show_the_key_fact_first(make_napari_viewer, qtbot, tmp_path, slide_path):
    """At the dock's default width the two lines shown say what is done and how much (before: "1 of 12 chunks of the
    slide are done" and "Accept window" were in the tooltip only); the tooltip holds the whole message."""
    from test_widget_slide import CHUNK, _view

    viewer, dock, panel = slide_in_dock(make_napari_viewer, qtbot, slide_path, tmp_path / "project")
    panel.chunk = CHUNK
    _turn(qtbot, 5)  # napari frames the slide again once its window is shown
    _view(viewer, (200.0, 260.0), 240)
    _turn(qtbot)
    assert panel.predict_view() is True, panel.last_message
    qtbot.waitUntil(lambda: not panel.running, timeout=180_000)
    s = panel.last_result["summary"]
    assert 0 < s.chunks_done < s.chunks_total
    shown = _shown(panel.status)
    assert shown.startswith(f"Predicted {s.chunks_computed} new chunk(s)")
    assert f"{s.chunks_done} of {s.chunks_total} chunks done" in shown, shown  # before: "...; 1 …"
    assert panel.status.toolTip() == panel.status.text() == panel.last_message
    # the numbered glands' line: why none are shown yet, and how much is done
    qtbot.waitUntil(lambda: not panel.numbering and bool(panel.number_status.text()), timeout=120_000)
    shown = _shown(panel.number_status)
    assert f"once all {s.chunks_total} chunks are predicted ({s.chunks_done} done)" in shown, shown
    # the edit window: how many glands, and what to do
    layer = _edit(qtbot, panel)
    assert layer is not None, panel.last_message
    from src_model.postprocess import DEFAULT_INSTANCES

    areas = np.bincount(np.asarray(layer.data).ravel())[1:]
    small = int(np.count_nonzero((areas > 0) & (areas < DEFAULT_INSTANCES.min_size)))
    n = int(np.asarray(layer.data).max()) - small  # specks, which numbering and export leave out, said apart
    specks = f" and {small} speck(s) under {DEFAULT_INSTANCES.min_size} px" if small else ""
    assert _shown(panel.status).startswith(f"Edit window of {n} gland(s){specks}"), panel.status.shown_text()
    assert "paint or erase, then Accept window" in _shown(panel.status), panel.status.shown_text()
    record = _accept(qtbot, panel)
    assert record is not None, panel.last_message
    assert _shown(panel.status).startswith(f"Accepted the window as region {record.region_id}"), \
        panel.status.shown_text()
    assert panel.status.toolTip() == panel.last_message
