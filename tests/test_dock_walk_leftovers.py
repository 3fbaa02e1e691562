"""What a pathologist walk left over in the dock: a 40 x 128 px sliver at a slide's bottom edge ranked first among the
slide's review regions; the Review panel went on naming the GlaS image it reviewed (and listing its regions) while a
whole slide was on screen over it; the Predict status line named the image predicted last, not the one chosen.

A real napari viewer (pytest-xvfb), the real dock, GlaS images, a small random model, real project stores on disk, a
real pyramidal TIFF and its prediction store.
"""
from __future__ import annotations

import re

import numpy as np
from _dock import PLUGIN, open_dock, predict_and_wait, slide_in_dock, wait_settled
from qtpy.QtWidgets import QApplication

from napari_cdma._slide_view import REVIEW_MIN_SIDE, review_window
from napari_cdma._widget_store import restored_text


def _turn(qtbot, n=5):
    for _ in range(n):
        QApplication.processEvents()
        qtbot.wait(10)


# ------------------------------------------------------------------------------- 1. no sliver among slide regions
def test_review_window_grows_a_thin_edge_chunk_inward():
    # a 40 px bottom row of chunks, a 168 px right column, a slide thinner than the smallest region side
    assert review_window((512, 256, 552, 512), 552, 680) == (424, 256, 552, 512)
    assert review_window((512, 512, 552, 680), 552, 680) == (424, 512, 552, 680)
    assert review_window((0, 0, 256, 256), 552, 680) == (0, 0, 256, 256)
    assert review_window((0, 0, 100, 256), 100, 680) == (0, 0, 100, 256)


def test_no_review_region_of_a_slide_is_a_sliver(make_napari_viewer, qtbot, tmp_path, glas_dir):
    """A 552 x 680 slide in chunks of 256 px: its bottom row of chunks is 40 px tall. Every review region the Whole
    slide panel lists is at least 128 px a side (before: 40 x 128 px slivers of that row ranked 3rd to 5th), and no
    two overlap."""
    from _slides import glas_mosaic, write_pyramidal_tiff

    from src_model.progress import drain
    from src_model.slide_predict import predict_slide

    height, width = 552, 680
    slide = write_pyramidal_tiff(tmp_path / "edge.tif", glas_mosaic(glas_dir, height, width), levels=3)
    drain(predict_slide(slide, tmp_path / "edge.cdma.zarr", chunk=256))
    viewer, dock, panel = slide_in_dock(make_napari_viewer, qtbot, slide, tmp_path / "project")
    qtbot.waitUntil(lambda: panel.tile_list.count() > 0 and panel._reopening is None and not panel._steps,
                    timeout=120_000)
    tiles = [b for _, b in panel.tiles]
    assert len(tiles) == panel.tile_list.count() > 1
    side = min(REVIEW_MIN_SIDE, height), min(REVIEW_MIN_SIDE, width)
    thin = [b for b in tiles if b[2] - b[0] < side[0] or b[3] - b[1] < side[1]]
    assert not thin, (thin, tiles)
    assert all(0 <= b[0] < b[2] <= height and 0 <= b[1] < b[3] <= width for b in tiles), tiles
    # the regions of the bottom edge are there, whole: the row of 40 px chunks is reviewed, not left out
    assert any(b[2] == height for b in tiles), tiles
    overlapping = [(a, b) for i, a in enumerate(tiles) for b in tiles[i + 1:]
                   if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]]
    assert not overlapping, overlapping


