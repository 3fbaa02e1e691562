"""The accepted-region list shows withdrawn regions on request and restores them (pathologist walk: a withdrawn
region vanished from the list, and the dock had no view of it). A real napari viewer (Xvfb), the GlaS sample, a
small random model in a real project store on disk.
"""
from __future__ import annotations

import datetime
import getpass

import numpy as np
from _dock import PLUGIN, wait_settled
from _dock import open_dock as _dock
from _dock import predict_and_wait as _predict_and_wait
from napari.utils.colormaps.standardize_color import transform_color
from qtpy.QtCore import Qt
from qtpy.QtGui import QPalette

from napari_cdma._layers import GLAND_COLORS, names_for
from napari_cdma._sample import SAMPLE_NAME
from napari_cdma._widget_review import SHOWN_SUFFIX, SHOWN_WIDTH, WITHDRAWN_MARK, scene_camera

BOXES = [(0, 0, 128, 128), (0, 200, 128, 328), (200, 0, 328, 128)]


def _sample_with_store(make_napari_viewer, tmp_path, checkpoint):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "glas_testA_1")
    store_path = tmp_path / "project"
    widget = _dock(viewer, store_path)
    widget.store.add_model(checkpoint, parent="bundled", promoted=True)
    widget.open_store(store_path)
    wait_settled(widget)
    return viewer, widget


def _rows(review):
    return [review.region_list.item(i).text() for i in range(review.region_list.count())]


def _click_row(qtbot, review, region_id):
    """Click the row of ``region_id`` in the accepted-region list, as the user does."""
    lst = review.region_list
    row = next(i for i in range(lst.count()) if lst.item(i).data(Qt.ItemDataRole.UserRole) == region_id)
    lst.scrollToItem(lst.item(row))
    qtbot.mouseClick(lst.viewport(), Qt.MouseButton.LeftButton, pos=lst.visualItemRect(lst.item(row)).center())
    assert lst.currentRow() == row


def _label_side(viewer, frame):
    """Where the frame's label is drawn on the canvas, from screenshots: "above" or "below" the frame (text pixels
    all outside its outer rows, on the image: black text on the black canvas would leave no pixel changed), else
    "over" (some text pixel on the frame's rows or inside it)."""
    from qtpy.QtWidgets import QApplication

    hidden = [ly for ly in viewer.layers if ly.visible and ly is not frame and ly.name != SAMPLE_NAME]
    for ly in hidden:
        ly.visible = False
    try:
        def shot():
            QApplication.processEvents()
            return np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].astype(int)

        frame.text.visible = False
        with_frame = shot()
        frame.visible = False
        bare = shot()
        frame.visible = True
        frame.text.visible = True
        with_text = shot()
    finally:
        for ly in hidden:
            ly.visible = True
    stroke = np.abs(with_frame - bare).max(axis=-1) > 60
    text = np.abs(with_text - with_frame).max(axis=-1) > 60
    assert stroke.sum() > 100 and text.sum() > 20, (stroke.sum(), text.sum())
    rows = np.nonzero(stroke.any(axis=1))[0]
    text_rows = np.nonzero(text.any(axis=1))[0]
    if text_rows.max() < rows.min():
        return "above"
    if text_rows.min() > rows.max():
        return "below"
    return "over"


