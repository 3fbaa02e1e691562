"""separate_pieces: a gland split by a drawn background line becomes two labels; touching glands stay one."""
from __future__ import annotations

import numpy as np
import pytest

from src_model.postprocess import instance_labels, separate_pieces


def test_a_split_gland_gets_a_new_label_and_the_others_keep_theirs(glas_dir):
    from src_model.io import read_mask

    labels = instance_labels(read_mask(glas_dir / "masks" / "testA_1.png"))  # the glands of testA_1
    ids = np.unique(labels)[1:]
    big = int(ids[np.argmax([(labels == i).sum() for i in ids])])
    ys, xs = np.nonzero(labels == big)
    cut = int(np.median(xs))
    split = labels.copy()
    split[:, cut - 2:cut + 3][split[:, cut - 2:cut + 3] == big] = 0  # a background line across the gland
    assert len(np.unique(split)) == len(np.unique(labels))  # still one label, now in two pieces

    out = separate_pieces(split)
    assert out.dtype == split.dtype
    new = sorted(set(np.unique(out).tolist()) - set(np.unique(split).tolist()))
    assert new == [int(labels.max()) + 1]  # one new label, above every existing one
    assert (out[(split != big)] == split[(split != big)]).all()  # untouched glands keep their ids
    left, right = out[ys[xs < cut - 2][0], xs[xs < cut - 2][0]], out[ys[xs > cut + 2][0], xs[xs > cut + 2][0]]
    assert {int(left), int(right)} == {big, new[0]}
    assert np.array_equal(out > 0, split > 0)  # no pixel gained or lost


def test_region_limits_which_pieces_change_and_the_outside_piece_keeps_its_id():
    labels = np.zeros((40, 60), np.int32)
    labels[5:15, 5:15] = 3  # inside the region
    labels[5:15, 40:50] = 3  # the same id outside it: keeps 3
    labels[25:35, 5:15] = 4
    labels[25:35, 40:50] = 4  # both pieces outside the region: not examined
    region = np.zeros(labels.shape, bool)
    region[0:20, 0:30] = True
    out = separate_pieces(labels, region)
    assert (out[5:15, 40:50] == 3).all() and (out[5:15, 5:15] == 5).all()
    assert (out[25:35] == labels[25:35]).all()
    # everywhere: label 4 is split too, and new ids start at next_id
    everywhere = separate_pieces(labels, next_id=10)
    assert sorted(np.unique(everywhere).tolist()) == [0, 3, 4, 10, 11]


def test_touching_glands_painted_with_one_label_stay_one():
    labels = np.zeros((30, 30), np.uint8)
    labels[5:12, 5:12] = 1
    labels[12:20, 12:20] = 1  # touches the first at a corner: one 8-connected piece
    assert np.array_equal(separate_pieces(labels), labels)
    full = np.full((4, 4), 255, np.uint8)
    full[1] = 0  # two pieces of 255: no room for a new uint8 label
    with pytest.raises(ValueError, match="does not fit"):
        separate_pieces(full)
