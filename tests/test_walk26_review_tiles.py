"""Pathologist walk 26, finding 8: the walker deleted 'testB_1 review tiles', then pressed Next: the view zoomed and
the status named "Review region 1 of 7", but no frame was drawn; and napari had made the hidden accepted-corrections
layer active, so the brush painted into a hidden layer. Now Next draws the review frames again (the layer made anew),
and the brush goes back to the prediction layer when a dock layer's deletion leaves a hidden layer (or none) active.

A real napari viewer (pytest-xvfb), the real dock, a real store on disk holding two GlaS images and a prediction of
each (their masks; no model).
"""
from __future__ import annotations

from _dock import (
    FIRST,
    settle,
    two_images_first_chosen,
)

from napari_cdma._layers import names_for


def test_next_frames_the_region_after_the_tiles_layer_was_deleted(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock, _ = two_images_first_chosen(make_napari_viewer, qtbot, tmp_path, glas_dir)
    review, layers = dock.review_panel, viewer.layers
    names = names_for(FIRST)
    prediction = layers[names["prediction"]]
    review.next_button.click()
    settle(qtbot, dock)
    assert len(layers[names["tiles"]].data) == 2

    # a hidden layer just under the tiles: napari makes it active when the tiles layer is deleted
    hidden = viewer.add_labels(prediction.data.copy(), name="my hidden labels", visible=False)
    layers.move(layers.index(hidden), layers.index(layers[names["tiles"]]))
    layers.selection.active = layers[names["tiles"]]
    layers.remove(names["tiles"])
    settle(qtbot, dock)
    assert layers.selection.active is prediction, getattr(layers.selection.active, "name", None)

    review.next_button.click()
    settle(qtbot, dock)
    assert review.status.text().startswith("Review region 2 of 2"), review.status.text()
    assert names["tiles"] in layers, [ly.name for ly in layers]
    tiles = layers[names["tiles"]]
    assert len(tiles.data) == 2 and tiles.visible
    assert list(tiles.z_index) == [0, 1]  # the selected (second) frame drawn over the other
    assert layers.selection.active is prediction, getattr(layers.selection.active, "name", None)

    # deleted again while region 2 stays selected: going to it again frames it
    layers.remove(names["tiles"])
    settle(qtbot, dock)
    review.go_to(1)
    settle(qtbot, dock)
    assert names["tiles"] in layers and len(layers[names["tiles"]].data) == 2