def test_withdrawn_regions_are_listed_on_request_shown_on_their_image_and_restored(
        make_napari_viewer, qtbot, tmp_path, lite_checkpoint):
    viewer, widget = _sample_with_store(make_napari_viewer, tmp_path, lite_checkpoint)
    review, names = widget.review_panel, names_for(SAMPLE_NAME)
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    records = [review.accept(bbox=box) for box in BOXES]
    assert all(records), review.last_message
    ids = [r.region_id for r in records]
    store = widget.store
    prediction = viewer.layers[names["prediction"]]
    viewer.layers.selection.active = prediction  # the brush is on the glands

    # withdrawn with the buttons, as the user does: the region leaves the list...
    assert not review.withdraw_button.isEnabled() and not review.restore_button.isEnabled()  # nothing selected
    _click_row(qtbot, review, ids[1])
    assert review.withdraw_button.isEnabled() and not review.restore_button.isEnabled()
    assert "not withdrawn" in review.restore_button.toolTip()
    review.withdraw_button.click()
    assert [r.region_id for r in store.regions()] == [ids[0], ids[2]]
    assert len(_rows(review)) == 2 and not any(ids[1] in t for t in _rows(review))
    assert "Show withdrawn lists it" in review.last_message
    assert len(viewer.layers[names["accepted"]].data) == 2  # its red box is gone from the image

    # ... and comes back, greyed and marked, when withdrawn regions are shown
    review.show_withdrawn.setChecked(True)
    rows = _rows(review)
    assert len(rows) == 3
    row = next(i for i, t in enumerate(rows) if ids[1] in t)
    item = review.region_list.item(row)
    assert item.text().startswith(WITHDRAWN_MARK) and not any(t.startswith(WITHDRAWN_MARK) for i, t in
                                                                enumerate(rows) if i != row)
    grey = review.region_list.palette().color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text)
    assert item.foreground().color() == grey and item.font().italic()
    live = review.region_list.item(0 if row else 1)
    assert not live.font().italic() and live.foreground().color() != grey
    assert f"by {getpass.getuser()}" in item.toolTip() and "Withdrawn" in item.toolTip()
    # who and when are in the row itself, short (walk: only in the tooltip), the full date in the tooltip
    record = review.records[ids[1]]
    when = datetime.datetime.fromisoformat(record.withdrawn_at).astimezone()  # shown in local time, as every time
    assert item.text().startswith(f"[withdrawn {when:%H:%M} by {getpass.getuser()}] {ids[1]}"), item.text()
    assert f"Withdrawn {when:%Y-%m-%d %H:%M %Z} by {getpass.getuser()}" in item.toolTip()

    # clicking it frames its box on the image (no red box there any more) and centres the view on it
    _click_row(qtbot, review, ids[1])
    assert not review.withdraw_button.isEnabled() and review.restore_button.isEnabled()
    assert "withdrawn already" in review.withdraw_button.toolTip()
    frame = viewer.layers[f"{SAMPLE_NAME} {SHOWN_SUFFIX}"]
    (rect,) = frame.data
    y0, x0, y1, x1 = BOXES[1]
    top, bottom = rect.min(axis=0), rect.max(axis=0)
    # around the region's pixels; at the image's edge (this one is at its top) its stroke is on the image, not on
    # the black canvas, where the black frame was lost
    edge = -0.5 + float(frame.edge_width[0]) / 2  # SHOWN_WIDTH screen pixels (walk 17), image pixels before
    assert np.isclose(float(frame.edge_width[0]) * scene_camera(viewer).zoom, SHOWN_WIDTH, rtol=0.01)
    assert top[0] == edge and top[1] <= x0 - 0.5 and bottom[0] >= y1 - 0.5 and bottom[1] >= x1 - 0.5
    assert bottom[0] - top[0] < (y1 - y0) + 20  # around the region, not the whole image
    assert list(frame.features["label"]) == [f"{ids[1]} withdrawn"] and frame.visible
    cy, cx = tuple(scene_camera(viewer).center)[-2:]
    assert y0 <= cy < y1 and x0 <= cx < x1
    assert viewer.layers.selection.active is prediction  # the brush stays where it was
    assert f"withdrawn region {ids[1]}" in review.last_message
    # the status line says who withdrew it and when, short as the row says it (walk 22: the full date there, beside
    # the row's short time); the tooltip keeps the full date
    assert f"withdrawn {when:%H:%M} by {getpass.getuser()}" in review.last_message, review.last_message
    # the frame and its label are not a gland outline's colour (it was orange, like the glands: walk) ...
    edge = tuple(np.round(frame.edge_color[0][:3], 3))
    assert all(np.abs(np.array(edge) - np.array(c)).max() > 0.3 for c in GLAND_COLORS), edge
    for other in ("red", "cyan", "yellow", "magenta"):  # nor the accepted, review and gland boxes'
        assert np.abs(np.array(edge) - transform_color(other)[0][:3]).max() > 0.3
    assert np.allclose(frame.text.color.constant[:3], frame.edge_color[0][:3])
    # ... and its label is drawn outside the frame, on the image: this region is at the image's top, so below it
    assert _label_side(viewer, frame) == "below"
    scene_camera(viewer).zoom = scene_camera(viewer).zoom * 1.5  # and stays so when the view zooms
    assert _label_side(viewer, frame) == "below"
    # a region with image above it: the label above the frame
    _click_row(qtbot, review, ids[2])
    assert _label_side(viewer, frame) == "above"
    _click_row(qtbot, review, ids[1])

    # Restore: it counts again (training), its red box is back, the row is no longer marked, who and when kept
    review.restore_button.click()
    assert [r.region_id for r in store.regions()] == ids, review.last_message
    assert ids[1] in [r.region_id for r in store.training_regions()]
    assert "counts again for training" in review.last_message
    assert len(viewer.layers[names["accepted"]].data) == 3
    assert not any(t.startswith(WITHDRAWN_MARK) for t in _rows(review))
    assert review.selected_region_id() == ids[1] and review.withdraw_button.isEnabled()
    assert list(frame.features["label"]) == [ids[1]]  # the frame says it is live again
    events = [(e["event"], e["by"]) for e in store.region_history(ids[1])]
    assert events[-2:] == [("withdrawn", getpass.getuser()), ("reinstated", getpass.getuser())]

    # a live row shows its box the same way
    _click_row(qtbot, review, ids[2])
    (rect,) = frame.data
    assert rect.min(axis=0)[0] <= BOXES[2][0] - 0.5 and list(frame.features["label"]) == [ids[2]]

    # the box of a withdrawn region accepted again: the old one cannot be restored beside the new one
    assert review.withdraw(ids[0])
    again = review.accept(bbox=BOXES[0])
    assert again is not None and again.region_id not in ids
    assert review.select_region(ids[0]) and review.restore_button.isEnabled()
    review.restore_button.click()
    assert f"withdraw {again.region_id} first" in review.last_message
    assert ids[0] not in [r.region_id for r in store.regions()]

    # a reopened store lists the withdrawn region on request too
    other = make_napari_viewer()
    reopened = _dock(other, tmp_path / "project")
    assert len(_rows(reopened.review_panel)) == 3
    reopened.review_panel.show_withdrawn.setChecked(True)
    assert sum(t.startswith(WITHDRAWN_MARK) for t in _rows(reopened.review_panel)) == 1


