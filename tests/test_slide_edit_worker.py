"""The whole-slide edit window in a worker thread: Edit window reads the slide's store and splits its glands,
Accept window carves splits and writes the stores, off the GUI thread, so the viewer keeps drawing; one job at
a time; a result that arrives after its slide or the viewer was closed is dropped. A real napari viewer
(Xvfb), real pyramidal TIFFs built from the GlaS test images, real zarr stores on disk."""
from __future__ import annotations

import time

import numpy as np
from _slides import write_pyramidal_tiff, written_store
from qtpy.QtCore import Qt, QTimer
from scipy import ndimage as ndi
from test_widget_slide import PLUGIN, WIDGET, _accept, _edit, _predict, _predicted_in_dock

from napari_cdma._layers import names_for
from napari_cdma._widget_slide import NEEDS
from napari_cdma.project.store import ProjectStore
from src_model.slide_store import open_store

SIDE, CHUNK = 2048, 512  # a slide whose edit window is the largest the panel opens (MAX_EDIT_SIDE)


def _glands(h, w, seed=0):
    """Gland-like mask: discs of radius 22 px around random centres, many of them touching."""
    rng = np.random.default_rng(seed)
    seeds = np.ones((h, w), bool)
    seeds[rng.integers(0, h, h * w // 2500), rng.integers(0, w, h * w // 2500)] = False
    return (ndi.distance_transform_edt(seeds) < 22).astype(np.uint8)


def test_the_edit_window_keeps_every_gland_pixel_of_glands_touching_at_a_corner():
    """Discs that touch another only diagonally (seeds 1 and 3 have some) are not reached by the split's
    4-neighbour flood: the window still labels every gland pixel, else accepting it unchanged would erase
    them from the store."""
    from napari_cdma._slide_view import window_instances

    for seed in (1, 3):
        mask = _glands(384, 384, seed)
        four, n4 = ndi.label(mask)
        assert n4 > ndi.label(mask, structure=np.ones((3, 3)))[1]  # some glands touch only at a corner
        labels = window_instances(mask)
        np.testing.assert_array_equal(labels > 0, mask > 0)
        np.testing.assert_array_equal(np.unique(labels), np.arange(labels.max() + 1))  # 1..n, no gaps
        for i in range(1, n4 + 1):  # no label spans two glands that touch only at a corner
            assert len(np.unique(four[labels == labels[four == i][0]])) == 1


def _large_slide(tmp_path, mosaic):
    """A SIDE x SIDE slide tiled from the mosaic and its prediction store, every chunk written (gland-like
    discs, not a model's output: predicting 16 chunks of 512 px would take minutes) with the settings of
    the panel's Predict view of the bundled model, so Predict view takes the store as it is."""
    image = np.tile(mosaic, (4, 3, 1))[:SIDE, :SIDE]
    slide = write_pyramidal_tiff(tmp_path / "large.tif", image, levels=3)
    glands = _glands(SIDE, SIDE)
    written_store(slide, tmp_path / "large.cdma.zarr", image, glands, CHUNK)
    return slide, glands


def _ticking():
    """A 10 ms QTimer started on the GUI thread: ``(the timer, the list its ticks' times go to, the start time)``."""
    ticks = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    return timer, ticks, time.perf_counter()


def _gui_gaps(qtbot, panel, start):
    """Start a panel job with ``start()`` while a 10 ms QTimer runs on the GUI thread; wait for the job to end.

    Returns:
        ``(seconds start() took, seconds until the worker returned its result, the longest gap between
        timer ticks until then (from the start to the first tick and from the last tick to the result
        included), ticks until then, seconds until the job ended (its result shown))``.
    """
    from qtpy.QtCore import Qt

    returned = []
    timer, ticks, t0 = _ticking()
    started = start()
    called = time.perf_counter() - t0
    assert started is True, panel.last_message
    # called in the worker's thread as it returns: the end of the work, not when the GUI thread gets to it
    panel.worker.returned.connect(lambda _r: returned.append(time.perf_counter()), Qt.ConnectionType.DirectConnection)
    qtbot.waitUntil(lambda: not panel.running, timeout=180_000)
    t1 = time.perf_counter()
    timer.stop()
    assert len(returned) == 1
    during = [t for t in ticks if t < returned[0]]
    return called, returned[0] - t0, float(np.diff([t0] + during + returned).max()), len(during), t1 - t0


def test_edit_and_accept_window_of_a_large_window_leave_the_gui_thread_free(make_napari_viewer, qtbot, tmp_path,
                                                                            mosaic):
    """A 2048 x 2048 window: reading it and splitting its glands (seconds), then carving a split and writing
    the stores, run in a worker while the GUI thread keeps firing a 10 ms timer; the layer is added, and the
    store written, when the worker returns."""
    slide, glands = _large_slide(tmp_path, mosaic)
    viewer = make_napari_viewer()
    viewer.open(str(slide), plugin=PLUGIN)
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    panel = dock.slide_panel
    assert panel.store_edit.text() == str(tmp_path / "large.cdma.zarr")
    viewer.camera.center = (SIDE / 2, SIDE / 2)
    viewer.camera.zoom = min(viewer.canvas.size) / SIDE  # the whole slide on the canvas
    result = _predict(qtbot, panel)
    assert result["summary"].chunks_computed == 0 and len(result["chunks"]) == 16  # the store as written

    called, took, gap, ticks, total = _gui_gaps(qtbot, panel, panel.edit_window)
    w = panel.window
    assert w is not None and w["box"] == (0, 0, SIDE, SIDE), panel.last_message
    layer = viewer.layers[w["name"]]
    np.testing.assert_array_equal(np.asarray(layer.data) > 0, glands > 0)  # the store's glands, one label each
    assert int(np.asarray(layer.data).max()) > 100
    print(f"edit window: start {called:.3f} s, worker {took:.2f} s (longest GUI gap {gap * 1000:.0f} ms, {ticks} "
          f"ticks), shown after {total:.2f} s")
    assert took > 0.5  # long enough to freeze the viewer if it ran on the GUI thread
    assert called < 0.25 * took and gap < 0.25 * took, (called, took, gap)
    assert ticks >= 0.25 * took / 0.010  # the timer kept firing while the worker worked

    # split a gland (a new label over its upper half) and accept: carved and written in the worker
    edited = np.asarray(layer.data).copy()
    target = int(edited[SIDE // 2, SIDE // 2]) or int(np.bincount(edited.ravel())[1:].argmax() + 1)
    rows = np.nonzero((edited == target).any(axis=1))[0]
    upper = (edited == target) & (np.arange(SIDE)[:, None] < (rows[0] + rows[-1]) // 2)
    edited[upper] = edited.max() + 1
    layer.data = edited
    called, took, gap, ticks, total = _gui_gaps(qtbot, panel, panel.accept_window)
    record = panel.last_record
    assert record is not None and record.bbox == (0, 0, SIDE, SIDE), panel.last_message
    print(f"accept window: start {called:.3f} s, worker {took:.2f} s (longest GUI gap {gap * 1000:.0f} ms, {ticks} "
          f"ticks), shown after {total:.2f} s")
    stored = np.asarray(open_store(tmp_path / "large.cdma.zarr").glands[0][:]) > 0
    np.testing.assert_array_equal(np.asarray(layer.data) > 0, stored)  # the window shows what the store holds
    carved = stored != (edited > 0)
    assert 0 < carved.sum() <= 2 * upper.shape[1] and not stored[carved].any()  # a 1 px cut, nothing else
    assert called < 0.25 * took and gap < 0.5 * took and ticks >= 0.25 * took / 0.010, (called, took, gap, ticks)

    # Edit window again over the same view: the same layer shows the store's glands (no layer removed: napari
    # collects garbage on the GUI thread when one is)
    removed = []
    viewer.layers.events.removed.connect(lambda e: removed.append(e.value.name))
    called, took, gap, ticks, total = _gui_gaps(qtbot, panel, panel.edit_window)
    print(f"edit window again: start {called:.3f} s, worker {took:.2f} s (longest GUI gap {gap * 1000:.0f} ms)")
    assert removed == [] and viewer.layers[panel.window["name"]] is layer, removed
    np.testing.assert_array_equal(np.asarray(layer.data) > 0, stored)
    assert layer.mode == "paint" and layer.selected_label == int(np.asarray(layer.data).max()) + 1


def test_a_result_for_a_closed_slide_or_viewer_is_dropped(make_napari_viewer, qtbot, tmp_path, slide_path):
    """The slide layer removed, or the viewer closed, while the edit window is read: no layer appears and
    nothing raises; an Accept window under way when the viewer closes still completes in the stores."""
    viewer, slide_layer, dock, panel = _predicted_in_dock(make_napari_viewer, qtbot, tmp_path, slide_path)

    # 1. the slide closed while its window is read: the result is dropped, the panel says so
    assert panel.edit_window() is True, panel.last_message
    viewer.layers.remove(slide_layer.name)
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert panel.window is None and f"{slide_layer.name} edit window" not in viewer.layers
    assert "was closed or replaced" in panel.last_message
    # no view shown, no slide: Edit window and Predict view are off and say why (walk 20: they were on)
    assert not panel.edit_button.isEnabled() and panel.edit_button.toolTip().startswith(NEEDS["predict"])
    assert not panel.predict_button.isEnabled() and panel.predict_button.toolTip().startswith(NEEDS["slide"])

    # 2. the slide opened again under the same name: the window opens over it; accepted while the viewer closes
    (again,) = viewer.open(str(slide_path), plugin=PLUGIN)
    assert again.name == slide_layer.name
    result = _predict(qtbot, panel)
    assert result["summary"].chunks_computed == 0
    layer = _edit(qtbot, panel)
    assert layer is not None, panel.last_message
    edited = np.asarray(layer.data).copy()
    edited[:40, :40] = 0
    layer.data = edited
    assert panel.accept_window() is True, panel.last_message
    worker = panel.worker
    ended = []
    worker.finished.connect(lambda: ended.append(True))
    viewer.close()
    qtbot.waitUntil(lambda: bool(ended), timeout=60_000)
    qtbot.wait(50)  # the worker's queued signals are delivered (to nothing: the panel is gone)
    assert len(viewer.layers) == 0  # nothing was added to the closed viewer
    (region,) = ProjectStore.open(tmp_path / "project").regions()  # the accept completed in the stores
    y0, x0, y1, x1 = region.bbox
    np.testing.assert_array_equal(np.asarray(open_store(tmp_path / "case.cdma.zarr").glands[0][y0:y1, x0:x1]) > 0,
                                  edited > 0)


def test_closing_the_viewer_while_the_edit_window_is_read(make_napari_viewer, qtbot, tmp_path, slide_path):
    viewer, _, _, panel = _predicted_in_dock(make_napari_viewer, qtbot, tmp_path, slide_path)
    assert panel.edit_window() is True, panel.last_message
    ended = []
    panel.worker.finished.connect(lambda: ended.append(True))
    viewer.close()
    qtbot.waitUntil(lambda: bool(ended), timeout=60_000)
    qtbot.wait(50)  # the worker's queued signals are delivered (to nothing: the panel is gone)
    assert len(viewer.layers) == 0  # no edit window added to the closed viewer


def test_a_window_withdrawn_while_an_edit_window_is_read_is_undone(make_napari_viewer, qtbot, tmp_path, slide_path):
    """The dock withdraws an accepted window while the panel's worker reads an edit window: the slide's labels
    are restored by the time the job ends (by the worker, or by the panel once it ends), and an edit window
    left open shows what the store holds."""
    viewer, _, dock, panel = _predicted_in_dock(make_napari_viewer, qtbot, tmp_path, slide_path)
    store_path = tmp_path / "case.cdma.zarr"
    predicted = np.asarray(open_store(store_path).glands[0][:]).copy()
    layer = _edit(qtbot, panel)
    assert layer is not None, panel.last_message
    edited = np.asarray(layer.data).copy()
    edited[:40, :40] = 0
    edited[50:80, 50:80] = edited.max() + 1
    layer.data = edited
    record = _accept(qtbot, panel)
    assert record is not None, panel.last_message
    assert not np.array_equal(np.asarray(open_store(store_path).glands[0][:]), predicted)

    assert panel.edit_window() is True, panel.last_message
    assert dock.review_panel.withdraw(record.region_id)  # regions_changed: the panel's sync waits for the job
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    now = np.asarray(open_store(store_path).glands[0][:])
    np.testing.assert_array_equal(now, predicted)  # undone in the slide's labels
    assert panel.window_list.count() == 0 and dock.store.regions() == []
    w = panel.window
    if w is not None:  # opened over the restored labels, or closed once they were restored under it
        y0, x0, y1, x1 = w["box"]
        np.testing.assert_array_equal(np.asarray(viewer.layers[w["name"]].data) > 0, now[y0:y1, x0:x1] > 0)


def _predicted_large_slide(make_napari_viewer, qtbot, tmp_path, mosaic):
    """A viewer with the large slide opened by the plugin's reader, the dock on a project store and the whole
    slide predicted; ``(viewer, dock, slide panel, slide store path, the store's gland labels at every level)``."""
    slide, _ = _large_slide(tmp_path, mosaic)
    store_path = tmp_path / "large.cdma.zarr"
    viewer = make_napari_viewer()
    viewer.open(str(slide), plugin=PLUGIN)
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert dock.open_store(tmp_path / "project") is not None
    panel = dock.slide_panel
    viewer.camera.center = (SIDE / 2, SIDE / 2)
    viewer.camera.zoom = min(viewer.canvas.size) / SIDE  # the whole slide on the canvas
    _predict(qtbot, panel)
    return viewer, dock, panel, store_path, [np.asarray(a[:]).copy() for a in open_store(store_path).glands]


def test_accept_window_shows_its_result_in_steps_and_refreshes_only_what_changed(make_napari_viewer, qtbot, tmp_path,
                                                                                 mosaic):
    """Accepting a 2048 px window twice: what the result shows in the viewer comes in turns of the event loop of
    its own (the 10 ms timer ticks between the window's redraw and the store glands' refresh), the store's
    uncertainty (which Accept does not write) is not sliced again, and the accepted windows' outline that did not
    move is not set again (each set re-slices every layer). The code before did all of it in one call on the GUI
    thread, the uncertainty and the outline included (the call alone 0.10 to 0.16 s after the first accept, 0.10 to
    0.71 s for the first, at a load of 2 to 3); the longest GUI gap from the worker's return to the job's end is
    printed."""
    viewer, dock, panel, _, _ = _predicted_large_slide(make_napari_viewer, qtbot, tmp_path, mosaic)
    layer = _edit(qtbot, panel)
    assert layer is not None, panel.last_message
    name = viewer.layers[0].name
    seen = []  # (what, when): slices of the store's layers and the window, outline data sets, timer ticks

    def log(what):
        return lambda _e=None: seen.append((what, time.perf_counter()))

    layer.events.set_data.connect(log("window"))
    viewer.layers[f"{name} glands"].events.set_data.connect(log("glands"))
    viewer.layers[f"{name} uncertainty"].events.set_data.connect(log("uncertainty"))
    gaps = []
    for round_ in range(2):
        edited = np.asarray(layer.data).copy()
        target = int(np.bincount(edited.ravel())[1:].argmax() + 1)  # the largest gland: split its upper half
        rows = np.nonzero((edited == target).any(axis=1))[0]
        edited[(edited == target) & (np.arange(edited.shape[0])[:, None] < (rows[0] + rows[-1]) // 2)] = \
            edited.max() + 1
        layer.data = edited
        qtbot.wait(200)
        if round_ == 1:  # the outline drawn by the first accept
            viewer.layers[names_for(name)["accepted"]].events.data.connect(log("outline"))
        seen.clear()
        timer, ticks, _ = _ticking()
        timer.timeout.connect(log("tick"))
        assert panel.accept_window() is True, panel.last_message
        returned = []
        panel.worker.returned.connect(lambda _r, out=returned: out.append(time.perf_counter()),
                                      Qt.ConnectionType.DirectConnection)
        qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
        qtbot.wait(300)  # what the last step queued (the canvas' drawing) runs too
        timer.stop()
        assert panel.last_record is not None, panel.last_message
        after = [t for t in ticks if t >= returned[0]]
        gaps.append(float(np.diff(returned + after).max()))
        print(f"accept {round_}: longest GUI gap from the worker's return to the job's end {gaps[-1] * 1000:.0f} ms")
        order = [what for what, t in seen if t >= returned[0]]
        assert "window" in order and "glands" in order, order  # the split window redrawn, the glands refreshed
        between = order[order.index("window"):order.index("glands")]
        assert "tick" in between, order  # the viewer had a turn between the two
        stored = np.asarray(open_store(tmp_path / "large.cdma.zarr").glands[0][:]) > 0
        y0, x0, y1, x1 = panel.window["box"]
        np.testing.assert_array_equal(np.asarray(layer.data) > 0, stored[y0:y1, x0:x1])
        assert layer.editable and layer.mode == "paint"
    # the second accept: the same window, its outline already drawn; the uncertainty is not sliced again
    assert "uncertainty" not in order and "outline" not in order, order
    assert len(viewer.layers[names_for(name)["accepted"]].data) == 1 and panel.window_list.count() == 1
    # the GUI gaps are printed, not bounded: speed targets live in the benchmarks (a 0.6 s guard here failed at
    # 0.615 s on a loaded 2-core machine); what keeps the viewer free is asserted above (steps with turns between)