# ------------------------------------------------------------------------ 2. the Review panel and a slide on screen
def test_the_review_panel_names_no_image_under_a_slide_on_screen(make_napari_viewer, qtbot, tmp_path, glas_dir,
                                                                 slide_path):
    from test_dock_review_focus import RANKED, _store

    from src_model.io import read_image

    name = "testA_1"
    image = read_image(glas_dir / "images" / f"{name}.png")
    _store(tmp_path / "project", {name: image}, glas_dir)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name=name, rgb=True)
    dock = open_dock(viewer, tmp_path / "project")
    review = dock.review_panel
    _turn(qtbot)
    assert review.image_name == name and len(review.tiles) == len(RANKED), review.last_message

    (slide,) = viewer.open(str(slide_path), plugin=PLUGIN)  # over the image: the slide is what the canvas shows
    _turn(qtbot)
    wait_settled(dock)
    # before: "3 review region(s) of 'testA_1' ..." and its regions listed, the image hidden under the slide
    assert review.image_name is None and review.tiles == [] and review.tile_list.count() == 0, review.last_message
    assert review.slide_name == slide.name
    said = review.status.text()
    assert said == review.last_message and f"'{slide.name}'" in said and "Whole slide panel" in said, said
    assert f"review region(s) of '{name}'" not in said, said
    assert not review.next_button.isEnabled() and "Whole slide panel" in review.next_button.toolTip()
    review.step(+1)  # Next says where the slide's regions are, and selects nothing of the image under it
    assert "Whole slide panel" in review.last_message and review.current_bbox() is None

    # the slide hidden: the image is what the canvas shows, and its regions are listed again
    slide.visible = False
    _turn(qtbot)
    assert review.image_name == name and len(review.tiles) == len(RANKED), review.last_message
    assert review.slide_name is None and f"of '{name}'" in review.last_message
    # shown again, then closed
    slide.visible = True
    _turn(qtbot)
    assert review.image_name is None and review.tile_list.count() == 0 and review.slide_name == slide.name
    viewer.layers.remove(slide)
    _turn(qtbot)
    wait_settled(dock)
    assert review.image_name == name and len(review.tiles) == len(RANKED), review.last_message


# ------------------------------------------------------------------------- 3. the Predict status and the chosen image
def test_the_predict_status_is_about_the_image_chosen(make_napari_viewer, qtbot, tmp_path, glas_dir, lite_checkpoint):
    from src_model.io import read_image

    viewer = make_napari_viewer()
    for name in ("testA_1", "testA_2"):
        viewer.add_image(read_image(glas_dir / "images" / f"{name}.png")[:256, :256], name=name, rgb=True)
    dock = open_dock(viewer, tmp_path / "project")
    panel = dock.predict_panel
    panel.set_model_file(str(lite_checkpoint))
    label = panel.model_combo.currentText()
    predict_and_wait(qtbot, dock, "testA_1", timeout=120_000)
    _turn(qtbot)
    assert panel.status.text().startswith("testA_1: predicted with "), panel.status.text()

    panel.image_choice.value = viewer.layers["testA_2"]
    _turn(qtbot)
    # before: still "testA_1: predicted with ..."
    assert panel.status.text() == "testA_2: not predicted yet.", panel.status.text()
    panel.image_choice.value = viewer.layers["testA_1"]
    _turn(qtbot)
    said = panel.status.text()
    assert re.fullmatch(rf"testA_1: predicted with {re.escape(label)} at \d\d:\d\d\.", said), (said, label)
    assert np.asarray(viewer.layers["testA_1 prediction"].data).shape == (256, 256)


def test_the_predict_status_names_the_model_of_a_prediction_restored_from_the_store(make_napari_viewer, qtbot, tmp_path,
                                                                                    glas_dir):
    """Store B holds a prediction of the sample image. After the dock opens B, choosing that image in Predict says
    which model made the restored prediction and when (before: only "predicted (from the project store)", or the
    image predicted last)."""
    from test_dock_store_switch import open_a_beside_b

    from napari_cdma._sample import SAMPLE_NAME

    viewer, dock, (_, b_root), _ = open_a_beside_b(make_napari_viewer, tmp_path, glas_dir)
    assert dock.open_store(b_root, create=None) is not None
    wait_settled(dock)
    note = dock.restored_predictions.get(SAMPLE_NAME)
    assert note and not note.startswith("not restored"), dock.restored_predictions
    panel = dock.predict_panel
    panel.image_choice.value = viewer.layers[SAMPLE_NAME]
    panel._on_chosen(viewer.layers[SAMPLE_NAME])  # as the chooser's change signal does (it may be chosen already)
    _turn(qtbot)
    said = panel.status.text()
    assert said == f"{SAMPLE_NAME}: predicted with {restored_text(note)} (from the project store).", (said, note)


