"""Findings of the re-walk of the dock (walk 15): with one image predicted and another chosen in Predict (the predicted
one hidden), Accept whole image stored the hidden image's unreviewed prediction and a rectangle drawn over the image on
screen was stored as a region of the hidden one; after an accepted region's row was clicked, Next left that row
selected (Withdraw and Accept region then acted on two different regions) and the status still described it.

A real napari viewer (pytest-xvfb), the real dock, GlaS images, a real project store on disk (a prediction saved in
it, no model).
"""
from __future__ import annotations

from _dock import open_dock
from qtpy.QtWidgets import QApplication

from napari_cdma._layers import names_for
from napari_cdma.project.store import ProjectStore

FIRST, SECOND = "testA_1", "testA_2"


def _turn(qtbot, n=6):
    for _ in range(n):
        QApplication.processEvents()
        qtbot.wait(10)


def _open_two(make_napari_viewer, qtbot, tmp_path, glas_dir):
    """testA_1 predicted (in the store), testA_2 open beside it without a prediction."""
    from test_dock_review_focus import _store

    from src_model.io import read_image

    images = {n: read_image(glas_dir / "images" / f"{n}.png") for n in (FIRST, SECOND)}
    _store(tmp_path / "project", {FIRST: images[FIRST]}, glas_dir)
    viewer = make_napari_viewer(show=True)
    for name, image in images.items():
        viewer.add_image(image, name=name, rgb=True)
    dock = open_dock(viewer, tmp_path / "project")
    _turn(qtbot)
    return viewer, dock


def _at_next(make_napari_viewer, qtbot, tmp_path, glas_dir):
    """:func:`_open_two`, testA_1 chosen in Predict and its first review region shown by Next."""
    viewer, dock = _open_two(make_napari_viewer, qtbot, tmp_path, glas_dir)
    dock.predict_panel.image_choice.value = viewer.layers[FIRST]
    _turn(qtbot)
    dock.review_panel.next_button.click()
    _turn(qtbot)
    return viewer, dock, dock.review_panel


def test_nothing_is_drawn_or_accepted_on_a_hidden_image(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock = _open_two(make_napari_viewer, qtbot, tmp_path, glas_dir)
    review, predict = dock.review_panel, dock.predict_panel
    predict.image_choice.value = viewer.layers[FIRST]
    _turn(qtbot)
    assert viewer.layers[FIRST].visible and review.accept_image_button.isEnabled(), review.accept_image_button.toolTip()

    predict.image_choice.value = viewer.layers[SECOND]  # testA_2 on screen, testA_1 (predicted) hidden under it
    _turn(qtbot)
    assert viewer.layers[SECOND].visible and not viewer.layers[FIRST].visible
    assert review.labels_choice.value is viewer.layers[names_for(FIRST)["prediction"]]  # still names testA_1's
    for button in (review.accept_image_button, review.draw_button, review.accept_drawn_button):
        assert not button.isEnabled()
        assert f"'{FIRST}', which is hidden" in button.toolTip() and f"'{SECOND}' is on screen" in button.toolTip()
    # from a script as well: nothing stored, no drawing layer of the hidden image made
    assert review.accept_whole_image() is None and "hidden" in review.last_message
    assert review.start_drawing() is None
    assert names_for(FIRST)["drawn"] not in viewer.layers
    assert ProjectStore.open(tmp_path / "project").regions() == []

    predict.image_choice.value = viewer.layers[FIRST]  # chosen again: it is on screen and can be accepted
    _turn(qtbot)
    assert viewer.layers[FIRST].visible
    assert review.accept_image_button.isEnabled() and review.draw_button.isEnabled()
    assert review.accept_whole_image() is not None


def test_next_after_an_accepted_region_row_leaves_that_row(make_napari_viewer, qtbot, tmp_path, glas_dir):
    from test_walk14_dock import _click_region

    viewer, dock, review = _at_next(make_napari_viewer, qtbot, tmp_path, glas_dir)
    first = review.accept()
    assert first is not None, review.last_message
    _click_region(review, 0)
    _turn(qtbot)
    assert review.last_message.startswith(f"Showing region {first.region_id}")
    assert review.withdraw_button.isEnabled()
    review.next_button.click()
    _turn(qtbot)
    row = review.tile_list.currentRow()
    assert row >= 0 and review.accept_button.isEnabled()
    # before: the accepted row stayed selected (Withdraw on) and the status still said "Showing region r0001"
    assert review.region_list.currentRow() == -1 and review.selected_record() is None
    assert not review.withdraw_button.isEnabled()
    assert review.last_message.startswith(f"Review region {row + 1} of {len(review.tiles)} of '{FIRST}'")
