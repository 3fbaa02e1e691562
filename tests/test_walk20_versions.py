"""Walk 20: a roll back to the model behind the layer being corrected predicts nothing again (it added a copy of
that layer, "<image> prediction (v0001)", beside it), and the other version's layer is hidden."""
from __future__ import annotations

import numpy as np
from _dock import open_dock, predict_and_wait

from napari_cdma._layers import names_for
from napari_cdma._sample import SAMPLE_NAME
from napari_cdma.project.store import ProjectStore

PLUGIN = "napari-cdma"


def test_rolling_back_to_the_model_of_the_corrected_layer_adds_no_copy_of_it(make_napari_viewer, qtbot, tmp_path,
                                                                              lite_checkpoint):
    store = ProjectStore.open(tmp_path / "project")
    first = store.add_model(lite_checkpoint, parent="bundled", promoted=True)
    second = store.add_model(lite_checkpoint, parent=first.version, promoted=False)
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "glas_testA_1")
    dock = open_dock(viewer, store.root)
    predict_and_wait(qtbot, dock, SAMPLE_NAME)
    main = names_for(SAMPLE_NAME)["prediction"]
    labels = viewer.layers[main]
    assert dock.states[SAMPLE_NAME].model_version == first.version
    display = dock.display_panel
    assert display.model_label.startswith(first.version) and not display.source_label.isHidden()
    data = np.array(labels.data)
    data[10:30, 10:30] = 7  # an edit not accepted: a new prediction must go beside it
    labels.data = data

    assert dock.versions_panel.roll_back(second.version)
    qtbot.waitUntil(lambda: not dock.predict_panel.running and dock.settled(), timeout=60_000)
    side = f"{main} ({second.version})"
    assert side in viewer.layers and viewer.layers[side].visible
    # said short on screen (walk 20: ten lines in the 280 px dock), whole in the tooltip
    status, full = dock.predict_panel.status, dock.predict_panel.last_message
    assert status.toolTip() == full and side in full and "400 edited" in full
    text = status.text()
    assert f"'({second.version})' layer" in text and "400 unaccepted edited" in text and main not in text
    assert len(text) < 0.7 * len(full), (text, full)
    # the legend, tint and gland table still describe the layer corrected, and say whose prediction it is
    assert display.model_label.startswith(first.version) and first.version in display.source_label.toolTip()

    layers_before = [ly.name for ly in viewer.layers]
    state = dock.states[SAMPLE_NAME]
    assert dock.versions_panel.roll_back(first.version)
    qtbot.wait(300)
    assert not dock.predict_panel.running
    assert [ly.name for ly in viewer.layers] == layers_before  # no "(v0001)" copy of the layer corrected
    assert dock.states[SAMPLE_NAME] is state  # nothing predicted again
    assert not viewer.layers[side].visible and labels.visible  # the current model's glands on screen
    assert (labels.data[10:30, 10:30] == 7).all()
    message = dock.predict_panel.last_message
    assert "nothing predicted again" in message and first.version in message and "400 edited" in message
    shown = dock.predict_panel.status.text()  # short on screen, whole in the tooltip
    assert shown.startswith(f"{SAMPLE_NAME}: the layer you correct is {first.version}") and main not in shown, shown
    assert dock.predict_panel.status.toolTip() == message


def test_keeping_edits_keeps_the_time_the_image_was_predicted(make_napari_viewer, qtbot, tmp_path, lite_checkpoint):
    import time

    store = ProjectStore.open(tmp_path / "project")
    store.add_model(lite_checkpoint, parent="bundled", promoted=True)
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "glas_testA_1")
    dock = open_dock(viewer, store.root)
    predict_and_wait(qtbot, dock, SAMPLE_NAME)
    digest = dock.states[SAMPLE_NAME].image_hash
    qtbot.waitUntil(lambda: dock.store.latest_prediction(digest) is not None, timeout=30_000)
    predicted = dock.store.latest_prediction(digest)
    time.sleep(1.1)  # the store's times are to the second
    labels = viewer.layers[names_for(SAMPLE_NAME)["prediction"]]
    data = np.array(labels.data)
    data[10:30, 10:30] = 7
    labels.data = data
    assert dock.keep_edits() == {SAMPLE_NAME: 400}
    kept = dock.store.latest_prediction(digest)
    assert kept.edited and kept.number == predicted.number + 1
    # a reopen says "predicted with ... at" this time: when the model predicted, not when the edits were kept
    assert kept.created == predicted.created
    assert ProjectStore.open(store.root).latest_prediction(digest).created == predicted.created


def test_a_retrain_verdict_is_scrolled_into_view_with_its_keep_button(make_napari_viewer, qtbot, tmp_path):
    from qtpy.QtCore import QPoint

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1200, 760)
    dock = open_dock(viewer)
    panel = dock.retrain_panel
    scroll = dock._scroll
    scroll.verticalScrollBar().setValue(0)  # the dock at its top, as after a Predict
    qtbot.wait(50)
    # Retrain pressed (a press makes it the dock's scroll anchor) while on screen, as a user starts a retrain: the
    # anchor must not scroll the verdict back out of view as it grows (walk 21)
    dock.show_panel("Retrain")
    qtbot.wait(100)
    panel.retrain_button.pressed.emit()
    assert dock._anchor.anchor is panel.retrain_button
    # the walk's verdict, set as the panel sets it at a job's end, with Keep shown, then the version registered
    panel.result_label.setText(
        "v0001: held-out score rests on 81 px of gland in 1 region: too little to compare the models (at least 1300 "
        "px); agreement on uncorrected tissue 0.967 (3 crops); not promoted: too little to promote automatically "
        "(that needs 3 scored held-out regions); Keep new model anyway if you trust it.")
    panel.keep_button.setVisible(True)
    panel.model_added.emit("v0001")
    qtbot.wait(200)
    viewport = scroll.viewport()

    def rows(widget):  # the widget's top and bottom in the viewport's coordinates
        top = widget.mapTo(viewport, QPoint(0, 0)).y()
        return top, top + widget.height()

    label_top, label_bottom = rows(panel.result_label)
    keep_top, keep_bottom = rows(panel.keep_button)
    assert panel.result_label.height() > 2 * panel.result_label.fontMetrics().height()  # wrapped: several lines
    assert 0 <= label_top and label_bottom <= viewport.height()  # the whole verdict in view
    assert 0 <= keep_top and keep_bottom <= viewport.height(), (keep_top, keep_bottom, viewport.height())


def test_roll_back_to_the_retrained_version_takes_keep_new_model_anyway_away(make_napari_viewer, qtbot, tmp_path,
                                                                             lite_checkpoint):
    store = ProjectStore.open(tmp_path / "project")
    first = store.add_model(lite_checkpoint, parent="bundled", promoted=True)
    second = store.add_model(lite_checkpoint, parent=first.version, promoted=False)
    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer, store.root)
    panel = dock.retrain_panel
    panel.last_record = second  # as a retrain's end leaves it: not promoted, Keep offered
    panel.keep_button.setVisible(True)
    assert dock.versions_panel.roll_back(first.version)  # another version: the retrained one can still be kept
    assert panel.keep_button.isVisible()
    assert dock.versions_panel.roll_back(second.version)
    assert not panel.keep_button.isVisible()
