"""Pathologist walk 25, finding 1: after switching project stores and back, choosing an image showed its tissue and
review boxes but not its prediction, while the dock said it was predicted and Accept whole image stayed on. The image
had been hidden under another one (ReviewPanel.focus remembers the layers it hid), and the store switch replaced its
prediction and maps with new layers: the remembered image layer was shown again, so the fallback that shows an
image's prediction layers never ran. Now the layers made since the image was hidden come back as a Predict shows them.

A real napari viewer (pytest-xvfb), the real dock, real stores on disk (the GlaS masks as predictions; no model).
"""
from __future__ import annotations

from _dock import choose_image as _choose
from _dock import turn as _turn
from _dock import two_images_in_store, wait_settled

from napari_cdma._layers import names_for

FIRST, SECOND = "testA_1", "testA_2"
RANKED = [(0.9, (0, 0, 64, 64)), (0.8, (128, 128, 192, 192))]


def test_an_image_chosen_after_a_store_switch_shows_its_prediction(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock, store = two_images_in_store(make_napari_viewer, tmp_path, glas_dir, (FIRST, SECOND), RANKED)
    _turn(qtbot)
    _choose(qtbot, dock, viewer, FIRST)
    _choose(qtbot, dock, viewer, SECOND)  # FIRST hidden under SECOND, remembered
    names = names_for(FIRST)
    assert not viewer.layers[FIRST].visible and not viewer.layers[names["prediction"]].visible

    # another store (created), then the first again: FIRST's prediction and maps are new layers
    assert dock.open_store(tmp_path / "other", create=True) is not None
    wait_settled(dock)
    _turn(qtbot)
    assert dock.open_store(store.root) is not None
    wait_settled(dock)
    _turn(qtbot)
    _choose(qtbot, dock, viewer, FIRST)

    layers = viewer.layers
    assert layers[FIRST].visible
    assert layers[names["prediction"]].visible, [(ly.name, ly.visible) for ly in layers]
    assert layers[names["uncertainty"]].visible, [(ly.name, ly.visible) for ly in layers]
    assert not layers[SECOND].visible and not layers[names_for(SECOND)["prediction"]].visible
    # what the dock describes is on screen: the gland table is FIRST's, its prediction the corrections layer
    assert dock.display_panel.image_name == FIRST
    assert dock.review_panel.labels_choice.value is layers[names["prediction"]]

    # a second round (hidden again, chosen again) still shows them
    _choose(qtbot, dock, viewer, SECOND)
    assert not layers[names["prediction"]].visible
    _choose(qtbot, dock, viewer, FIRST)
    assert layers[names["prediction"]].visible and layers[names["uncertainty"]].visible
