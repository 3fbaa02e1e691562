"""Review 18: "Look here next" said a float grey map or a GlaS mask was "not an RGB or greyscale H&E image", though
a map is greyscale; it now gives Predict's own reason (a map, not a photograph? / a mask or label image)."""
from __future__ import annotations

import numpy as np

from napari_cdma._widget_review import no_regions_note
from src_model.io import read_mask


def test_the_review_line_says_why_a_layer_is_not_an_image_to_predict(make_napari_viewer, glas_dir):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((64, 80)).astype(np.float32), name="grey float")
    viewer.add_image(np.asarray(read_mask(glas_dir / "masks" / "testA_1.png"), dtype=np.uint8), name="testA_1 mask")
    viewer.add_points(np.array([[5.0, 5.0]]), name="pins")
    said = no_regions_note(viewer, "grey float")
    assert "a map, not a photograph?" in said and "review regions" in said, said
    said = no_regions_note(viewer, "testA_1 mask")
    assert "looks like a mask or label image" in said and "review regions" in said, said
    said = no_regions_note(viewer, "pins")  # not an image layer: the general line
    assert said.startswith("'pins' is not an RGB or greyscale H&E image"), said
