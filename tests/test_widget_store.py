"""Opening a project store in the dock: the stored images come back as layers without taking the
Predict panel away from the image on screen, and without hashing open images on the GUI thread
when the store cannot hold them (real napari viewer under Xvfb, small random model)."""
from __future__ import annotations

import re

import numpy as np
from _dock import PLUGIN, open_dock, wait_settled

from napari_cdma._sample import SAMPLE_NAME


def _stored_image(seed: int = 0, shape=(200, 300)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (*shape, 3), dtype=np.uint8)


def _store_with_region(widget, checkpoint, image, source="other.png"):
    store = widget.store
    store.add_model(checkpoint, parent="bundled", promoted=True)
    corrected = np.zeros((64, 64), np.uint8)
    corrected[10:40, 10:40] = 1
    store.accept_region(image, (0, 0, 64, 64), corrected, np.zeros_like(corrected),
                        model_version=store.current_model_version, source_path=source)
    return store


def test_reopened_store_images_do_not_take_predict_from_the_image_on_screen(make_napari_viewer, qtbot, tmp_path,
                                                                            lite_checkpoint):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "glas_testA_1")
    widget = open_dock(viewer, tmp_path / "project")
    _store_with_region(widget, lite_checkpoint, _stored_image())
    panel = widget.predict_panel
    assert panel.image_layer.name == SAMPLE_NAME

    assert widget.open_store(tmp_path / "project") is not None

    wait_settled(widget)
    assert "other" in viewer.layers and not viewer.layers["other"].visible  # restored, hidden
    assert panel.image_layer.name == SAMPLE_NAME  # Predict still means the image on screen

    before = widget.states.get(SAMPLE_NAME)
    panel.predict_button.click()
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert widget.states.get(SAMPLE_NAME) is not before, panel.last_message
    assert "other" not in widget.states

    # an image the user opens (visible) still becomes the one to predict
    viewer.add_image(_stored_image(1, (50, 60)), name="opened", rgb=True)
    assert panel.image_layer.name == "opened"


def test_open_images_are_hashed_only_when_the_store_could_hold_them(make_napari_viewer, tmp_path, lite_checkpoint,
                                                                    monkeypatch):
    from napari_cdma import _widget_store

    viewer = make_napari_viewer()
    widget = open_dock(viewer, tmp_path / "project")
    stored = _stored_image()
    _store_with_region(widget, lite_checkpoint, stored, source="stored.png")
    viewer.layers.clear()  # the image the region came from is not open

    hashed = []
    real_hash = _widget_store.hash_image
    monkeypatch.setattr(_widget_store, "hash_image", lambda image: (hashed.append(image.shape), real_hash(image))[1])

    # a never-predicted image of another size: the store cannot hold it, it is not hashed
    viewer.add_image(_stored_image(2, (240, 320)), name="big", rgb=True)
    assert widget.open_store(tmp_path / "project") is not None
    wait_settled(widget)
    assert hashed == []
    assert "stored" in viewer.layers  # the stored image came back as its own layer
    assert widget.image_names == {_widget_store.hash_image(stored): "stored"}
    hashed.clear()

    # the stored image opened by hand (same pixels, never predicted): found by hashing that layer
    # only (same size), not added a second time, and its accepted box is shown on it
    viewer.layers.clear()
    viewer.add_image(_stored_image(2, (240, 320)), name="big", rgb=True)
    viewer.add_image(stored.copy(), name="by hand", rgb=True)
    assert widget.open_store(tmp_path / "project") is not None
    wait_settled(widget)
    assert hashed == [(200, 300, 3)]
    assert "stored" not in viewer.layers and widget.image_names[real_hash(stored)] == "by hand"
    assert "Reopened" not in widget.store_label.text()
    from napari_cdma._layers import names_for

    assert names_for("by hand")["accepted"] in viewer.layers


def _accept_a_correction(viewer, widget):
    """Edit the sample's prediction in its top-left 128 px box and accept that box; the prediction layer."""
    from napari_cdma._layers import names_for

    labels = viewer.layers[names_for(SAMPLE_NAME)["prediction"]]
    labels.data[20:60, 20:60] = 0
    labels.data[30:50, 30:50] = 77
    labels.refresh()
    assert widget.review_panel.accept(bbox=(0, 0, 128, 128)) is not None, widget.review_panel.last_message
    return labels


def _wait_predicted(qtbot, widget, name):
    panel = widget.predict_panel
    before = widget.states.get(name)
    assert widget.predict(name), panel.last_message
    qtbot.waitUntil(lambda: not panel.running and widget.states.get(name) is not before, timeout=120_000)
    assert widget.flush_prediction_saves(60), "the prediction was not written to the store"


