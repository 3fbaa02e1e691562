"""Pathologist walk 24, the Predict panel's input: what the dock predicts and what its status line says.

A 16-bit RGB image was clipped to 0..255 (all white) and "predicted" with no gland and no warning; a greyscale image
was silently left out of the chooser while the engine replicates grey; a foreign checkpoint's 560-character error
(unbreakable tokens such as ``aspp.aspp1.atrous_conv.weight,``) widened the 280 px dock until the message changed.

The real dock in a napari viewer (Xvfb), GlaS images from tests/data and the bundled model.
"""
from __future__ import annotations

import numpy as np
import pytest
from _dock import open_dock, predict_and_wait, predicted_with_a_copy
from _glas import glas_image
from qtpy.QtWidgets import QApplication

from napari_cdma._layers import LayerInputError, image_from_layer
from src_model.io import to_rgb_uint8


def test_the_dock_converts_a_layer_as_the_engine_does(make_napari_viewer):
    """One conversion, the engine's: uint16 / 257, float 0..1 x 255; float 0..255 is refused with the engine's words
    (its scale is unknown), not clipped."""
    viewer = make_napari_viewer()
    rgb = glas_image()
    cases = {"u16": rgb.astype(np.uint16) * 257, "f01": rgb.astype(np.float32) / 255.0}
    for name, data in cases.items():
        layer = viewer.add_image(data, rgb=True, name=name)
        got = image_from_layer(layer)
        assert got.dtype == np.uint8 and np.array_equal(got, to_rgb_uint8(data)), name
        assert np.array_equal(got, rgb), name
    layer = viewer.add_image(rgb.astype(np.float32), rgb=True, name="f255")
    with pytest.raises(LayerInputError, match=r"must lie in \[0, 1\]"):
        image_from_layer(layer)


def test_a_16bit_image_is_predicted_as_its_8bit_self_and_the_status_says_converted(make_napari_viewer, qtbot):
    rgb = glas_image()
    widget, labels8, labels16 = predicted_with_a_copy(make_napari_viewer, qtbot, rgb, rgb.astype(np.uint16) * 257,
                                                      "testA_2 16-bit")
    assert labels8.max() > 0
    # walk 24: all white after clipping, no gland; now the same input as the 8-bit image, the same glands
    assert np.array_equal(labels16 > 0, labels8 > 0)
    status = widget.predict_panel.status
    assert "16-bit" in status.text() and "257" in status.text(), status.text()
    assert "Warning" not in status.text()


def test_a_flat_prediction_is_warned_in_the_status(make_napari_viewer, qtbot):
    """An image the model sees no tissue in gives a collapsed uncertainty range, (0, 1e-6), and no gland: the status
    says so rather than presenting "no glands, no doubt". The image: testA_2 as the dock saw its 16-bit copy in walk 24
    (clipped to 0..255, nearly all white)."""
    viewer = make_napari_viewer()
    widget = open_dock(viewer)
    clipped = np.clip(glas_image().astype(np.uint16) * 257, 0, 255).astype(np.uint8)
    viewer.add_image(clipped, rgb=True, name="white")
    predict_and_wait(qtbot, widget, "white")
    assert widget.states["white"] is not None
    qtbot.waitUntil(lambda: widget.settled(), timeout=10_000)
    text = widget.predict_panel.status.text()
    assert "Warning" in text and "white: predicted" in text, text
    assert "Warning" in widget.predict_panel.status.toolTip()


def test_a_foreign_checkpoint_error_does_not_widen_the_dock(make_napari_viewer, qtbot, tmp_path):
    """Walk 24 (b04_random_state.png): the error's long tokens pushed the dock wider, every panel cut on the right.
    On screen a short line (what failed, the file, what to do); the whole error in the tooltip."""
    import torch

    viewer = make_napari_viewer(show=True)
    widget = open_dock(viewer)
    viewer.add_image(glas_image(), rgb=True, name="testA_2")
    for _ in range(20):
        QApplication.processEvents()
    scroll = widget._scroll
    width_before = widget.width()
    path = tmp_path / "random_state.pt"
    torch.save({"conv.weight": torch.randn(8, 3, 3, 3), "fc.bias": torch.zeros(2)}, path)
    panel = widget.predict_panel
    panel.set_model_file(str(path))
    panel.predict_button.click()
    qtbot.waitUntil(lambda: not panel.running and "random_state.pt" in panel.status.text(), timeout=60_000)
    for _ in range(20):
        QApplication.processEvents()
    status = panel.status
    assert "aspp.aspp1.atrous_conv.weight" in status.toolTip()  # the whole error
    shown = status.text()
    assert len(shown) < 200 and "random_state.pt" in shown, shown
    # nothing is wider than the dock: the content fits its viewport, the status line asks for no more width
    assert widget.width() == width_before
    assert scroll.widget().width() <= scroll.viewport().width()
    assert status.minimumSize().width() <= scroll.viewport().width()


def test_long_tokens_in_any_status_do_not_widen_the_dock(make_napari_viewer):
    """A status line with a long unbreakable token is clipped at the dock's edge; the dock keeps its width."""
    viewer = make_napari_viewer(show=True)
    widget = open_dock(viewer)
    panel = widget.predict_panel
    scroll = widget._scroll
    for _ in range(20):
        QApplication.processEvents()
    width_before = widget.width()
    panel.show_status("Cannot do it: " + "/very/long/path/" * 20 + "file.pt, " + "a.b.c.d.e.f.g.h.i.j," * 10)
    for _ in range(20):
        QApplication.processEvents()
    assert widget.width() == width_before
    assert panel.status.minimumSize().width() <= scroll.viewport().width()
    assert scroll.widget().width() <= scroll.viewport().width()
