"""Post-processing to gland instances: lumen filling of ring-shaped predictions, hole sizes, old rule kept.

Rings are carved out of real GlaS glands (tests/data masks: the gland minus its erosion, as a prediction
that finds the epithelium but not the pale lumen or mucin inside), or drawn.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi

from src_model.io import read_mask
from src_model.metrics import pixel_dice
from src_model.postprocess import (
    DEFAULT_INSTANCES,
    PostprocessConfig,
    clean_mask,
    fill_lumens,
    instance_labels,
    split_touching,
    to_instances,
)

#: The rule before lumen filling: holes under min_size filled, glands split at h = 16.
OLD = PostprocessConfig(min_size=1600, fill_holes=True, split_h=16.0)
LUMEN = dataclasses.replace(OLD, lumen_holes=True)


def real_ring(glas_dir, image_id="train_2", depth=15):
    """The largest gland of a training mask, as a whole (bool) and as a ring whose lumen is missing."""
    gt = read_mask(glas_dir / "masks" / f"{image_id}.png")
    ids, counts = np.unique(gt[gt > 0], return_counts=True)
    gland = gt == ids[np.argmax(counts)]
    ring = gland & ~ndi.binary_erosion(gland, iterations=depth)
    return gland, ring


def discs(shape, centres, radius):
    y, x = np.mgrid[:shape[0], :shape[1]]
    out = np.zeros(shape, bool)
    for cy, cx in centres:
        out |= np.hypot(y - cy, x - cx) < radius
    return out


@pytest.mark.parametrize("image_id", ["train_1", "train_2", "train_3", "train_5"])
def test_a_ring_cut_from_a_real_gland_becomes_the_filled_gland(glas_dir, image_id):
    gland, ring = real_ring(glas_dir, image_id)
    lumen = gland & ~ring
    assert lumen.sum() > OLD.min_size  # too large for the old small-hole rule
    old = to_instances(ring, OLD)
    assert pixel_dice(old, gland) < 0.8 and not old[lumen].any()  # the old rule leaves the lumen a hole
    new = to_instances(ring, LUMEN)
    assert len(np.unique(new[new > 0])) == 1  # one gland
    assert pixel_dice(new, gland) == 1.0


def test_two_touching_filled_discs_stay_two_glands():
    mask = discs((200, 320), [(100, 95), (100, 225)], 70)  # centres 130 px apart: a neck 2 x 34 px wide
    assert ndi.label(mask)[1] == 1
    for cfg in (LUMEN, DEFAULT_INSTANCES):
        labels = to_instances(mask, cfg)
        assert len(np.unique(labels[labels > 0])) == 2
        assert labels[100, 95] != labels[100, 225]
        assert np.array_equal(labels > 0, mask)  # nothing filled, nothing dropped


def test_background_enclosed_between_separate_glands_is_not_filled():
    # four glands touching in a ring around a patch of stroma (about 5000 px, above min_size)
    mask = discs((420, 420), [(115, 115), (115, 305), (305, 115), (305, 305)], 97)
    stroma = ndi.binary_fill_holes(mask) & ~mask
    assert stroma.sum() > LUMEN.min_size and ndi.label(mask)[1] == 1
    for cfg in (LUMEN, DEFAULT_INSTANCES):
        labels = to_instances(mask, cfg)
        assert len(np.unique(labels[labels > 0])) == 4
        assert not labels[stroma].any()


def test_fill_lumens_fills_only_holes_of_one_label():
    labels = np.zeros((120, 200), np.int32)
    labels[10:70, 10:70] = 1
    labels[25:55, 25:55] = 0  # a lumen of gland 1: filled with 1
    labels[10:70, 100:190] = 2
    labels[25:55, 115:175] = 0
    labels[35:45, 135:155] = 3  # gland 3 inside gland 2's lumen: the hole borders 2 and 3, stays
    labels[80:110, 10:60] = 4
    labels[80:110, 60:110] = 5
    labels[90:100, 50:70] = 0  # enclosed by glands 4 and 5 together: stays
    out = fill_lumens(labels)
    assert (out[25:55, 25:55] == 1).all()
    changed = out != labels
    assert np.array_equal(changed, labels_hole(labels, 1))
    assert out.dtype == labels.dtype
    with pytest.raises(ValueError, match="expected labels"):
        fill_lumens(labels[None])


def labels_hole(labels, k):
    own = labels == k
    return ndi.binary_fill_holes(own) & ~own & (labels == 0)


def test_max_hole_decouples_hole_filling_from_the_object_size():
    mask = np.ones((100, 100), bool)
    mask[20:40, 20:40] = False  # 400 px hole
    mask[60:90, 60:90] = False  # 900 px hole
    cfg = PostprocessConfig(min_size=500, fill_holes=True)
    assert clean_mask(mask, cfg)[30, 30] and not clean_mask(mask, cfg)[75, 75]  # holes < min_size, as before
    big = dataclasses.replace(cfg, max_hole=1000)
    assert clean_mask(mask, big).all()
    none = dataclasses.replace(cfg, max_hole=0)
    assert np.array_equal(clean_mask(mask, none), mask)
    assert np.array_equal(clean_mask(mask, dataclasses.replace(cfg, fill_holes=False, max_hole=1000)), mask)


def test_old_rule_is_still_reachable_and_instance_labels_use_the_default(glas_dir):
    _, ring = real_ring(glas_dir)
    assert OLD.max_hole is None and not OLD.lumen_holes  # new fields default to the old behaviour
    assert np.array_equal(instance_labels(ring), to_instances(ring, DEFAULT_INSTANCES))
    assert np.array_equal(instance_labels(ring, OLD), to_instances(ring, OLD))


def test_the_default_fills_holes_under_its_max_hole_before_splitting():
    d = DEFAULT_INSTANCES
    assert d.fill_holes and d.max_hole is not None and d.max_hole > d.min_size
    mask = np.zeros((300, 300), bool)
    mask[20:280, 20:280] = True
    small = int(np.sqrt((d.min_size + d.max_hole) / 2))  # a square hole between min_size and max_hole
    large = int(np.sqrt(d.max_hole)) + 2  # a square hole just above max_hole
    mask[40:40 + small, 40:40 + small] = False
    mask[150:150 + large, 150:150 + large] = False
    labels = to_instances(mask, d)
    assert labels[40:40 + small, 40:40 + small].all()  # filled, although above min_size
    assert not labels[150:150 + large, 150:150 + large].any()
    assert not to_instances(mask, OLD)[40:40 + small, 40:40 + small].any()  # the old rule kept it


def test_the_dock_and_retrain_worker_gland_sizes_follow_the_default():
    """The dock's live-labels dtype bound and the retrain worker's smallest scored held-out gland are plain
    numbers (importing scipy with the dock is slow): they must follow DEFAULT_INSTANCES.min_size."""
    from napari_cdma._predict_stream import MIN_GLAND_PIXELS
    from napari_cdma.project.retrain_job import MIN_HOLDOUT_GLAND_PX

    assert MIN_HOLDOUT_GLAND_PX == DEFAULT_INSTANCES.min_size
    assert MIN_GLAND_PIXELS == DEFAULT_INSTANCES.min_size // 2


def test_split_keeps_every_pixel_of_a_gland_touching_another_only_at_a_corner():
    """The flood moves between 4-neighbours: a gland joined to a seeded one only through a corner pixel
    is never reached from its seed; it is a gland of its own, not background."""
    mask = np.zeros((120, 120), bool)
    yy, xx = np.mgrid[:120, :120]
    mask[np.hypot(yy - 40, xx - 40) < 30] = True  # a round gland: it has a peak; (61, 61) is its last diagonal pixel
    mask[62:75, 62:75] = True  # a small gland whose corner (62, 62) touches only the pixel (61, 61)
    assert ndi.label(mask, structure=np.ones((3, 3)))[1] == 1 and ndi.label(mask)[1] > 1
    labels = split_touching(mask, h=24.0)
    np.testing.assert_array_equal(labels > 0, mask)  # no pixel dropped
    assert len(np.unique(labels[62:75, 62:75])) == 1 and labels[70, 70] != labels[40, 40]
