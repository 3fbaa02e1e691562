"""Store switches do not pile up copies of prediction layers (pathologist walk under Xvfb): each switch detached the
image's prediction layers of the store left as hidden "<layer>, from <store>" copies, and reopening that store restored
its prediction beside its earlier copy: after A -> B -> A one image had three prediction layers. A copy holding exactly
what the reopened store brings back is closed; one holding anything else (edited after the switch) stays; a detached
copy is never copied again.

A real napari viewer (pytest-xvfb), real stores on disk, the GlaS image of the sample.
"""
from __future__ import annotations

import numpy as np
from _dock import wait_settled
from test_dock_store_switch import open_a_beside_b

from napari_cdma._layers import IMAGE_KEY, ROLE_KEY, names_for
from napari_cdma._sample import SAMPLE_NAME
from napari_cdma._widget_store import untag_prediction


def _copies(viewer, role_name):
    """Names of the detached copies of the layer ``role_name`` ("<name>, from <store>...")."""
    return sorted(ly.name for ly in viewer.layers if ly.name.startswith(f"{role_name}, from "))


def _switch(dock, root):
    assert dock.open_store(root, create=None) is not None
    wait_settled(dock)
    assert dock._store.root == root.resolve()


def test_switching_back_and_forth_keeps_one_copy_per_store_left(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock, (a_root, b_root), b_labels = open_a_beside_b(make_napari_viewer, tmp_path, glas_dir)
    names = names_for(SAMPLE_NAME)
    prediction = viewer.layers[names["prediction"]]
    edited = np.array(prediction.data)
    edited[200:240, 500:540] = int(edited.max()) + 1
    prediction.data = edited.copy()  # an edit not accepted: kept in A at the switch

    _switch(dock, b_root)
    assert _copies(viewer, names["prediction"]) == [f"{names['prediction']}, from project A"]
    assert np.array_equal(np.asarray(viewer.layers[names["prediction"]].data), b_labels)

    # back to A: A's prediction (with its kept edit) is restored, and A's copy, which holds the same, is closed;
    # B's prediction is detached as B's copy (one copy per store left, not one per switch)
    _switch(dock, a_root)
    assert np.array_equal(np.asarray(viewer.layers[names["prediction"]].data), edited)
    assert _copies(viewer, names["prediction"]) == [f"{names['prediction']}, from project B"], \
        [ly.name for ly in viewer.layers]
    assert _copies(viewer, names["uncertainty"]) == [f"{names['uncertainty']}, from project B"]
    labels_layers = [ly for ly in viewer.layers if ly.name.startswith(names["prediction"])]
    assert len(labels_layers) == 2, [ly.name for ly in labels_layers]
    assert dock.states[SAMPLE_NAME].image_hash  # the restored layer is the image's prediction again
    assert (viewer.layers[names["prediction"]].metadata or {}).get(IMAGE_KEY) == SAMPLE_NAME

    # and to B again: B's copy goes the same way, A's restored prediction becomes A's copy
    _switch(dock, b_root)
    assert _copies(viewer, names["prediction"]) == [f"{names['prediction']}, from project A"]
    assert _copies(viewer, names["uncertainty"]) == [f"{names['uncertainty']}, from project A"]
    assert np.array_equal(np.asarray(viewer.layers[names["prediction"]].data), b_labels)
    from_a = viewer.layers[f"{names['prediction']}, from project A"]
    assert np.array_equal(np.asarray(from_a.data), edited)

    # a copy edited after the switch holds what A does not: it stays beside A's restored prediction
    painted = np.array(from_a.data)
    painted[300:330, 100:130] = int(painted.max()) + 1
    from_a.data = painted
    _switch(dock, a_root)
    assert from_a in viewer.layers and np.array_equal(np.asarray(from_a.data), painted)
    assert np.array_equal(np.asarray(viewer.layers[names["prediction"]].data), edited)
    assert _copies(viewer, names["prediction"]) == sorted([from_a.name, f"{names['prediction']}, from project B"])


def test_a_detached_copy_is_not_detached_again(tmp_path):
    """untag_prediction of a layer that already is a detached copy leaves it as it is (no "from A, from B" copy)."""
    from napari.layers import Labels

    layer = Labels(np.zeros((8, 8), np.int32), name=f"{SAMPLE_NAME} prediction",
                   metadata={ROLE_KEY: "prediction", IMAGE_KEY: SAMPLE_NAME})
    first = untag_prediction(layer, tmp_path / "project A", [])
    assert first == f"{SAMPLE_NAME} prediction, from project A" and not layer.visible
    assert ROLE_KEY not in layer.metadata and IMAGE_KEY not in layer.metadata
    assert untag_prediction(layer, tmp_path / "project B", [first]) == first
    assert layer.name == first
