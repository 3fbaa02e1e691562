"""Pathologist walk 25, finding 3: Accept drawn took the user's own Shapes layer, from any image: "my notes B5",
the only Shapes layer, was chosen in Drawn by itself, and Accept drawn stored its rectangles as regions of testB_5,
then again of testA_1 after the walker chose testA_1. Now Drawn chooses nothing by itself but the dock's own drawn
regions of the chosen image (Draw); a layer of the user's is taken only once picked in Drawn, for the image chosen then
(choosing another image leaves Drawn empty again), and the status line says so ("from your layer 'my notes'").

A real napari viewer (pytest-xvfb), the real dock, a real store on disk holding both GlaS images and a prediction of
each (their masks; no model).
"""
from __future__ import annotations

import numpy as np
from _dock import choose_image as _choose
from _dock import turn as _turn
from _dock import two_images_in_store, wait_settled

from napari_cdma.project.store import ProjectStore

FIRST, SECOND = "testA_1", "testA_2"
RANKED = [(0.9, (0, 0, 64, 64)), (0.8, (128, 128, 192, 192))]


def _open(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock, store = two_images_in_store(make_napari_viewer, tmp_path, glas_dir, (FIRST, SECOND), RANKED)
    _turn(qtbot)
    wait_settled(dock)
    return viewer, dock, store


def _open_on(make_napari_viewer, qtbot, tmp_path, glas_dir, name):
    """:func:`_open`, then ``name`` chosen in Predict as the user does; returns (viewer, dock, store)."""
    viewer, dock, store = _open(make_napari_viewer, qtbot, tmp_path, glas_dir)
    _choose(qtbot, dock, viewer, name)
    return viewer, dock, store


def _regions(store):
    return ProjectStore.open(store.root).regions()


def test_a_shapes_layer_of_the_users_is_taken_only_once_picked_for_the_image(make_napari_viewer, qtbot, tmp_path,
                                                                              glas_dir):
    viewer, dock, store = _open_on(make_napari_viewer, qtbot, tmp_path, glas_dir, SECOND)
    review = dock.review_panel
    notes = viewer.add_shapes([np.array([[10, 10], [10, 50], [50, 50], [50, 10]])], name="my notes")
    _turn(qtbot)

    # offered, not chosen by itself: Accept drawn says what it needs and stores nothing
    assert notes in review.shapes_choice.choices
    assert review.shapes_choice.value is None
    assert not review.accept_drawn_button.isEnabled()
    assert "Drawn" in review.accept_drawn_button.toolTip(), review.accept_drawn_button.toolTip()
    assert review.accept_drawn() == [] and _regions(store) == []

    # picked: its rectangle is a region of the image chosen, and the status says whose layer it came from
    review.shapes_choice.value = notes
    _turn(qtbot)
    assert review.accept_drawn_button.isEnabled()
    records = review.accept_drawn()
    assert len(records) == 1 and records[0].image_name == SECOND, review.last_message
    assert "from your layer 'my notes'" in review.last_message, review.last_message
    # the user's layer keeps its shapes: they are the user's notes (Draw's own layer gives them up)
    assert len(notes.data) == 1

    # another image chosen: the pick does not carry over to it
    notes.add_rectangles(np.array([[100, 100], [100, 160], [160, 160], [160, 100]], float))
    _choose(qtbot, dock, viewer, FIRST)
    assert review.shapes_choice.value is None
    assert not review.accept_drawn_button.isEnabled()
    assert review.accept_drawn() == [] and len(_regions(store)) == 1

    # picked again for it, its new rectangle selected: that one is taken, and both stay in the layer
    review.shapes_choice.value = notes
    _turn(qtbot)
    notes.selected_data = {1}
    records = review.accept_drawn()
    assert len(records) == 1 and records[0].image_name == FIRST, review.last_message
    assert tuple(records[0].bbox) != tuple(_regions(store)[0].bbox) and len(notes.data) == 2

    # the dock's own drawn regions of the chosen image are chosen by Draw, as before
    drawn = review.start_drawing()
    assert drawn is not None and review.shapes_choice.value.unique_id == drawn.unique_id
