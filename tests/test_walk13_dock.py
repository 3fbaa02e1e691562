"""Three findings of a pathologist walk of the dock under Xvfb (walk 13): while a whole slide was on screen the Review
panel's Draw and Accept whole image stayed enabled, acting on the GlaS image hidden under it; after a project store was
opened (or switched back to) every image it knew was shown at once, stacked at the origin; after a store switch the
Predict status line named the renamed copies of the store left, not the image chosen.

A real napari viewer (pytest-xvfb), the real dock, GlaS images, real project stores on disk (predictions saved in them,
no model), a real pyramidal TIFF opened by the plugin's reader.
"""
from __future__ import annotations

import re

from _dock import PLUGIN, open_dock, wait_settled
from qtpy.QtWidgets import QApplication

from napari_cdma._layers import names_for
from napari_cdma._widget_store import restored_text
from napari_cdma.project.store import ProjectStore

FIRST, SECOND = "testA_1", "testB_4"  # both 522 x 775: one lies exactly over the other


def _turn(qtbot, n=5):
    for _ in range(n):
        QApplication.processEvents()
        qtbot.wait(10)


def _images(glas_dir, names=(FIRST, SECOND)):
    from src_model.io import read_image

    return {n: read_image(glas_dir / "images" / f"{n}.png") for n in names}


def _layers_of(viewer, name):
    """The image ``name`` and the dock's layers of it (not the detached copies "..., from <store>")."""
    return [ly for ly in viewer.layers
            if (ly.name == name or ly.name.startswith(name + " ")) and ", from " not in ly.name]


def _visible(viewer, name):
    return [(ly.name, ly.visible) for ly in _layers_of(viewer, name)]


def _switch(dock, root):
    assert dock.open_store(root, create=None) is not None
    wait_settled(dock)
    assert dock._store.root == root.resolve()


# ------------------------------------------------------------ 1. Draw and Accept whole image under a slide on screen
def test_draw_and_accept_whole_image_are_off_while_a_slide_is_on_screen(make_napari_viewer, qtbot, tmp_path, glas_dir,
                                                                       slide_path):
    from test_dock_review_focus import _store

    image = _images(glas_dir, (FIRST,))[FIRST]
    _store(tmp_path / "project", {FIRST: image}, glas_dir)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name=FIRST, rgb=True)
    dock = open_dock(viewer, tmp_path / "project")
    review = dock.review_panel
    _turn(qtbot)
    assert review.image_name == FIRST
    assert review.draw_button.isEnabled() and review.accept_image_button.isEnabled()

    (slide,) = viewer.open(str(slide_path), plugin=PLUGIN)  # over the image: the slide is what the canvas shows
    _turn(qtbot)
    wait_settled(dock)
    assert review.slide_name == slide.name, review.last_message
    # before: both stayed enabled (their tooltips "Add a Shapes layer ...", "Store the whole image's ...")
    for button in (review.draw_button, review.accept_image_button, review.accept_drawn_button, review.accept_button):
        assert not button.isEnabled(), button.text()
        assert "Whole slide panel" in button.toolTip() and "slide" in button.toolTip(), button.toolTip()
    # called anyway (a script): nothing is drawn on, nothing of the hidden image stored
    shapes = [ly.name for ly in viewer.layers]
    assert review.start_drawing() is None and [ly.name for ly in viewer.layers] == shapes
    assert review.accept_whole_image() is None and "Whole slide panel" in review.last_message
    assert ProjectStore.open(tmp_path / "project").regions() == []

    # the slide hidden: the image is what the canvas shows, and the buttons act on it again
    slide.visible = False
    _turn(qtbot)
    assert review.image_name == FIRST and review.slide_name is None
    assert review.draw_button.isEnabled() and review.accept_image_button.isEnabled()
    # shown again, then closed
    slide.visible = True
    _turn(qtbot)
    assert not review.draw_button.isEnabled() and not review.accept_image_button.isEnabled()
    viewer.layers.remove(slide)
    _turn(qtbot)
    wait_settled(dock)
    _turn(qtbot)
    assert review.draw_button.isEnabled() and review.accept_image_button.isEnabled()
    record = review.accept_whole_image()
    assert record is not None and record.bbox == (0, 0) + image.shape[:2], review.last_message


# ----------------------------------------------------- 2. only the image chosen is shown after a store is opened
def test_opening_a_store_shows_the_image_chosen_and_hides_the_others_over_it(make_napari_viewer, qtbot, tmp_path,
                                                                             glas_dir):
    """Both images open and shown before the store is opened (the second on top), the first chosen in Predict. After
    Open the first is shown with its restored layers; the second and its restored layers are hidden (before: all of
    them shown, stacked)."""
    from test_dock_review_focus import _store

    images = _images(glas_dir)
    _store(tmp_path / "project", images, glas_dir)
    viewer = make_napari_viewer()
    for name, image in images.items():
        viewer.add_image(image, name=name, rgb=True)
    dock = open_dock(viewer)
    dock.predict_panel.image_choice.value = viewer.layers[FIRST]
    _turn(qtbot)
    assert viewer.layers[FIRST].visible and viewer.layers[SECOND].visible

    assert dock.open_store(tmp_path / "project") is not None
    wait_settled(dock)
    _turn(qtbot)
    assert dock.predict_panel.image_layer.name == FIRST
    for name in (FIRST, SECOND):
        assert names_for(name)["prediction"] in viewer.layers, [ly.name for ly in viewer.layers]
    assert all(v for _, v in _visible(viewer, FIRST)), _visible(viewer, FIRST)
    assert not any(v for _, v in _visible(viewer, SECOND)), _visible(viewer, SECOND)
    assert f"'{SECOND}'" in dock.review_panel.last_message, dock.review_panel.last_message  # says what it hid

    # choosing the second brings it back with its layers, and hides the first
    dock.predict_panel.image_choice.value = viewer.layers[SECOND]
    _turn(qtbot)
    wait_settled(dock)
    assert viewer.layers[SECOND].visible and viewer.layers[names_for(SECOND)["prediction"]].visible
    assert not viewer.layers[FIRST].visible


