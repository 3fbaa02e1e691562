"""Findings of the pathologist's walk 17 (dock under Xvfb): the Predict status said one fact two ways ("Predicted
'testA_2' with bundled." at the end of a run, "testA_2: predicted with bundled at 00:45." when the image was chosen
again); after a store switch, before Predict, the Review panel's Corrections and Drawn choosers still offered the store
left's layers of the image (its prediction with that store's corrections pasted in, renamed "..., from <store>"; the
rectangles drawn over it), so an Accept could store them in the new store.

A real napari viewer (pytest-xvfb), the real dock, GlaS images, a real project store on disk.
"""
from __future__ import annotations

import re

import numpy as np
from _dock import open_dock, predict_and_wait, wait_settled
from test_walk15_dock import FIRST, SECOND, _open_two, _turn

from napari_cdma._widget_store import is_detached


# ------------------------------------------- the Predict status says a prediction one way
def test_the_end_of_a_prediction_reads_as_the_chosen_image_line(make_napari_viewer, qtbot, tmp_path, glas_dir,
                                                                 lite_checkpoint):
    from src_model.io import read_image

    viewer = make_napari_viewer()
    layer = viewer.add_image(read_image(glas_dir / "images" / f"{SECOND}.png")[:256, :256], name=SECOND, rgb=True)
    dock = open_dock(viewer, tmp_path / "project")
    panel = dock.predict_panel
    panel.set_model_file(str(lite_checkpoint))
    label = panel.model_combo.currentText()
    predict_and_wait(qtbot, dock, SECOND, timeout=120_000)
    _turn(qtbot)
    ended = panel.status.text()
    # before: "Predicted 'testA_2' with <model>."
    assert re.fullmatch(rf"{SECOND}: predicted with {re.escape(label)} at \d\d:\d\d\.", ended), (ended, label)
    assert ended == panel.chosen_line(layer)  # what the line says when the image is chosen again
    assert panel.progress.value() == panel.progress.maximum()  # the bar of a run that ended well ends full

    # predicted again over an accepted region: the same line, the dock's note after it
    review = dock.review_panel
    review.next_button.click()
    _turn(qtbot)
    assert review.accept() is not None, review.last_message
    predict_and_wait(qtbot, dock, SECOND, timeout=120_000)
    _turn(qtbot)
    said = panel.status.text()
    # before: "Predicted 'testA_2'. The layer shows 1 accepted correction(s) ..."
    assert said == f"{panel.predicted_line(SECOND)} 1 accepted correction(s) shown in their red boxes.", said
    # the whole in the tooltip (walk 20: said short on screen)
    assert panel.status.toolTip().startswith(f"{panel.predicted_line(SECOND)} The layer shows 1 accepted correction(s)")


# ------------------------------------------- the Review choosers after a store switch
def test_the_review_choosers_offer_no_layer_of_the_store_left(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock = _open_two(make_napari_viewer, qtbot, tmp_path, glas_dir)
    review = dock.review_panel
    dock.predict_panel.image_choice.value = viewer.layers[FIRST]
    _turn(qtbot)
    drawn = review.start_drawing()
    assert drawn is not None
    drawn.add_rectangles([np.array([[300, 50], [300, 200], [420, 200], [420, 50]], dtype=float)])
    drawn.mode = "pan_zoom"
    notes = viewer.add_shapes([np.array([[10, 10], [10, 50], [50, 50], [50, 10]])], name="my notes")
    old_prediction = viewer.layers[f"{FIRST} prediction"]
    _turn(qtbot)
    assert review.labels_choice.value is old_prediction and drawn in review.shapes_choice.choices

    assert dock.open_store(tmp_path / "other") is not None  # a new, empty store: it has no prediction of testA_1
    wait_settled(dock)
    _turn(qtbot)

    labels = list(review.labels_choice.choices)
    # before: "testA_1 prediction, from project" was offered, and chosen, as the layer of corrections
    assert old_prediction not in labels and review.labels_choice.value is not old_prediction
    assert not any(is_detached(ly) for ly in labels), [ly.name for ly in labels]
    # before: testA_1's rectangles, drawn over the store left's corrections, stayed chosen in Drawn (and on screen)
    assert drawn not in review.shapes_choice.choices and review.shapes_choice.value is not drawn
    assert not (drawn in viewer.layers and drawn.visible)
    assert notes in review.shapes_choice.choices  # the user's own layers are offered as before
