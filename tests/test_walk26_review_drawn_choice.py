"""Pathologist walk 26, finding 14: while testB_1 was reviewed, the Drawn chooser showed 'GlaS testA_1 (H&E) drawn
regions' (Accept drawn would refuse it). Now Drawn offers the drawn regions of the image reviewed only, and the user's
own Shapes layers; the other image's come back when that image is reviewed again.

A real napari viewer (pytest-xvfb), the real dock, a real store on disk holding two GlaS images and a prediction of
each (their masks; no model).
"""
from __future__ import annotations

import numpy as np
from _dock import (
    FIRST,
    SECOND,
    choose_image,
    settle,
    two_images_first_chosen,
)

from napari_cdma._layers import names_for


def _offered(review):
    return [ly.name for ly in review.shapes_choice.choices if ly is not None]


def test_drawn_offers_the_drawn_regions_of_the_image_reviewed(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock, _ = two_images_first_chosen(make_napari_viewer, qtbot, tmp_path, glas_dir)
    review = dock.review_panel
    drawn = review.start_drawing()
    assert drawn is not None and drawn.name == names_for(FIRST)["drawn"], review.last_message
    drawn.add_rectangles(np.array([[300, 300], [360, 360]]))
    notes = viewer.add_shapes(name="my notes")
    settle(qtbot, dock)
    assert set(_offered(review)) == {drawn.name, notes.name}

    choose_image(qtbot, dock, viewer, SECOND)
    settle(qtbot, dock)
    assert review.image_name == SECOND
    assert _offered(review) == [notes.name], _offered(review)
    assert getattr(review.shapes_choice.value, "unique_id", None) != drawn.unique_id

    choose_image(qtbot, dock, viewer, FIRST)
    settle(qtbot, dock)
    assert review.shapes_choice.value.unique_id == drawn.unique_id, _offered(review)  # (drawn: the dock's proxy)
    records = review.accept_drawn()
    assert len(records) == 1 and records[0].image_name == FIRST, review.last_message
