"""Uncertainty maps of spec section 4, the tissue mask and the review ranking."""
import math

import numpy as np
import pytest
import torch

from src_model.tissue import tissue_mask
from src_model.uncertainty import disagreement, entropy, rank_tiles, tile_score, vote


def probs_from(values):
    """values: per-branch foreground probability at one pixel -> (3, 2, 1, 1)."""
    return torch.tensor([[[[1 - v]], [[v]]] for v in values], dtype=torch.float32)


def h(p):
    return -sum(x * math.log(x) for x in p if x > 0)


def test_agreeing_branches_have_zero_disagreement_but_can_have_entropy():
    p = probs_from([0.5, 0.5, 0.5])
    assert disagreement(p).item() == pytest.approx(0, abs=1e-6)
    assert entropy(p).item() == pytest.approx(1.0, abs=1e-6)
    assert vote(p).item() == 0


def test_disagreement_is_normalised_jensen_shannon():
    vals = [0.9, 0.2, 0.6]
    p = probs_from(vals)
    pm = sum(vals) / 3
    expected = (h([1 - pm, pm]) - sum(h([1 - v, v]) for v in vals) / 3) / math.log(2)
    assert disagreement(p).item() == pytest.approx(expected, rel=1e-5)
    assert entropy(p).item() == pytest.approx(h([1 - pm, pm]) / math.log(2), rel=1e-5)
    # mean 0.567 -> foreground; branch 2 says background
    assert vote(p).item() == pytest.approx(1 / 3)


def test_maximal_disagreement_is_one():
    p = probs_from([1.0, 0.0, 0.5])
    assert 0.5 < disagreement(p).item() <= 1.0
    two = torch.tensor([[[[1.0]], [[0.0]]], [[[0.0]], [[1.0]]]])
    assert disagreement(two).item() == pytest.approx(1.0, abs=1e-5)


def test_batched_shapes():
    p = torch.softmax(torch.randn(3, 2, 4, 5, 6), dim=2)
    for fn in (disagreement, entropy, vote):
        m = fn(p)
        assert m.shape == (2, 5, 6)
        assert float(m.min()) >= 0 and float(m.max()) <= 1


def test_tissue_mask_excludes_white_glass():
    img = np.full((10, 10, 3), 245, np.uint8)
    img[:5] = (150, 60, 140)  # H&E purple
    t = tissue_mask(img)
    assert t[:5].all() and not t[5:].any()


def test_tile_score_ignores_glass_and_ranks_uncertain_tissue_first():
    d = np.zeros((64, 128), np.float32)
    tissue = np.zeros_like(d, dtype=bool)
    d[:, 64:] = 0.9       # right half: very uncertain ... but all glass
    tissue[:, :64] = True
    d[10:40, 10:50] = 0.6  # uncertain tissue (>10 % of the tile) on the left
    assert tile_score(d[:, 64:], tissue[:, 64:]) == 0.0
    ranked = rank_tiles(d, tissue, review_size=64)
    assert ranked[0][1] == (0, 0, 64, 64)
    assert ranked[0][0] > ranked[1][0]
    # squares at the bottom and right edges are cut to the image
    assert {box for _, box in rank_tiles(d, tissue, review_size=48)} == {
        (0, 0, 48, 48), (0, 48, 48, 96), (0, 96, 48, 128), (48, 0, 64, 48), (48, 48, 64, 96), (48, 96, 64, 128)}
    assert [box for _, box in rank_tiles(d, tissue)] == [(0, 0, 64, 128)]  # default REVIEW_SIZE: 256
