"""Pathologist walk 25: the walker split gland 7 by painting outside the review region Next had moved to and pressed
Accept region; the region was stored and nothing was said about the edit left outside it (only a later Predict line
said "30 unaccepted edited pixel(s) are kept"). Accept region and Accept drawn now say how many edited pixels lie
outside what was accepted and are not accepted yet, counted as the dock counts them (ImageState.unsaved). With no
edit nothing is said (test_walk25_draw_hint.py::test_draw_says_what_to_do accepts a region with none).

A real napari viewer (pytest-xvfb), the real dock, a real store on disk holding both GlaS images and a prediction of
each (their masks; no model).
"""
from __future__ import annotations

import numpy as np
from test_walk25_drawn import FIRST, _open_on, _turn

from napari_cdma._layers import names_for


def _paint_outside(viewer, dock):
    """Paint a new label with napari's own brush well outside the first review region (0, 0, 64, 64)."""
    layer = viewer.layers[names_for(FIRST)["prediction"]]
    layer.brush_size = 5
    new = int(np.asarray(layer.data).max()) + 1
    layer.paint((200, 300), new)
    state = dock.states[FIRST]
    edited = state.unsaved(layer.name, np.asarray(layer.data))
    assert edited > 0
    return layer, edited


def test_accept_region_says_edits_outside_it_are_not_accepted(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock, _ = _open_on(make_napari_viewer, qtbot, tmp_path, glas_dir, FIRST)
    review = dock.review_panel
    review.next_button.click()
    _turn(qtbot)
    layer, edited = _paint_outside(viewer, dock)
    _turn(qtbot)

    review.accept_button.click()
    _turn(qtbot)
    said = review.status.text()
    assert review.last_message.startswith("Accepted region"), review.last_message
    assert f"{edited} edited pixel(s) outside this region are not accepted yet" in review.last_message, said
    assert "Accept whole image" in review.last_message and "Draw" in review.last_message

    # nothing left outside: Accept whole image says no such thing
    assert review.accept_whole_image() is not None
    assert dock.states[FIRST].unsaved(layer.name, np.asarray(layer.data)) == 0
    assert "outside this region" not in review.last_message, review.last_message


def test_accept_drawn_says_edits_outside_it_are_not_accepted(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock, _ = _open_on(make_napari_viewer, qtbot, tmp_path, glas_dir, FIRST)
    review = dock.review_panel
    layer, edited = _paint_outside(viewer, dock)
    _turn(qtbot)

    drawn = review.start_drawing()
    drawn.add_rectangles(np.array([[10, 10], [10, 50], [50, 50], [50, 10]], float))
    _turn(qtbot)
    records = review.accept_drawn()
    assert len(records) == 1, review.last_message
    assert f"{edited} edited pixel(s) outside this region are not accepted yet" in review.last_message, \
        review.last_message

    # a rectangle drawn around the edit: nothing is left outside, and nothing is said
    drawn = review.start_drawing()
    drawn.add_rectangles(np.array([[180, 280], [180, 320], [220, 320], [220, 280]], float))
    _turn(qtbot)
    assert len(review.accept_drawn()) == 1, review.last_message
    assert "outside this region" not in review.last_message, review.last_message


def test_accept_drawn_from_a_layer_of_the_users_keeps_the_note_last(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock, _ = _open_on(make_napari_viewer, qtbot, tmp_path, glas_dir, FIRST)
    review = dock.review_panel
    layer, edited = _paint_outside(viewer, dock)
    notes = viewer.add_shapes([np.array([[10, 10], [10, 50], [50, 50], [50, 10]])], name="my notes")
    _turn(qtbot)
    review.shapes_choice.value = notes
    _turn(qtbot)
    assert len(review.accept_drawn()) == 1, review.last_message
    said = review.last_message
    assert "from your layer 'my notes'" in said, said
    assert said.endswith(f"{edited} edited pixel(s) outside this region are not accepted yet (Accept whole image, "
                         "or Draw around them)."), said
