"""Walk 22: an accepted correction pasted into a new prediction made one gland two labels at the box's edge
(the gland inside the box took a fresh id, the same gland outside kept the model's). A pasted gland that
touches the box's border where a gland lies right across it now takes that gland's id
(:func:`napari_cdma._layers.paste_corrections`)."""
from __future__ import annotations

import numpy as np
import pytest

from napari_cdma._layers import paste_corrections


def _glands(labels: np.ndarray) -> set:
    return {int(v) for v in np.unique(labels) if v}


def test_a_gland_crossing_the_box_keeps_one_id():
    """The walk's case: the gland runs through the box, across its top and bottom edges; the correction
    accepted unchanged (the store holds it in its own ids) is pasted back as one gland with the model's id."""
    labels = np.zeros((30, 30), np.int32)
    labels[0:30, 10:18] = 2  # through the box, top to bottom
    labels[2:6, 2:6] = 1  # elsewhere, untouched
    box = (8, 5, 20, 25)
    stored = np.where(labels[8:20, 5:25] == 2, 6, 0).astype(np.int32)  # id 6 in the store
    before = labels.copy()
    assert paste_corrections(labels, [(box, stored)]) == 1
    np.testing.assert_array_equal(labels, before)  # one gland, id 2, as the model drew it
    assert _glands(labels) == {1, 2}


def test_a_gland_split_inside_the_box_stays_split():
    """Both halves touch the same outside gland: the one with the longer shared border takes its id, the
    other keeps a fresh one (the pathologist's split is not undone)."""
    labels = np.zeros((30, 30), np.int32)
    labels[0:15, 10:20] = 3  # crosses the box's top edge (row 10)
    box = (10, 0, 30, 30)
    corrected = np.zeros((20, 30), np.int32)
    corrected[0:5, 10:14] = 1  # 4 px of shared border
    corrected[0:5, 15:20] = 2  # 5 px: takes id 3
    paste_corrections(labels, [(box, corrected)])
    assert (labels[10:15, 15:20] == 3).all()
    left = int(labels[10, 10])
    assert left not in (0, 3) and left > 3 and (labels[10:15, 10:14] == left).all()
    assert _glands(labels) == {3, left}


def test_a_gland_touching_two_outside_glands_takes_the_longest_borders_id():
    labels = np.zeros((30, 30), np.int32)
    labels[0:12, 2:5] = 1  # 3 px across the box's top edge
    labels[0:12, 8:13] = 2  # 5 px
    box = (10, 0, 30, 30)
    corrected = np.zeros((20, 30), np.int32)
    corrected[0:6, 0:15] = 9  # one gland under both
    paste_corrections(labels, [(box, corrected)])
    assert (labels[10:16, 0:15] == 2).all()
    assert (labels[0:10, 2:5] == 1).all()  # the other stays a gland of its own
    assert _glands(labels) == {1, 2}


def test_a_pasted_gland_touching_nothing_outside_gets_a_fresh_id():
    labels = np.zeros((30, 30), np.int32)
    labels[0:9, 0:30] = 4  # ends one row above the box: no pixel pair across its border
    labels[22:26, 22:26] = 7
    corrected = np.zeros((10, 10), np.int32)
    corrected[0:10, 0:10] = 1  # fills the box, to its edges
    paste_corrections(labels, [((10, 5, 20, 15), corrected)])
    assert (labels[10:20, 5:15] == 8).all()  # above every id in the labels
    # a box at the image's edges has nothing outside on those sides
    whole = np.zeros((6, 6), np.int32)
    paste_corrections(whole, [((0, 0, 6, 6), np.full((6, 6), 5, np.int32))])
    assert (whole == 1).all()


def test_an_outside_gland_is_taken_by_one_pasted_gland_only():
    """Two pasted glands that both touch one outside gland most: the longer border wins it, the other
    takes its next-longest outside gland."""
    labels = np.zeros((30, 30), np.int32)
    labels[0:10, 0:20] = 1
    labels[0:10, 22:30] = 2
    corrected = np.zeros((20, 30), np.int32)
    corrected[0:3, 0:12] = 1  # 12 px along gland 1
    corrected[0:3, 13:26] = 2  # 7 px along gland 1 (taken by the other), 4 px along gland 2
    paste_corrections(labels, [((10, 0, 30, 30), corrected)])
    assert (labels[10:13, 0:12] == 1).all()
    assert (labels[10:13, 13:26] == 2).all()
    assert _glands(labels) == {1, 2}


