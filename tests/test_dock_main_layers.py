"""Layers left behind (pathologist walk 7): deleting every layer of a reopened store re-added a hidden image's
"<image> review tiles" layer, and closing an image left its uncertainty, disagreement, review and accepted-region
layers on screen. A real napari viewer (Xvfb), a project store on disk with two images, each with an accepted
region and a stored prediction (no model run: the store's own records, as a Predict with the store open leaves)."""
from __future__ import annotations

import time

import numpy as np
from _dock import open_dock

from napari_cdma._layers import names_for
from napari_cdma.project.store import ProjectStore, hash_image


def _pump(seconds=0.3):
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.005)


def _store(path, names=("img", "other")):
    """A store holding ``names``' images (random RGB, 192 x 256), each with an accepted region at the top left and
    a stored prediction (two glands, review regions elsewhere)."""
    store = ProjectStore.open(path)
    rng = np.random.default_rng(0)
    for k, name in enumerate(names):
        image = rng.integers(0, 255, (192, 256, 3), dtype=np.uint8)
        labels = np.zeros((192, 256), np.int32)
        labels[20:60, 30:90] = 1
        labels[120:180, 150:240] = 2
        unc = rng.random((192, 256)).astype(np.float32)
        corrected = (labels[:96, :96] > 0).astype(np.uint8)
        store.accept_region(image, (0, 0, 96, 96), corrected, corrected, model_version="bundled", image_name=name)
        store.add_unlabelled_image(image)
        store.save_prediction(hash_image(image), labels, unc, model_version="bundled", image_name=name,
                              ranked=[(0.6, (96, 128, 192, 256)), (0.4 - 0.1 * k, (0, 128, 96, 224))],
                              display_range=(0.1, 0.9))
    return store


def _reopened(make_napari_viewer, tmp_path):
    _store(tmp_path / "project")
    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer, tmp_path / "project")
    _pump()
    assert "img" in viewer.layers and "other" in viewer.layers, [ly.name for ly in viewer.layers]
    assert names_for("img")["prediction"] in viewer.layers and names_for("other")["prediction"] in viewer.layers
    return viewer, dock


def test_deleting_every_layer_of_a_reopened_store_leaves_none(make_napari_viewer, tmp_path):
    """Removing every layer one by one (as the walk did, bottom first) or all selected at once leaves no layer: the
    Predict chooser moving to the hidden restored image while the first image is removed no longer adds that image's
    review layers (they were added after the removal began, and stayed: 2 of 2 walk runs)."""
    viewer, dock = _reopened(make_napari_viewer, tmp_path)
    hidden = next(n for n in ("img", "other") if names_for(n)["tiles"] not in viewer.layers)
    for layer in list(viewer.layers):  # one pass over the layers there when it began
        if layer in viewer.layers:
            viewer.layers.remove(layer)
    _pump()
    assert [ly.name for ly in viewer.layers] == [], hidden

    viewer2, _ = _reopened(make_napari_viewer, tmp_path / "again")
    viewer2.layers.select_all()
    viewer2.layers.remove_selected()
    _pump()
    assert [ly.name for ly in viewer2.layers] == []


def test_closing_the_shown_image_makes_the_hidden_ones_review_layers_only_once_removal_ended(
        make_napari_viewer, tmp_path):
    """Closing only the image on screen: the review list moves to the other restored image, whose review layers are
    made in the next event-loop turn (it is still open then); a review layer the user closed while its image stays
    open is not brought back when the image is chosen again."""
    viewer, dock = _reopened(make_napari_viewer, tmp_path)
    shown = next(n for n in ("img", "other") if names_for(n)["tiles"] in viewer.layers)
    hidden = "other" if shown == "img" else "img"
    viewer.layers.remove(shown)
    _pump()
    assert dock.review_panel.image_name == hidden
    assert names_for(hidden)["tiles"] in viewer.layers and names_for(hidden)["accepted"] in viewer.layers
    # the user closes the hidden image's review boxes; choosing the image again does not bring them back
    viewer.layers.remove(names_for(hidden)["tiles"])
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="third", rgb=True)
    assert dock.predict_panel.image_layer.name == "third"
    assert dock.predict_panel.set_image(hidden) and dock.review_panel.image_name == hidden
    _pump()
    assert names_for(hidden)["tiles"] not in viewer.layers
    assert dock.review_panel.tiles  # the list is still there (Next frames each region)


def test_closing_an_image_closes_its_display_layers_and_keeps_its_prediction(make_napari_viewer, tmp_path):
    """An image closed: its uncertainty, disagreement, review and accepted boxes, and its unedited accepted-corrections
    layer go with it; its prediction layer stays (it may still be corrected: tests/test_widget_memory.py), its edits
    not accepted untouched, and the Predict panel's status line names it and counts them. Another image's layers are
    not touched."""
    viewer, dock = _reopened(make_napari_viewer, tmp_path)
    for name in ("img", "other"):  # both images' review layers on screen
        assert dock.predict_panel.set_image(name)
    _pump()
    other_layers = sorted(ly.name for ly in viewer.layers if ly.name.startswith("other"))
    names = names_for("img")
    before = {ly.name for ly in viewer.layers if ly.name.startswith("img ")}
    assert {names["uncertainty"], names["prediction"], names["tiles"], names["accepted"],
            names["corrections"]} <= before, before
    prediction = viewer.layers[names["prediction"]]
    data = np.array(prediction.data)
    data[150:170, 20:60] = 7  # painted outside the accepted box: not accepted, not kept
    prediction.data = data
    viewer.layers.remove("img")
    _pump()
    left = sorted(ly.name for ly in viewer.layers if ly.name.startswith("img"))
    assert left == [names["prediction"]], left
    assert viewer.layers[names["prediction"]] is prediction and np.array_equal(prediction.data, data)
    status = dock.predict_panel.status.text()
    assert f"'{names['prediction']}' (800 edited px not accepted" in status, status
    assert sorted(ly.name for ly in viewer.layers if ly.name.startswith("other")) == other_layers

    # an image whose prediction holds no edit: its prediction stays too (said), the rest goes
    viewer.layers.remove("other")
    _pump()
    assert sorted(ly.name for ly in viewer.layers if ly.name.startswith("other")) == [names_for("other")["prediction"]]
    assert "'other prediction' (no edits)" in dock.predict_panel.status.text()
    assert "other" in dock.states  # its prediction may still be accepted from
    # an edited accepted-corrections layer stays as well
    viewer3, dock3 = _reopened(make_napari_viewer, tmp_path / "third")
    corrections = viewer3.layers[names["corrections"]]
    painted = np.array(corrections.data)
    painted[100:110, 100:110] = 3
    corrections.data = painted
    viewer3.layers.remove("img")
    _pump()
    assert names["corrections"] in viewer3.layers and names["uncertainty"] not in viewer3.layers
    assert f"'{names['corrections']}' (100 edited px" in dock3.predict_panel.status.text()
