"""The hand-over of a small image's prediction to the viewer, in a real napari viewer.

A small image (GlaS testA_1, 775 x 522: not streamed) is predicted whole in the worker; its layers are
then added one per event-loop turn (as a large image's are while it is predicted), without moving the
viewer's selection for each, and nothing is shown when the image was closed or replaced meanwhile.
Timings are in the report of the change, not asserted here.
"""
from __future__ import annotations

import numpy as np
import pytest
from _dock import open_dock, predict_and_wait
from qtpy.QtCore import QTimer

from napari_cdma._layers import names_for
from napari_cdma._predict_stream import CANCELLED_SUFFIX, LIVE_SUFFIX

NAME = "glas"
ROLES = ("prediction", "uncertainty", "disagreement", "tiles", "accepted")


@pytest.fixture
def dock(make_napari_viewer, glas_dir, tmp_path, monkeypatch):
    """A viewer with GlaS testA_1 and the dock (no project store: the bundled model); not streamed."""
    from src_model.io import read_image

    monkeypatch.setenv("NAPARI_CDMA_PROJECT", str(tmp_path / "no_store"))
    viewer = make_napari_viewer()
    image = read_image(glas_dir / "images" / "testA_1.png")
    viewer.add_image(image, name=NAME, rgb=True)
    widget = open_dock(viewer)
    return viewer, widget, image


def _outputs(viewer, image_name=NAME):
    """Names of the prediction's layers in the viewer (finished, live or cancelled ones)."""
    names = names_for(image_name)
    wanted = {names[r] for r in ROLES}
    return {ly.name for ly in viewer.layers
            if ly.name in wanted or ly.name.endswith(LIVE_SUFFIX) or ly.name.endswith(CANCELLED_SUFFIX)}


def _record_turns(viewer):
    """A 0 ms timer noting the prediction's layers at each event-loop turn it gets; (timer, list of sets)."""
    seen = []
    timer = QTimer()
    timer.setInterval(0)
    timer.timeout.connect(lambda: seen.append(frozenset(_outputs(viewer))))
    timer.start()
    return timer, seen


def test_small_image_layers_are_handed_over_one_per_event_loop_turn(dock, qtbot):
    viewer, widget, _ = dock
    names = names_for(NAME)
    final = {names[r] for r in ROLES}
    timer, seen = _record_turns(viewer)
    try:
        predict_and_wait(qtbot, widget, NAME)
    finally:
        timer.stop()
    assert final <= _outputs(viewer), _outputs(viewer)
    # the layer list as the timer saw it between turns: it grows a layer at a time, with turns in between
    # (a layer still named "... (predicting...)" counts as the layer it becomes)
    plain = [frozenset(n.replace(LIVE_SUFFIX, "") for n in s) for s in seen]
    states = [s for i, s in enumerate(plain) if i == 0 or s != plain[i - 1]]
    partial = [s for s in states if s and not final <= s]
    assert len(partial) >= 3, states
    # no turn added more than one layer
    assert all(len(b - a) <= 1 for a, b in zip(states, states[1:], strict=False)), states
    assert not any(n.endswith(LIVE_SUFFIX) for n in _outputs(viewer))


def test_hand_over_does_not_move_the_selection_for_each_layer(dock, qtbot):
    viewer, widget, _ = dock
    changes = []
    viewer.layers.selection.events.active.connect(lambda ev: changes.append(getattr(ev.value, "name", None)))
    predict_and_wait(qtbot, widget, NAME)
    names = names_for(NAME)
    # the prediction layer ends up selected (ready for the brush: the dock selects it at the end, which napari
    # reports as a few events); no layer added on the way was selected
    assert {n for n in changes if n is not None} == {names["prediction"]}, changes
    assert viewer.layers.selection.active is viewer.layers[names["prediction"]]


def test_second_prediction_updates_the_layers_in_place_with_the_new_maps(dock, qtbot):
    viewer, widget, _ = dock
    names = names_for(NAME)
    predict_and_wait(qtbot, widget, NAME)
    before = {r: viewer.layers[names[r]] for r in ("prediction", "uncertainty", "disagreement")}
    predict_and_wait(qtbot, widget, NAME)
    for role, layer in before.items():  # no layer removed and added again (napari collects garbage for each)
        assert viewer.layers[names[role]] is layer, role
    new = widget.states[NAME]
    np.testing.assert_array_equal(np.asarray(viewer.layers[names["prediction"]].data), new.original_labels)
    assert new.original_labels.max() > 0
    unc = np.asarray(viewer.layers[names["uncertainty"]].data)
    assert unc.shape == new.image.shape[:2] and unc.dtype == np.float32 and unc.max() > 0


def test_fill_glands_choice_applies_to_a_small_images_prediction(dock, qtbot):
    viewer, widget, _ = dock
    names = names_for(NAME)
    widget.display_panel.fill_check.setChecked(False)
    predict_and_wait(qtbot, widget, NAME)
    assert viewer.layers[names["prediction"]].contour > 0  # outlines
    widget.display_panel.fill_check.setChecked(True)
    viewer.layers.remove(names["prediction"])
    predict_and_wait(qtbot, widget, NAME)
    assert viewer.layers[names["prediction"]].contour == 0  # filled


def _wait_idle(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.predict_panel.running and widget.settled(), timeout=60_000)
    qtbot.wait(300)  # the removal of dropped layers, one event-loop turn later


def test_closing_the_image_while_it_is_predicted_shows_nothing_and_says_so(dock, qtbot):
    viewer, widget, _ = dock
    panel = widget.predict_panel
    assert widget.predict(NAME), panel.last_message
    viewer.layers.remove(NAME)
    _wait_idle(qtbot, widget)
    assert _outputs(viewer) == set(), _outputs(viewer)
    assert len(viewer.layers) == 0
    assert "closed or replaced" in panel.status.text() and f"'{NAME}'" in panel.status.text()
    assert NAME not in widget.states
    assert "review region(s)" not in widget.review_panel.status.text()
    # ready again: Predict is off while there is no image to predict, on as soon as there is one
    assert not panel.predict_button.isEnabled() and not panel.cancel_button.isEnabled()
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="another", rgb=True)
    assert panel.predict_button.isEnabled()


def test_replacing_the_image_while_it_is_predicted_shows_nothing_over_the_new_one(dock, qtbot, glas_dir):
    from src_model.io import read_image

    viewer, widget, _ = dock
    panel = widget.predict_panel
    assert widget.predict(NAME), panel.last_message
    viewer.layers.remove(NAME)
    other = read_image(glas_dir / "images" / "testA_2.png")
    viewer.add_image(other, name=NAME, rgb=True)  # another image under the same name
    _wait_idle(qtbot, widget)
    assert _outputs(viewer) == set(), _outputs(viewer)
    assert "closed or replaced" in panel.status.text()
    assert NAME not in widget.states


def test_closing_the_image_during_the_hand_over_removes_what_was_added(dock, qtbot):
    viewer, widget, _ = dock
    panel = widget.predict_panel
    assert widget.predict(NAME), panel.last_message
    # the worker has returned and some of the layers are in the viewer, not all
    qtbot.waitUntil(lambda: any(n.endswith(LIVE_SUFFIX) for n in _outputs(viewer)), timeout=60_000)
    assert panel.running
    viewer.layers.remove(NAME)
    _wait_idle(qtbot, widget)
    assert _outputs(viewer) == set(), _outputs(viewer)
    assert "closed or replaced" in panel.status.text()
    assert NAME not in widget.states
