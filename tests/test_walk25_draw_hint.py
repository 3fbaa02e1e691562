"""Pathologist walk 25, finding 4: Draw left the previous status ("Accepted region r0003 ...") with no hint; it now
says what to do (draw a rectangle over the chosen image, then Accept drawn).

A real napari viewer (pytest-xvfb), the real dock, a real store on disk holding both GlaS images and a prediction of
each (their masks; no model).
"""
from __future__ import annotations

from test_walk25_drawn import FIRST, _open_on, _turn


def test_draw_says_what_to_do(make_napari_viewer, qtbot, tmp_path, glas_dir):
    _, dock, _ = _open_on(make_napari_viewer, qtbot, tmp_path, glas_dir, FIRST)
    review = dock.review_panel
    review.next_button.click()
    _turn(qtbot)
    assert review.accept() is not None
    assert review.last_message.startswith("Accepted region")
    # no edit outside the region: no note of edits not accepted (walk 25, test_walk25_outside_edits.py)
    assert "outside this region" not in review.last_message, review.last_message

    review.draw_button.click()
    _turn(qtbot)
    said = review.status.text()
    assert not said.startswith("Accepted region"), said
    assert f"over '{FIRST}'" in said and "Accept drawn" in said and "rectangle" in said, said
