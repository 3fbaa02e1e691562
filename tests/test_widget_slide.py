"""Whole slides in the dock: predict the visible region into the slide's store (cached, panning adds
only new chunks), review regions over the predicted area, an edit window accepted into the slide's
labels and the project store. A real napari viewer (Xvfb), a real pyramidal TIFF built from GlaS test
images, the bundled model, real zarr stores on disk."""
from __future__ import annotations

import numpy as np
import pytest
from _slides import chunk_files

from napari_cdma._layers import UNCERTAINTY_OPACITY, names_for, uncertainty_colormap, uncertainty_tint_start
from napari_cdma._slide_view import (
    FINISH_STEPS,
    RANGE_KEY,
    edit_box,
    store_display_range,
    to_store_box,
    visible_world_box,
    window_instances,
    write_window,
)
from napari_cdma._widget_slide import SHOW_STEPS
from napari_cdma.project import store as store_module
from napari_cdma.project.slide_regions import accept_slide_region, slide_hash, slide_regions
from napari_cdma.project.store import ProjectStore
from src_model.slide import open_slide
from src_model.slide_store import open_store

PLUGIN, WIDGET = "napari-cdma", "CDMA"
CHUNK = 128


# --------------------------------------------------------------------------- Qt-free glue


def _exported(glands: np.ndarray) -> np.ndarray:
    """The store's gland pixels that Export writes: glands of the dock's minimum size (store pixels; the
    export's default drops smaller ones)."""
    from scipy import ndimage as ndi

    from src_model.postprocess import DEFAULT_INSTANCES

    lab, n = ndi.label(np.asarray(glands) > 0)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = sizes >= DEFAULT_INSTANCES.min_size
    keep[0] = False
    return keep[lab]


def test_view_box_in_store_pixels():
    box = visible_world_box((100.0, 200.0), 2.0, (400, 600))
    assert box == (0.0, 50.0, 200.0, 350.0)
    assert to_store_box(box, 1.0, 150, 1000) == (0, 50, 150, 351)  # clipped to the store's rows
    assert to_store_box(box, 2.0, 1000, 1000) == (0, 25, 101, 176)
    assert to_store_box((-50.0, -50.0, -10.0, -10.0), 1.0, 100, 100) is None
    assert edit_box((0, 0, 5000, 100), 2048) == (1476, 0, 3524, 100)


def test_a_large_slide_region_keeps_its_context_not_the_slide(tmp_path, slide_path, mosaic, monkeypatch):
    """Above the store's whole-image limit a slide is identified by its smallest level and only the tissue
    around an accepted box is kept; the region reads back like an image region, with the slide as provenance."""
    monkeypatch.setattr(store_module, "MAX_FULL_IMAGE_PIXELS", 10_000)
    monkeypatch.setattr("napari_cdma.project.slide_regions.MAX_FULL_IMAGE_PIXELS", 10_000)
    project = ProjectStore.open(tmp_path / "project")
    box = (300, 400, 428, 528)
    corrected = np.zeros((128, 128), np.uint8)
    corrected[20:60, 30:90] = 1
    with open_slide(slide_path) as slide:
        digest = slide_hash(slide)
        assert digest == slide_hash(slide) and digest != slide_hash(slide, 1)
        record = accept_slide_region(project, slide, box, corrected, np.zeros_like(corrected), model_version="bundled")
    assert record.bbox == box and record.source_path == str(slide_path) and record.image_hash == digest
    assert [r.region_id for r in slide_regions(project, digest)] == [record.region_id]
    crop, got, _ = project.load_region(record.region_id)
    np.testing.assert_array_equal(crop, mosaic[300:428, 400:528])
    np.testing.assert_array_equal(got, corrected)
    (context,) = project.unlabelled_images()
    np.testing.assert_array_equal(context, mosaic[300 - 256:, 400 - 256:])  # the box + 256 px, inside the slide


