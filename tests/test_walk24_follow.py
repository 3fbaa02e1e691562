"""Pathologist walk 24: the dock did not follow an image switched from napari's layer list. With testA_2 chosen in
Predict, the walker hid testA_2's layers with the eye icons, showed testA_1 and its prediction, and selected testA_1 in
the layer list: the dock kept describing testA_2 (Predict line, legend, gland table, review status), a gland row drew
"testA_2 selected gland" over testA_1's tissue, and Next switched back to testA_2.

Now making an image's layer (the image or one of the dock's layers of it) the active one chooses that image in
Predict, and so does hiding the image chosen while exactly one other image is shown. Selecting the user's own layers
changes nothing.

A real napari viewer (pytest-xvfb), the real dock, a real store on disk holding both GlaS images and a prediction of
each (their masks; no model).
"""
from __future__ import annotations

import numpy as np
from _dock import open_dock, store_with_predictions, wait_settled
from qtpy.QtWidgets import QApplication

from napari_cdma._layers import names_for
from napari_cdma._widget_display import selected_gland_name

FIRST, SECOND = "testA_1", "testA_2"
RANKED = [(0.9, (0, 0, 64, 64)), (0.8, (128, 128, 192, 192))]


def _turn(qtbot, n=8):
    for _ in range(n):
        QApplication.processEvents()
        qtbot.wait(10)


def _open(make_napari_viewer, tmp_path, glas_dir):
    """Both images open (as the pathologist opened them), the store holding a prediction of each reopened."""
    from src_model.io import read_image

    images = {n: read_image(glas_dir / "images" / f"{n}.png") for n in (FIRST, SECOND)}
    store = store_with_predictions(tmp_path / "project", images, glas_dir, RANKED)
    viewer = make_napari_viewer(show=True)
    for name, image in images.items():
        viewer.add_image(image, name=name, rgb=True)
    notes = viewer.add_shapes([np.array([[10, 10], [10, 50], [50, 50], [50, 10]])], name="my notes")
    dock = open_dock(viewer, store.root)
    return viewer, dock, notes


def _choose(qtbot, dock, viewer, name):
    dock.predict_panel.image_choice.value = viewer.layers[name]
    _turn(qtbot)
    wait_settled(dock)
    assert dock.predict_panel.image_layer.name == name
    assert viewer.layers[name].visible and dock.display_panel.image_name == name


def _eye_switch(viewer, hide, show):
    """What the walker did with the eye icons: every layer of ``hide`` off, ``show`` and its prediction on."""
    for layer in viewer.layers:
        if layer.name == hide or layer.name.startswith(hide + " "):
            layer.visible = False
    viewer.layers[show].visible = True
    viewer.layers[names_for(show)["prediction"]].visible = True


def _describes(dock, name):
    """What the dock says it is about: the image chosen in Predict, the legend and gland table's, the review's."""
    return (dock.predict_panel.image_layer.name, dock.display_panel.image_name, dock.review_panel.image_name)


def test_selecting_an_image_in_the_layer_list_chooses_it(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock, notes = _open(make_napari_viewer, tmp_path, glas_dir)
    _choose(qtbot, dock, viewer, SECOND)

    _eye_switch(viewer, SECOND, FIRST)
    viewer.layers.selection.active = viewer.layers[FIRST]  # selected in the layer list
    _turn(qtbot)
    wait_settled(dock)
    assert _describes(dock, FIRST) == (FIRST, FIRST, FIRST), dock.predict_panel.status.text()
    assert dock.predict_panel.status.text().startswith(FIRST), dock.predict_panel.status.text()
    assert SECOND not in dock.review_panel.status.text(), dock.review_panel.status.text()
    assert viewer.layers[FIRST].visible and not viewer.layers[SECOND].visible

    # a gland row outlines testA_1's gland, not testA_2's
    display = dock.display_panel
    display.table.clicked.emit(display.table.model().index(0, 0))
    _turn(qtbot)
    assert selected_gland_name(FIRST) in viewer.layers
    assert selected_gland_name(SECOND) not in viewer.layers or not viewer.layers[selected_gland_name(SECOND)].visible

    # Next stays on the image shown
    dock.review_panel.next_button.click()
    _turn(qtbot)
    assert dock.predict_panel.image_layer.name == FIRST and viewer.layers[FIRST].visible
    assert not viewer.layers[SECOND].visible

    # a derived layer of the other image selected (its prediction, shown): that image is chosen
    _eye_switch(viewer, FIRST, SECOND)
    viewer.layers.selection.active = viewer.layers[names_for(SECOND)["prediction"]]
    _turn(qtbot)
    wait_settled(dock)
    assert _describes(dock, SECOND) == (SECOND, SECOND, SECOND)

    # the user's own layer selected: nothing changes, nothing is hidden or shown
    visible = {ly.name: ly.visible for ly in viewer.layers}
    viewer.layers.selection.active = notes
    _turn(qtbot)
    assert _describes(dock, SECOND) == (SECOND, SECOND, SECOND)
    assert {ly.name: ly.visible for ly in viewer.layers} == visible
    assert viewer.layers.selection.active is notes


def test_hiding_the_chosen_image_follows_the_one_image_left_shown(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock, notes = _open(make_napari_viewer, tmp_path, glas_dir)
    _choose(qtbot, dock, viewer, SECOND)
    viewer.layers.selection.active = notes  # the selection stays on the user's own layer

    _eye_switch(viewer, SECOND, FIRST)  # eye icons only, nothing selected
    _turn(qtbot)
    wait_settled(dock)
    assert _describes(dock, FIRST) == (FIRST, FIRST, FIRST), dock.predict_panel.status.text()
    assert viewer.layers[FIRST].visible and not viewer.layers[SECOND].visible

    # both images hidden: no image to follow, the choice stays
    viewer.layers[FIRST].visible = False
    _turn(qtbot)
    wait_settled(dock)
    assert dock.predict_panel.image_layer.name == FIRST
    assert not viewer.layers[FIRST].visible and not viewer.layers[SECOND].visible


def test_the_dock_reopening_a_store_keeps_the_image_on_screen_chosen(make_napari_viewer, qtbot, tmp_path, glas_dir):
    """The dock's own selections (a reopened store's layers added, hidden) do not move the choice."""
    viewer, dock, _notes = _open(make_napari_viewer, tmp_path, glas_dir)
    _turn(qtbot)
    wait_settled(dock)
    chosen = dock.predict_panel.image_layer.name
    shown = [n for n in (FIRST, SECOND) if viewer.layers[n].visible]
    assert shown == [chosen], [(ly.name, ly.visible) for ly in viewer.layers]
