"""A large image's prediction is written to the project store (which its first prediction creates) only once its
hand-over is over (napari_cdma/_widget_save.py, SAVE_DELAY_MS): the store's writer holds the GIL for long stretches,
and with the save started at the hand-over the event loop stalled 126-386 ms in the 2 s after it (6000 x 6000
image). Streaming is forced on GlaS testA_1 as in test_widget_predict_stream.py."""
from __future__ import annotations

import numpy as np
import pytest
from _dock import open_dock, wait_settled
from qtpy.QtCore import QTimer

from napari_cdma import _widget_save
from napari_cdma._layers import names_for

NAME = "glas"


@pytest.fixture
def dock(make_napari_viewer, glas_dir, tmp_path, monkeypatch):
    from src_model.io import read_image

    monkeypatch.setenv("NAPARI_CDMA_PROJECT", str(tmp_path / "store"))  # created by the first prediction
    viewer = make_napari_viewer()
    viewer.add_image(read_image(glas_dir / "images" / "testA_1.png"), name=NAME, rgb=True)
    widget = open_dock(viewer)
    widget.predict_panel.stream_pixels = 0  # streamed, as a large image is
    return viewer, widget


def _stored_labels(widget):
    store = widget._store
    record = store.latest_prediction(widget.states[NAME].image_hash)
    assert record is not None
    return store.load_prediction(widget.states[NAME].image_hash)[0]


def test_a_large_images_save_starts_after_its_hand_over(dock, qtbot, tmp_path):
    viewer, widget = dock
    before = _widget_save._last_saver
    seen = []  # at each event-loop turn: (hand-over steps left, save started, store created)
    timer = QTimer()
    timer.setInterval(0)
    timer.timeout.connect(lambda: seen.append((bool(widget._turns), _widget_save._last_saver is not before,
                                               (tmp_path / "store").exists())))
    timer.start()
    try:
        assert widget.predict(NAME), widget.predict_panel.last_message
        qtbot.waitUntil(lambda: not widget.predict_panel.running and widget.settled(), timeout=120_000)
    finally:
        timer.stop()
    assert any(turns for turns, _, _ in seen)  # the hand-over had steps left for later turns
    # none of them ran beside the save, nor after the store's creation
    assert not any(turns and (started or created) for turns, started, created in seen)
    assert _widget_save._last_saver is not before and (tmp_path / "store").exists()
    assert widget.flush_prediction_saves(60)
    layer = viewer.layers[names_for(NAME)["prediction"]]
    np.testing.assert_array_equal(_stored_labels(widget), layer.data)
    # the model's labels, copied from the layer in a thread at the hand-off, are the state's; the layer is
    # editable again once the copy is done
    state = widget.states[NAME]
    assert layer.editable and state.original_labels is not layer.data
    np.testing.assert_array_equal(state.original_labels, layer.data)


def test_a_flush_starts_a_save_still_waiting_for_its_delay(dock, qtbot, monkeypatch, tmp_path):
    viewer, widget = dock
    monkeypatch.setattr(_widget_save, "SAVE_DELAY_MS", 600_000)
    before = _widget_save._last_saver
    assert widget.predict(NAME), widget.predict_panel.last_message
    qtbot.waitUntil(lambda: not widget.predict_panel.running and not widget._turns
                    and widget._pending_save is not None, timeout=120_000)
    # waiting for the delay: no save, no store yet
    assert _widget_save._last_saver is before and not (tmp_path / "store").exists() and not widget.settled()
    assert widget.flush_prediction_saves(60)  # e.g. opening another store
    assert _widget_save._last_saver is not before and widget._pending_save is None
    wait_settled(widget, 5)
    np.testing.assert_array_equal(_stored_labels(widget), viewer.layers[names_for(NAME)["prediction"]].data)
