"""Pathologist walk 26, finding 1: with testB_1 reviewed, the walker dragged the hidden testA_1 image to the top of
the layer list and turned its eye on. The dock chose testA_1 (a reorder is followed), but its opaque H&E now lay above
its own prediction: the canvas showed plain tissue, a painted label was invisible, and Accept whole image stored it.
Now Draw and the accept buttons refuse while the image reviewed lies above its corrections layer (or any opaque image
of the user's covers that layer), and say what to do: move the prediction above the image in the layer list.

A real napari viewer (pytest-xvfb), the real dock, a real store on disk holding both GlaS images and a prediction of
each (their masks; no model).
"""
from __future__ import annotations

import numpy as np
from _dock import (
    FIRST,
    SECOND,
    choose_image,
    settle,
    to_top,
    two_images_first_chosen,
)

from napari_cdma._layers import names_for
from napari_cdma.project.store import ProjectStore


def test_an_image_above_its_own_prediction_is_not_accepted_unseen(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock, store = two_images_first_chosen(make_napari_viewer, qtbot, tmp_path, glas_dir)
    choose_image(qtbot, dock, viewer, SECOND)  # FIRST hidden with its layers
    review, layers = dock.review_panel, viewer.layers
    prediction = layers[names_for(FIRST)["prediction"]]
    assert not layers[FIRST].visible

    # the walk: FIRST dragged to the top, its eye turned on: it is chosen, and lies above its own prediction
    to_top(layers, FIRST)
    settle(qtbot, dock)
    layers[FIRST].visible = True
    settle(qtbot, dock)
    assert dock.predict_panel.image_layer.name == FIRST, dock.predict_panel.status.text()
    assert review.labels_choice.value is prediction and prediction.visible
    assert layers.index(layers[FIRST]) > layers.index(prediction)
    review.step(+1)
    settle(qtbot, dock)
    prediction.paint((40, 40), 3)  # a stroke nobody sees

    for button in (review.accept_button, review.accept_image_button, review.draw_button):
        assert not button.isEnabled(), button.text()
        assert f"move '{prediction.name}' above '{FIRST}'" in button.toolTip(), button.toolTip()
    assert review.accept_whole_image() is None
    said = review.last_message
    assert f"move '{prediction.name}' above '{FIRST}' in the layer list" in said, said
    assert review.accept() is None and "in the layer list" in review.last_message
    assert review.start_drawing() is None and "in the layer list" in review.last_message
    assert ProjectStore.open(store.root).regions() == []

    # an opaque image of the user's own (not one the dock predicts: float grey) over the prediction: refused too
    to_top(layers, prediction.name)
    settle(qtbot, dock)
    assert review.accept_image_button.isEnabled(), review.accept_image_button.toolTip()
    heat = viewer.add_image(np.zeros((100, 100), np.float32), name="heat map", translate=(0, 0))
    settle(qtbot, dock)
    assert dock.predict_panel.image_layer.name == FIRST
    assert not review.accept_button.isEnabled()
    assert review.accept(bbox=(0, 0, 64, 64)) is None and "'heat map'" in review.last_message, review.last_message
    # an overlay the glands show through (see-through, or added onto them) hides nothing (review of the session)
    heat.opacity = 0.3
    assert review.edit_blocked(FIRST, (0, 0, 64, 64)) is None, review.edit_blocked(FIRST, (0, 0, 64, 64))
    heat.opacity, heat.blending = 1.0, "additive"
    assert review.edit_blocked(FIRST, (0, 0, 64, 64)) is None, review.edit_blocked(FIRST, (0, 0, 64, 64))
    heat.blending = "translucent"
    assert review.edit_blocked(FIRST, (0, 0, 64, 64)) is not None
    assert review.accept(bbox=(256, 256, 320, 320)) is not None, review.last_message  # a box it does not cover
    heat.visible = False
    settle(qtbot, dock)

    # the prediction above the image again: what is accepted is on screen
    assert review.accept_image_button.isEnabled(), review.accept_image_button.toolTip()
    record = review.accept_whole_image()
    assert record is not None and record.image_name == FIRST, review.last_message
