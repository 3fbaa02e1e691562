"""Findings of a pathologist walk of the dock under Xvfb (walk 14): a row click in "Accepted regions" left the review
region selected off screen and Accept region stored it; the "Uncertainty and glands" panel described a GlaS image
hidden under a whole slide; the two region lists gave coordinates in opposite orders; a reopened store whose regions
were all accepted said the image had no uncertain region.

A real napari viewer (pytest-xvfb), the real dock, GlaS images, real project stores on disk (predictions saved in them,
no model).
"""
from __future__ import annotations

import numpy as np
from _dock import PLUGIN, open_dock, wait_settled
from qtpy.QtWidgets import QApplication

from napari_cdma._layers import names_for
from napari_cdma.project.store import ProjectStore

FIRST = "testA_1"


def _turn(qtbot, n=5):
    for _ in range(n):
        QApplication.processEvents()
        qtbot.wait(10)


def _image(glas_dir, name=FIRST):
    from src_model.io import read_image

    return read_image(glas_dir / "images" / f"{name}.png")


def _click_region(review, row):
    item = review.region_list.item(row)
    review.region_list.setCurrentItem(item)
    review.region_list.itemClicked.emit(item)


def _yellow_boxes(viewer, name):
    layer = viewer.layers[names_for(name)["tiles"]]
    return [i for i, c in enumerate(np.asarray(layer.edge_color)) if np.allclose(c[:3], (1, 1, 0))]


# ------------------------------------------- 1. showing an accepted region drops the review region's selection
def test_showing_an_accepted_region_clears_the_review_region_selection(make_napari_viewer, qtbot, tmp_path, glas_dir):
    from test_dock_review_focus import RANKED, _store

    _store(tmp_path / "project", {FIRST: _image(glas_dir)}, glas_dir)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(_image(glas_dir), name=FIRST, rgb=True)
    dock = open_dock(viewer, tmp_path / "project")
    review = dock.review_panel
    _turn(qtbot)
    assert review.image_name == FIRST and len(review.tiles) == len(RANKED), review.last_message
    review.next_button.click()
    _turn(qtbot)
    first = review.accept()  # the first review region accepted: an accepted region to click
    assert first is not None, review.last_message
    review.next_button.click()  # review region 1 (of the two left) selected, drawn yellow
    _turn(qtbot)
    selected = review.tile_list.currentRow()
    assert selected >= 0 and review.accept_button.isEnabled()
    assert _yellow_boxes(viewer, FIRST) == [selected]

    _click_region(review, 0)  # the accepted region's row: the view goes there
    _turn(qtbot)
    assert review.last_message.startswith(f"Showing region {first.region_id}"), review.last_message
    # before: the review region stayed selected (yellow, off screen) and Accept region stored it
    assert review.tile_list.currentRow() == -1 and review.current_bbox() is None
    assert _yellow_boxes(viewer, FIRST) == []
    assert not review.accept_button.isEnabled()
    assert "Select a review region" in review.accept_button.toolTip(), review.accept_button.toolTip()
    assert review.accept() is None
    assert [r.region_id for r in ProjectStore.open(tmp_path / "project").regions()] == [first.region_id]
    # Withdraw still acts on the accepted region clicked
    assert review.withdraw_button.isEnabled()

    # Next goes back to the review region that was selected
    review.next_button.click()
    _turn(qtbot)
    assert review.tile_list.currentRow() == selected and review.accept_button.isEnabled()
    assert _yellow_boxes(viewer, FIRST) == [selected]


# ------------------------------------ 2. the Uncertainty and glands panel gives way for a whole slide on screen
def _describes(dock, name):
    """Whether the Uncertainty and glands panel describes the image ``name``: its legend and gland rows shown."""
    panel = dock.display_panel
    return (panel.image_name == name and panel.content.isVisibleTo(dock) and panel.table.model().rowCount() > 0
            and panel.uncertainty_layer is not None)