def test_a_withdrawn_slide_window_is_not_restored_from_the_dock(make_napari_viewer, qtbot, tmp_path, glas_dir):
    """A slide window's correction was undone in the slide's labels when it was withdrawn: the dock does not
    restore it into the project alone (the Whole slide panel accepts it again), and says so."""
    from napari_cdma.project.store import SLIDE_SOURCE, ProjectStore
    from src_model.io import read_image, read_mask

    image = read_image(glas_dir / "images" / "testA_1.png")
    mask = read_mask(glas_dir / "masks" / "testA_1.png")[:64, :64]
    store = ProjectStore.open(tmp_path / "project")
    window = store.accept_region(image, (0, 0, 64, 64), mask, mask, model_version="bundled",
                                 source_path=str(tmp_path / "case.tif"), source_kind=SLIDE_SOURCE)
    store.withdraw(window.region_id)
    viewer = make_napari_viewer()
    review = _dock(viewer, tmp_path / "project").review_panel
    assert review.region_list.count() == 0
    review.show_withdrawn.setChecked(True)
    assert review.select_region(window.region_id) and review.restore_button.isEnabled()
    review.restore_button.click()
    assert "window of a whole slide" in review.last_message and "Whole slide panel" in review.last_message
    assert store.regions() == [] and ProjectStore.open(tmp_path / "project").regions() == []
    # its image is not open as an image layer: clicking the row says so
    assert review.show_region(window.region_id) is None and "is not open" in review.last_message
    assert np.all([not ly.name.endswith(SHOWN_SUFFIX) for ly in viewer.layers])
