"""Closing an image after predicting it frees its pixels: the dock keeps no reference to a closed image
(napari keeps every finished worker in its task list, so a worker's arguments and slots must not hold it:
napari_cdma/_workers.py; the dock's per-image state goes once its image and prediction layers are closed)."""
from __future__ import annotations

import gc
import weakref

from napari_cdma._sample import SAMPLE_NAME
from tests._dock import PLUGIN, open_dock, predict_and_wait


def test_a_predicted_image_closed_with_its_layers_is_freed(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "glas_testA_1")
    gone = weakref.ref(viewer.layers[SAMPLE_NAME].data)
    widget = open_dock(viewer, tmp_path / "project")
    predict_and_wait(qtbot, widget, SAMPLE_NAME)
    assert widget.flush_prediction_saves(60)
    assert SAMPLE_NAME in widget.states
    viewer.layers.clear()
    qtbot.wait(100)  # the dock's slots on the removals
    gc.collect()
    assert SAMPLE_NAME not in widget.states
    assert widget.predict_panel.status.text() == ""  # no "<image>: predicted ..." once nothing is open (re-walk)
    assert gone() is None, [type(r).__name__ for r in gc.get_referrers(gone())]


def test_the_state_of_an_image_stays_while_its_prediction_layer_is_open(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "glas_testA_1")
    widget = open_dock(viewer, tmp_path / "project")
    predict_and_wait(qtbot, widget, SAMPLE_NAME)
    viewer.layers.remove(SAMPLE_NAME)  # the image closed, its prediction still being corrected
    qtbot.wait(100)
    assert SAMPLE_NAME in widget.states
