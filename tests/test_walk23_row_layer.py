"""Pathologist walk 23: two open image layers held the same pixels (the same store hash): the dock had restored the
default project's "GlaS testA_1 (H&E)", then the user opened another store and the sample again, which napari named
"GlaS testA_1 (H&E) [1]", and predicted and accepted regions on "[1]". The accepted-region rows (and the Retrain
note, which names images as the rows do) named the hidden layer of the other project, "GlaS testA_1 (H&E)", while the
status lines named "[1]". A row names the layer the dock works on for that image, whichever is first in the list.

A real napari viewer (pytest-xvfb), the real dock, two real project stores on disk, a real (random lite) model.
"""
from __future__ import annotations

import numpy as np
from _dock import open_dock, predict_and_wait, wait_settled
from qtpy.QtWidgets import QApplication

from napari_cdma._layers import HASH_KEY
from napari_cdma._sample import SAMPLE_NAME
from napari_cdma.project.store import BUNDLED, ProjectStore, hash_image

PLUGIN = "napari-cdma"
AGAIN = f"{SAMPLE_NAME} [1]"


def _turn(qtbot, n=6):
    for _ in range(n):
        QApplication.processEvents()
        qtbot.wait(10)


def _rows(review):
    return [review.region_list.item(i).text() for i in range(review.region_list.count())]


def test_a_row_names_the_layer_its_region_was_accepted_from_among_two_with_the_same_pixels(
        make_napari_viewer, qtbot, tmp_path, lite_checkpoint):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "glas_testA_1")
    image = np.asarray(viewer.layers[SAMPLE_NAME].data)
    viewer.layers.remove(SAMPLE_NAME)
    digest = hash_image(image)
    # the default project holds a prediction of the sample: the dock restores its image on opening it
    first = ProjectStore.open(tmp_path / "default")
    first.add_unlabelled_image(image)
    rng = np.random.default_rng(0)
    first.save_prediction(digest, np.zeros(image.shape[:2], np.int32), rng.random(image.shape[:2]).astype(np.float32),
                          model_version="bundled", image_name=SAMPLE_NAME, ranked=[(0.9, (0, 0, 64, 64))],
                          display_range=(0.0, 1.0))
    dock = open_dock(viewer, first.root)
    _turn(qtbot)
    assert SAMPLE_NAME in viewer.layers and viewer.layers[SAMPLE_NAME].metadata.get(HASH_KEY) == digest

    # another store, the sample opened again ("[1]"), predicted and a region accepted on it
    second = ProjectStore.open(tmp_path / "other")
    second.add_model(lite_checkpoint, parent=BUNDLED, promoted=True)
    assert dock.open_store(second.root) is not None
    wait_settled(dock)
    viewer.open_sample(PLUGIN, "glas_testA_1")
    assert AGAIN in viewer.layers
    assert viewer.layers.index(SAMPLE_NAME) < viewer.layers.index(AGAIN)  # the other project's layer is first
    predict_and_wait(qtbot, dock, AGAIN)
    review = dock.review_panel
    record = review.accept_whole_image()
    assert record is not None, review.last_message
    assert record.image_hash == digest
    assert f"'{AGAIN}'" in review.last_message  # the status line names "[1]"
    _turn(qtbot)

    assert review.image_layer_of(record).name == AGAIN
    rows = _rows(review)
    assert len(rows) == 1 and f"  {AGAIN}  " in rows[0], rows
    from napari_cdma.project.retrain_worker import _image_name

    # the Retrain note names the image as the row does
    assert dock.retrain_panel.image_name(digest, _image_name(dock.store.regions(), digest)) == AGAIN

    # the other project's layer shown, "[1]" hidden: the row still names the layer the dock works on
    viewer.layers[SAMPLE_NAME].visible = True
    viewer.layers[AGAIN].visible = False
    review.refresh_regions()
    _turn(qtbot)
    assert f"  {AGAIN}  " in _rows(review)[0], _rows(review)
    # and with "[1]" first in the list
    viewer.layers.move(viewer.layers.index(AGAIN), 0)
    review.refresh_regions()
    _turn(qtbot)
    assert f"  {AGAIN}  " in _rows(review)[0], _rows(review)


def test_among_layers_with_the_same_pixels_and_no_state_the_visible_one_is_named_and_a_detached_one_last(
        make_napari_viewer, qtbot, tmp_path):
    """With no prediction of the image in the dock: the visible layer of the two, else the first; a layer detached
    from a previous store only when no other shows the image."""
    from napari_cdma._widget_store import DETACHED_KEY
    from napari_cdma.project.store import RegionRecord

    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "glas_testA_1")
    image = np.asarray(viewer.layers[SAMPLE_NAME].data)
    digest = hash_image(image)
    viewer.layers[SAMPLE_NAME].metadata = {HASH_KEY: digest}
    viewer.add_image(image, name=AGAIN, rgb=True, metadata={HASH_KEY: digest})
    dock = open_dock(viewer)
    review = dock.review_panel

    record = RegionRecord(region_id="r0001", version=1, image_hash=digest, source_path=None, bbox=(0, 0, 64, 64),
                          model_version=BUNDLED, user="pathologist", created="2026-12-03T07:00:00+00:00",
                          holdout=False, withdrawn=False, n_versions=1)

    viewer.layers[SAMPLE_NAME].visible = False
    assert review.image_layer_of(record).name == AGAIN  # the visible one
    viewer.layers[AGAIN].visible = False
    assert review.image_layer_of(record).name == SAMPLE_NAME  # none visible: the first
    viewer.layers[SAMPLE_NAME].metadata = {HASH_KEY: digest, DETACHED_KEY: {"store": str(tmp_path)}}
    viewer.layers[SAMPLE_NAME].visible = True
    assert review.image_layer_of(record).name == AGAIN  # a detached layer last, even shown
    viewer.layers.remove(AGAIN)
    assert review.image_layer_of(record).name == SAMPLE_NAME  # yet named when it alone shows the image
