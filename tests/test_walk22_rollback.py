"""Walk 22: a roll back predicts the image on screen again, not the last one predicted (with testA_2 chosen and
shown, a roll back predicted the hidden testA_1); and a new current model's prediction hides the layers of versions
tried before (a tried version's outlines stayed over the fresh prediction)."""
from __future__ import annotations

import numpy as np
from _dock import open_dock, predict_and_wait, sample_predicted_then_reopened, sample_with_a_version_tried, try_version

from napari_cdma._layers import names_for
from napari_cdma._sample import SAMPLE_NAME
from napari_cdma.project.store import BUNDLED, ProjectStore

PLUGIN = "napari-cdma"


def _two_versions(tmp_path, checkpoint):
    store = ProjectStore.open(tmp_path / "project")
    first = store.add_model(checkpoint, parent=BUNDLED, promoted=True)
    second = store.add_model(checkpoint, parent=first.version, promoted=False)
    return store, first, second


def _two_images_predicted(make_napari_viewer, qtbot, store, size):
    """The sample and a crop of it ("second", ``size``) open with the dock on ``store``, both predicted, "second"
    last; returns (viewer, dock)."""
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "glas_testA_1")
    sample = np.asarray(viewer.layers[SAMPLE_NAME].data)
    viewer.add_image(np.ascontiguousarray(sample[:size[0], :size[1]]), name="second", rgb=True)
    dock = open_dock(viewer, store.root)
    predict_and_wait(qtbot, dock, SAMPLE_NAME)
    predict_and_wait(qtbot, dock, "second")  # the last image predicted
    return viewer, dock


def test_roll_back_predicts_the_image_chosen_not_the_last_one_predicted(make_napari_viewer, qtbot, tmp_path,
                                                                         lite_checkpoint):
    store, first, second = _two_versions(tmp_path, lite_checkpoint)
    viewer, dock = _two_images_predicted(make_napari_viewer, qtbot, store, (256, 320))
    assert dock.last_image == "second"
    dock.predict_panel.set_image(SAMPLE_NAME)  # chosen in Predict: shown, "second" hidden under it
    qtbot.waitUntil(lambda: dock.settled(), timeout=30_000)
    assert viewer.layers[SAMPLE_NAME].visible and not viewer.layers["second"].visible
    before_second = dock.states["second"]

    assert dock.versions_panel.roll_back(second.version)
    qtbot.waitUntil(lambda: dock.states[SAMPLE_NAME].model_version == second.version, timeout=60_000)
    qtbot.waitUntil(lambda: not dock.predict_panel.running and dock.settled(), timeout=60_000)
    assert dock.states["second"] is before_second  # the hidden image was not predicted again
    assert dock.states["second"].model_version == first.version
    assert viewer.layers[SAMPLE_NAME].visible and not viewer.layers["second"].visible


def test_a_new_current_models_prediction_hides_the_versions_tried_before(make_napari_viewer, qtbot, tmp_path,
                                                                         lite_checkpoint):
    store, first, second = _two_versions(tmp_path, lite_checkpoint)
    viewer, dock = sample_with_a_version_tried(make_napari_viewer, qtbot, store.root, second.version)
    panel = dock.predict_panel
    main = names_for(SAMPLE_NAME)["prediction"]
    side = f"{main} ({second.version})"
    assert side in viewer.layers and viewer.layers[side].visible
    assert dock.states[SAMPLE_NAME].model_version == first.version  # the layer corrected is still the current's

    assert dock.versions_panel.roll_back(BUNDLED)  # a model that made neither layer: predicted into the main one
    qtbot.waitUntil(lambda: dock.states[SAMPLE_NAME].model_version in (None, BUNDLED), timeout=60_000)
    qtbot.waitUntil(lambda: not panel.running and dock.settled(), timeout=60_000)
    assert viewer.layers[main].visible and not viewer.layers[side].visible  # only the current model's glands
    assert "Other versions' layers hidden" in panel.status.text(), panel.status.text()
    assert side in panel.last_message


