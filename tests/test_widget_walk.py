"""What a pathologist's walk through the dock found (issue 9 section 4, issue 8 section 3): trying a
version, edits made after an accept, the review list of the image on screen, and reopening a store.

Each test runs the dock in a real napari viewer with a small random model from the project store.
"""
from __future__ import annotations

import numpy as np
from _dock import PLUGIN, wait_settled
from _dock import open_dock as _dock
from _dock import predict_and_wait as _predict_and_wait

from napari_cdma._layers import names_for, unsaved_edits
from napari_cdma._sample import SAMPLE_NAME

SAMPLE_KEY = "glas_testA_1"


def _sample_with_store(make_napari_viewer, tmp_path, checkpoint, trial=False, **viewer_kwargs):
    """The sample image, the dock and a store whose current model is ``checkpoint`` (and, with
    ``trial``, a second version of it that is not promoted)."""
    viewer = make_napari_viewer(**viewer_kwargs)
    viewer.open_sample(PLUGIN, SAMPLE_KEY)
    store_path = tmp_path / "project"
    widget = _dock(viewer, store_path)
    first = widget.store.add_model(checkpoint, parent="bundled", promoted=True)
    other = widget.store.add_model(checkpoint, parent=first.version, promoted=False) if trial else None
    widget.open_store(store_path)
    wait_settled(widget)
    return viewer, widget, first, other


def test_unsaved_edits_counts_edits_made_after_an_accept():
    original = np.zeros((40, 40), np.int32)
    layer = original.copy()
    layer[0:10, 0:10] = 5  # edited, then accepted
    reviewed = [((0, 0, 20, 20), None, layer[0:20, 0:20].copy())]
    assert unsaved_edits(layer, original, reviewed) == 0
    layer[15:20, 15:20] = 6  # edited inside the accepted box after the accept: not in the store
    assert unsaved_edits(layer, original, reviewed) == 25
    # a polygon stores only its pixels: an edit in its box but outside it is not in the store
    inside = np.zeros((20, 20), bool)
    inside[:10, :10] = True
    assert unsaved_edits(layer, original, [((0, 0, 20, 20), inside, layer[0:20, 0:20].copy())]) == 25
    assert unsaved_edits(layer, original, []) == 125


def test_trying_a_version_shows_its_own_prediction(make_napari_viewer, qtbot, tmp_path, lite_checkpoint):
    """On an image whose whole image was accepted, trying a version shows that version's own
    prediction in a layer of its own; the accepted labels and the current model stay as they were."""
    viewer, widget, first, trial = _sample_with_store(make_napari_viewer, tmp_path, lite_checkpoint, trial=True)
    panel, review, names = widget.predict_panel, widget.review_panel, names_for(SAMPLE_NAME)
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    labels = viewer.layers[names["prediction"]]
    labels.data[50:90, 50:90] = 99
    labels.refresh()
    assert review.accept_whole_image() is not None, review.last_message
    accepted = np.array(labels.data)

    umap = viewer.layers[names["uncertainty"]]
    own_maps = (np.array(umap.data), tuple(umap.contrast_limits), umap.visible)
    display = widget.display_panel
    own_table = (display.labels_layer, [dict(g) for g in display.glands], list(widget.states[SAMPLE_NAME].ranked))

    panel.model_combo.setCurrentIndex(panel._find(("version", trial.version)))
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    tried = f"{names['prediction']} ({trial.version})"
    assert tried in viewer.layers, [ly.name for ly in viewer.layers]
    # the tint, legend, gland table and review list stay those of the image's own layer (pathologist walk: a
    # tried version replaced them); the tried version's maps are in hidden layers of its own
    np.testing.assert_array_equal(viewer.layers[names["uncertainty"]].data, own_maps[0])
    assert viewer.layers[names["uncertainty"]] is umap and (tuple(umap.contrast_limits), umap.visible) == own_maps[1:]
    assert (display.labels_layer, display.glands, widget.states[SAMPLE_NAME].ranked) == own_table
    side = viewer.layers[f"{names['uncertainty']} ({trial.version})"]
    assert not side.visible and side.data.shape == own_maps[0].shape  # (the same checkpoint here: equal maps)
    assert not viewer.layers[f"{names['disagreement']} ({trial.version})"].visible
    own, version = widget.states[SAMPLE_NAME].original_for(tried)
    assert version == trial.version
    assert np.array_equal(viewer.layers[tried].data, own)  # the model's own labels, nothing pasted
    assert not (viewer.layers[tried].data[50:90, 50:90] == accepted[50:90, 50:90]).all()
    assert np.array_equal(labels.data, accepted)  # the accepted labels are untouched
    assert widget.store.current_model_version == first.version
    assert "Trying" in panel.last_message and tried in panel.last_message
    assert viewer.layers.selection.active is labels  # the brush stays on the image's own layer

    # back to the current model: its prediction goes to the image's layer, with the corrections pasted
    layers_before = sorted(ly.name for ly in viewer.layers)
    panel.model_combo.setCurrentIndex(panel._find(("version", first.version)))
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    assert sorted(ly.name for ly in viewer.layers) == layers_before
    pasted = labels.data[50:90, 50:90]
    assert len(np.unique(pasted)) == 1 and pasted[0, 0] > 0  # the painted gland, one id