def test_predict_view_progress_ends_with_the_work_not_the_last_chunk(tmp_path, slide_path):
    """The job's progress counts the steps after the last chunk (review ranking, slide identity): the
    chunk events stay below the total and only the job's last event reaches it."""
    from napari_cdma._slide_view import predict_view_job
    from src_model.checkpoint import bundled_model_path

    job = predict_view_job(str(slide_path), str(tmp_path / "case.cdma.zarr"), str(bundled_model_path()), 0, CHUNK,
                           (0.0, 0.0, 100.0, 200.0), 16, None)
    events = []
    while True:
        try:
            events.append(next(job))
        except StopIteration as stop:
            status, result = stop.value
            break
    assert status == "ok" and result["ranked"] and result["digest"]
    n = len(result["chunks"])
    assert n == 2 and result["summary"].chunks_computed == n
    assert [(e.stage, e.step, e.total) for e in events] == \
        [("predict-slide", k, n + FINISH_STEPS) for k in range(1, n + 1)] + \
        [("review", n + 1, n + FINISH_STEPS), ("identify", n + 2, n + FINISH_STEPS)]


def _filled_store(path, slide_path, seed=0):
    """A prediction store of the 640 x 768 test slide with every chunk predicted (random glands)."""
    from src_model.slide_store import StoreInfo, create_store

    store = create_store(path, StoreInfo(slide=str(slide_path), slide_level=0, downsample=1.0, height=640, width=768,
                                         chunk=CHUNK, n_levels=2))
    rng = np.random.default_rng(seed)
    for cy, cx in store.all_chunks():
        y0, x0, y1, x1 = store.chunk_box(cy, cx)
        h, w = y1 - y0, x1 - x0
        glands = (rng.random((h // 8 + 1, w // 8 + 1)) < 0.4).repeat(8, 0).repeat(8, 1)[:h, :w].astype(np.uint8)
        store.write_chunk(cy, cx, np.zeros((h, w, 3), np.uint8), glands, np.zeros((h, w), np.uint8), 0.9)
    return store


def _labels(store):
    return [np.asarray(a[:]).copy() for a in store.glands]


def test_withdrawing_windows_restores_the_store_and_keeps_overlapping_corrections(tmp_path, slide_path):
    """Withdrawn windows are undone in the store's labels and pyramid as if never accepted: a live window that
    overlaps keeps its correction whichever was accepted first; with all withdrawn the store is as predicted."""
    from napari_cdma.project.slide_regions import WindowChanged, accept_slide_window, restore_withdrawn, store_edits

    store = _filled_store(tmp_path / "s.zarr", slide_path)
    original = _labels(store)
    project = ProjectStore.open(tmp_path / "project")
    a, b = (100, 100, 300, 300), (200, 150, 420, 380)  # overlap: rows 200..300, columns 150..300
    fill = {a: 1, b: 0}  # A paints glands everywhere, B erases everywhere: the overlap tells who wins
    with open_slide(slide_path) as slide:
        def accept(box):
            corrected = np.full((box[2] - box[0], box[3] - box[1]), fill[box], np.uint8)
            record, _ = accept_slide_window(project, slide, store, box, corrected, model_version="bundled")
            return record.region_id

        def expect(*live):
            want = original[0].copy()
            for box in live:
                want[box[0]:box[2], box[1]:box[3]] = fill[box]
            got = _labels(store)
            np.testing.assert_array_equal(got[0], want)
            np.testing.assert_array_equal(got[1], want[::2, ::2])  # the pyramid follows

        for first, second in ((a, b), (b, a)):
            ids = {first: accept(first), second: accept(second)}
            expect(first, second)
            # the project keeps what the store held: the later window's "predicted" is the earlier one's correction
            _, _, before = project.load_region(ids[second])
            want = original[0].copy()
            want[first[0]:first[2], first[1]:first[3]] = fill[first]
            np.testing.assert_array_equal(before, want[second[0]:second[2], second[1]:second[3]])
            project.withdraw(ids[first])
            assert [rid for rid, n in restore_withdrawn(project, store)] == [ids[first]]
            expect(second)  # the live window keeps all of its correction, the overlap included
            assert restore_withdrawn(project, store) == []  # undone once
            project.withdraw(ids[second])
            restore_withdrawn(project, store)
            expect()
        assert len(store_edits(store)) == 4 and all(e["restored"] for e in store_edits(store))

        # a window whose labels changed under it since it was opened is refused, nothing written
        stale = np.asarray(store.glands[0][0:64, 0:64]).copy()
        stale[0, 0] = 1 - stale[0, 0]
        with pytest.raises(WindowChanged):
            accept_slide_window(project, slide, store, (0, 0, 64, 64), np.ones((64, 64), np.uint8),
                                expected=stale, model_version="bundled")
        expect()
        assert len(project.regions()) == 0


# --------------------------------------------------------------------------- in napari

def _view(viewer, center, height):
    """Point the camera at ``center`` (level-0 pixels) showing ``height`` pixels of slide vertically."""
    viewer.camera.center = center
    viewer.camera.zoom = viewer.canvas.size[0] / height


def _predict(qtbot, panel):
    seen = []  # (value, maximum, running) at every move of the progress bar
    record = lambda v: seen.append((v, panel.progress.maximum(), panel.running))  # noqa: E731
    panel.progress.valueChanged.connect(record)
    assert panel.predict_view(), panel.last_message
    qtbot.waitUntil(lambda: not panel.running, timeout=180_000)
    panel.progress.valueChanged.disconnect(record)
    assert panel.last_message.startswith("Predicted"), panel.last_message
    # the bar is full only once the run has ended, not at its last chunk while the worker still works
    assert seen and all(v < m for v, m, running in seen if running and m > 0), seen
    assert panel.progress.value() == panel.progress.maximum()
    return panel.last_result


def _edit(qtbot, panel):
    """Press Edit window and wait for its worker; the edit window's layer, or None if none opened. While the
    worker runs, the panel's buttons are off and another Edit or Accept window is refused."""
    assert panel.edit_window() is True, panel.last_message
    assert panel.running and not panel.edit_button.isEnabled() and not panel.accept_button.isEnabled()
    assert panel.last_message.startswith("Reading the edit window"), panel.last_message
    assert panel.edit_window() is False and "edit window is being read" in panel.last_message
    assert panel.accept_window() is False and "edit window is being read" in panel.last_message
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    assert panel.edit_button.isEnabled() and panel.accept_button.isEnabled() and panel.predict_button.isEnabled()
    w = panel.window
    return panel.viewer.layers[w["name"]] if w is not None and w["name"] in panel.viewer.layers else None


def _accept(qtbot, panel):
    """Press Accept window and wait for its worker; the accepted region's record, or None if refused. While
    the worker runs, the window cannot be painted and another Accept or Edit window is refused."""
    layer = panel.viewer.layers[panel.window["name"]]
    assert layer.editable and panel.accept_window() is True, panel.last_message
    assert panel.running and not layer.editable and not panel.accept_button.isEnabled()
    assert panel.last_message.startswith("Accepting the window"), panel.last_message
    assert panel.accept_window() is False and "being accepted" in panel.last_message
    assert panel.edit_window() is False and "being accepted" in panel.last_message
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    assert panel.accept_button.isEnabled()
    assert layer.editable or panel.window is None  # painted again, unless the window was closed
    # the brush stays on the window (the outline layer an Accept adds took the selection: walk)
    assert panel.window is None or panel.viewer.layers.selection.active.name == layer.name
    return panel.last_record


def _assert_same_glands(labels, want):
    """``labels`` split the same pixels into the same glands as ``want`` (one label each), whatever the labels'
    numbers."""
    np.testing.assert_array_equal(labels > 0, want > 0)
    inside = want > 0
    pairs = np.unique(np.stack([labels[inside], want[inside]]), axis=1)
    assert pairs.shape[1] == len(np.unique(labels[inside])) == len(np.unique(want[inside]))


def _assert_one_label_per_gland(instances):
    """Every label is one 8-connected piece, and touching glands may have different labels; no label spans
    two separate glands."""
    from scipy import ndimage as ndi

    ids = np.unique(instances[instances > 0])
    assert len(ids) >= 2
    components, n = ndi.label(instances > 0, structure=np.ones((3, 3)))
    assert len(ids) >= n
    for i in ids:
        assert len(np.unique(components[instances == i])) == 1  # within one gland (component)


def _shown(box, view):
    """Whether a pixel box (pixel i covers [i - 0.5, i + 0.5] in napari) meets a world view box."""
    return box[0] - 0.5 < view[2] and view[0] < box[2] - 0.5 and box[1] - 0.5 < view[3] and view[1] < box[3] - 0.5


def _slide_in_dock(make_napari_viewer, tmp_path, slide_path, show=False):
    """A viewer with the slide opened by the plugin's reader and the dock on a project store; the slide
    panel uses chunks of CHUNK px. ``show``: the window is shown (a hidden canvas renders black screenshots)."""
    viewer = make_napari_viewer(show=show)
    (slide_layer,) = viewer.open(str(slide_path), plugin=PLUGIN)
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert dock.open_store(tmp_path / "project") is not None
    dock.slide_panel.chunk = CHUNK
    return viewer, slide_layer, dock, dock.slide_panel


def test_predict_view_cache_pan_review_and_edit_window(make_napari_viewer, qtbot, tmp_path, slide_path, mosaic):
    viewer, slide_layer, dock, panel = _slide_in_dock(make_napari_viewer, tmp_path, slide_path)
    assert panel.slide_layer is slide_layer
    store_path = tmp_path / "case.cdma.zarr"
    assert panel.store_edit.text() == str(store_path)

    # 1. predict the view: exactly the chunks under the canvas, labels only there
    _view(viewer, (200.0, 260.0), 240)
    view = panel.view_box()
    first = _predict(qtbot, panel)
    store = open_store(store_path)
    done = {tuple(int(v) for v in k) for k in np.argwhere(store.done())}
    assert done == set(first["chunks"]) and 0 < len(done) < store.grid[0] * store.grid[1]
    for cy in range(store.grid[0]):
        for cx in range(store.grid[1]):
            assert ((cy, cx) in done) == _shown(store.chunk_box(cy, cx), view)
    glands = np.asarray(store.glands[0][:])
    inside = np.zeros(glands.shape, bool)
    for k in done:
        y0, x0, y1, x1 = store.chunk_box(*k)
        inside[y0:y1, x0:x1] = True
    assert glands[inside].any() and not glands[~inside].any()  # the bundled model finds glands, only there
    assert not np.asarray(store.uncertainty[0][:])[~inside].any()
    labels_layer = viewer.layers[f"{slide_layer.name} glands"]
    assert labels_layer.contour > 0  # outlined, not a fill over the H&E
    assert labels_layer.multiscale and tuple(labels_layer.data[0].shape) == glands.shape
    np.testing.assert_array_equal(np.asarray(labels_layer.data[0][:]), glands)
    assert first["summary"].chunks_computed == len(done)
    # the uncertainty overlay: visible, drawn as an image's, over its own range over the predicted tissue
    # (from a coarse level of the store), and a legend that says where the tint starts
    unc = viewer.layers[f"{slide_layer.name} uncertainty"]
    rng = store_display_range(store)
    assert unc.visible and unc.colormap.name == uncertainty_colormap().name and unc.opacity == UNCERTAINTY_OPACITY
    assert rng is not None and rng[2] >= 1 and 0.0 < rng[0] < rng[1] <= 1.0
    np.testing.assert_allclose(unc.contrast_limits, [255 * rng[0], 255 * rng[1]], rtol=1e-6)
    tint = uncertainty_tint_start(rng[0], rng[1])
    assert not panel.legend.isHidden() and f"tint from {tint:.3f}" in panel.legend.legend_title.text()
    assert panel.legend.lo_label.text() == f"{rng[0]:.3f}" and panel.legend.hi_label.text() == f"{rng[1]:.3f}"

    # review regions: inside the predicted area, most uncertain first
    assert panel.tiles and panel.tile_list.count() == len(panel.tiles)
    scores = [s for s, _ in panel.tiles]
    assert scores == sorted(scores, reverse=True)
    for _, (y0, x0, y1, x1) in panel.tiles:
        assert inside[y0:y1, x0:x1].all()

    # 2. the same view again: everything from the store, no chunk file rewritten
    before = chunk_files(store_path, ("labels/glands/0", "uncertainty/0"))
    again = _predict(qtbot, panel)
    assert again["summary"].chunks_computed == 0 and set(again["chunks"]) == done
    assert chunk_files(store_path, ("labels/glands/0", "uncertainty/0")) == before

    # 3. pan right: only the chunks that came into view are predicted
    _view(viewer, (200.0, 260.0 + 2 * CHUNK), 240)
    panned = _predict(qtbot, panel)
    new = set(panned["chunks"]) - done
    assert new and panned["summary"].chunks_computed == len(new)
    done |= new
    # the contrast follows the chunks predicted since
    store = open_store(store_path)
    again_rng = store_display_range(store)
    assert again_rng != rng and tuple(unc.metadata[RANGE_KEY]) == again_rng
    np.testing.assert_allclose(unc.contrast_limits, [255 * again_rng[0], 255 * again_rng[1]], rtol=1e-6)
    assert panel.legend.hi_label.text() == f"{again_rng[1]:.3f}"

    # 4. edit window over the view, one label per gland, accepted into the store's labels, its pyramid and
    # the project
    layer = _edit(qtbot, panel)
    assert layer is not None, panel.last_message
    box = panel.window["box"]
    y0, x0, y1, x1 = box
    assert (y1 - y0, x1 - x0) == layer.data.shape and max(layer.data.shape) <= panel.max_edit_side
    assert tuple(layer.translate) == (y0, x0)
    instances = np.array(layer.data)
    predicted = np.asarray(store.glands[0][y0:y1, x0:x1])
    np.testing.assert_array_equal(instances > 0, predicted > 0)  # exactly the store's gland pixels
    _assert_one_label_per_gland(instances)
    assert layer.contour > 0 and layer.selected_label == instances.max() + 1  # outlined; paints a new gland
    # a new gland (two labels side by side: two glands, kept apart by a 1 px gap) and an erased corner
    edited = instances.copy()
    edited[8:60, 8:100] = 0
    new = int(instances.max()) + 1
    edited[10:40, 10:50] = new
    edited[10:40, 50:90] = new + 1
    edited[-30:, -30:] = 0
    want = edited > 0
    want[10:40, 50] = False
    layer.data = edited
    record = _accept(qtbot, panel)
    assert record is not None, panel.last_message
    store = open_store(store_path)
    np.testing.assert_array_equal(np.asarray(store.glands[0][y0:y1, x0:x1]), want)
    np.testing.assert_array_equal(np.asarray(layer.data) > 0, want)  # the window shows what the store holds
    edited = want.astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(store.glands[1][:]), np.asarray(store.glands[0][:])[::2, ::2])
    project = dock.store
    (stored,) = project.regions()
    assert stored.bbox == box and stored.source_path == str(slide_path) and not stored.withdrawn
    crop, corrected, before_edit = project.load_region(stored.region_id)
    np.testing.assert_array_equal(crop, mosaic[y0:y1, x0:x1])
    np.testing.assert_array_equal(corrected, edited)
    np.testing.assert_array_equal(before_edit, predicted)
    # accepted again unchanged: a new version, nothing of the store rewritten
    before = chunk_files(store_path, ("labels/glands/0",))
    again = _accept(qtbot, panel)
    assert again is not None and again.region_id == stored.region_id and "0 chunk(s)" in panel.last_message
    assert chunk_files(store_path, ("labels/glands/0",)) == before
    assert [r.region_id for r in project.training_regions() + project.holdout_regions()] == [stored.region_id]
    assert stored.region_id in panel.last_message
    # the accepted window is outlined just outside its pixels (world = level-0 pixels, pixel i spanning
    # [i - 0.5, i + 0.5]), red like accepted image regions
    outline = viewer.layers[names_for(slide_layer.name)["accepted"]]
    assert type(outline).__name__ == "Shapes" and len(outline.data) == 1
    half = float(np.asarray(outline.edge_width)[0]) / 2.0
    np.testing.assert_allclose(outline.data[0], np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]]) - 0.5
                               + half * np.array([[-1, -1], [-1, 1], [1, 1], [1, -1]]), atol=1e-3)
    np.testing.assert_allclose(outline.edge_color[0], [1.0, 0.0, 0.0, 1.0])

    # 5. Export: the store's glands as QuPath GeoJSON, written by a worker thread
    import json

    from src_model.export import rasterize

    geojson = tmp_path / "case.geojson"
    assert panel.export_geojson(geojson), panel.last_message
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    assert panel.last_message.startswith("Exported"), panel.last_message
    features = json.loads(geojson.read_text())["features"]
    assert features and f"Exported {len(features)} gland(s)" in panel.last_message
    assert all(f["properties"]["classification"]["name"] == "Gland" for f in features)
    store = open_store(store_path)
    truth = _exported(np.asarray(store.glands[0][:]))
    back = rasterize(features, truth.shape) > 0
    assert (back & truth).sum() / (back | truth).sum() >= 0.99  # the exported polygons are the store's glands


