"""Pathologist walk 25, finding 4: Draw left the previous status ("Accepted region r0003 ...") with no hint; it now
says what to do (draw a rectangle over the chosen image, then Accept drawn).

A real napari viewer (pytest-xvfb), the real dock, a real store on disk holding both GlaS images and a prediction of
each (their masks; no model).
"""
from __future__ import annotations

from test_walk25_drawn import FIRST, _choose, _open, _turn


def test_draw_says_what_to_do(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock, store = _open(make_napari_viewer, qtbot, tmp_path, glas_dir)
    review = dock.review_panel
    _choose(qtbot, dock, viewer, FIRST)
    review.next_button.click()
    _turn(qtbot)
    assert review.accept() is not None
    assert review.last_message.startswith("Accepted region")

    review.draw_button.click()
    _turn(qtbot)
    said = review.status.text()
    assert not said.startswith("Accepted region"), said
    assert f"over '{FIRST}'" in said and "Accept drawn" in said and "rectangle" in said, said