def test_only_the_latest_side_prediction_is_shown(make_napari_viewer, qtbot, tmp_path, lite_checkpoint):
    """With edits not accepted, each new prediction goes to a side layer: the latest is shown, the earlier side
    layers are hidden (walk: four coloured outline sets piled up on every gland), the image's own layer stays."""
    viewer, widget, first, trial = _sample_with_store(make_napari_viewer, tmp_path, lite_checkpoint, trial=True)
    panel, names = widget.predict_panel, names_for(SAMPLE_NAME)
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    labels = viewer.layers[names["prediction"]]
    labels.data[10:30, 10:30] = 7  # not accepted
    labels.refresh()
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    aside = viewer.layers[f"{names['prediction']} ({first.version})"]
    assert aside.visible
    panel.model_combo.setCurrentIndex(panel._find(("version", trial.version)))
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    tried = viewer.layers[f"{names['prediction']} ({trial.version})"]
    assert tried.visible and not aside.visible and labels.visible
    assert panel.last_message.count(f"({trial.version})'") == 1  # the layer named once, not twice
    # the current model again: its side layer, hidden meanwhile, is reused and shown again
    panel.model_combo.setCurrentIndex(panel._find(("version", first.version)))
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    assert viewer.layers[aside.name] is aside and aside.visible and not tried.visible


def test_edit_after_accept_survives_a_repredict(make_napari_viewer, qtbot, tmp_path, lite_checkpoint):
    """An edit made inside an accepted region after it was accepted is not in the store: a
    re-predict must not overwrite it."""
    viewer, widget, first, _ = _sample_with_store(make_napari_viewer, tmp_path, lite_checkpoint)
    panel, review, names = widget.predict_panel, widget.review_panel, names_for(SAMPLE_NAME)
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    labels = viewer.layers[names["prediction"]]
    labels.data[100:140, 100:140] = 77
    labels.refresh()
    assert review.accept(bbox=(96, 96, 224, 224)) is not None, review.last_message

    # nothing edited since the accept: the layer is refreshed in place and shows the correction
    layers_before = sorted(ly.name for ly in viewer.layers)
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    assert sorted(ly.name for ly in viewer.layers) == layers_before
    assert (labels.data[100:140, 100:140] > 0).all()
    # the gland table lists the glands the layer shows, the pasted correction's (fresh ids) included
    shown = sorted(int(v) for v in np.unique(labels.data) if v)
    assert sorted(g["id"] for g in widget.display_panel.glands) == shown
    pasted = int(labels.data[120, 120])
    row = next(g for g in widget.display_panel.glands if g["id"] == pasted)
    assert row["area"] == int((labels.data == pasted).sum())

    # edited after the accept (inside the accepted box): kept, and the prediction goes elsewhere
    labels.data[180:200, 180:200] = 55
    labels.refresh()
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    assert (labels.data[180:200, 180:200] == 55).all()
    assert f"{names['prediction']} ({first.version})" in viewer.layers
    assert "not accepted" in panel.last_message and "400 edited pixel(s)" in panel.last_message


def test_review_list_belongs_to_the_image_on_screen(make_napari_viewer, qtbot, tmp_path, lite_checkpoint):
    viewer, widget, _, _ = _sample_with_store(make_napari_viewer, tmp_path, lite_checkpoint)
    panel, review = widget.predict_panel, widget.review_panel
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    tiles = list(review.tiles)
    assert tiles and review.tile_list.count() == len(tiles)
    assert "to see its review regions" not in review.last_message  # no stale "Predict ..." note
    assert f"{len(tiles)} review region(s)" in review.status.text()

    # another image opened (and chosen in Predict): the list is its own, empty until it is predicted
    viewer.add_image(np.full((300, 300, 3), 200, np.uint8), name="second", rgb=True)
    assert panel.image_layer.name == "second"
    assert review.tiles == [] and review.tile_list.count() == 0
    review.next_button.click()
    assert "Predict" in review.last_message and "No review regions left" not in review.last_message

    # back to the sample: its regions, without the one accepted meanwhile
    panel.set_image(SAMPLE_NAME)
    assert review.tiles == tiles and review.image_name == SAMPLE_NAME
    assert review.accept(bbox=tiles[0][1]) is not None, review.last_message
    panel.set_image("second")
    panel.set_image(SAMPLE_NAME)
    assert review.tiles == tiles[1:] and review.tile_list.count() == len(tiles) - 1

    # the sample's image layer removed: its list goes with it
    viewer.layers.remove(SAMPLE_NAME)
    assert review.tiles == [] and review.tile_list.count() == 0 and review.image_name is None
    panel.set_image("second")
    viewer.layers.remove("second")
    assert panel.image_layer is None and review.tile_list.count() == 0


