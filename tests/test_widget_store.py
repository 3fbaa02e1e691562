"""Opening a project store in the dock: the stored images come back as layers without taking the
Predict panel away from the image on screen, and without hashing open images on the GUI thread
when the store cannot hold them (real napari viewer under Xvfb, small random model)."""
from __future__ import annotations

import numpy as np

from napari_cdma._sample import SAMPLE_NAME

PLUGIN = "napari-cdma"
WIDGET = "CDMA segmentation"


def _stored_image(seed: int = 0, shape=(200, 300)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (*shape, 3), dtype=np.uint8)


def _store_with_region(widget, checkpoint, image, source="other.png"):
    store = widget.store
    store.add_model(checkpoint, parent="bundled", promoted=True)
    corrected = np.zeros((64, 64), np.uint8)
    corrected[10:40, 10:40] = 1
    store.accept_region(image, (0, 0, 64, 64), corrected, np.zeros_like(corrected),
                        model_version=store.current_model_version, source_path=source)
    return store


def test_reopened_store_images_do_not_take_predict_from_the_image_on_screen(make_napari_viewer, qtbot, tmp_path,
                                                                            lite_checkpoint):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "glas_testA_1")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert widget.open_store(tmp_path / "project") is not None
    _store_with_region(widget, lite_checkpoint, _stored_image())
    panel = widget.predict_panel
    assert panel.image_layer.name == SAMPLE_NAME

    assert widget.open_store(tmp_path / "project") is not None
    assert "other" in viewer.layers and not viewer.layers["other"].visible  # restored, hidden
    assert panel.image_layer.name == SAMPLE_NAME  # Predict still means the image on screen

    before = widget.states.get(SAMPLE_NAME)
    panel.predict_button.click()
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert widget.states.get(SAMPLE_NAME) is not before, panel.last_message
    assert "other" not in widget.states

    # an image the user opens (visible) still becomes the one to predict
    viewer.add_image(_stored_image(1, (50, 60)), name="opened", rgb=True)
    assert panel.image_layer.name == "opened"


def test_open_images_are_hashed_only_when_the_store_could_hold_them(make_napari_viewer, tmp_path, lite_checkpoint,
                                                                    monkeypatch):
    from napari_cdma import _widget_store

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert widget.open_store(tmp_path / "project") is not None
    stored = _stored_image()
    _store_with_region(widget, lite_checkpoint, stored, source="stored.png")
    viewer.layers.clear()  # the image the region came from is not open

    hashed = []
    real_hash = _widget_store.hash_image
    monkeypatch.setattr(_widget_store, "hash_image", lambda image: (hashed.append(image.shape), real_hash(image))[1])

    # a never-predicted image of another size: the store cannot hold it, it is not hashed
    viewer.add_image(_stored_image(2, (240, 320)), name="big", rgb=True)
    assert widget.open_store(tmp_path / "project") is not None
    assert hashed == []
    assert "stored" in viewer.layers  # the stored image came back as its own layer
    assert widget.image_names == {_widget_store.hash_image(stored): "stored"}
    hashed.clear()

    # the stored image opened by hand (same pixels, never predicted): found by hashing that layer
    # only (same size), not added a second time, and its accepted box is shown on it
    viewer.layers.clear()
    viewer.add_image(_stored_image(2, (240, 320)), name="big", rgb=True)
    viewer.add_image(stored.copy(), name="by hand", rgb=True)
    assert widget.open_store(tmp_path / "project") is not None
    assert hashed == [(200, 300, 3)]
    assert "stored" not in viewer.layers and widget.image_names[real_hash(stored)] == "by hand"
    assert "Reopened" not in widget.store_label.text()
    from napari_cdma._layers import names_for

    assert names_for("by hand")["accepted"] in viewer.layers