def test_edit_window_needs_a_predicted_view(make_napari_viewer, qtbot, tmp_path, slide_path):
    viewer = make_napari_viewer()
    viewer.open(str(slide_path), plugin=PLUGIN)
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    panel = dock.slide_panel
    assert panel.edit_window() is False and "Predict the view first" in panel.last_message
    assert panel.accept_window() is False and "edit window first" in panel.last_message
    assert not panel.running


def test_write_window_refuses_unpredicted_chunks(tmp_path, slide_path):
    from src_model.slide_store import StoreInfo, create_store

    store = create_store(tmp_path / "s.zarr", StoreInfo(slide=str(slide_path), slide_level=0, downsample=1.0,
                                                         height=640, width=768, chunk=CHUNK, n_levels=2))
    with pytest.raises(ValueError, match="not predicted"):
        write_window(store, (0, 0, 64, 64), np.ones((64, 64), np.uint8))
    assert not np.asarray(store.glands[0][:64, :64]).any()


def test_cancel_keeps_finished_chunks_and_the_next_click_does_the_rest(make_napari_viewer, qtbot, tmp_path,
                                                                        slide_path):
    viewer = make_napari_viewer()
    viewer.open(str(slide_path), plugin=PLUGIN)
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert dock.open_store(tmp_path / "project") is not None
    panel = dock.slide_panel
    panel.chunk = CHUNK
    _view(viewer, (320.0, 384.0), 700)  # the whole slide: 30 chunks, 16 a click
    assert panel.predict_view()
    total = 16 + FINISH_STEPS + SHOW_STEPS  # chunks, then ranking and identity, then showing the result
    qtbot.waitUntil(lambda: panel.progress.maximum() == total and panel.progress.value() >= 1, timeout=120_000)
    panel.cancel()
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    assert "cancelled" in panel.last_message
    kept = int(open_store(tmp_path / "case.cdma.zarr").done().sum())
    assert 1 <= kept < 16
    rest = _predict(qtbot, panel)
    assert rest["n_visible"] == 30 and len(rest["chunks"]) == 16
    assert rest["summary"].chunks_computed == 16 - kept and rest["summary"].chunks_done == 16
    assert "30 chunks" in panel.last_message  # says the view holds more than one click does


