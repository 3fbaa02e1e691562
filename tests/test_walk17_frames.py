"""Findings of a pathologist's walk of the dock under Xvfb (walk 17): the image review frames were drawn in image
pixels (at the zoom Next sets, the selected region's yellow frame was a 31-pixel bar on screen and the cyan ones 13,
over the tissue to look at); "Accept whole image" pressed again on an image accepted whole said "Accepted whole image
r0001" again, as if it had stored another one.

A real napari viewer (pytest-xvfb), the real dock, GlaS images, a real project store on disk (a prediction saved in
it, no model).
"""
from __future__ import annotations

import numpy as np
from test_walk15_dock import FIRST, _at_next, _open_two, _turn

from napari_cdma._layers import ACCEPTED_WIDTH, FRAME_SLACK, TILE_WIDTH, names_for
from napari_cdma._widget_review import CURRENT_TILE_WIDTH, SHOWN_SUFFIX, SHOWN_WIDTH, scene_camera
from napari_cdma.project.store import ProjectStore


def _on_screen(layer, i, zoom):
    """Shape ``i``'s stroke width in screen pixels, and its inner and outer extents (y0, x0, y1, x1) in image
    pixels."""
    width = float(np.asarray(layer.edge_width)[i])
    lo, hi = layer.data[i].min(axis=0)[-2:], layer.data[i].max(axis=0)[-2:]
    h = width / 2
    return width * zoom, (lo[0] + h, lo[1] + h, hi[0] - h, hi[1] - h), (lo[0] - h, lo[1] - h, hi[0] + h, hi[1] + h)


def _within(px, target):
    return FRAME_SLACK[0] * target - 1e-3 <= px <= FRAME_SLACK[1] * target + 1e-3


def _outside(inner, bbox):
    """The stroke's inner edge lies outside the box's pixels, which span [y0 - 0.5, y1 - 0.5]."""
    y0, x0, y1, x1 = bbox
    return inner[0] <= y0 - 0.5 + 1e-3 and inner[1] <= x0 - 0.5 + 1e-3 and inner[2] >= y1 - 0.5 - 1e-3 \
        and inner[3] >= x1 - 0.5 - 1e-3


def _inside(outer, bbox):
    y0, x0, y1, x1 = bbox
    return outer[0] >= y0 - 0.5 - 1e-3 and outer[1] >= x0 - 0.5 - 1e-3 and outer[2] <= y1 - 0.5 + 1e-3 \
        and outer[3] <= x1 - 0.5 + 1e-3


def _check_review_frames(review, layer, zoom):
    row = review.tile_list.currentRow()
    assert row >= 0 and len(layer.data) == len(review.tiles) >= 2
    for i, (_, bbox) in enumerate(review.tiles):
        px, inner, outer = _on_screen(layer, i, zoom)
        if i == row:  # yellow, thicker, wholly outside the region's pixels: none of its tissue is covered
            assert _within(px, CURRENT_TILE_WIDTH), (px, zoom)
            assert _outside(inner, bbox), (inner, bbox)
        else:  # cyan, a few screen pixels inside its own box (touching boxes' frames neither overlap nor cross)
            assert _within(px, TILE_WIDTH), (i, px, zoom)
            assert _inside(outer, bbox), (i, outer, bbox)
    selected = _on_screen(layer, row, zoom)[0]
    assert all(selected > _on_screen(layer, i, zoom)[0] for i in range(len(review.tiles)) if i != row)
    assert np.allclose(layer.edge_color[row], (1, 1, 0, 1))  # the colours stay, redrawn or not
    assert all(np.allclose(layer.edge_color[i], (0, 1, 1, 1)) for i in range(len(review.tiles)) if i != row)


def test_review_frames_keep_their_screen_width_outside_the_region(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock, review = _at_next(make_napari_viewer, qtbot, tmp_path, glas_dir)
    camera = scene_camera(viewer)
    layer = viewer.layers[names_for(FIRST)["tiles"]]
    assert review.current_bbox() is not None and camera.zoom > 2  # Next zoomed in on it
    _check_review_frames(review, layer, camera.zoom)
    # a few screen pixels at every zoom: zoomed in 4 times (in steps, as a wheel does), the frames were drawn again
    for _ in range(4):
        camera.zoom = camera.zoom * np.sqrt(2)
        _turn(qtbot, 2)
    _check_review_frames(review, layer, camera.zoom)
    camera.zoom = camera.zoom / 8
    _turn(qtbot, 2)
    _check_review_frames(review, layer, camera.zoom)

    # the accepted region's red frame, and the black frame of an accepted region shown from its list, as well
    record = review.accept()
    assert record is not None, review.last_message
    _turn(qtbot)
    accepted = viewer.layers[names_for(FIRST)["accepted"]]
    assert len(accepted.data) == 1
    review.show_region(record.region_id)
    _turn(qtbot)
    shown = viewer.layers[f"{FIRST} {SHOWN_SUFFIX}"]
    for zoom_by in (1.0, 4.0, 1 / 3):
        camera.zoom = camera.zoom * zoom_by
        _turn(qtbot, 2)
        for frame, target in ((accepted, ACCEPTED_WIDTH), (shown, SHOWN_WIDTH)):
            px, inner, _ = _on_screen(frame, 0, camera.zoom)
            assert _within(px, target), (frame.name, px, camera.zoom)
            assert _outside(inner, record.bbox) or record.bbox[0] == 0, (frame.name, inner, record.bbox)
    assert tuple(accepted.edge_color[0][:3]) == (1, 0, 0) and tuple(shown.edge_color[0][:3]) == (0, 0, 0)


def test_accept_whole_image_again_says_it_was_accepted_already(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock = _open_two(make_napari_viewer, qtbot, tmp_path, glas_dir)
    review = dock.review_panel
    dock.predict_panel.image_choice.value = viewer.layers[FIRST]
    _turn(qtbot)
    assert review.accept_image_button.isEnabled(), review.accept_image_button.toolTip()
    review.accept_image_button.click()
    _turn(qtbot)
    (record,) = ProjectStore.open(tmp_path / "project").regions()
    assert review.last_message.startswith(f"Accepted whole image {record.region_id} of '{FIRST}'"), \
        review.last_message

    # again, nothing edited since: the status says so plainly, and the store holds the one version
    review.accept_image_button.click()
    _turn(qtbot)
    message = review.last_message
    assert not message.startswith("Accepted"), message
    assert f"'{FIRST}' was already accepted whole as {record.region_id}" in message, message
    assert "nothing new was stored" in message, message
    (again,) = ProjectStore.open(tmp_path / "project").regions()
    assert again.region_id == record.region_id and again.n_versions == 1

    # edited since: the edits are stored, as a new version of the same region, and the status says that
    labels = review.labels_choice.value
    data = np.array(labels.data)
    data[5:9, 5:9] = 0 if data[5:9, 5:9].any() else int(data.max()) + 1
    labels.data = data
    review.accept_image_button.click()
    _turn(qtbot)
    message = review.last_message
    (updated,) = ProjectStore.open(tmp_path / "project").regions()
    assert updated.region_id == record.region_id and updated.n_versions == 2
    assert f"{record.region_id} of '{FIRST}' was accepted before: stored again as its version 2" in message, message