def test_a_row_of_another_images_region_makes_that_image_the_one_chosen(make_napari_viewer, qtbot, tmp_path,
                                                                       lite_checkpoint):
    """Walk 22: clicking an accepted region's row of testA_2 showed testA_2, while Predict, the gland table and the
    active layer stayed those of the hidden testA_1, and Next said no review region was left."""
    from qtpy.QtCore import Qt

    store = ProjectStore.open(tmp_path / "project")
    store.add_model(lite_checkpoint, parent=BUNDLED, promoted=True)
    viewer, dock = _two_images_predicted(make_napari_viewer, qtbot, store, (320, 384))
    review = dock.review_panel
    record = review.accept(bbox=(0, 0, 128, 128))  # a region of "second"
    assert record, review.last_message
    dock.predict_panel.set_image(SAMPLE_NAME)
    qtbot.waitUntil(lambda: dock.settled() and review.image_name == SAMPLE_NAME, timeout=30_000)
    assert not viewer.layers["second"].visible

    lst = review.region_list
    row = next(i for i in range(lst.count()) if lst.item(i).data(Qt.ItemDataRole.UserRole) == record.region_id)
    lst.scrollToItem(lst.item(row))
    qtbot.mouseClick(lst.viewport(), Qt.MouseButton.LeftButton, pos=lst.visualItemRect(lst.item(row)).center())
    qtbot.waitUntil(lambda: dock.settled(), timeout=30_000)
    assert viewer.layers["second"].visible and not viewer.layers[SAMPLE_NAME].visible
    assert dock.predict_panel.image_layer is viewer.layers["second"]
    assert dock.predict_panel.status.text().startswith("second:"), dock.predict_panel.status.text()
    assert dock.display_panel.image_name == "second" and review.image_name == "second"
    assert viewer.layers.selection.active is viewer.layers[names_for("second")["prediction"]]
    assert review.shown_region == record.region_id  # the black frame stays on the region shown


def test_while_a_reopen_restores_the_prediction_the_status_never_says_not_predicted(make_napari_viewer, qtbot,
                                                                                    tmp_path, lite_checkpoint):
    """Walk 22: for about 2 s of a reopen the restored prediction was on screen while Predict's line said "not
    predicted yet."; it is said what is being done, then what was restored."""
    from qtpy.QtWidgets import QApplication

    other, again = sample_predicted_then_reopened(make_napari_viewer, qtbot, tmp_path / "project", lite_checkpoint)
    main = names_for(SAMPLE_NAME)["prediction"]
    seen = []
    while not again.settled():
        QApplication.processEvents()
        shown = main in other.layers and other.layers[main].visible
        seen.append((shown, again.predict_panel.status.text()))
    assert any(shown for shown, _ in seen)  # the restore was watched while the prediction was on screen
    wrong = [text for shown, text in seen if shown and "not predicted yet" in text]
    assert not wrong, wrong[:3]
    assert again.predict_panel.status.text().startswith(f"{SAMPLE_NAME}: predicted with v0001")


def test_after_a_roll_back_an_image_chosen_again_names_the_model_of_its_layer(make_napari_viewer, qtbot, tmp_path,
                                                                              lite_checkpoint):
    """Walk 23: v0001 current, testA_2 predicted by v0001, bundled tried on it aside, testA_1 chosen, roll back to
    bundled, testA_2 chosen again: its line said "predicted with bundled" (the version tried), the legend "Predicted
    by v0001 (current)" under "Current model: bundled", and the tried layer came back over it."""
    store, first, _ = _two_versions(tmp_path, lite_checkpoint)
    viewer, dock = _two_images_predicted(make_napari_viewer, qtbot, store, (256, 320))
    panel = dock.predict_panel
    try_version(qtbot, dock, "second", BUNDLED)  # tried on "second", aside
    side = f"{names_for('second')['prediction']} ({BUNDLED})"
    assert side in viewer.layers and viewer.layers[side].visible
    assert panel.status.text().startswith(f"second: predicted with {first.version} at "), panel.status.text()
    panel.set_image(SAMPLE_NAME)
    qtbot.waitUntil(lambda: dock.settled(), timeout=30_000)

    assert dock.versions_panel.roll_back(BUNDLED)
    qtbot.waitUntil(lambda: dock.states[SAMPLE_NAME].model_version == BUNDLED, timeout=60_000)
    qtbot.waitUntil(lambda: not panel.running and dock.settled(), timeout=60_000)
    panel.set_image("second")
    qtbot.waitUntil(lambda: dock.settled() and dock.display_panel.image_name == "second", timeout=30_000)
    assert viewer.layers[names_for("second")["prediction"]].visible and not viewer.layers[side].visible
    line = panel.status.text()
    assert line.startswith(f"second: predicted with {first.version} at ") and "Current model: bundled" in line, line
    assert dock.states["second"].model_name == first.version
    assert dock.display_panel.model_label == first.version  # not "v0001 (current)"