def test_a_store_of_cdma_predict_slide_opened_as_the_slide_is_used_as_the_cache(make_napari_viewer, qtbot, tmp_path,
                                                                                 slide_path):
    """Drag the store `cdma predict-slide` wrote (chunks of 256 px): Predict view works in that store, with its
    chunks, recomputes nothing it holds, and its glands layer becomes a live view of the store."""
    from src_model.progress import drain
    from src_model.slide_predict import predict_slide

    store_path = tmp_path / "run.zarr"
    drain(predict_slide(slide_path, store_path, chunk=256, chunks=[(0, 0), (0, 1)]))
    viewer = make_napari_viewer()
    image, *_ = viewer.open(str(store_path), plugin=PLUGIN)
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert dock.open_store(tmp_path / "project") is not None
    panel = dock.slide_panel
    panel.chunk = CHUNK  # not used: the store has its own
    assert panel.slide_layer is image and panel.store_edit.text() == str(store_path)
    assert list(panel.slide_choice.choices) == [image]  # the store's uncertainty names the slide; no slide
    _view(viewer, (128.0, 256.0), 200)
    result = _predict(qtbot, panel)
    assert set(result["chunks"]) == {(0, 0), (0, 1)} and result["summary"].chunks_computed == 0
    panel.slide_choice.reset_choices()
    assert list(panel.slide_choice.choices) == [image]  # nor are the panel's live overlays
    glands = viewer.layers[f"{image.name} glands"]
    assert glands.metadata.get("napari_cdma_live") and len(viewer.layers) == 4  # reader's 3 (glands replaced) + review
    np.testing.assert_array_equal(np.asarray(glands.data[0][:256, :512]),
                                  np.asarray(open_store(store_path).glands[0][:256, :512]))


