"""The dock freezes Python's long-lived objects once it has warmed up (napari_cdma/_gc.py), so that full
garbage collections skip them, and still frees the data of layers that were frozen and then removed.

The rest of the suite runs with the freeze off (tests/conftest.py): napari's viewer fixture checks for
leaked viewers with a collection, which cannot see frozen objects. Here it is on, and undone before that
check."""
from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from napari_cdma import _gc
from tests._dock import open_dock


@pytest.fixture
def freezing(monkeypatch, make_napari_viewer):
    """A viewer whose dock freezes (the freeze is undone before napari's leak check)."""
    monkeypatch.setenv(_gc.ENV, "1")
    viewer = make_napari_viewer()
    yield viewer
    gc.unfreeze()


def _frozen_dock(qtbot, viewer):
    widget = open_dock(viewer)
    freezer = widget.predict_panel.freezer
    assert freezer is not None
    qtbot.waitUntil(lambda: freezer.frozen_at is not None, timeout=120_000)  # the warm-up threads are done
    return freezer


def test_the_dock_freezes_once_warm_and_frees_a_removed_frozen_layer(freezing, qtbot, monkeypatch):
    viewer = freezing
    data = np.zeros((300, 400), np.float32)
    gone = weakref.ref(data)
    viewer.add_image(data, name="before the freeze")
    del data
    freezer = _frozen_dock(qtbot, viewer)
    assert gc.get_freeze_count() > 10_000  # the imports' objects, not a handful
    monkeypatch.setattr(_gc, "REFREEZE_BYTES", 1)
    viewer.layers.remove("before the freeze")
    qtbot.waitUntil(lambda: len(freezer.refreezes) == 1, timeout=10_000)
    # frozen, the layer's array would stay in memory: napari's layer objects refer to each other
    assert gone() is None
    assert gc.get_freeze_count() > 10_000  # frozen again after the collection


def test_small_removed_layers_wait_until_their_data_is_worth_a_collection(freezing, qtbot, monkeypatch):
    viewer = freezing
    for i in range(2):
        viewer.add_image(np.zeros((100, 100), np.float32), name=f"small {i}")
    freezer = _frozen_dock(qtbot, viewer)
    monkeypatch.setattr(_gc, "REFREEZE_BYTES", 100 * 100 * 4 * 2)  # both layers' data
    viewer.layers.remove("small 0")
    qtbot.wait(100)
    assert freezer.refreezes == []  # 40 kB: not worth a stall
    viewer.layers.remove("small 1")
    qtbot.waitUntil(lambda: len(freezer.refreezes) == 1, timeout=10_000)


def test_no_freeze_when_turned_off(make_napari_viewer, monkeypatch):
    monkeypatch.setenv(_gc.ENV, "0")
    widget = open_dock(make_napari_viewer())
    assert widget.predict_panel.freezer is None
