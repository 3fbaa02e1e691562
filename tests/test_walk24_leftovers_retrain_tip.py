"""Pathologist walk 24, leftovers: Retrain's tooltip said "Needs a project store" while one was open.

The tip was set when the dock was made (no store then) and recomputed only on a hover event; read as the button's
tooltip at any other moment it stayed "Needs a project store" after the store was opened and regions accepted. It now
follows the store: what Retrain still needs, or what it will do.

The real dock in a napari viewer (Xvfb), GlaS images from tests/data and the bundled model.
"""
from __future__ import annotations

from _dock import open_dock, predict_and_wait

from napari_cdma._sample import SAMPLE_NAME

PLUGIN = "napari-cdma"


def test_the_retrain_tooltip_says_what_is_missing_now(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget = open_dock(viewer)
    button = widget.retrain_panel.retrain_button
    assert "Needs a project store" in button.toolTip()  # no store yet: true
    assert "Needs a project store" in widget.versions_panel.rollback_button.toolTip()

    assert widget.open_store(tmp_path / "project") is not None  # an empty store
    tip = button.toolTip()
    assert "Needs a project store" not in tip and "accepted region" in tip, tip
    rollback = widget.versions_panel.rollback_button.toolTip()  # the Versions panel's Roll back: the same
    assert "Needs a project store" not in rollback and "Select a version" in rollback, rollback

    viewer.open_sample(PLUGIN, "glas_testA_1")
    predict_and_wait(qtbot, widget, SAMPLE_NAME)
    review = widget.review_panel
    for _ in range(2):  # the first accepted region may be held out
        assert review.accept(bbox=review.tiles[0][1]) is not None, review.last_message
        if widget.store.training_regions():
            break
    qtbot.waitUntil(lambda: widget.settled(), timeout=30_000)
    tip = button.toolTip()
    assert "Needs" not in tip and tip.startswith("Fine-tune the current model"), tip
