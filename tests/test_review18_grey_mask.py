"""Review 18: a grey mask opened after its H&E image is an overlay, not the image to predict.

Since the Predict chooser offers 2-D uint8 / uint16 grey images (walk 24), the GlaS mask of testA_2, opened after
the image (napari opens it as a uint8 Image layer, values 0..2), became the chosen image: Predict ran on it (0
glands) and stored it in the project, and the review's "shown alone" hid it. Now a grey layer that looks like a mask
or label image (few or small values, napari_cdma._layers.mask_values) is neither offered nor hidden by "shown
alone"; a grey photograph still is offered. The messages for layers that are not model input say what they are
((H, W, 1): a one-channel stack).

The real dock in a napari viewer (Xvfb), GlaS files from tests/data and the bundled model.
"""
from __future__ import annotations

import numpy as np
import pytest
from _dock import offered, open_dock, predict_and_wait
from _glas import GLAS, glas_image

from napari_cdma._layers import LayerInputError, image_from_layer, names_for


def test_a_glas_mask_opened_after_its_image_is_not_predicted_nor_hidden(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = open_dock(viewer)
    panel = widget.predict_panel
    viewer.open(str(GLAS / "images" / "testA_2.png"))
    assert panel.image_choice.value.name == "testA_2"
    (mask,) = viewer.open(str(GLAS / "masks" / "testA_2.png"), name="testA_2 mask")
    assert mask.data.ndim == 2 and mask.data.dtype == np.uint8 and not mask.rgb  # napari's own reading
    assert panel.image_choice.value.name == "testA_2"  # before: 'testA_2 mask'
    assert "testA_2 mask" not in offered(widget)
    with pytest.raises(LayerInputError, match="mask or label image"):
        image_from_layer(mask)
    predict_and_wait(qtbot, widget, "testA_2")
    assert "testA_2" in widget.states and "testA_2 mask" not in widget.states
    assert names_for("testA_2 mask")["prediction"] not in viewer.layers
    # "shown alone" leaves the mask overlay on screen
    hidden = widget.review_panel.focus("testA_2")
    assert "testA_2 mask" not in hidden and mask.visible, hidden
    # a binary mask saved 0 / 255 is a mask too
    binary = viewer.add_image((np.asarray(mask.data) > 0).astype(np.uint8) * 255, name="binary mask")
    assert "binary mask" not in offered(widget)
    assert binary.visible and panel.image_choice.value.name == "testA_2"


def test_a_grey_photograph_is_still_offered_and_predicted(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = open_dock(viewer)
    viewer.open(str(GLAS / "images" / "testA_2.png"))
    grey = glas_image("testA_1", mode="L")
    viewer.add_image(grey, name="grey photo")
    viewer.add_image(grey.astype(np.uint16) * 257, name="grey photo 16")
    assert {"testA_2", "grey photo", "grey photo 16"} <= set(offered(widget))
    assert widget.predict_panel.set_image("grey photo")
    predict_and_wait(qtbot, widget, "grey photo")
    assert np.asarray(viewer.layers[names_for("grey photo")["prediction"]].data).max() > 0


def test_a_one_channel_stack_is_told_it_is_not_2d_grey(make_napari_viewer):
    viewer = make_napari_viewer()
    open_dock(viewer)
    grey = glas_image("testA_2", mode="L")
    layer = viewer.add_image(grey[..., None], name="grey hw1")
    with pytest.raises(LayerInputError) as err:
        image_from_layer(layer)
    said = str(err.value)
    assert "(453, 589, 1)" in said and "greyscale" in said and "one-channel" in said, said