def test_overlapping_boxes_pasted_in_order_join_across_each_border():
    labels = np.zeros((40, 40), np.int32)
    labels[0:40, 5:9] = 1  # crosses the first box's top edge
    labels[30:40, 25:30] = 2  # below the second box
    first = np.zeros((15, 15), np.int32)
    first[0:15, 2:6] = 4  # continues gland 1, down to the first box's bottom edge (inside the second box)
    first[3:8, 10:15] = 5  # a gland of its own, its lower rows under the later box
    later = np.zeros((20, 20), np.int32)
    later[0:20, 0:2] = 8  # continues the first box's gland 1, to the later box's bottom edge
    later[0:3, 0:5] = 8
    later[15:20, 15:20] = 9  # meets gland 2 below the later box
    assert paste_corrections(labels, [((5, 5, 20, 20), first), ((10, 10, 30, 30), later)]) == 2
    assert (labels[5:10, 7:11] == 1).all()  # the first box's gland took the model's id
    assert (labels[10:30, 10:12] == 1).all()  # the later box's gland joined it (pasted before, outside the box)
    assert (labels[25:30, 25:30] == 2).all()
    assert (labels[30:40, 5:9] == 1).all()  # the model's gland under the first box: unchanged
    # the first box's gland 5 keeps a fresh id above the labels' (3); the later box has background under it
    assert (labels[8:10, 15:20] == 3).all() and (labels[10:13, 15:20] == 0).all()
    assert _glands(labels) == {1, 2, 3}


def test_any_ids_in_the_correction_paste_alike():
    """Small ids index as they are, large ones go through a sort: both paste the same glands."""
    labels = np.zeros((30, 30), np.int32)
    labels[0:12, 8:13] = 2
    small = np.zeros((20, 30), np.int32)
    small[0:6, 0:15] = 1
    small[10:14, 3:9] = 3
    small[15:19, 20:25] = 2
    results = []
    for mask in (small, small.astype(np.int64) * 10**9, small > 0):
        out = labels.copy()
        paste_corrections(out, [((10, 0, 30, 30), mask)])
        results.append(out)
    np.testing.assert_array_equal(results[0], results[1])
    assert (results[0][10:16, 0:15] == 2).all() and results[0][12, 5] == 2
    assert results[0][25, 22] == 3 and results[0][20, 5] == 4  # fresh ids in the order of the correction's ids
    assert set(np.unique(results[2])) == {0, 2}  # a 0/1 mask: one gland, joined


@pytest.fixture(scope="module")
def sample_prediction():
    """The GlaS sample image's glands as the bundled model predicts them (the dock's post-processing)."""
    from napari_cdma._sample import read_sample_image
    from src_model.checkpoint import load_model
    from src_model.inference import predict
    from src_model.postprocess import instance_labels

    image = read_sample_image()
    return instance_labels(predict(load_model(), image)).astype(np.int32)


@pytest.mark.parametrize("box", [(0, 160, 256, 416), (128, 288, 384, 544), (200, 96, 456, 352)])
def test_a_correction_accepted_unchanged_pastes_back_the_same_glands(sample_prediction, box):
    """Accepted unchanged (stored with its own ids, as the store keeps it) and pasted into the same model's
    prediction: the same glands, one id each, as the prediction itself."""
    labels = sample_prediction.copy()
    y0, x0, y1, x1 = box
    crop = labels[y0:y1, x0:x1]
    outside = labels.copy()
    outside[y0:y1, x0:x1] = 0
    crossing = (_glands(crop) & _glands(outside))
    assert crossing, "the box should cut a gland for this test to mean anything"
    ids = np.unique(crop)
    stored = np.searchsorted(ids, crop).astype(np.int32)  # the store's own numbering: 1..n
    assert paste_corrections(labels, [(box, stored)]) == 1
    assert len(_glands(labels)) == len(_glands(sample_prediction))
    np.testing.assert_array_equal(labels > 0, sample_prediction > 0)
    # the same partition: each predicted gland is exactly one pasted gland, and back
    pairs = np.unique(np.stack([sample_prediction[labels > 0], labels[labels > 0]]), axis=1)
    assert pairs.shape[1] == len(_glands(labels))
    for gland in crossing:  # a gland cut by the box keeps the model's id, inside the box and out
        assert (labels[sample_prediction == gland] == gland).all()


def test_a_restored_correction_accepted_over_another_models_prediction_joins_too():
    """Reopening a store (``CdmaWidget._paste_restored``): a correction accepted over another model's
    prediction is pasted as a new prediction's, so the gland it continues keeps one id there too."""
    from napari_cdma._widget import CdmaWidget

    labels = np.zeros((30, 30), np.int32)
    labels[0:30, 10:18] = 2  # this model's gland, through the box
    box = (8, 5, 20, 25)
    predicted = np.zeros((12, 20), np.int32)  # another model's labels in the box: not these
    corrected = np.where(labels[8:20, 5:25] == 2, 1, 0).astype(np.int32)
    on_screen = labels.copy()
    assert CdmaWidget._paste_restored(on_screen, labels, [(box, corrected, predicted)]) == 1
    np.testing.assert_array_equal(on_screen, labels)
