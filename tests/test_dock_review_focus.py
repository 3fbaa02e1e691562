"""The image under review is the one the canvas shows (pathologist walk under Xvfb): with several GlaS images open (all
at the origin, over each other), choosing an image and pressing Next showed a region of it under another image's
layers. Now the image chosen in Predict, or whose region Next shows, is shown with its prediction layers, and the other
images lying over it are hidden with theirs; choosing one of them again shows it as it was, and hides the first.

A real napari viewer (pytest-xvfb), a real store on disk holding both images and a prediction of each (no model).
"""
from __future__ import annotations

import numpy as np
from _dock import open_dock, store_with_predictions, wait_settled

from napari_cdma._layers import names_for

FIRST, SECOND = "testA_1", "testB_4"  # both 522 x 775: the second lies exactly over the first
RANKED = [(0.9, (0, 0, 64, 64)), (0.8, (128, 128, 192, 192)), (0.7, (256, 256, 320, 320))]
SHOWN_ROLES = ("prediction", "uncertainty", "tiles")


def _store(root, images, glas_dir):
    """A store holding each image whole and a prediction of it (its mask), with review regions RANKED."""
    return store_with_predictions(root, images, glas_dir, RANKED)

def _shown(viewer, name):
    """Whether the image ``name`` and its prediction, uncertainty and review boxes layers are all visible."""
    names = names_for(name)
    return [viewer.layers[name].visible] + [viewer.layers[names[r]].visible for r in SHOWN_ROLES if
                                            names[r] in viewer.layers]


def test_the_image_reviewed_is_shown_and_the_others_over_it_hidden(make_napari_viewer, qtbot, tmp_path, glas_dir):
    from src_model.io import read_image

    images = {n: read_image(glas_dir / "images" / f"{n}.png") for n in (FIRST, SECOND)}
    _store(tmp_path / "project", images, glas_dir)
    viewer = make_napari_viewer()
    for name, image in images.items():  # both open and shown, as the pathologist opened them
        viewer.add_image(image, name=name, rgb=True)
    notes = viewer.add_shapes([np.array([[10, 10], [10, 50], [50, 50], [50, 10]])], name="my notes")
    dock = open_dock(viewer, tmp_path / "project")
    panel, review = dock.predict_panel, dock.review_panel
    for name in (FIRST, SECOND):
        assert name in dock.states and names_for(name)["prediction"] in viewer.layers, [ly.name for ly in viewer.layers]
        for layer_name in (name, names_for(name)["prediction"], names_for(name)["uncertainty"]):
            viewer.layers[layer_name].visible = True  # the walk: everything ticked on, the second image on top
    assert viewer.layers.index(viewer.layers[SECOND]) > viewer.layers.index(viewer.layers[FIRST])

    # choosing the first image (under the second): it is shown, the second and its layers are hidden
    panel.image_choice.value = viewer.layers[FIRST]
    qtbot.wait(50)
    assert review.image_name == FIRST and len(review.tiles) == len(RANKED), review.last_message
    # walk 25: the second image ticked on over the first was followed (chosen) at once, so choosing the first hides it
    # now, and says so then (before: only at Next)
    told = review.last_message
    review.next_button.click()
    assert review.current_bbox() == RANKED[0][1]
    assert all(_shown(viewer, FIRST)), _shown(viewer, FIRST)
    second = [ly for ly in viewer.layers if ly.name == SECOND or ly.name.startswith(SECOND + " ")]
    assert len(second) >= 3 and not any(ly.visible for ly in second), [(ly.name, ly.visible) for ly in second]
    assert SECOND in told and "Predict" in told, told
    assert notes.visible  # the user's own layer is left as it is

    # the user hides the first image's uncertainty while reviewing it: Next keeps it hidden
    viewer.layers[names_for(FIRST)["uncertainty"]].visible = False
    review.next_button.click()
    assert review.current_bbox() == RANKED[1][1]
    assert not viewer.layers[names_for(FIRST)["uncertainty"]].visible
    assert not viewer.layers[SECOND].visible

    # choosing the second one brings it back as it was, and hides the first one
    panel.image_choice.value = viewer.layers[SECOND]
    qtbot.wait(50)
    wait_settled(dock)
    assert review.image_name == SECOND, review.last_message
    assert all(_shown(viewer, SECOND)), _shown(viewer, SECOND)
    assert not viewer.layers[FIRST].visible and not viewer.layers[names_for(FIRST)["prediction"]].visible
    review.next_button.click()
    assert all(_shown(viewer, SECOND)) and not viewer.layers[FIRST].visible

    # and the first again: shown as the user left it (its uncertainty still off)
    panel.image_choice.value = viewer.layers[FIRST]
    qtbot.wait(50)
    assert viewer.layers[FIRST].visible and viewer.layers[names_for(FIRST)["prediction"]].visible
    assert not viewer.layers[names_for(FIRST)["uncertainty"]].visible
    assert not viewer.layers[SECOND].visible and notes.visible


