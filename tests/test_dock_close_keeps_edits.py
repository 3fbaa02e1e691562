"""Closing the viewer never loses edits that were not accepted: the dock keeps them in the open project store
first, as 'Keep unaccepted edits' does (pathologist re-walk: 177 edited pixels were gone after the viewer
closed); a viewer with nothing edited closes without writing them."""
from __future__ import annotations

import numpy as np
from _dock import PLUGIN, open_dock, wait_settled

from napari_cdma._layers import names_for
from napari_cdma._sample import SAMPLE_NAME
from napari_cdma.project.store import ProjectStore


def _predicted(make_napari_viewer, qtbot, path, checkpoint):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "glas_testA_1")
    widget = open_dock(viewer, path)
    if widget.store.current_model_version == "bundled":
        widget.store.add_model(checkpoint, parent="bundled", promoted=True)
    assert widget.open_store(path) is not None
    wait_settled(widget)
    panel = widget.predict_panel
    assert widget.predict(SAMPLE_NAME), panel.last_message
    qtbot.waitUntil(lambda: not panel.running and SAMPLE_NAME in widget.states, timeout=120_000)
    assert widget.flush_prediction_saves(60)
    return viewer, widget


def test_closing_the_viewer_keeps_edits_not_accepted(make_napari_viewer, qtbot, tmp_path, lite_checkpoint):
    path = tmp_path / "project"
    viewer, widget = _predicted(make_napari_viewer, qtbot, path, lite_checkpoint)
    name = names_for(SAMPLE_NAME)["prediction"]
    layer = viewer.layers[name]
    layer.data[300:320, 100:130] = 77  # an edit, neither accepted nor kept
    layer.refresh()
    edited = np.array(layer.data)
    assert widget.keep_edits_button.isEnabled()
    image_hash = widget.states[SAMPLE_NAME].image_hash
    saved = widget.store.latest_prediction(image_hash).number
    viewer.close()

    other = make_napari_viewer()
    again = open_dock(other, path)
    wait_settled(again)
    np.testing.assert_array_equal(other.layers[name].data, edited)  # back, pixel for pixel
    assert again.store.regions() == []  # kept, not accepted: not used for training
    # kept once, though the image and its prediction layer both closed
    assert again.store.latest_prediction(image_hash).number == saved + 1
    # back as kept: not accepted, but nothing for Keep to add (walk: it stayed enabled, and each close rewrote them)
    assert not again.keep_edits_button.isEnabled() and "kept in the store already" in again.keep_edits_button.toolTip()
    assert again.keep_edits_at_close(SAMPLE_NAME) == {} and again.keep_edits() == {}
    assert again.store.latest_prediction(image_hash).number == saved + 1
    # an edit since: Keep has something again, and after keeping, nothing
    layer = other.layers[name]
    layer.paint((310, 140), 78, refresh=True)  # a stroke, as the brush makes it (napari's paint event)
    assert again.keep_edits_button.isEnabled()
    assert again.keep_edits()[SAMPLE_NAME] > 0
    assert not again.keep_edits_button.isEnabled() and again.keep_edits() == {}
    assert again.store.latest_prediction(image_hash).number == saved + 2
    other.close()  # nothing new to keep at the close
    assert ProjectStore.open(path).latest_prediction(image_hash).number == saved + 2


def test_closing_a_viewer_without_edits_keeps_nothing(make_napari_viewer, qtbot, tmp_path, lite_checkpoint):
    path = tmp_path / "project"
    viewer, widget = _predicted(make_napari_viewer, qtbot, path, lite_checkpoint)
    before = widget.store.latest_prediction(widget.states[SAMPLE_NAME].image_hash)
    assert not widget.keep_edits_button.isEnabled()
    assert widget.keep_edits_at_close(SAMPLE_NAME) == {}
    viewer.close()
    other = make_napari_viewer()
    again = open_dock(other, path)
    wait_settled(again)
    after = again.store.latest_prediction(before.image_hash)
    assert (after.number, after.edited) == (before.number, False)  # nothing rewritten, no edits kept
    assert not again.keep_edits_button.isEnabled()