def _predicted_in_dock(make_napari_viewer, qtbot, tmp_path, slide_path):
    """:func:`_slide_in_dock` with the view over (200, 260), 240 px, predicted; ``(viewer, slide layer, dock,
    slide panel)``."""
    viewer, slide_layer, dock, panel = _slide_in_dock(make_napari_viewer, tmp_path, slide_path)
    _view(viewer, (200.0, 260.0), 240)
    _predict(qtbot, panel)
    return viewer, slide_layer, dock, panel


def test_withdrawing_an_accepted_window_restores_the_slide_labels(make_napari_viewer, qtbot, tmp_path, slide_path):
    """Accept an edited window, withdraw it (from the panel's list, then from the dock's region list): the store's
    labels and pyramid are what they were before, the live layer shows them, and Export writes them."""
    import json

    from src_model.export import rasterize

    viewer, slide_layer, dock, panel = _predicted_in_dock(make_napari_viewer, qtbot, tmp_path, slide_path)
    store_path = tmp_path / "case.cdma.zarr"
    predicted = _labels(open_store(store_path))

    def accept_an_edit():
        layer = _edit(qtbot, panel)
        assert layer is not None, panel.last_message
        edited = np.array(layer.data)
        edited[8:40, 8:72] = np.where(edited[8:40, 8:72] > 0, 0, edited.max() + 1)  # glands added and erased
        edited[-30:, -30:] = 0
        layer.data = edited
        record = _accept(qtbot, panel)
        assert record is not None, panel.last_message
        y0, x0, y1, x1 = record.bbox
        labels = _labels(open_store(store_path))
        np.testing.assert_array_equal(labels[0][y0:y1, x0:x1], np.asarray(layer.data) > 0)
        assert not np.array_equal(labels[0], predicted[0]) and not np.array_equal(labels[1], predicted[1])
        return record

    def assert_as_predicted():
        labels = _labels(open_store(store_path))
        np.testing.assert_array_equal(labels[0], predicted[0])
        np.testing.assert_array_equal(labels[1], predicted[1])

    def assert_window_shows_the_restored_labels(window_id):
        """The edit window that showed the withdrawn edit is still open, the same layer (none was removed),
        and shows the restored labels, one label per gland, as Edit window would open there now; it is
        compared with them when accepted again, and the status line says so."""
        w = panel.window
        assert w is not None and viewer.layers[w["name"]].unique_id == window_id
        y0, x0, y1, x1 = w["box"]
        want = predicted[0][y0:y1, x0:x1]
        shown = np.asarray(viewer.layers[w["name"]].data)
        _assert_same_glands(shown, window_instances(want))
        np.testing.assert_array_equal(np.asarray(w["predicted"]), want)
        np.testing.assert_array_equal(np.asarray(w["instances"]), shown)
        assert viewer.layers[w["name"]].selected_label == shown.max() + 1  # painting adds a new gland
        assert "edit window over it now shows the slide's labels" in panel.last_message, panel.last_message

    # 1. from the panel: select the accepted window, press Withdraw window
    first = accept_an_edit()
    assert panel.window_list.count() == 1 and first.region_id in panel.window_list.item(0).text()
    window_id = viewer.layers[panel.window["name"]].unique_id
    removed = []  # no layer is removed while a window is withdrawn (napari collects garbage on the GUI thread)
    viewer.layers.events.removed.connect(lambda e: removed.append(e.value.name))
    panel.window_list.setCurrentRow(0)
    panel.withdraw_button.click()
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)  # the stores are written in a worker thread
    assert panel.last_message.startswith(f"Withdrew window {first.region_id}"), panel.last_message
    assert_as_predicted()
    glands = viewer.layers[f"{slide_layer.name} glands"]
    np.testing.assert_array_equal(np.asarray(glands.data[0][:]), predicted[0])  # the live layer shows it
    assert dock.store.regions() == [] and panel.window_list.count() == 0
    # the edit window showed the withdrawn edit over the restored labels: it shows them now, and says so
    assert_window_shows_the_restored_labels(window_id)
    assert removed == []
    assert len(viewer.layers[names_for(slide_layer.name)["accepted"]].data) == 0  # no outline left
    assert dock.review_panel.region_list.count() == 0  # the dock's list follows

    # 2. from the dock's accepted-region list: the slide panel notices and undoes it in the store
    second = accept_an_edit()
    assert second.region_id != first.region_id and panel.window_list.count() == 1
    window_id = viewer.layers[panel.window["name"]].unique_id
    removed.clear()  # Edit window replaced the window it showed before
    assert dock.review_panel.withdraw(second.region_id)
    qtbot.waitUntil(lambda: panel.window_list.count() == 0 and not panel.running, timeout=30_000)
    assert_as_predicted()
    assert panel.last_message.startswith(f"Undid window(s) {second.region_id} "), panel.last_message
    assert_window_shows_the_restored_labels(window_id)
    assert removed == [] and not panel.withdraw_button.isEnabled()  # none left to select (walk 20)
    np.testing.assert_array_equal(np.asarray(viewer.layers[f"{slide_layer.name} glands"].data[1][:]), predicted[1])
    # 3. withdrawn while the panel does not watch: Export undoes it (in its worker) before writing, so it is not
    # exported
    third = accept_an_edit()
    panel._watch.stop()
    dock.store.withdraw(third.region_id)
    geojson = tmp_path / "case.geojson"
    assert panel.export_geojson(geojson), panel.last_message
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    assert_as_predicted()
    assert panel.last_message.startswith("Exported"), panel.last_message
    back = rasterize(json.loads(geojson.read_text())["features"], predicted[0].shape) > 0
    truth = _exported(predicted[0])
    assert (back & truth).sum() / (back | truth).sum() >= 0.99  # the withdrawn window is not exported