def test_the_glands_panel_gives_way_for_a_slide_on_screen(make_napari_viewer, qtbot, tmp_path, glas_dir, slide_path):
    from test_dock_review_focus import _store

    from napari_cdma._widget_display import readout_text, selected_gland_name

    image = _image(glas_dir)
    _store(tmp_path / "project", {FIRST: image}, glas_dir)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name=FIRST, rgb=True)
    dock = open_dock(viewer, tmp_path / "project")
    panel = dock.display_panel
    _turn(qtbot)
    assert _describes(dock, FIRST)
    gland = panel.glands[0]["id"]

    (slide,) = viewer.open(str(slide_path), plugin=PLUGIN)  # over the image: the slide is what the canvas shows
    _turn(qtbot)
    wait_settled(dock)
    _turn(qtbot)
    # before: the legend, the gland rows and the readout stayed those of the hidden image
    assert panel.image_name is None and panel.uncertainty_layer is None and panel.table.model().rowCount() == 0
    assert not panel.content.isVisibleTo(dock) and panel.empty_label.isVisibleTo(dock)
    assert slide.name in panel.empty_label.text(), panel.empty_label.text()
    viewer.cursor.position = (200, 300)  # inside the image under the slide: its uncertainty is not read out
    _turn(qtbot)
    assert panel.readout.text() == readout_text([]), panel.readout.text()
    # a gland row of the hidden image draws no box over the slide
    assert not panel.go_to_gland(gland)
    assert selected_gland_name(FIRST) not in viewer.layers

    # the slide hidden: the image's legend and table come back
    slide.visible = False
    _turn(qtbot)
    assert _describes(dock, FIRST)
    viewer.cursor.position = (210, 310)  # moved: the readout follows the cursor
    _turn(qtbot)
    assert "uncertainty" in panel.readout.text(), panel.readout.text()
    # shown again, then closed
    slide.visible = True
    _turn(qtbot)
    assert panel.image_name is None and panel.table.model().rowCount() == 0
    viewer.layers.remove(slide)
    _turn(qtbot)
    wait_settled(dock)
    _turn(qtbot)
    assert _describes(dock, FIRST)
    assert panel.go_to_gland(gland) and selected_gland_name(FIRST) in viewer.layers


# ------------------------------------------- 3. both region lists and the status line: width x height px at x, y
def test_accepted_regions_and_the_status_line_give_boxes_as_look_here_next(make_napari_viewer, qtbot, tmp_path,
                                                                           glas_dir):
    from test_dock_review_focus import _store

    _store(tmp_path / "project", {FIRST: _image(glas_dir)}, glas_dir)
    viewer = make_napari_viewer()
    viewer.add_image(_image(glas_dir), name=FIRST, rgb=True)
    dock = open_dock(viewer, tmp_path / "project")
    review = dock.review_panel
    _turn(qtbot)
    assert review.tile_list.count() > 0
    y0, x0, y1, x1 = review.tiles[0][1]
    row = review.tile_list.item(0).text().replace("\u00a0", " ")  # some spaces non-breaking (test_walk20_review)
    assert row.endswith(f"{x1 - x0} x {y1 - y0} px at x {x0}, y {y0}")

    record = review.accept((10, 20, 50, 100))  # 40 px high, 80 px wide, its corner at x 20, y 10
    assert record is not None, review.last_message
    # before: "... at (10, 20), 40 x 80 px." and the row "(10, 20) 40 x 80": (y, x) then height x width
    assert "80 x 40 px at x 20, y 10" in review.last_message, review.last_message
    assert "(10, 20)" not in review.last_message and "40 x 80" not in review.last_message
    (row,) = [review.region_list.item(i).text() for i in range(review.region_list.count())]
    assert f"{record.region_id}  " in row and "80 x 40 px at x 20, y 10" in row, row
    assert "(10, 20)" not in row and "40 x 80" not in row, row


# ------------------------------- 4. a reopened store whose suggested regions were all accepted says so at once
def test_a_reopened_image_with_every_region_accepted_says_so(make_napari_viewer, qtbot, tmp_path, glas_dir):
    from test_dock_review_focus import _store

    from napari_cdma._widget_review import NO_REGIONS_LEFT

    _store(tmp_path / "project", {FIRST: _image(glas_dir)}, glas_dir)
    viewer = make_napari_viewer()
    viewer.add_image(_image(glas_dir), name=FIRST, rgb=True)
    dock = open_dock(viewer, tmp_path / "project")
    _turn(qtbot)
    assert dock.review_panel.accept_whole_image() is not None, dock.review_panel.last_message

    again = make_napari_viewer()
    again.add_image(_image(glas_dir), name=FIRST, rgb=True)
    review = open_dock(again, tmp_path / "project").review_panel
    _turn(qtbot)
    assert review.image_name == FIRST and not review.tiles
    first = review.last_message
    # before: "'testA_1' has no uncertain region to review.", as if the model were certain everywhere
    assert "no uncertain region" not in first, first
    assert "every suggested region was accepted" in first and f"'{FIRST}'" in first, first
    review.next_button.click()
    assert review.last_message == NO_REGIONS_LEFT
