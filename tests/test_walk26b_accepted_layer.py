"""Pathologist walk 26b, problem A: in a reopened store the walker deleted the image's prediction layer; the hidden
"accepted corrections" layer (the store's corrections inside their boxes, background elsewhere) became the layer
Accept stores, the review line said to show it, and Accept then stored a region where the model had two glands as all
background. Now Accept (region and whole image) and Draw refuse a box that reaches outside the accepted boxes of that
layer, and say to predict again; a box inside them (a stored correction edited again) is still accepted.

A real napari viewer (pytest-xvfb), the real dock, a real store on disk (the GlaS mask as the prediction; no model).
"""
from __future__ import annotations

from _dock import (
    choose_image,
    open_dock,
    settle,
    two_images_first_chosen,
)

from napari_cdma._layers import names_for
from napari_cdma.project.store import ProjectStore

NAME = "testA_1"
STORED, OUTSIDE = (0, 0, 64, 64), (128, 128, 192, 192)


def test_the_accepted_corrections_layer_is_not_stored_outside_its_boxes(make_napari_viewer, qtbot, tmp_path,
                                                                      glas_dir):
    viewer, dock, store = two_images_first_chosen(make_napari_viewer, qtbot, tmp_path, glas_dir, (NAME,))
    assert dock.review_panel.accept(bbox=STORED) is not None, dock.review_panel.last_message

    # a new session on the same store: the image, its prediction and its accepted corrections come back
    again = make_napari_viewer(show=True)
    again.add_image(viewer.layers[NAME].data, name=NAME, rgb=True)
    dock2 = open_dock(again, store.root)
    settle(qtbot, dock2)
    choose_image(qtbot, dock2, again, NAME)
    names, review, layers = names_for(NAME), dock2.review_panel, again.layers
    assert names["corrections"] in layers, [ly.name for ly in layers]
    glands_outside = int((layers[names["prediction"]].data[128:192, 128:192] > 0).sum())
    assert glands_outside > 0  # the model has glands there

    # the walk: the prediction layer deleted; the accepted corrections shown, as the review line said
    layers.remove(names["prediction"])
    settle(qtbot, dock2)
    corrections = layers[names["corrections"]]
    corrections.visible = True
    review.labels_choice.value = corrections
    settle(qtbot, dock2)
    assert int((corrections.data[128:192, 128:192] > 0).sum()) == 0  # background where the glands were

    before = len(ProjectStore.open(store.root).regions())
    assert review.accept(bbox=OUTSIDE) is None
    said = review.last_message
    assert "holds only the corrections already stored" in said and f"Predict '{NAME}' again" in said, said
    assert review.accept_whole_image() is None and "holds only" in review.last_message, review.last_message
    assert len(ProjectStore.open(store.root).regions()) == before  # no empty region stored
    # a stored correction edited again, inside its box: still accepted
    assert review.edit_blocked(NAME, STORED) is None
    corrections.paint((10, 10), 5)
    assert review.accept(bbox=STORED) is not None, review.last_message