def test_next_shows_a_restored_hidden_image_with_its_prediction(make_napari_viewer, qtbot, tmp_path, glas_dir):
    """A reopened store's second image comes back hidden, with its prediction layers hidden: choosing it and pressing
    Next shows its region on it, with its prediction and uncertainty, not on the first image."""
    from src_model.io import read_image

    images = {n: read_image(glas_dir / "images" / f"{n}.png") for n in (FIRST, SECOND)}
    _store(tmp_path / "project", images, glas_dir)
    viewer = make_napari_viewer()
    dock = open_dock(viewer, tmp_path / "project")
    shown = [n for n in (FIRST, SECOND) if viewer.layers[n].visible]
    assert len(shown) == 1, [(ly.name, ly.visible) for ly in viewer.layers]
    hidden = SECOND if shown[0] == FIRST else FIRST
    assert not viewer.layers[hidden].visible

    dock.predict_panel.image_choice.value = viewer.layers[hidden]
    qtbot.wait(50)
    wait_settled(dock)
    assert dock.review_panel.image_name == hidden, dock.review_panel.last_message
    dock.review_panel.next_button.click()
    assert all(_shown(viewer, hidden)), [(ly.name, ly.visible) for ly in viewer.layers]
    assert names_for(hidden)["tiles"] in viewer.layers
    assert not viewer.layers[shown[0]].visible and not viewer.layers[names_for(shown[0])["prediction"]].visible


def test_the_gland_table_follows_paint_not_accepted(make_napari_viewer, qtbot, tmp_path, glas_dir):
    """The gland table of the image reviewed follows the edits of its prediction layer (a stroke, an undo), not
    accepted: it was made at Predict or reopen only, and listed glands the pathologist had painted over."""
    from src_model.io import read_image

    images = {FIRST: read_image(glas_dir / "images" / f"{FIRST}.png")}
    _store(tmp_path / "project", images, glas_dir)
    viewer = make_napari_viewer()
    dock = open_dock(viewer, tmp_path / "project")
    display = dock.display_panel
    labels = viewer.layers[names_for(FIRST)["prediction"]]
    assert display.labels_layer.name == labels.name and display.glands, display.last_message
    new_id = int(np.max(labels.data)) + 1
    assert new_id not in [g["id"] for g in display.glands]

    labels.brush_size = 50  # a gland of some 1960 px: the table lists glands of 1300 px and more
    labels.paint((400, 700), new_id)  # what a stroke of the brush does: napari's paint event
    painted = int(np.count_nonzero(np.asarray(labels.data) == new_id))
    assert painted > 0
    qtbot.waitUntil(lambda: new_id in [g["id"] for g in display.glands], timeout=30_000)
    row = next(g for g in display.glands if g["id"] == new_id)
    assert row["area"] == painted
    assert display.table.rowCount() == len(display.glands)

    labels.undo()  # the stroke undone: its gland leaves the table
    qtbot.waitUntil(lambda: new_id not in [g["id"] for g in display.glands], timeout=30_000)
    assert not np.any(np.asarray(labels.data) == new_id)


def test_the_legend_table_and_selection_follow_the_image_chosen(make_napari_viewer, qtbot, tmp_path, glas_dir):
    """Choosing another predicted image in Predict moves the gland table, the legend and the selected layer to it
    (walk: after choosing testA_1 and pressing Next, the table still listed testA_2's glands and testA_2's hidden
    prediction layer stayed selected, so a stroke painted there and the table did not change)."""
    from src_model.io import read_image

    images = {n: read_image(glas_dir / "images" / f"{n}.png") for n in (FIRST, SECOND)}
    _store(tmp_path / "project", images, glas_dir)
    viewer = make_napari_viewer()
    for name, image in images.items():
        viewer.add_image(image, name=name, rgb=True)
    dock = open_dock(viewer, tmp_path / "project")
    display, panel = dock.display_panel, dock.predict_panel
    for chosen in (FIRST, SECOND, FIRST):
        panel.image_choice.value = viewer.layers[chosen]
        qtbot.wait(50)
        wait_settled(dock)
        labels = viewer.layers[names_for(chosen)["prediction"]]
        assert display.image_name == chosen and display.labels_layer.name == labels.name, (chosen, display.image_name)
        assert display.uncertainty_layer.name == names_for(chosen)["uncertainty"]
        ids = {int(v) for v in np.unique(np.asarray(labels.data)) if v}
        assert {g["id"] for g in display.glands} == ids, chosen
        assert viewer.layers.selection.active.name == labels.name and labels.visible, viewer.layers.selection.active

    # a stroke in the chosen image's prediction (now the selected layer) reaches its table
    labels = viewer.layers.selection.active
    new_id = int(np.max(labels.data)) + 1
    labels.brush_size = 50  # a gland of some 1960 px: the table lists glands of 1300 px and more
    labels.paint((300, 300), new_id)
    qtbot.waitUntil(lambda: new_id in [g["id"] for g in display.glands], timeout=30_000)

    # the user's own layer, selected, stays selected when another image is chosen
    mine = viewer.add_shapes([np.array([[10, 10], [10, 50], [50, 50], [50, 10]])], name="my notes")
    viewer.layers.selection.active = mine
    panel.image_choice.value = viewer.layers[SECOND]
    qtbot.wait(50)
    wait_settled(dock)
    assert viewer.layers.selection.active is mine and display.image_name == SECOND
