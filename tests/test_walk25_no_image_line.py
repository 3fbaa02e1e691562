"""Pathologist walk 25: with only a 5 x 5 px RGB PNG open (napari opens it as a stack of planes), the dock said only
"No image to predict: open an H&E image": nothing said why the image on screen was not offered. Now that line adds
the reason for the topmost shown image layer of the user's that Predict does not take (a stack, a map, a mask), and
goes back to the plain line once there is nothing of the kind, or goes away once an image can be predicted.

A real napari viewer (pytest-xvfb) opening a real PNG file with napari's own reader, and the real dock.
"""
from __future__ import annotations

import numpy as np
from _dock import open_dock, turn
from PIL import Image

from napari_cdma._widget_predict import NO_IMAGE_TEXT


def test_no_image_to_predict_says_why_the_image_open_is_not_offered(make_napari_viewer, qtbot, tmp_path, glas_dir):
    from src_model.io import read_image

    path = tmp_path / "tiny5.png"
    Image.fromarray((np.random.default_rng(0).random((5, 5, 3)) * 255).astype(np.uint8)).save(path)
    viewer = make_napari_viewer(show=True)
    [tiny] = viewer.open(str(path))
    dock = open_dock(viewer)
    turn(qtbot)
    line = dock.predict_panel.no_image_label
    assert line.isVisibleTo(dock.predict_panel)
    said = line.text()
    assert said.startswith(NO_IMAGE_TEXT) and "'tiny5'" in said and "stack of 5 planes" in said, said

    # a float map on top: its reason is the one said (the topmost shown layer)
    viewer.add_image(np.random.default_rng(1).random((32, 32)).astype(np.float32), name="heat")
    turn(qtbot)
    assert "'heat'" in line.text() and "a map, not a photograph?" in line.text(), line.text()

    # both gone: the plain line again
    viewer.layers.remove("heat")
    viewer.layers.remove(tiny)
    turn(qtbot)
    assert line.text() == NO_IMAGE_TEXT

    # an H&E image: offered, and the line goes
    viewer.add_image(read_image(glas_dir / "images" / "testA_1.png"), name="testA_1", rgb=True)
    turn(qtbot)
    assert not line.isVisibleTo(dock.predict_panel)
