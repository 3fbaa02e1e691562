"""Pathologist walk 26, findings 10 and 11: what the status line says on Accept.

- 11: the 5th accepted region was held out for validation, and the line said only "Accepted region r0005 of
  'testB_1', ..."; only its list row said "[held out]". Now the line says it is held out to judge the next retrain.
- 10: a region accepted with no edit was stored without comment; now the line says the model's glands were stored as
  correct (a pathologist who forgot to edit learns it at once).

A real napari viewer (pytest-xvfb), the real dock, a real store on disk holding two GlaS images and a prediction of
each (their masks; no model).
"""
from __future__ import annotations

from _dock import choose_image, turn, two_images_in_store, wait_settled

from napari_cdma._layers import names_for

FIRST, SECOND = "testA_1", "testA_2"
RANKED = [(0.9 - 0.1 * k, (0, 64 * k, 64, 64 * k + 64)) for k in range(6)]  # six boxes along the top edge
HELD = "held out to judge the next retrain, not trained on"
PLAIN = "(no edits: the model's glands were stored as correct)"


def _reviewing_first(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock, store = two_images_in_store(make_napari_viewer, tmp_path, glas_dir, (FIRST, SECOND), RANKED)
    turn(qtbot)
    wait_settled(dock)
    choose_image(qtbot, dock, viewer, FIRST)
    return viewer, dock, store


def _next_and_accept(qtbot, review):
    review.next_button.click()
    turn(qtbot, 2)
    record = review.accept()
    assert record is not None, review.last_message
    return record, review.status.text()


def test_a_held_out_region_is_said_held_out(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock, _ = _reviewing_first(make_napari_viewer, qtbot, tmp_path, glas_dir)
    review = dock.review_panel
    said = [_next_and_accept(qtbot, review) for _ in range(5)]
    assert [r.holdout for r, _ in said] == [False] * 4 + [True]  # the store's 1 in 5
    for _, text in said[:4]:
        assert HELD not in text, text
    record, text = said[4]
    assert text.startswith(f"Accepted region {record.region_id} of '{FIRST}'"), text
    assert f": {HELD}." in text, text


def test_a_region_accepted_unedited_is_said_stored_as_the_model_found_it(make_napari_viewer, qtbot, tmp_path,
                                                                          glas_dir):
    viewer, dock, _ = _reviewing_first(make_napari_viewer, qtbot, tmp_path, glas_dir)
    review = dock.review_panel
    _, text = _next_and_accept(qtbot, review)
    assert PLAIN in text, text

    review.next_button.click()
    turn(qtbot, 2)
    y0, x0, y1, x1 = review.current_bbox()
    viewer.layers[names_for(FIRST)["prediction"]].paint(((y0 + y1) // 2, (x0 + x1) // 2), 7)  # an edit in the box
    record = review.accept()
    assert record is not None, review.last_message
    assert PLAIN not in review.status.text(), review.status.text()
