"""Findings of the re-walk of the dock (walk 15, leftovers): after a store switch the black frame of the previous
store's accepted region stayed on the image; an image's "drawn regions" layer stayed on screen when another image was
chosen in Predict (its image hidden); Previous / Next for an image with no prediction.

A real napari viewer (pytest-xvfb), the real dock, GlaS images, a real project store on disk (a prediction saved in
it, no model).
"""
from __future__ import annotations

import numpy as np
from _dock import wait_settled
from test_walk15_dock import FIRST, SECOND, _at_next, _open_two, _turn

from napari_cdma._layers import names_for
from napari_cdma._widget_review import SHOWN_SUFFIX


# ------------------------------------------- 1. the frame of the store left's region goes at a store switch
def test_the_frame_of_a_region_of_the_store_left_goes(make_napari_viewer, qtbot, tmp_path, glas_dir):
    from test_walk14_dock import _click_region

    viewer, dock, review = _at_next(make_napari_viewer, qtbot, tmp_path, glas_dir)
    record = review.accept()
    assert record is not None, review.last_message
    _click_region(review, 0)
    _turn(qtbot)
    frame = f"{FIRST} {SHOWN_SUFFIX}"
    assert frame in viewer.layers and len(viewer.layers[frame].data) == 1 and viewer.layers[frame].visible
    assert review.shown_region == record.region_id

    assert dock.open_store(tmp_path / "other") is not None  # a new, empty store: it has no region r0001
    wait_settled(dock)
    _turn(qtbot)
    assert review.records == {}
    # before: the black frame labelled r0001 stayed on testA_1
    shown = [ly for ly in viewer.layers if ly.name.endswith(SHOWN_SUFFIX) and len(ly.data) and ly.visible]
    assert shown == []
    assert review.shown_region is None and review.selected_record() is None


# ------------------------------------------- 2. Previous / Next for an image with no prediction
def test_previous_and_next_are_off_for_an_image_not_predicted(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock = _open_two(make_napari_viewer, qtbot, tmp_path, glas_dir)
    review = dock.review_panel
    dock.predict_panel.image_choice.value = viewer.layers[FIRST]
    _turn(qtbot)
    assert review.next_button.isEnabled() and review.prev_button.isEnabled()
    dock.predict_panel.image_choice.value = viewer.layers[SECOND]  # not predicted
    _turn(qtbot)
    assert review.tiles == []
    for button in (review.prev_button, review.next_button):
        assert not button.isEnabled()
        assert "Predict" in button.toolTip().splitlines()[0], button.toolTip()


# ------------------------------------------- 3. an image's drawn regions are hidden with it
def test_the_drawn_regions_of_an_image_are_hidden_with_it(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock = _open_two(make_napari_viewer, qtbot, tmp_path, glas_dir)
    review, predict = dock.review_panel, dock.predict_panel
    predict.image_choice.value = viewer.layers[FIRST]
    _turn(qtbot)
    drawn = review.start_drawing()
    assert drawn is not None and drawn.name == names_for(FIRST)["drawn"]
    drawn.add_rectangles([np.array([[300, 50], [300, 200], [420, 200], [420, 50]], dtype=float)])
    drawn.mode = "pan_zoom"
    notes = viewer.add_shapes([np.array([[10, 10], [10, 50], [50, 50], [50, 10]])], name="my notes")
    _turn(qtbot)
    assert drawn.visible

    predict.image_choice.value = viewer.layers[SECOND]  # testA_1 hidden under it
    _turn(qtbot)
    assert viewer.layers[SECOND].visible and not viewer.layers[FIRST].visible
    # before: testA_1's rectangles stayed on screen over testA_2
    assert not drawn.visible
    assert notes.visible  # the user's own layers are left as they are

    predict.image_choice.value = viewer.layers[FIRST]  # back with its image
    _turn(qtbot)
    assert viewer.layers[FIRST].visible and drawn.visible
    assert review.shapes_choice.value.unique_id == drawn.unique_id  # Accept drawn takes its shapes
