"""Walk 26: the dock followed an image shown over the one reviewed only when its eye icon was turned on
(tests/test_walk25_covered.py), not when the walker dragged it above in the layer list: testA_2, shown under testA_1,
dragged above it covered testA_1, and the dock kept describing testA_1 (only Accept and Draw refused: "'testA_1' is not
on screen (covered by 'testA_2')"). Now a reorder is followed as the eye icon is: the image dragged on top (or the one
reviewed dragged under another) is chosen; the image reviewed before, or its prediction, dragged back on top is chosen
again; a reorder that leaves the same image on top (the user's own layers, an image moved under it) switches nothing.

A real napari viewer (pytest-xvfb), the real dock on a new project store, two GlaS images (cropped to 256 px a side),
the first predicted with the bundled model.
"""

from __future__ import annotations

import numpy as np
from _dock import choose_image, open_dock, predict_and_wait, settle, to_top

from napari_cdma._layers import names_for
from src_model.io import read_image

FIRST, SECOND, THIRD = "testA_1", "testA_2", "testB_4"


def _described(dock):
    """(the image chosen in Predict, the image whose glands the display panel shows, the image whose review regions
    are listed)."""
    return dock.predict_panel.image_layer.name, dock.display_panel.image_name, dock.review_panel.image_name


def test_a_reorder_of_the_layer_list_is_followed_as_an_eye_icon_is(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer = make_napari_viewer(show=True)
    layers = viewer.layers
    viewer.add_image(read_image(glas_dir / "images" / f"{SECOND}.png")[:256, :256], name=SECOND, rgb=True)
    notes = viewer.add_shapes([np.array([[10, 10], [10, 50], [50, 50], [50, 10]])], name="my notes")
    viewer.add_image(read_image(glas_dir / "images" / f"{FIRST}.png")[:256, :256], name=FIRST, rgb=True)
    dock = open_dock(viewer, tmp_path / "project")
    choose_image(qtbot, dock, viewer, FIRST)
    predict_and_wait(qtbot, dock, FIRST, timeout=180_000)
    settle(qtbot, dock)
    prediction = layers[names_for(FIRST)["prediction"]]
    assert _described(dock) == (FIRST, FIRST, FIRST), dock.predict_panel.status.text()
    assert layers.index(layers[SECOND]) < layers.index(layers[FIRST])

    layers[SECOND].visible = True  # its eye icon: under FIRST, it covers nothing (not followed)
    settle(qtbot, dock)
    assert _described(dock) == (FIRST, FIRST, FIRST)

    # an image the user keeps hidden (opened hidden) dragged above FIRST: it covers nothing
    viewer.add_image(read_image(glas_dir / "images" / f"{THIRD}.png")[:256, :256], name=THIRD, rgb=True, visible=False)
    layers.move(layers.index(layers[THIRD]), 0)
    settle(qtbot, dock)
    to_top(layers, THIRD)
    settle(qtbot, dock)
    assert _described(dock) == (FIRST, FIRST, FIRST) and not layers[THIRD].visible

    # reorders that leave FIRST on top: the user's own layer, SECOND moved but still under FIRST, a map of FIRST
    for name, dest in ((notes.name, len(layers)), (notes.name, 0), (SECOND, 0), (names_for(FIRST)["uncertainty"], 0)):
        assert layers.move(layers.index(layers[name]), dest), name
        settle(qtbot, dock)
        assert _described(dock) == (FIRST, FIRST, FIRST), name
        assert layers[SECOND].visible and layers[FIRST].visible and prediction.visible, name
    assert layers.index(layers[SECOND]) < layers.index(layers[FIRST])

    # SECOND dragged above FIRST: it covers FIRST and is followed, as its eye icon turned on over FIRST is
    to_top(layers, SECOND)
    settle(qtbot, dock)
    assert _described(dock) == (SECOND, None, None), dock.review_panel.last_message
    assert layers[SECOND].visible and not layers[FIRST].visible and not prediction.visible
    assert f"'{SECOND}'" in dock.review_panel.last_message, dock.review_panel.last_message

    # the user's layer moved again: SECOND stays
    to_top(layers, notes.name)
    settle(qtbot, dock)
    assert dock.predict_panel.image_layer.name == SECOND

    # dragged back under FIRST (which the dock hid to show SECOND): FIRST is on top again and reviewed again
    layers.move(layers.index(layers[SECOND]), 0)
    settle(qtbot, dock)
    assert _described(dock) == (FIRST, FIRST, FIRST), dock.review_panel.last_message
    assert layers[FIRST].visible and prediction.visible and not layers[SECOND].visible
    assert dock.review_panel.accept_whole_image() is not None, dock.review_panel.last_message  # FIRST is on screen

    # SECOND (hidden by the dock to show FIRST) dragged above again, then FIRST's prediction dragged above it
    to_top(layers, SECOND)
    settle(qtbot, dock)
    assert dock.predict_panel.image_layer.name == SECOND and not prediction.visible
    to_top(layers, prediction.name)
    settle(qtbot, dock)
    assert _described(dock) == (FIRST, FIRST, FIRST), dock.review_panel.last_message
    assert layers[FIRST].visible and prediction.visible and not layers[SECOND].visible