def test_the_gland_table_gives_way_when_an_image_without_a_prediction_is_chosen(make_napari_viewer, qtbot, tmp_path,
                                                                                glas_dir, lite_checkpoint):
    """Walk: with testA_2 chosen and not predicted, the gland table and legend still showed testA_1's glands. Now the
    panel shows its one-line note, and choosing testA_1 again brings its rows back."""
    from src_model.io import read_image

    viewer = make_napari_viewer()
    for name in ("testA_1", "testA_2"):
        viewer.add_image(read_image(glas_dir / "images" / f"{name}.png")[:256, :256], name=name, rgb=True)
    dock = open_dock(viewer, tmp_path / "project")
    dock.predict_panel.set_model_file(str(lite_checkpoint))
    predict_and_wait(qtbot, dock, "testA_1", timeout=120_000)
    _turn(qtbot)
    panel = dock.display_panel
    rows = list(panel.glands)
    assert panel.image_name == "testA_1" and panel.showing
    dock.predict_panel.image_choice.value = viewer.layers["testA_2"]
    _turn(qtbot)
    # before: image_name stayed 'testA_1' with its rows
    assert panel.image_name is None and panel.glands == [] and not panel.showing
    assert panel.empty_label.isVisibleTo(panel) and not panel.content.isVisibleTo(panel)
    dock.predict_panel.image_choice.value = viewer.layers["testA_1"]
    _turn(qtbot)
    assert panel.image_name == "testA_1" and [g["id"] for g in panel.glands] == [g["id"] for g in rows]


def test_hiding_a_slide_hides_its_overlays_and_showing_it_brings_them_back(make_napari_viewer, qtbot, tmp_path,
                                                                            glas_dir):
    """Walk: hiding the slide left its uncertainty, glands and review tiles drawn over the GlaS image under it. Now
    they go with the slide and come back with it; an overlay the user hid stays hidden."""
    from _slides import glas_mosaic, write_pyramidal_tiff

    from napari_cdma._slide_view import SLIDE_KEY
    from src_model.progress import drain
    from src_model.slide_predict import predict_slide

    slide = write_pyramidal_tiff(tmp_path / "s.tif", glas_mosaic(glas_dir, 552, 680), levels=3)
    drain(predict_slide(slide, tmp_path / "s.cdma.zarr", chunk=256))
    viewer, dock, panel = slide_in_dock(make_napari_viewer, qtbot, slide, tmp_path / "project")
    qtbot.waitUntil(lambda: panel.tile_list.count() > 0 and panel._reopening is None and not panel._steps,
                    timeout=120_000)
    image = panel.slide_layer
    key = str(image.metadata.get(SLIDE_KEY))
    overlays = [ly for ly in viewer.layers if ly is not image and str(ly.metadata.get(SLIDE_KEY)) == key]
    shown = [ly for ly in overlays if ly.visible]
    assert len(shown) >= 2, [(ly.name, ly.visible) for ly in overlays]
    user_hidden = shown[0]
    user_hidden.visible = False
    image.visible = False
    _turn(qtbot)
    # before: the overlays stayed visible over whatever lies under the slide
    assert not any(ly.visible for ly in overlays), [(ly.name, ly.visible) for ly in overlays]
    image.visible = True
    _turn(qtbot)
    assert all(ly.visible for ly in shown[1:]) and not user_hidden.visible