def test_reopen_keeps_the_image_name_and_fits_it(make_napari_viewer, qtbot, tmp_path, lite_checkpoint):
    from napari_cdma._widget_review import canvas_hw, scene_camera

    viewer, widget, _, _ = _sample_with_store(make_napari_viewer, tmp_path, lite_checkpoint)
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    assert widget.review_panel.accept(bbox=(0, 0, 128, 128)) is not None
    image = np.array(viewer.layers[SAMPLE_NAME].data)

    other = make_napari_viewer(show=True)  # the camera is fitted to the canvas it has on screen
    other.window._qt_window.resize(1500, 900)
    again = _dock(other)
    again.open_store(tmp_path / "project")
    wait_settled(again)
    qtbot.wait(300)  # the dock fills and the canvas shrinks after the image was added
    names = names_for(SAMPLE_NAME)
    assert SAMPLE_NAME in other.layers, [ly.name for ly in other.layers]
    assert np.array_equal(other.layers[SAMPLE_NAME].data, image)
    assert names["accepted"] in other.layers and names["corrections"] in other.layers
    assert other.layers[names["corrections"]].metadata["napari_cdma_image"] == SAMPLE_NAME
    assert again.predict_panel.image_layer.name == SAMPLE_NAME  # the chooser shows the name too
    camera = scene_camera(other)
    (ch, cw), (cy, cx) = canvas_hw(other), tuple(camera.center)[-2:]
    half_h, half_w = ch / camera.zoom / 2, cw / camera.zoom / 2
    h, w = image.shape[:2]
    tol = 1.0  # one data pixel
    assert cy - half_h <= -0.5 + tol and h - 0.5 - tol <= cy + half_h, (camera.center, camera.zoom, (ch, cw))
    assert cx - half_w <= -0.5 + tol and w - 0.5 - tol <= cx + half_w, (camera.center, camera.zoom, (ch, cw))


def test_prediction_layer_of_another_image_is_kept(make_napari_viewer, qtbot, tmp_path, lite_checkpoint):
    """An image closed and another opened under the same name: predicting the new one must not
    overwrite the old one's edited prediction layer."""
    viewer, widget, _, _ = _sample_with_store(make_napari_viewer, tmp_path, lite_checkpoint)
    names = names_for(SAMPLE_NAME)
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    labels = viewer.layers[names["prediction"]]
    labels.data[10:30, 10:30] = 42  # an edit, never accepted
    labels.refresh()
    crop = np.array(viewer.layers[SAMPLE_NAME].data[:300, :400])
    viewer.layers.remove(SAMPLE_NAME)
    viewer.add_image(crop, name=SAMPLE_NAME, rgb=True)
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    kept = f"{names['prediction']} (kept)"
    assert kept in viewer.layers and viewer.layers[kept] is labels
    assert (labels.data[10:30, 10:30] == 42).all() and labels.data.shape == (522, 775)
    assert viewer.layers[names["prediction"]].data.shape == (300, 400)
    assert kept in widget.predict_panel.last_message


def test_reopened_corrections_layer_follows_accepts(make_napari_viewer, qtbot, tmp_path, lite_checkpoint):
    """The "accepted corrections" layer a reopen shows follows later accepts and withdrawals."""
    viewer, widget, _, _ = _sample_with_store(make_napari_viewer, tmp_path, lite_checkpoint)
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    assert widget.review_panel.accept(bbox=(0, 0, 128, 128)) is not None

    other = make_napari_viewer()
    again = _dock(other, tmp_path / "project")
    corrections = other.layers[names_for(SAMPLE_NAME)["corrections"]]
    # the latest prediction comes back with the store: no note asking to predict again
    assert "press Predict" not in again.store_label.text()
    assert names_for(SAMPLE_NAME)["prediction"] in other.layers
    _predict_and_wait(qtbot, again, SAMPLE_NAME)
    labels = other.layers[names_for(SAMPLE_NAME)["prediction"]]
    labels.data[310:340, 310:340] = 88
    labels.refresh()
    record = again.review_panel.accept(bbox=(300, 300, 428, 428))
    assert record is not None, again.review_panel.last_message
    assert (corrections.data[310:340, 310:340] > 0).all()
    assert again.review_panel.withdraw(record.region_id)
    assert not corrections.data[300:428, 300:428].any()
