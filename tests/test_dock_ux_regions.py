"""The accepted-region list shows withdrawn regions on request and restores them (pathologist walk: a withdrawn
region vanished from the list, and the dock had no view of it). A real napari viewer (Xvfb), the GlaS sample, a
small random model in a real project store on disk.
"""
from __future__ import annotations

import getpass

import numpy as np
from _dock import PLUGIN, wait_settled
from _dock import open_dock as _dock
from _dock import predict_and_wait as _predict_and_wait
from qtpy.QtCore import Qt
from qtpy.QtGui import QPalette

from napari_cdma._layers import names_for
from napari_cdma._sample import SAMPLE_NAME
from napari_cdma._widget_review import SHOWN_SUFFIX, WITHDRAWN_MARK, scene_camera

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

    # clicking it frames its box on the image (no red box there any more) and centres the view on it
    _click_row(qtbot, review, ids[1])
    assert not review.withdraw_button.isEnabled() and review.restore_button.isEnabled()
    assert "withdrawn already" in review.withdraw_button.toolTip()
    frame = viewer.layers[f"{SAMPLE_NAME} {SHOWN_SUFFIX}"]
    (rect,) = frame.data
    y0, x0, y1, x1 = BOXES[1]
    top, bottom = rect.min(axis=0), rect.max(axis=0)
    assert top[0] <= y0 - 0.5 and top[1] <= x0 - 0.5 and bottom[0] >= y1 - 0.5 and bottom[1] >= x1 - 0.5
    assert bottom[0] - top[0] < (y1 - y0) + 20  # around the region, not the whole image
    assert list(frame.features["label"]) == [f"{ids[1]} withdrawn"] and frame.visible
    cy, cx = tuple(scene_camera(viewer).center)[-2:]
    assert y0 <= cy < y1 and x0 <= cx < x1
    assert viewer.layers.selection.active is prediction  # the brush stays where it was
    assert f"withdrawn region {ids[1]}" in review.last_message

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