def test_reopen_brings_back_latest_predictions_ready_for_review_and_accept(make_napari_viewer, qtbot, tmp_path,
                                                                          lite_checkpoint):
    """Predict two images (one corrected and accepted, one not) with a store open, close the viewer, reopen
    the store in a fresh viewer: both images come back with their latest prediction and uncertainty layers
    (equal data, drawn as after Predict), the model that made them is named, review and Accept work
    without predicting again, and a model promoted since marks them stale."""
    from napari_cdma._layers import names_for
    from napari_cdma.project.store import ProjectStore

    path = tmp_path / "project"
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "glas_testA_1")
    viewer.add_image(_stored_image(3, (160, 240)), name="second", rgb=True, visible=False)
    widget = open_dock(viewer, path)
    widget.store.add_model(lite_checkpoint, parent="bundled", promoted=True)
    assert widget.open_store(path) is not None  # v0001 becomes the model Predict uses
    _wait_predicted(qtbot, widget, "second")
    _wait_predicted(qtbot, widget, SAMPLE_NAME)
    names = names_for(SAMPLE_NAME)
    labels = _accept_a_correction(viewer, widget)
    before = {n: (np.array(viewer.layers[names_for(n)["prediction"]].data),
                  np.array(viewer.layers[names_for(n)["uncertainty"]].data),
                  np.array(widget.states[n].original_labels)) for n in (SAMPLE_NAME, "second")}
    jsd = viewer.layers[names["disagreement"]]
    jsd_before = (np.array(jsd.data), tuple(jsd.contrast_limits), jsd.visible)
    assert not jsd_before[2] and jsd_before[0].max() > 0
    style = {k: getattr(labels, k) for k in ("contour", "opacity", "blending")}
    umap = viewer.layers[names["uncertainty"]]
    unc_style = (tuple(umap.contrast_limits), umap.opacity, umap.blending, umap.colormap.name)
    ranked = list(widget.states[SAMPLE_NAME].ranked)
    labels.data[200:220, 200:220] = 5  # an edit not accepted: not kept, and the dock says so
    viewer.close()

    other = make_napari_viewer()
    again = open_dock(other, path)
    assert {SAMPLE_NAME, "second"} <= {ly.name for ly in other.layers}
    for name, (shown, unc, original) in before.items():
        n = names_for(name)
        assert n["prediction"] in other.layers and n["uncertainty"] in other.layers, [ly.name for ly in other.layers]
        back = np.asarray(other.layers[n["prediction"]].data)
        # the accepted correction is pasted again (its glands take fresh ids), the rest is as it was
        np.testing.assert_array_equal(back[:128, :128] > 0, shown[:128, :128] > 0)
        outside = np.ones(back.shape, bool)
        outside[:128, :128] = False
        np.testing.assert_array_equal(back[outside], shown[outside])
        np.testing.assert_allclose(other.layers[n["uncertainty"]].data, unc, atol=1e-3)
        np.testing.assert_array_equal(again.states[name].original_labels, original)
    restored = other.layers[names["prediction"]]
    assert {k: getattr(restored, k) for k in style} == style
    # the prediction layer shows the accepted correction: the corrections layer under it is hidden (two labels
    # layers drawn over each other doubled the outlines: pathologist walk)
    assert restored.visible and not other.layers[names["corrections"]].visible
    rumap = other.layers[names["uncertainty"]]
    assert (tuple(rumap.contrast_limits), rumap.opacity, rumap.blending, rumap.colormap.name) == unc_style
    # the branch disagreement comes back too, hidden, at the same contrast (kept as float16)
    rjsd = other.layers[names["disagreement"]]
    np.testing.assert_allclose(rjsd.data, jsd_before[0], atol=1e-3)
    np.testing.assert_allclose(rjsd.contrast_limits, jsd_before[1], rtol=0.02)
    assert not rjsd.visible and names_for("second")["disagreement"] in other.layers
    text = again.store_label.toolTip()  # the summary's details (walk 25: the label says them in short)
    assert "v0001" in text and "not kept" in text and "press Predict" not in text, text
    # the time as the live status says it ("at 18:01"; walk 21: "2026-12-02 18:01 UTC" after a reopen, "at 18:01" live)
    assert re.search(r"latest at \d\d:\d\d\)", text) and " UTC" not in text, text
    line = again.predict_panel.chosen_line(other.layers[SAMPLE_NAME])
    assert re.search(r": predicted with v0001\b.* at \d\d:\d\d \(from the project store\)", line), line
    assert again.states[SAMPLE_NAME].ranked == ranked

    # review and Accept on the restored prediction, without predicting again
    panel = again.review_panel
    assert panel.image_name == SAMPLE_NAME and panel.tiles
    panel.step(1)
    assert panel.current_bbox() is not None
    restored.data[310:340, 310:340] = 88
    restored.refresh()
    record = panel.accept(bbox=(300, 300, 428, 428))
    assert record is not None, panel.last_message
    _, corrected, predicted = again.store.load_region(record.region_id)
    assert (corrected[10:40, 10:40] > 0).all()
    np.testing.assert_array_equal(predicted > 0, before[SAMPLE_NAME][2][300:428, 300:428] > 0)
    assert len(again.store.regions()) == 2

    # the other restored image gets its review layers when it is chosen
    assert names_for("second")["tiles"] not in other.layers
    again.predict_panel.set_image("second")
    assert panel.image_name == "second" and names_for("second")["tiles"] in other.layers
    assert names_for("second")["accepted"] in other.layers

    # a model promoted since: the restored predictions are shown, marked stale
    ProjectStore.open(path).add_model(lite_checkpoint, parent="v0001", promoted=True)
    third = make_napari_viewer()
    last = open_dock(third, path)
    assert names["prediction"] in third.layers
    assert "stale: the current model is v0002" in last.store_label.toolTip(), last.store_label.toolTip()


