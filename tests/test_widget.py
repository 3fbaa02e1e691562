"""The napari-cdma dock in a real napari viewer, loaded through its npe2 manifest.

One long workflow test (sample -> predict -> review -> correct -> accept -> retrain -> promote or
keep -> roll back -> cancel -> reopen) keeps the number of viewers and model loads small; the
bad-input test and the Qt-free glue tests are separate.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_cdma._layers import camera_for_tile, names_for, upsert_layer
from napari_cdma._sample import SAMPLE_NAME, make_sample_data
from napari_cdma.project.events import Done

PLUGIN = "napari-cdma"
WIDGET = "CDMA segmentation"
SAMPLE_KEY = "glas_testA_1"
FAST_TRAIN = dict(device="cpu", patch=64, batch_labelled=2, batch_unlabelled=2)


def _dock(viewer, store_path=None):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    if store_path is not None:
        assert widget.open_store(store_path) is not None
    return widget


def _predict_and_wait(qtbot, widget, image_name, timeout=60_000):
    before = widget.states.get(image_name)
    assert widget.predict(image_name), widget.predict_panel.last_message
    qtbot.waitUntil(lambda: not widget.predict_panel.running, timeout=timeout)
    assert widget.states.get(image_name) is not before, widget.predict_panel.last_message


def _layer_counts(viewer):
    return sorted(layer.name for layer in viewer.layers)


# --------------------------------------------------------------------------- Qt-free glue

def test_sample_data_is_rgb_glas():
    ((data, meta, kind),) = make_sample_data()
    assert kind == "image" and meta["name"] == SAMPLE_NAME and meta["rgb"]
    assert data.dtype == np.uint8 and data.shape == (522, 775, 3)


def test_camera_for_tile_centres_and_fills():
    (cy, cx), zoom = camera_for_tile((256, 512, 512, 768), (600, 800))
    assert 256 <= cy < 512 and 512 <= cx < 768
    assert zoom == pytest.approx(600 / (256 * 1.05))


def test_upsert_layer_does_not_duplicate():
    from napari.components import ViewerModel

    vm = ViewerModel()
    a = upsert_layer(vm, "x prediction", np.zeros((8, 8), np.uint8), "labels")
    b = upsert_layer(vm, "x prediction", np.ones((8, 8), np.uint8), "labels")
    assert a is b and len(vm.layers) == 1 and b.data.sum() == 64


# --------------------------------------------------------------------------- GUI workflow

def test_full_workflow(make_napari_viewer, qtbot, tmp_path, lite_checkpoint):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, SAMPLE_KEY)
    assert SAMPLE_NAME in viewer.layers and viewer.layers[SAMPLE_NAME].rgb
    store_path = tmp_path / "project"
    widget = _dock(viewer, store_path)
    # The bundled model ships later; start the project from a (random) lite model instead.
    first = widget.store.add_model(lite_checkpoint, parent="bundled", promoted=True)
    widget.open_store(store_path)
    assert widget.predict_panel.model_choice() == ("version", first.version)

    # Predict: layers appear; a second run updates them in place.
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    names = names_for(SAMPLE_NAME)
    labels = viewer.layers[names["prediction"]]
    heat = viewer.layers[names["disagreement"]]
    assert type(labels).__name__ == "Labels" and labels.data.shape == (522, 775)
    assert heat.colormap.name.startswith("inferno") and tuple(heat.contrast_limits) == (0.0, 1.0)
    assert type(viewer.layers[names["tiles"]]).__name__ == "Shapes"
    layer_names = _layer_counts(viewer)
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    assert _layer_counts(viewer) == layer_names

    # Review: ranked descending; Next moves the camera into the first tile.
    review = widget.review_panel
    scores = [s for s, _ in review.tiles]
    assert scores and scores == sorted(scores, reverse=True)
    assert review.tile_list.count() == len(review.tiles)
    review.next_button.click()
    y0, x0, y1, x1 = review.tiles[0][1]
    cy, cx = review_center = tuple(viewer.scene.camera.center)[-2:]
    assert y0 <= cy < y1 and x0 <= cx < x1, (review_center, review.tiles[0])

    # Correct and accept: paint, accept; five regions so that one is held out.
    labels.data[y0:y0 + 40, x0:x0 + 40] = 1
    labels.refresh()
    record = review.accept()
    assert record is not None, review.last_message
    store = widget.store
    stored_crop, corrected, predicted = store.load_region(record.region_id)
    assert corrected[:40, :40].all() and stored_crop.shape[:2] == (y1 - y0, x1 - x0)
    assert record.model_version == first.version and record.user
    extra = [(0, 0, 96, 96), (96, 0, 192, 96), (0, 96, 96, 192), (96, 96, 192, 192), (200, 200, 264, 264)]
    for bbox in extra:
        assert review.accept(bbox=bbox) is not None, review.last_message
    assert len(store.regions()) == 6 and len(store.holdout_regions()) == 1
    assert review.region_list.count() == 6
    assert review.withdraw(store.regions()[-1].region_id)
    assert len(store.regions()) == 5 and review.region_list.count() == 5

    # Retrain in the background: 3 tiny steps; the promote rule follows the held-out Dice.
    retrain = widget.retrain_panel
    retrain.train_kwargs = dict(FAST_TRAIN)
    assert retrain.start(steps=3), retrain.last_message
    qtbot.waitUntil(lambda: retrain.state in ("done", "error"), timeout=240_000)
    assert retrain.state == "done", retrain.last_message
    done, trained = retrain.last_done, retrain.last_record
    assert isinstance(done, Done) and done.n_holdout == 1 and len(retrain.loss_plot.values) >= 1
    assert trained.promoted == (done.new_dice > done.old_dice)
    assert any(m.version == trained.version for m in store.models())
    assert widget.versions_panel.roll_back(first.version)
    assert store.current_model_version == first.version
    qtbot.waitUntil(lambda: not widget.predict_panel.running, timeout=60_000)

    # Both outcomes, each for sure: the same real checkpoint reported worse, then better.
    retrain._handle(replace(done, old_dice=0.9, new_dice=0.8, better=False))
    kept = retrain.last_record
    assert not kept.promoted and store.current_model_version == first.version
    assert retrain.keep_button.isVisibleTo(retrain) and "not promoted" in retrain.last_message
    retrain.keep_button.click()
    assert store.current_model_version == kept.version and not retrain.keep_button.isVisibleTo(retrain)
    qtbot.waitUntil(lambda: widget.states[SAMPLE_NAME].model_version == kept.version
                    and not widget.predict_panel.running, timeout=60_000)

    retrain._handle(replace(done, old_dice=0.8, new_dice=0.9, better=True))
    new = retrain.last_record
    assert new.promoted and store.current_model_version == new.version
    assert not retrain.keep_button.isVisibleTo(retrain) and "promoted" in retrain.last_message
    # The prediction refreshes with the new current model.
    qtbot.waitUntil(lambda: widget.states[SAMPLE_NAME].model_version == new.version
                    and not widget.predict_panel.running, timeout=60_000)
    assert _layer_counts(viewer) == layer_names
    assert widget.versions_panel.version_list.count() == 1 + len(store.models())

    # Roll back to the first version: current model and predictions follow.
    assert widget.versions_panel.roll_back(first.version)
    assert store.current_model_version == first.version
    qtbot.waitUntil(lambda: widget.states[SAMPLE_NAME].model_version == first.version
                    and not widget.predict_panel.running, timeout=60_000)

    # Cancel: start a long run and stop it.
    assert retrain.start(steps=5000)
    qtbot.waitUntil(lambda: len(retrain.loss_plot.values) > 0, timeout=120_000)
    retrain.cancel_button.click()
    qtbot.waitUntil(lambda: retrain.state in ("cancelled", "error"), timeout=60_000)
    assert retrain.state == "cancelled", retrain.last_message
    assert store.current_model_version == first.version

    # Reopen the store in a new dock: regions, versions and current model come back.
    from napari_cdma._widget import CdmaWidget

    again = CdmaWidget(viewer, store_path=store_path)
    assert again.review_panel.region_list.count() == 5
    assert again.versions_panel.version_list.count() == 1 + len(store.models())
    assert again.predict_panel.model_choice() == ("version", first.version)
    again.deleteLater()


def test_bad_inputs_show_messages(make_napari_viewer, qtbot, tmp_path, foreign_checkpoint):
    viewer = make_napari_viewer()
    widget = _dock(viewer, tmp_path / "project")
    panel = widget.predict_panel
    errors = []
    panel.failed.connect(errors.append)

    viewer.add_image(np.zeros((2, 64, 64), np.float32), name="two channels", channel_axis=None)
    assert not widget.predict("two channels")
    assert "RGB" in panel.last_message and len(errors) == 1

    labels = viewer.add_labels(np.zeros((64, 64), np.uint8), name="some labels")
    assert not panel.predict(labels)
    assert "Labels layer" in panel.last_message

    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="rgb", rgb=True)
    panel.pixel_limit = 1000
    assert not widget.predict("rgb")
    assert "pixel limit" in panel.last_message
    panel.pixel_limit = None

    panel.set_model_file(str(foreign_checkpoint))
    assert widget.predict("rgb")
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert "Cannot use this model" in panel.last_message and "not a readable checkpoint" in panel.last_message
    assert "rgb prediction" not in viewer.layers

    panel.set_model_file(str(tmp_path / "missing.pt"))
    assert widget.predict("rgb")
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert "no such checkpoint" in panel.last_message
    assert len(errors) == 5
