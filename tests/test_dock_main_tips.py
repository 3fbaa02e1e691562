"""Tooltips of the empty dock (pathologist walk 7): the disabled Predict button had an empty tooltip, the "entropy"
box none. A real napari viewer (Xvfb); the tooltip follows as image layers come and go."""
from __future__ import annotations

import numpy as np
from _dock import open_dock

from napari_cdma._widget_predict import ENTROPY_TIP, PREDICT_NEEDS_IMAGE, PREDICT_RUNNING, PREDICT_TIP


def test_predict_says_what_it_needs_as_layers_come_and_go(make_napari_viewer, qtbot, lite_checkpoint):
    viewer = make_napari_viewer()
    dock = open_dock(viewer)
    panel = dock.predict_panel
    button = panel.predict_button
    assert not button.isEnabled() and button.toolTip().startswith(PREDICT_NEEDS_IMAGE)
    assert "open one" in button.toolTip() and "Whole slide panel" in button.toolTip()
    # a non-RGB image is not one Predict can take: still disabled, still saying so
    viewer.add_image(np.zeros((32, 32), np.float32), name="grey")
    assert not button.isEnabled() and button.toolTip().startswith(PREDICT_NEEDS_IMAGE)
    he = viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="he", rgb=True)
    assert button.isEnabled() and button.toolTip() == PREDICT_TIP
    viewer.layers.remove(he)
    assert not button.isEnabled() and button.toolTip().startswith(PREDICT_NEEDS_IMAGE)
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="he2", rgb=True)
    assert button.isEnabled() and button.toolTip() == PREDICT_TIP
    # while a prediction runs, the tooltip says so; idle again, what it does
    panel.set_model_file(str(lite_checkpoint))
    assert dock.predict("he2"), panel.last_message
    assert not button.isEnabled() and button.toolTip() == PREDICT_RUNNING
    qtbot.waitUntil(lambda: not panel.running and dock.settled() and "he2" in dock.states, timeout=120_000)
    assert button.isEnabled() and button.toolTip() == PREDICT_TIP


def test_the_entropy_box_says_what_it_adds(make_napari_viewer):
    panel = open_dock(make_napari_viewer()).predict_panel
    tip = panel.entropy_check.toolTip()
    assert tip == ENTROPY_TIP and "'<image> entropy'" in tip and panel.branches_check.toolTip()