def test_painting_after_accept_leaves_what_the_window_compares_with(make_napari_viewer, qtbot, tmp_path, slide_path):
    """After Accept window the window stays editable; painting it again must not change the labels the next
    Accept compares with (the window as accepted), or that Accept could not tell what was painted."""
    viewer, slide_layer, dock, panel = _predicted_in_dock(make_napari_viewer, qtbot, tmp_path, slide_path)
    layer = _edit(qtbot, panel)
    assert layer is not None, panel.last_message
    edited = np.array(layer.data)
    edited[8:40, 8:72] = np.where(edited[8:40, 8:72] > 0, 0, edited.max() + 1)
    ids = [i for i in np.unique(edited) if i]
    a, b = ids[0], ids[1]
    edited[np.isin(edited, [a, b])] = a  # two glands given one label: split again by shape at Accept
    layer.data = edited
    assert _accept(qtbot, panel) is not None, panel.last_message
    kept = {k: np.array(panel.window[k]) for k in ("instances", "predicted")}
    painted = int(np.asarray(layer.data).max()) + 1
    yy, xx = np.mgrid[0:6, 0:6]
    layer.data_setitem((yy.ravel(), xx.ravel()), painted)  # paint in place, as the brush does
    assert (np.asarray(layer.data)[0:6, 0:6] == painted).all()
    for k, before in kept.items():
        np.testing.assert_array_equal(np.asarray(panel.window[k]), before, err_msg=k)


def test_the_image_corrections_chooser_offers_no_slide_layer(make_napari_viewer, qtbot, tmp_path, slide_path):
    """With only a slide open, the review panel's Corrections chooser (image regions) offers neither the slide's
    glands nor its edit window: the Whole slide panel accepts those (pathologist walk)."""
    viewer, slide_layer, dock, panel = _predicted_in_dock(make_napari_viewer, qtbot, tmp_path, slide_path)
    layer = _edit(qtbot, panel)
    assert layer is not None and f"{slide_layer.name} glands" in viewer.layers, panel.last_message
    choices = dock.review_panel.labels_choice
    choices.reset_choices()
    assert list(choices.choices) == [], [c.name for c in choices.choices]
    own = viewer.add_labels(np.zeros((32, 32), np.int32), name="my corrections")  # an image's labels are offered
    choices.reset_choices()
    assert list(choices.choices) == [own]