def test_switching_back_to_a_store_shows_only_the_image_chosen(make_napari_viewer, qtbot, tmp_path, glas_dir):
    """Stores A and B both hold both images and a prediction of each. A opened, the second image chosen; switched to B;
    every image and layer ticked on by the user; switched back to A: the second image is shown with A's restored
    layers, the first image and its layers are hidden (before: both images and both predictions shown at once)."""
    from test_dock_review_focus import _store

    images = _images(glas_dir)
    _store(tmp_path / "A", images, glas_dir)
    _store(tmp_path / "B", images, glas_dir)
    viewer = make_napari_viewer()
    dock = open_dock(viewer, tmp_path / "A")
    dock.predict_panel.image_choice.value = viewer.layers[SECOND]
    _turn(qtbot)
    wait_settled(dock)
    _switch(dock, tmp_path / "B")
    for layer in _layers_of(viewer, FIRST) + _layers_of(viewer, SECOND):
        layer.visible = True
    # walk 25: an image ticked on over the one chosen is followed (chosen): the one chosen now is the one on top
    chosen = dock.predict_panel.image_layer.name
    other = FIRST if chosen == SECOND else SECOND
    _switch(dock, tmp_path / "A")
    _turn(qtbot)
    assert dock.predict_panel.image_layer.name == chosen
    assert names_for(FIRST)["prediction"] in viewer.layers and names_for(SECOND)["prediction"] in viewer.layers
    assert viewer.layers[chosen].visible and viewer.layers[names_for(chosen)["prediction"]].visible
    assert not any(v for _, v in _visible(viewer, other)), _visible(viewer, other)


# ------------------------------------------------------------ 3. the Predict status line after a store is opened
def test_the_predict_status_is_about_the_image_chosen_after_a_store_switch(make_napari_viewer, qtbot, tmp_path,
                                                                           glas_dir):
    """Store A and B hold both images and a prediction of each, store C none. After each switch the Predict status line
    is about the image chosen: its prediction restored from the new store (model and time), or none yet (before: it
    named the renamed copies of the store left, "Prediction layer(s) of ... renamed '<image> prediction, from A'")."""
    from test_dock_review_focus import _store

    images = _images(glas_dir)
    _store(tmp_path / "A", images, glas_dir)
    _store(tmp_path / "B", images, glas_dir)
    viewer = make_napari_viewer()
    dock = open_dock(viewer, tmp_path / "A")
    panel = dock.predict_panel
    panel.image_choice.value = viewer.layers[FIRST]
    _turn(qtbot)
    wait_settled(dock)

    _switch(dock, tmp_path / "B")
    _turn(qtbot)
    said = panel.status.text()
    note = dock.restored_predictions.get(FIRST)
    expected = f"{FIRST}: predicted with {restored_text(note)} (from the project store)."
    assert note and said.startswith(expected), (said, note)
    assert re.search(r"\d\d:\d\d", note), note
    assert panel.last_message == said
    # what the switch did to A's layers is said after it (the copies stay the user's own labels)
    assert said.index(f"{FIRST}: predicted") < said.index("renamed"), said

    assert dock.open_store(tmp_path / "C", create=True) is not None  # a new, empty store
    wait_settled(dock)
    _turn(qtbot)
    said = panel.status.text()
    assert said.startswith(f"{FIRST}: not predicted yet."), said


def test_the_predict_status_names_the_prediction_a_reopen_restored(make_napari_viewer, qtbot, tmp_path, glas_dir):
    """A store opened in an empty viewer: the image it shows first becomes the one chosen; the status line says it was
    predicted (restored, with its model), not "not predicted yet" (said when it was added, before its prediction)."""
    from test_dock_review_focus import _store

    _store(tmp_path / "project", _images(glas_dir), glas_dir)
    viewer = make_napari_viewer()
    dock = open_dock(viewer, tmp_path / "project")
    _turn(qtbot)
    panel = dock.predict_panel
    chosen = panel.image_layer.name
    note = dock.restored_predictions.get(chosen)
    assert note, dock.restored_predictions
    expected = f"{chosen}: predicted with {restored_text(note)} (from the project store)."
    assert panel.status.text() == expected, panel.status.text()
    # and only that image is on screen
    other = SECOND if chosen == FIRST else FIRST
    assert viewer.layers[chosen].visible and not viewer.layers[other].visible
