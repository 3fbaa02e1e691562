"""Pathologist walk 24, leftovers: a greyscale image is an image like any other.

The engine replicates grey (src_model.io.to_rgb_uint8), but the dock's Predict chooser silently left out a 2-D
image, and the review's "shown alone" never hid one over the image under review. Now a 2-D uint8 / uint16 image is
offered (a float 2-D one, most often a map, is not; nor are the dock's own layers), predicted as grey RGB with a note
in the status, accepted, stored, and brought back by a reopen of the store.

The real dock in a napari viewer (Xvfb), a GlaS image from tests/data made grey and the bundled model.
"""
from __future__ import annotations

import numpy as np
from _dock import offered, open_dock, predict_and_wait
from _glas import glas_image

from napari_cdma._layers import HASH_KEY, names_for
from napari_cdma.project.store import hash_image
from src_model.io import to_rgb_uint8


def test_the_chooser_offers_grey_images_but_not_maps_nor_the_docks_layers(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = open_dock(viewer)
    grey = glas_image(mode="L")
    viewer.add_image(grey, name="grey8")
    viewer.add_image(grey.astype(np.uint16) * 257, name="grey16")
    viewer.add_image(grey.astype(np.float32) / 255.0, name="a float map")
    assert {"grey8", "grey16"} <= set(offered(widget))
    assert "a float map" not in offered(widget)
    predict_and_wait(qtbot, widget, "grey8")
    names = offered(widget)
    assert set(names) == {"grey8", "grey16"}, names  # no prediction, uncertainty, ... of grey8
    assert names_for("grey8")["uncertainty"] in viewer.layers


def test_a_grey_image_is_predicted_accepted_and_comes_back_from_the_store(make_napari_viewer, qtbot, tmp_path):
    project = tmp_path / "project"
    viewer = make_napari_viewer()
    widget = open_dock(viewer, project)
    grey = glas_image(mode="L")
    viewer.add_image(grey, name="grey")
    predict_and_wait(qtbot, widget, "grey")
    status = widget.predict_panel.status.text()
    assert "Greyscale" in status and "grey RGB" in status, status
    labels = np.asarray(viewer.layers[names_for("grey")["prediction"]].data)
    assert labels.max() > 0 and labels.shape == grey.shape
    qtbot.waitUntil(lambda: bool(widget.display_panel.glands), timeout=10_000)  # the gland table
    review = widget.review_panel
    assert review.tiles, review.last_message  # review regions listed
    state = widget.states["grey"]
    assert np.array_equal(state.image, to_rgb_uint8(grey)) and state.image_hash == hash_image(to_rgb_uint8(grey))
    box = review.tiles[0][1]
    assert review.accept(bbox=box) is not None, review.last_message
    assert review.accept_whole_image() is not None, review.last_message
    widget.flush_prediction_saves(60.0)
    viewer.close()

    # a reopen with the grey image closed brings it back (as the grey RGB the model read), with its prediction
    other = make_napari_viewer()
    open_dock(other, project)
    assert "grey" in other.layers, [ly.name for ly in other.layers]
    back = other.layers["grey"]
    assert np.array_equal(np.asarray(back.data)[..., 0], grey) and back.metadata.get(HASH_KEY) == state.image_hash
    assert names_for("grey")["prediction"] in other.layers
    assert names_for("grey")["accepted"] in other.layers
    other.close()

    # a reopen with the grey file opened again (a 2-D layer, its hash unknown): the store finds it, adds no copy
    third = make_napari_viewer()
    third.add_image(grey, name="grey again")
    open_dock(third, project)
    images = [ly.name for ly in third.layers if not (ly.metadata or {}).get("napari_cdma_role")]
    assert images == ["grey again"], images
    assert names_for("grey again")["accepted"] in third.layers


def test_shown_alone_hides_a_grey_image_over_the_image_under_review(make_napari_viewer, qtbot):
    """Walk 24: "shown alone" hid the other RGB images over the one under review but left a grey one on top."""
    viewer = make_napari_viewer()
    widget = open_dock(viewer)
    viewer.add_image(glas_image(), rgb=True, name="testA_2")
    viewer.add_image(glas_image(mode="L"), name="grey")
    hidden = widget.review_panel.focus("testA_2")
    assert hidden == ["grey"], hidden
    assert not viewer.layers["grey"].visible and viewer.layers["testA_2"].visible


def test_a_grey_layers_maps_are_drawn_over_its_tissue(make_napari_viewer, lite_checkpoint):
    """show_prediction (a result made outside the Predict panel) reads the image layer for the disagreement map's
    range over tissue: a 2-D grey layer raised (tissue_mask of its (H, 3) columns); now its tissue is the grey RGB's."""
    from napari_cdma._layers import robust_range, show_prediction
    from src_model.checkpoint import load_model
    from src_model.inference import predict

    viewer = make_napari_viewer()
    grey = glas_image(mode="L")[:256, :256]
    viewer.add_image(grey, name="grey")
    prediction = predict(load_model(lite_checkpoint), to_rgb_uint8(grey))
    layers = show_prediction(viewer, "grey", prediction)
    disagreement = np.asarray(prediction.disagreement, dtype=np.float32)
    assert tuple(layers["disagreement"].contrast_limits) == robust_range(disagreement, to_rgb_uint8(grey))
    assert names_for("grey")["prediction"] in viewer.layers
