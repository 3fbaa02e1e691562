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
