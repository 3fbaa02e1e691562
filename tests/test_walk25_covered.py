"""Pathologist walk 25, finding 2: with testB_1 chosen, the walker turned on the eye of testB_5's image, which lies
above testB_1 in the layer list: the screen showed only testB_5's tissue, the dock kept describing testB_1, and Accept
whole image stored testB_1 unseen. Now (a) an image shown over the chosen one (above it, overlapping it) is followed,
as a layer-list selection is, and (b) every Accept refuses while the chosen image, or its corrections layer, is not
on screen: covered by another shown image over the accepted box, or the corrections layer hidden (the rule that a
hidden image is never accepted while another is shown, extended).

A real napari viewer (pytest-xvfb), the real dock, a real store on disk holding both GlaS images and a prediction of
each (their masks; no model).
"""
from __future__ import annotations

import numpy as np
from _dock import choose_image as _choose
from _dock import turn as _turn
from _dock import two_images_in_store, wait_settled

from napari_cdma._layers import names_for
from napari_cdma.project.store import ProjectStore

FIRST, SECOND = "testA_1", "testA_2"  # SECOND lies above FIRST in the layer list
RANKED = [(0.9, (0, 0, 64, 64)), (0.8, (128, 128, 192, 192))]


def _open(make_napari_viewer, tmp_path, glas_dir):
    return two_images_in_store(make_napari_viewer, tmp_path, glas_dir, (FIRST, SECOND), RANKED)


def _regions(store):
    return ProjectStore.open(store.root).regions()


def test_an_image_shown_over_the_chosen_one_is_followed(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock, store = _open(make_napari_viewer, tmp_path, glas_dir)
    _turn(qtbot)
    wait_settled(dock)
    _choose(qtbot, dock, viewer, SECOND)
    _choose(qtbot, dock, viewer, FIRST)  # SECOND hidden, its layers remembered
    assert not viewer.layers[SECOND].visible

    viewer.layers[SECOND].visible = True  # its eye icon: its tissue now covers FIRST
    _turn(qtbot)
    wait_settled(dock)
    described = (dock.predict_panel.image_layer.name, dock.display_panel.image_name, dock.review_panel.image_name)
    assert described == (SECOND, SECOND, SECOND), dock.predict_panel.status.text()
    assert viewer.layers[names_for(SECOND)["prediction"]].visible and not viewer.layers[FIRST].visible

    # Accept whole image now stores the image on screen
    record = dock.review_panel.accept_whole_image()
    assert record is not None and record.image_name == SECOND, dock.review_panel.last_message

    # an image shown under the chosen one (not covering it) is not followed
    viewer.layers[FIRST].visible = True
    _turn(qtbot)
    wait_settled(dock)
    assert dock.predict_panel.image_layer.name == SECOND


def test_nothing_is_accepted_from_a_covered_image_or_a_hidden_mask(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock, store = _open(make_napari_viewer, tmp_path, glas_dir)
    _turn(qtbot)
    wait_settled(dock)
    _choose(qtbot, dock, viewer, SECOND)
    _choose(qtbot, dock, viewer, FIRST)
    review = dock.review_panel

    # SECOND shown under FIRST, transparent (not followed: it covers nothing), dragged above it (still transparent:
    # not followed), then made opaque: FIRST is covered, and the dock still describes it (an opacity change is not
    # followed; a reorder is: tests/test_walk26_reorder_covering.py)
    layers = viewer.layers
    layers.move(layers.index(layers[FIRST]), len(layers))
    # its prediction above it: an image above its own corrections layer hides them (tests/test_walk26_review_unseen.py)
    layers.move(layers.index(layers[names_for(FIRST)["prediction"]]), len(layers))
    layers[SECOND].opacity = 0.0
    layers[SECOND].visible = True
    _turn(qtbot)
    wait_settled(dock)
    assert dock.predict_panel.image_layer.name == FIRST
    layers.move(layers.index(layers[SECOND]), len(layers))
    _turn(qtbot)
    assert dock.predict_panel.image_layer.name == FIRST
    layers[SECOND].opacity = 1.0
    tiles = layers[names_for(FIRST)["tiles"]]
    assert layers.move(layers.index(tiles), 0)  # a reorder leaving SECOND on top: not followed either
    _turn(qtbot)
    assert dock.predict_panel.image_layer.name == FIRST
    assert not review.accept_image_button.isEnabled() and "covered by" in review.accept_image_button.toolTip()
    assert review.accept_whole_image() is None
    said = review.last_message
    assert f"'{FIRST}' is not on screen (covered by '{SECOND}')" in said and f"hide '{SECOND}'" in said, said
    assert review.accept(bbox=(0, 0, 64, 64)) is None
    assert "covered by" in review.last_message
    assert _regions(store) == []
    viewer.layers[SECOND].visible = False
    _turn(qtbot)
    wait_settled(dock)
    assert dock.predict_panel.image_layer.name == FIRST

    # a small image of the user's own shown over part of FIRST: a box it does not cover is accepted, one it
    # covers is not
    patch = viewer.add_image(np.full((40, 40, 3), 200, np.uint8), name="patch", rgb=True, translate=(400, 400),
                             visible=False)
    layers.move(layers.index(patch), 0)
    _turn(qtbot)
    wait_settled(dock)
    patch.visible = True  # under FIRST: not followed
    _turn(qtbot)
    wait_settled(dock)
    assert dock.predict_panel.image_layer.name == FIRST
    patch.opacity = 0.0
    layers.move(layers.index(patch), len(layers))  # dragged over it, transparent, then made opaque
    _turn(qtbot)
    patch.opacity = 1.0
    _turn(qtbot)
    assert review.accept(bbox=(384, 384, 448, 448)) is None and "covered by 'patch'" in review.last_message
    assert review.accept(bbox=(0, 0, 64, 64)) is not None, review.last_message
    assert len(_regions(store)) == 1
    patch.visible = False
    _turn(qtbot)
    wait_settled(dock)
    assert dock.predict_panel.image_layer.name == FIRST

    # FIRST's prediction (the corrections layer) hidden: its mask is not accepted unseen; the buttons say why
    prediction = viewer.layers[names_for(FIRST)["prediction"]]
    assert review.labels_choice.value is prediction
    prediction.visible = False
    _turn(qtbot)
    assert review.accept_whole_image() is None
    assert f"'{prediction.name}', the corrections Accept stores, is hidden" in review.last_message
    assert not review.accept_image_button.isEnabled()
    assert "is hidden" in review.accept_image_button.toolTip()
    assert len(_regions(store)) == 1
    prediction.visible = True
    _turn(qtbot)
    assert review.accept_image_button.isEnabled()
    assert review.accept_whole_image() is not None, review.last_message