def test_unaccepted_edits_kept_on_request_come_back_and_are_not_overwritten(make_napari_viewer, qtbot, tmp_path,
                                                                           lite_checkpoint):
    """'Keep unaccepted edits' keeps a prediction layer's edits with its latest prediction: a reopen shows
    them, they are still not accepted, and predicting again does not overwrite them."""
    from napari_cdma._layers import names_for

    path = tmp_path / "project"
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "glas_testA_1")
    widget = open_dock(viewer, path)
    widget.store.add_model(lite_checkpoint, parent="bundled", promoted=True)
    assert widget.open_store(path) is not None
    wait_settled(widget)
    assert widget.keep_edits() == {}  # nothing predicted, nothing to keep
    assert not widget.keep_edits_button.isEnabled()  # and the button says so
    assert "predict an image first" in widget.keep_edits_button.toolTip()
    _wait_predicted(qtbot, widget, SAMPLE_NAME)
    assert not widget.keep_edits_button.isEnabled()  # predicted, nothing edited: nothing to keep
    assert "no edits to keep" in widget.keep_edits_button.toolTip()
    name = names_for(SAMPLE_NAME)["prediction"]
    layer = viewer.layers[name]
    layer.data[200:220, 300:320] = 99  # an edit, not accepted
    layer.refresh()
    assert widget.keep_edits_button.isEnabled()  # now something to keep
    edited = np.array(layer.data)
    widget.keep_edits_button.click()
    assert "Kept 400 edited pixel(s)" in widget.store_label.text()
    assert widget.keep_edits() == {} and not widget.keep_edits_button.isEnabled()  # kept as they are: nothing new
    assert widget.store.regions() == []  # kept, not accepted
    viewer.close()

    other = make_napari_viewer()
    again = open_dock(other, path)
    np.testing.assert_array_equal(other.layers[name].data, edited)
    assert not again.keep_edits_button.isEnabled()  # the reopened edits are the store's already
    assert names_for(SAMPLE_NAME)["disagreement"] in other.layers  # keeping the edits kept the disagreement
    assert "kept edits" in again.store_label.toolTip()
    assert again.states[SAMPLE_NAME].unsaved(name, np.asarray(other.layers[name].data)) == 400
    _wait_predicted(qtbot, again, SAMPLE_NAME)
    np.testing.assert_array_equal(other.layers[name].data, edited)  # the new prediction went to another layer
    assert "400 edited pixel(s)" in again.predict_panel.last_message


