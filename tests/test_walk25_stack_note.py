"""Pathologist walk 25: a 5 x 5 RGB PNG opened in napari came in as a stack of 5 grey planes (napari 0.9 takes an
(H, W, 3) image as RGB only when both sides exceed 30 px: the layer's data is (5, 5, 3) with rgb False), and the dock
said only "has shape (5, 5, 3); the model needs an RGB image (H, W, 3)", which reads as nonsense. Now the note
(:func:`napari_cdma._layers.not_input_note`, said by Predict when the layer is handed to it and by Look here next)
says that napari opened it as a stack of 5 planes of 5 x 3 px, not as an RGB image, and how to open it as one.

A real napari viewer (pytest-xvfb) opening a real PNG file with napari's own reader, and the real dock.
"""
from __future__ import annotations

import numpy as np
from _dock import open_dock
from PIL import Image

from napari_cdma._layers import not_input_note
from napari_cdma._widget_predict import predictable
from napari_cdma._widget_review import no_regions_note


def _png(path, channels=3, side=5):
    data = (np.random.default_rng(0).random((side, side, channels)) * 255).astype(np.uint8)
    Image.fromarray(data).save(path)
    return path


def test_a_tiny_rgb_png_opened_as_a_stack_is_said_so(make_napari_viewer, qtbot, tmp_path):
    path = _png(tmp_path / "tiny5.png")
    viewer = make_napari_viewer(show=True)
    [layer] = viewer.open(str(path))
    assert layer.data.shape == (5, 5, 3) and not layer.rgb  # what napari does with it: a stack of 5 planes
    dock = open_dock(viewer)
    assert not predictable(layer)

    # handed to Predict (a script): refused with the reason, on the Predict line
    assert not dock.predict_panel.predict(layer)
    said = dock.predict_panel.last_message
    assert "'tiny5'" in said and "stack of 5 planes" in said and "not as an RGB image" in said, said
    assert "rgb=True" in said and "30 px" in said, said
    assert "the model needs an RGB image (H, W, 3)" not in said, said
    # Look here next gives the same reason
    assert not_input_note(layer) in no_regions_note(viewer, "tiny5")

    # opened as the note says: an RGB image the chooser offers
    [again] = viewer.open(str(path), rgb=True)
    assert again.rgb and predictable(again)


def test_rgba_and_a_large_stack_are_said_as_they_are(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=True)
    [rgba] = viewer.open(str(_png(tmp_path / "tiny5a.png", channels=4)))
    assert rgba.data.shape == (5, 5, 4) and not rgba.rgb
    note = not_input_note(rgba)
    assert "stack of 5 planes" in note and "RGBA" in note, note

    # a large image added as a stack on purpose: no word of napari's 30 px guess, which did not decide it
    big = viewer.add_image(np.zeros((40, 40, 3), np.uint8), name="big", rgb=False)
    note = not_input_note(big)
    assert "stack of 40 planes" in note and "rgb=True" in note and "30 px" not in note, note
