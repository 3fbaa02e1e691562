"""The napari-cdma dock in a real napari viewer, loaded through its npe2 manifest.

One long workflow test (sample -> predict -> review -> correct -> accept -> retrain -> promote or
keep -> roll back -> cancel -> reopen) keeps the number of viewers and model loads small; the
bad-input test and the Qt-free glue tests are separate.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from _dock import PLUGIN, wait_settled
from _dock import open_dock as _dock
from _dock import predict_and_wait as _predict_and_wait

from napari_cdma._layers import (
    FILL_OPACITY,
    OUTLINE_WIDTH,
    SECONDARY_OUTLINE_WIDTH,
    camera_for_tile,
    names_for,
    upsert_layer,
)
from napari_cdma._sample import SAMPLE_NAME, make_sample_data
from napari_cdma.project.events import Done

SAMPLE_KEY = "glas_testA_1"
FAST_TRAIN = dict(device="cpu", patch=64, batch_labelled=2, batch_unlabelled=2)


def _layer_counts(viewer):
    return sorted(layer.name for layer in viewer.layers)


# --------------------------------------------------------------------------- Qt-free glue

def test_sample_data_is_rgb_glas():
    ((data, meta, kind),) = make_sample_data()
    assert kind == "image" and meta["name"] == SAMPLE_NAME and meta["rgb"]
    assert data.dtype == np.uint8 and data.shape == (522, 775, 3)


def test_camera_for_tile_centres_and_fills():
    (cy, cx), zoom = camera_for_tile((256, 512, 512, 768), (600, 800))
    assert 256 <= cy < 512 and 512 <= cx < 768
    assert zoom == pytest.approx(600 / (256 * 1.05))


def test_upsert_layer_does_not_duplicate():
    from napari.components import ViewerModel

    vm = ViewerModel()
    a = upsert_layer(vm, "x prediction", np.zeros((8, 8), np.uint8), "labels")
    b = upsert_layer(vm, "x prediction", np.ones((8, 8), np.uint8), "labels")
    assert a is b and len(vm.layers) == 1 and b.data.sum() == 64


def test_edit_and_region_helpers():
    from napari_cdma._layers import not_yet_accepted, shape_bbox, unaccepted_edits

    original = np.zeros((100, 100), np.int32)
    edited = original.copy()
    edited[10:20, 10:20] = 3
    assert unaccepted_edits(edited, original, []) == 100
    assert unaccepted_edits(edited, original, [(0, 0, 15, 100)]) == 50
    assert unaccepted_edits(edited, original, [(0, 0, 50, 50)]) == 0
    ranked = [(0.9, (0, 0, 50, 50)), (0.8, (50, 50, 100, 100))]
    assert not_yet_accepted(ranked, [(0, 0, 40, 50)]) == ranked[1:]
    assert shape_bbox(np.array([[-5.0, 10.2], [30.0, 60.7]]), (100, 50)) == (0, 11, 31, 50)
    assert shape_bbox(np.array([[200.0, 0.0], [300.0, 10.0]]), (100, 100)) is None


def test_paste_corrections_and_overlay_order():
    """Accepted corrections are pasted into a new prediction inside their boxes, with ids of their own
    unless they continue a gland across the box's edge (then its id: tests/test_paste_joins_glands.py);
    the review overlays go back above a prediction layer added later."""
    from napari.components import ViewerModel

    from napari_cdma._layers import paste_corrections, raise_overlays, show_accepted, show_review_tiles

    labels = np.zeros((20, 20), np.int32)
    labels[0:10, 0:10] = 1
    labels[12:20, 12:20] = 2
    first = np.zeros((6, 6), np.int32)
    first[1:3, 1:3] = 1
    first[4:6, 4:6] = 5
    later = np.full((4, 4), 9, np.int32)
    later[0, 0] = 0
    assert paste_corrections(labels, [((2, 2, 8, 8), first), ((6, 6, 10, 10), later),
                                      ((0, 0, 3, 3), np.ones((5, 5), np.int32))]) == 2  # wrong size: skipped
    assert labels[2, 2] == 0 and labels[0, 0] == 1  # the box's background is the correction's
    assert labels[3, 3] == 3 and labels[5, 5] == 0  # touches nothing outside its box: a new id above the model's
    assert labels[6, 6] == 0 and labels[7, 7] == 1  # the later correction wins where they overlap
    assert labels[9, 9] == 1 and 4 not in labels and 5 not in labels  # ... and joins gland 1 across its edge
    assert labels[15, 15] == 2  # outside the boxes the prediction stays

    vm = ViewerModel()
    names = names_for("img")
    vm.add_image(np.zeros((20, 20, 3), np.uint8), name="img", rgb=True)
    show_accepted(vm, "img", [(0, 0, 5, 5)])
    show_review_tiles(vm, "img", [(0.5, (5, 5, 10, 10))])
    vm.add_labels(np.zeros((20, 20), np.int32), name=f"{names['prediction']} (v0002)")
    vm.add_image(np.zeros((20, 20), np.float32), name=names["uncertainty"])
    raise_overlays(vm, "img")
    order = [ly.name for ly in vm.layers]
    assert order[-2:] == [names["tiles"], names["accepted"]], order
    moved = []
    vm.layers.events.moved.connect(moved.append)
    raise_overlays(vm, "img")  # already on top, in that order: nothing moves (each move redraws the canvas)
    assert moved == [] and [ly.name for ly in vm.layers] == order
    vm.add_image(np.zeros((20, 20), np.float32), name=names["disagreement"])
    raise_overlays(vm, "img")
    assert moved and [ly.name for ly in vm.layers][-2:] == [names["tiles"], names["accepted"]]


# --------------------------------------------------------------------------- GUI workflow

def test_full_workflow(make_napari_viewer, qtbot, tmp_path, lite_checkpoint):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, SAMPLE_KEY)
    assert SAMPLE_NAME in viewer.layers and viewer.layers[SAMPLE_NAME].rgb
    store_path = tmp_path / "project"
    widget = _dock(viewer, store_path)
    # The bundled model ships later; start the project from a (random) lite model instead.
    first = widget.store.add_model(lite_checkpoint, parent="bundled", promoted=True)
    widget.open_store(store_path)
    wait_settled(widget)
    assert widget.predict_panel.model_choice() == ("version", first.version)

    # Predict: layers appear; a second run updates them in place.
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    names = names_for(SAMPLE_NAME)
    labels = viewer.layers[names["prediction"]]
    heat = viewer.layers[names["disagreement"]]
    assert type(labels).__name__ == "Labels" and labels.data.shape == (522, 775)
    # the branch disagreement (hidden) is drawn like the uncertainty, over its own robust range over tissue
    from src_model.tissue import tissue_mask
    from src_model.uncertainty import display_range

    tissue = tissue_mask(np.asarray(viewer.layers[SAMPLE_NAME].data)[..., :3])
    assert not heat.visible and heat.colormap.name == viewer.layers[names["uncertainty"]].colormap.name
    np.testing.assert_allclose(heat.contrast_limits, display_range(np.asarray(heat.data), tissue), rtol=1e-5)
    assert float(np.min(heat.data)) <= heat.contrast_limits[0] < heat.contrast_limits[1] <= float(np.max(heat.data))
    assert type(viewer.layers[names["tiles"]]).__name__ == "Shapes"
    layer_names = _layer_counts(viewer)
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    assert _layer_counts(viewer) == layer_names

    # Review: ranked descending; Next moves the camera into the first tile.
    review = widget.review_panel
    scores = [s for s, _ in review.tiles]
    assert scores and scores == sorted(scores, reverse=True)
    assert review.tile_list.count() == len(review.tiles)
    review.next_button.click()
    y0, x0, y1, x1 = review.tiles[0][1]
    cy, cx = review_center = tuple(viewer.scene.camera.center)[-2:]
    assert y0 <= cy < y1 and x0 <= cx < x1, (review_center, review.tiles[0])

    # Correct and accept: paint, accept; five regions so that one is held out.
    labels.data[y0:y0 + 40, x0:x0 + 40] = 1
    labels.refresh()
    record = review.accept()
    assert record is not None, review.last_message
    # the accepted square leaves "Look here next" (list and canvas) at once
    assert (y0, x0, y1, x1) not in [b for _, b in review.tiles]
    assert review.tile_list.count() == len(review.tiles) == len(viewer.layers[names["tiles"]].data)
    store = widget.store
    stored_crop, corrected, predicted = store.load_region(record.region_id)
    assert corrected[:40, :40].all() and stored_crop.shape[:2] == (y1 - y0, x1 - x0)
    assert record.model_version == first.version and record.user
    extra = [(0, 0, 96, 96), (96, 0, 192, 96), (0, 96, 96, 192), (96, 96, 192, 192), (200, 200, 264, 264)]
    for bbox in extra:
        assert review.accept(bbox=bbox) is not None, review.last_message
    assert len(store.regions()) == 6 and len(store.holdout_regions()) == 1
    assert review.region_list.count() == 6
    assert widget.store_label.text().startswith("6 accepted regions,")  # the summary follows accepts
    assert "6 accepted region(s) (1 held out)" in widget.store_label.toolTip()  # its details
    assert review.withdraw(store.regions()[-1].region_id)
    assert len(store.regions()) == 5 and review.region_list.count() == 5

    # Retrain in the background: 3 tiny steps; the promote rule follows the held-out Dice.
    retrain = widget.retrain_panel
    retrain.train_kwargs = dict(FAST_TRAIN)
    retrain.steps_spin.setValue(3)
    retrain.retrain_button.click()  # as the user does (tests/test_dock_layout.py: it scrolls into view)
    assert retrain.state == "running", retrain.last_message
    qtbot.waitUntil(lambda: retrain.state in ("done", "error"), timeout=240_000)
    assert retrain.state == "done", retrain.last_message
    done, trained = retrain.last_done, retrain.last_record
    assert isinstance(done, Done) and done.n_holdout == 1 and len(retrain.loss_plot.values) >= 1
    # one held-out region: too little for the rule to promote, whatever the Dice (issue 9); the random
    # model's prediction leaves ~15 px of gland in it: the panel says so in words instead of a Dice
    assert not trained.promoted and store.current_model_version == first.version
    assert "too little to promote automatically" in retrain.last_message
    if done.old_dice is None:
        assert "held-out score rests on" in retrain.last_message or "hold no glands" in retrain.last_message
        assert "Dice" not in retrain.last_message and "n/a" not in retrain.last_message
    else:
        assert "decided on 1 held-out region(s)" in retrain.last_message
    assert retrain.last_message.startswith(f"{trained.version}: ")
    assert retrain.keep_button.isVisibleTo(retrain)
    assert any(m.version == trained.version for m in store.models())
    assert f"{len(store.models())} trained version(s)" in widget.store_label.toolTip()  # and retrains
    assert widget.versions_panel.roll_back(first.version)
    assert store.current_model_version == first.version
    qtbot.waitUntil(lambda: not widget.predict_panel.running, timeout=60_000)
    # rolling back to the version already current says so and re-predicts nothing
    assert widget.versions_panel.roll_back(first.version)
    assert "already the current model" in widget.versions_panel.last_message and not widget.predict_panel.running

    # Both outcomes, each for sure: the same real checkpoint reported worse, then better.
    retrain._handle(replace(done, old_dice=0.9, new_dice=0.8, better=False))
    qtbot.waitUntil(lambda: retrain.state != "registering", timeout=30_000)  # registered off the GUI thread
    kept = retrain.last_record
    assert not kept.promoted and store.current_model_version == first.version
    assert retrain.keep_button.isVisibleTo(retrain) and "not promoted" in retrain.last_message
    retrain.keep_button.click()
    assert store.current_model_version == kept.version and not retrain.keep_button.isVisibleTo(retrain)
    qtbot.waitUntil(lambda: widget.states[SAMPLE_NAME].model_version == kept.version
                    and not widget.predict_panel.running, timeout=60_000)

    retrain._handle(replace(done, old_dice=0.8, new_dice=0.9, better=True, n_holdout=3, agreement=0.99))
    qtbot.waitUntil(lambda: retrain.state != "registering", timeout=30_000)  # registered off the GUI thread
    new = retrain.last_record
    assert new.promoted and store.current_model_version == new.version
    assert not retrain.keep_button.isVisibleTo(retrain) and "promoted" in retrain.last_message
    # The prediction refreshes with the new current model.
    qtbot.waitUntil(lambda: widget.states[SAMPLE_NAME].model_version == new.version
                    and not widget.predict_panel.running, timeout=60_000)
    assert _layer_counts(viewer) == layer_names
    # The new prediction shows the accepted corrections (the painted square one gland; it takes the id of a gland it
    # continues across its box's edge, else a new one: walk 22), and the accepted boxes stay above it.
    painted = np.zeros(labels.data.shape, bool)
    painted[y0:y0 + 40, x0:x0 + 40] = True
    painted[200:264, 200:264] = False  # the withdrawn region keeps the model's prediction
    shown = viewer.layers[names["prediction"]].data
    assert (shown[painted] > 0).all() and len(np.unique(shown[painted])) == 1
    assert "accepted correction(s)" in widget.predict_panel.last_message
    order = [ly.name for ly in viewer.layers]
    assert order.index(names["accepted"]) > max(order.index(names["prediction"]), order.index(names["uncertainty"]))
    assert widget.versions_panel.version_list.count() == 1 + len(store.models())

    # Roll back to the first version: current model and predictions follow.
    assert widget.versions_panel.roll_back(first.version)
    assert store.current_model_version == first.version
    qtbot.waitUntil(lambda: widget.states[SAMPLE_NAME].model_version == first.version
                    and not widget.predict_panel.running, timeout=60_000)

    # Cancel: start a long run and stop it.
    assert retrain.start(steps=5000)
    qtbot.waitUntil(lambda: len(retrain.loss_plot.values) > 0, timeout=120_000)
    retrain.cancel_button.click()
    qtbot.waitUntil(lambda: retrain.state in ("cancelled", "error"), timeout=60_000)
    assert retrain.state == "cancelled", retrain.last_message
    assert store.current_model_version == first.version

    # Reopen the store in a new dock: regions, versions and current model come back.
    from napari_cdma._widget import CdmaWidget

    again = CdmaWidget(viewer, store_path=store_path)
    assert again.review_panel.region_list.count() == 5
    assert again.versions_panel.version_list.count() == 1 + len(store.models())
    assert again.predict_panel.model_choice() == ("version", first.version)
    again.deleteLater()


def test_bad_inputs_show_messages(make_napari_viewer, qtbot, tmp_path, foreign_checkpoint):
    viewer = make_napari_viewer()
    widget = _dock(viewer, tmp_path / "project")
    panel = widget.predict_panel
    errors = []
    panel.failed.connect(errors.append)

    viewer.add_image(np.zeros((2, 64, 64), np.float32), name="two channels", channel_axis=None)
    assert not widget.predict("two channels")
    assert "RGB" in panel.last_message and len(errors) == 1

    labels = viewer.add_labels(np.zeros((64, 64), np.uint8), name="some labels")
    assert not panel.predict(labels)
    assert "Labels layer" in panel.last_message

    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="rgb", rgb=True)
    panel.pixel_limit = 1000
    assert not widget.predict("rgb")
    assert "pixel limit" in panel.last_message
    panel.pixel_limit = None

    panel.set_model_file(str(foreign_checkpoint))
    assert widget.predict("rgb")
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert "Cannot use this model" in panel.last_message
    # the engine's wording ("not a readable checkpoint", now "not a napari-cdma checkpoint (...)")
    assert "not a readable checkpoint" in panel.last_message or "not a napari-cdma checkpoint" in panel.last_message
    assert "rgb prediction" not in viewer.layers

    panel.set_model_file(str(tmp_path / "missing.pt"))
    assert widget.predict("rgb")
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert "no such checkpoint" in panel.last_message
    assert len(errors) == 5


# --------------------------------------------------------------------------- issues 8 and 9

def test_split_gland_yields_two_labels():
    """Two touching glands (a neck between two discs) become two labels, each in the gland table."""
    from types import SimpleNamespace

    from napari_cdma._widget_predict import _review_outputs

    yy, xx = np.mgrid[:256, :256]
    mask = ((yy - 128) ** 2 + (xx - 99) ** 2 <= 30 ** 2) | ((yy - 128) ** 2 + (xx - 157) ** 2 <= 30 ** 2)
    assert mask[128, 128]  # touching: one connected component
    unc = np.where(mask, 0.2, 0.05).astype(np.float32)
    pred = SimpleNamespace(labels=mask.astype(np.uint8), disagreement=unc, entropy=unc, uncertainty=unc)
    image = np.full((256, 256, 3), 240, np.uint8)
    image[mask] = (150, 60, 140)  # H&E-like tissue where the glands are
    out = _review_outputs(pred, image)
    ids = sorted(set(np.unique(out["instances"])) - {0})
    assert len(ids) == 2 and out["instances"][128, 99] != out["instances"][128, 157]
    assert [g["id"] for g in out["glands"]] == ids
    assert all(min(b[2] - b[0], b[3] - b[1]) >= 128 for _, b in out["ranked"])


def _accepted_rects(viewer, image_name):
    return viewer.layers[names_for(image_name)["accepted"]].data


def test_corrections_display_and_reopen(make_napari_viewer, qtbot, tmp_path, lite_checkpoint):
    from scipy import ndimage as ndi

    from napari_cdma._widget import CdmaWidget
    from napari_cdma._widget_review import canvas_hw, scene_camera
    from src_model.tissue import tissue_mask

    viewer = make_napari_viewer(show=True)  # a hidden canvas renders black screenshots
    viewer.window._qt_window.resize(1500, 900)  # a canvas of desktop size beside the dock (screen: setup.cfg)
    viewer.open_sample(PLUGIN, SAMPLE_KEY)
    store_path = tmp_path / "project"
    widget = _dock(viewer, store_path)
    store = widget.store
    first = store.add_model(lite_checkpoint, parent="bundled", promoted=True)
    trial = store.add_model(lite_checkpoint, parent=first.version, promoted=False)
    widget.open_store(store_path)
    wait_settled(widget)
    store = widget.store  # the store as the dock reopened it
    panel = widget.predict_panel
    names = names_for(SAMPLE_NAME)

    # Every version can be chosen, promoted or not.
    texts = [panel.model_combo.itemText(i) for i in range(panel.model_combo.count())]
    assert any(trial.version in t and "not promoted" in t for t in texts), texts
    from qtpy.QtCore import Qt

    # each whole in its tooltip: a narrow dock may elide "v0002 (not promoted)"
    assert [panel.model_combo.itemData(i, Qt.ItemDataRole.ToolTipRole) for i in range(len(texts))] == texts
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    labels = viewer.layers[names["prediction"]]

    # Uncertainty: contrast from its own values over tissue, visible, legend and readout.
    layer = viewer.layers[names["uncertainty"]]
    vals = np.asarray(layer.data)[tissue_mask(widget.states[SAMPLE_NAME].image)]
    lo, hi = layer.contrast_limits
    assert layer.visible and vals.min() - 1e-6 <= lo < hi <= vals.max() + 1e-6
    assert ((vals >= lo) & (vals <= hi)).mean() > 0.9 and (lo, hi) != (0.0, 1.0)
    display = widget.display_panel
    assert display.lo_label.text() and display.legend.pixmap() is not None
    assert "uncertainty" in display.value_text((260.0, 380.0))
    shown = [ly for ly in viewer.layers if ly.visible]
    for ly in viewer.layers:
        ly.visible = ly is layer
    viewer.reset_view()
    shot = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].mean(axis=-1)
    for ly in shown:
        ly.visible = True
    assert shot.std() > 10 and len(np.unique(shot.round())) > 30, (shot.std(), len(np.unique(shot)))
    # Over the H&E: where the uncertainty is at or below the range's low bound the screen shows the H&E
    # unchanged (transparent); near the high bound the overlay changes it strongly.
    he = viewer.layers[SAMPLE_NAME]
    for ly in viewer.layers:
        ly.visible = ly is layer or ly is he
    with_overlay = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].astype(float)
    layer.visible = False
    bare = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].astype(float)
    for ly in shown:
        ly.visible = True
    rows, cols = np.indices(bare.shape[:2])
    zoom, (cy, cx) = viewer.camera.zoom, tuple(viewer.camera.center)[-2:]
    y = np.round(cy + (rows - bare.shape[0] / 2) / zoom).astype(int)  # the data pixel under each screen pixel
    x = np.round(cx + (cols - bare.shape[1] / 2) / zoom).astype(int)
    data = np.asarray(layer.data)
    inside = (y >= 1) & (y < data.shape[0] - 1) & (x >= 1) & (x < data.shape[1] - 1)
    y, x = np.clip(y, 0, data.shape[0] - 1), np.clip(x, 0, data.shape[1] - 1)
    # pixels whose neighbourhood is all low (all high), the neighbourhood covering what one screen pixel
    # samples at this zoom plus one pixel: a screen pixel off by one still lands on one
    k = 2 * int(np.ceil(0.5 / min(zoom, 1.0))) + 1
    # "low": at most 5 % into the range (drawn at under 1 % opacity)
    low = inside & (ndi.maximum_filter(data, size=k) <= lo + 0.05 * (hi - lo))[y, x]
    # "high": the top fifth of the range (the canvas beside the dock is small: too few pixels at the bound itself)
    high = inside & (ndi.minimum_filter(data, size=k) >= lo + 0.8 * (hi - lo))[y, x]
    change = np.abs(with_overlay - bare).max(axis=-1)
    assert low.sum() > 100 and high.sum() > 100, (low.sum(), high.sum())
    assert np.median(change[low]) <= 1 and np.quantile(change[low], 0.9) <= 3, np.quantile(change[low], [0.5, 0.9])
    assert np.median(change[high]) > 60, np.median(change[high])

    # One label per gland in the prediction layer, and the gland table lists them; CSV export.
    assert labels.contour > 0
    ids = sorted(set(np.unique(labels.data).tolist()) - {0})
    assert [g["id"] for g in display.glands] == ids and display.table.rowCount() == len(ids)
    if display.glands and "bbox" in display.glands[0]:  # the engine's gland table gives each gland's box
        gy0, gx0, gy1, gx1 = display.glands[0]["bbox"]
        assert display.go_to_gland(display.glands[0]["id"])
        gy, gx = tuple(scene_camera(viewer).center)[-2:]
        assert gy0 <= gy < gy1 and gx0 <= gx < gx1
    csv_path = display.export_csv(tmp_path / "glands.csv")
    assert csv_path.read_text().splitlines()[0].startswith("id,area,mean_uncertainty")
    assert len(csv_path.read_text().splitlines()) == 1 + len(ids)

    # Next shows a region at least 128 px a side, all of it in view.
    review = widget.review_panel
    review.next_button.click()
    y0, x0, y1, x1 = review.current_bbox()
    assert y1 - y0 >= 128 and x1 - x0 >= 128
    # the selected review box is drawn apart from the others: thicker, yellow
    from napari_cdma._widget_review import CURRENT_TILE_WIDTH, TILE_WIDTH

    tiles_layer = viewer.layers[names["tiles"]]
    # screen pixels at the zoom Next set (walk 17: image pixels were thick bars on screen)
    on_screen = np.asarray(tiles_layer.edge_width[:2]) * scene_camera(viewer).zoom
    assert np.allclose(on_screen, [CURRENT_TILE_WIDTH, TILE_WIDTH], rtol=0.01)
    assert np.allclose(tiles_layer.edge_color[0], (1, 1, 0, 1)) and not np.allclose(tiles_layer.edge_color[1],
                                                                                  (1, 1, 0, 1))
    camera = scene_camera(viewer)
    (ch, cw), (cy, cx) = canvas_hw(viewer), tuple(camera.center)[-2:]
    half_h, half_w = ch / camera.zoom / 2, cw / camera.zoom / 2
    assert cy - half_h <= y0 - 0.5 and y1 - 0.5 <= cy + half_h, (camera.center, camera.zoom, (ch, cw))
    assert cx - half_w <= x0 - 0.5 and x1 - 0.5 <= cx + half_w

    # An edit not accepted yet survives a re-predict, here with the version being tried.
    labels.data[10:30, 10:30] = 7
    labels.refresh()
    panel.model_combo.setCurrentIndex(panel._find(("version", trial.version)))
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    assert (labels.data[10:30, 10:30] == 7).all()
    tried = f"{names['prediction']} ({trial.version})"
    assert tried in viewer.layers and "not accepted" in panel.last_message and tried in panel.last_message
    # the tried version is drawn apart (thinner outlines), and the review overlays stay on top
    assert viewer.layers[tried].contour == SECONDARY_OUTLINE_WIDTH and labels.contour == OUTLINE_WIDTH
    order = [ly.name for ly in viewer.layers]
    assert order.index(names["accepted"]) > order.index(tried) and order.index(names["tiles"]) > order.index(tried)
    display.fill_check.setChecked(True)  # "Fill glands": filled and faint, both layers
    assert labels.contour == 0 and labels.opacity == pytest.approx(FILL_OPACITY)
    assert viewer.layers[tried].contour == 0 and viewer.layers[tried].opacity < FILL_OPACITY
    display.fill_check.setChecked(False)
    assert labels.contour == OUTLINE_WIDTH
    assert store.current_model_version == first.version  # trying a version does not make it current
    state = widget.states[SAMPLE_NAME]
    assert state.model_version == first.version and state.original_for(tried)[1] == trial.version
    # Making it current (as "Keep new model anyway" does) re-predicts: the edit survives again, and
    # the tried layer, unedited, is reused.
    layers_before = _layer_counts(viewer)
    assert widget.versions_panel.roll_back(trial.version)
    qtbot.waitUntil(lambda: not panel.running and widget.states[SAMPLE_NAME] is not state, timeout=60_000)
    assert (labels.data[10:30, 10:30] == 7).all() and _layer_counts(viewer) == layers_before

    # Accept a drawn rectangle, a drawn polygon and the whole image; rows name the image; summary live.
    drawn = review.start_drawing()
    drawn.add_rectangles(np.array([[0, 0], [0, 150], [140, 150], [140, 0]], float))
    (rec,) = review.accept_drawn(drawn)
    assert rec.bbox == (0, 0, 141, 151) and len(drawn.data) == 0
    assert drawn.mode == "pan_zoom"  # the next click does not draw
    assert viewer.layers.selection.active is labels  # the brush is back on the glands
    row = review.tile_list.item(0).text().replace("\u00a0", " ")  # some spaces non-breaking (test_walk20_review)
    assert row.startswith("1. score ")  # not "uncertainty": not the legend's scale
    _, corrected, _ = store.load_region(rec.region_id)
    assert (corrected[10:30, 10:30] == 7).all()
    drawn.add_polygons(np.array([[300, 300], [300, 460], [450, 380]], float))
    (poly,) = review.accept_drawn(drawn)
    assert poly.bbox[:2] == (300, 300) and "polygon" in review.last_message
    assert review.accept_whole_image() is not None
    assert "3 accepted regions," in widget.store_label.text()
    # its image named as its layer is while it is open (walk 22: the list said the file's name, glas_testA_1.png)
    assert all(f"  {SAMPLE_NAME}  " in review.region_list.item(i).text() for i in range(3))
    assert len(_accepted_rects(viewer, SAMPLE_NAME)) == 3
    assert review.withdraw(poly.region_id)
    assert "2 accepted regions," in widget.store_label.text() and len(_accepted_rects(viewer, SAMPLE_NAME)) == 2

    # Reopen in a viewer without the image: the image, under the name it had, its accepted boxes and
    # corrections come back.
    other = make_napari_viewer()
    again = CdmaWidget(other, store_path=store_path)
    wait_settled(again)
    image_layer = other.layers[SAMPLE_NAME]
    assert np.array_equal(image_layer.data, widget.states[SAMPLE_NAME].image)
    assert len(_accepted_rects(other, SAMPLE_NAME)) == 2
    assert (other.layers[names["corrections"]].data[10:30, 10:30] == 7).all()
    assert "2 accepted regions," in again.store_label.text() and "Reopened 1 image" in again.store_label.text()
    assert "Predictions restored" in again.store_label.toolTip(), again.store_label.toolTip()
    assert again.review_panel.region_list.count() == 2
    again.deleteLater()


def _pieces(mask):
    from scipy import ndimage as ndi

    return ndi.label(mask, structure=np.ones((3, 3)))[1]


def test_split_and_merge_glands_are_stored_as_drawn(make_napari_viewer, qtbot, tmp_path):
    """A background line through a predicted gland of testA_1 (bundled model) splits it: Accept stores two
    labels, the layer shows two and the gland table grows by one. Two glands painted into one piece with
    one label are stored as one. With every review region accepted, Next and Accept say so."""
    from scipy import ndimage as ndi

    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, SAMPLE_KEY)
    widget = _dock(viewer, tmp_path / "project")
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    labels = viewer.layers[names_for(SAMPLE_NAME)["prediction"]]
    review, display, store = widget.review_panel, widget.display_panel, widget.store
    data = labels.data
    ids = sorted(set(np.unique(data).tolist()) - {0})
    assert len(display.glands) == len(ids) >= 3

    # Split: a 5-px background line across the largest gland, at a column that leaves two pieces.
    gland = max(ids, key=lambda i: int((data == i).sum()))
    ys, xs = np.nonzero(data == gland)
    for cut in np.quantile(xs, [0.5, 0.4, 0.6, 0.3, 0.7]).astype(int):
        trial = (data == gland)
        trial[:, cut - 2:cut + 3] = False
        if _pieces(trial) == 2:
            break
    assert _pieces(trial) == 2
    line = (data == gland) & ~trial
    data[line] = 0
    labels.refresh()
    assert len(set(np.unique(data).tolist()) - {0}) == len(ids)  # one label, two pieces, before Accept
    h, w = data.shape
    y0, x0, y1, x1 = max(0, ys.min() - 8), max(0, xs.min() - 8), min(h, ys.max() + 9), min(w, xs.max() + 9)
    record = review.accept(bbox=(int(y0), int(x0), int(y1), int(x1)))
    assert record is not None, review.last_message
    assert "got labels of their own" in review.last_message
    _, corrected, _ = store.load_region(record.region_id)
    stored = set(np.unique(corrected[trial[y0:y1, x0:x1]]).tolist())
    assert len(stored) == 2 and 0 not in stored  # two labels for the two pieces
    shown = set(np.unique(labels.data[trial]).tolist())
    assert shown == stored and gland in shown and max(shown) > max(ids)  # the layer shows two; new id on top
    assert not (labels.data[line]).any()
    assert len(display.glands) == len(ids) + 1  # the gland table follows
    others = ~np.isin(labels.data, list(shown))
    assert np.array_equal(labels.data[others], data[others])  # untouched glands keep their ids

    # Merge: join the two nearest other glands with a painted bridge and one label.
    cur = labels.data
    centres = {i: np.argwhere(cur == i) for i in set(np.unique(cur).tolist()) - {0} - shown}
    a, b = min(((i, j) for i in centres for j in centres if i < j),
               key=lambda p: np.linalg.norm(centres[p[0]].mean(0) - centres[p[1]].mean(0)))
    dist_b, (iy, ix) = ndi.distance_transform_edt(cur != b, return_indices=True)
    pa = centres[a][np.argmin(dist_b[tuple(centres[a].T)])]  # the pixel of a nearest to b
    pb = np.array([iy[tuple(pa)], ix[tuple(pa)]])
    for t in np.linspace(0, 1, 200):
        py, px = np.round(pa + t * (pb - pa)).astype(int)
        cur[py - 2:py + 3, px - 2:px + 3] = a
    cur[cur == b] = a
    labels.refresh()
    merged = cur == a
    assert _pieces(merged) == 1
    my, mx = np.nonzero(merged)
    box = (int(max(0, my.min() - 4)), int(max(0, mx.min() - 4)), int(min(h, my.max() + 5)), int(min(w, mx.max() + 5)))
    record = review.accept(bbox=box)
    assert record is not None, review.last_message
    _, corrected, _ = store.load_region(record.region_id)
    assert set(np.unique(corrected[merged[box[0]:box[2], box[1]:box[3]]]).tolist()) == {a}  # one label
    assert (labels.data[merged] == a).all()

    # Everything accepted: Next and Accept region say that no review region is left.
    assert review.accept_whole_image() is not None, review.last_message
    assert review.tiles == []
    review.next_button.click()
    assert "No review regions left on this image" in review.last_message
    assert review.accept() is None and "No review regions left on this image" in review.last_message