def test_kept_edits_inside_an_accepted_box_come_back_and_later_accepts_are_pasted(make_napari_viewer, qtbot,
                                                                                  tmp_path):
    """An edit made inside an accepted box after Accept, then kept with 'Keep unaccepted edits', comes back on
    reopen (the accepted correction is not pasted over it) and still counts as not accepted, so a new Predict
    goes to another layer; a region accepted after the edits were kept is pasted over them (pathologist walk:
    the edit came back as the correction's label and the next Predict overwrote the layer)."""
    from napari_cdma._layers import names_for

    path = tmp_path / "project"
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "glas_testA_1")
    widget = open_dock(viewer, path)
    _wait_predicted(qtbot, widget, SAMPLE_NAME)
    labels = _accept_a_correction(viewer, widget)  # 77 at [30:50, 30:50] accepted in the box (0, 0, 128, 128)
    _wait_predicted(qtbot, widget, SAMPLE_NAME)  # predicted again: the correction is pasted with fresh ids
    assert labels.data[40, 40] not in (0, 77)
    labels.data[35:45, 35:45] = 0  # inside the accepted box, after Accept: not in the store
    labels.refresh()
    assert widget.keep_edits() == {SAMPLE_NAME: 100}
    labels.data[300:310, 300:310] = 55  # then a second region, accepted after the edits were kept
    labels.refresh()
    assert widget.review_panel.accept(bbox=(256, 256, 384, 384)) is not None, widget.review_panel.last_message
    viewer.close()

    other = make_napari_viewer()
    again = open_dock(other, path)
    name = names_for(SAMPLE_NAME)["prediction"]
    back = np.asarray(other.layers[name].data)
    assert (back[35:45, 35:45] == 0).all()  # the kept edit, not the accepted 77
    assert len(np.unique(back[30:35, 30:50])) == 1 and back[30, 30] > 0  # the rest of the accepted correction
    # the layer shows the corrections itself: the corrections layer under it is hidden (no doubled outlines)
    assert not other.layers[names_for(SAMPLE_NAME)["corrections"]].visible
    assert len(np.unique(back[300:310, 300:310])) == 1 and back[300, 300] > 0  # the later region, pasted
    assert again.states[SAMPLE_NAME].unsaved(name, back) == 100
    _wait_predicted(qtbot, again, SAMPLE_NAME)
    np.testing.assert_array_equal(other.layers[name].data, back)  # not overwritten: Predict went elsewhere
    assert "100 edited pixel(s)" in again.predict_panel.last_message


def test_first_prediction_of_a_new_project_is_kept_and_comes_back_on_reopen(make_napari_viewer, qtbot, tmp_path,
                                                                            monkeypatch):
    """The project folder is named ($NAPARI_CDMA_PROJECT) but does not exist yet: Predict creates the store
    and keeps the prediction in it (the store line says so at once), Accept adds to that same store, and
    reopening the dock on the folder brings the image back with its latest prediction and uncertainty."""
    from napari_cdma._layers import names_for

    path = tmp_path / "new project"
    monkeypatch.setenv("NAPARI_CDMA_PROJECT", str(path))
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "glas_testA_1")
    widget = open_dock(viewer)
    # no store yet: the dock says so, and what will create it (it was blank: pathologist walk)
    assert not path.exists() and widget.store_label.text().startswith("No project store there yet"), \
        widget.store_label.text()
    assert widget.predict_panel.model_choice() == ("version", "bundled")

    _wait_predicted(qtbot, widget, SAMPLE_NAME)
    from napari_cdma.project.store import ProjectStore

    kept = ProjectStore.open(path, create=False)  # Predict created the store (StoreError if not)
    assert kept.latest_prediction(widget.states[SAMPLE_NAME].image_hash) is not None
    assert widget.store_label.text().startswith("0 accepted regions, 0 images\nModel bundled (0 trained)"), \
        widget.store_label.text()
    assert "(0 held out) from 0 image(s)" in widget.store_label.toolTip()
    assert widget.predict_panel.model_choice() == ("version", "bundled")

    names = names_for(SAMPLE_NAME)
    labels = _accept_a_correction(viewer, widget)
    assert widget.store_label.text().startswith("1 accepted region, 1 image"), widget.store_label.text()
    shown = np.array(labels.data)
    unc = np.array(viewer.layers[names["uncertainty"]].data)
    viewer.close()

    other = make_napari_viewer()
    again = open_dock(other)  # opens the folder of the environment
    text = again.store_label.toolTip()  # the summary's details
    assert "press Predict" not in text and "latest predictions" in text, text
    assert names["prediction"] in other.layers and names["uncertainty"] in other.layers, \
        [ly.name for ly in other.layers]
    back = np.asarray(other.layers[names["prediction"]].data)
    outside = np.ones(back.shape, bool)
    outside[:128, :128] = False
    np.testing.assert_array_equal(back[outside], shown[outside])
    np.testing.assert_array_equal(back[:128, :128] > 0, shown[:128, :128] > 0)  # the accepted correction
    np.testing.assert_allclose(other.layers[names["uncertainty"]].data, unc, atol=1e-3)
