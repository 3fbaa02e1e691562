"""Uncertainty maps of spec section 4, the tissue mask and the review ranking."""
import math

import numpy as np
import pytest
import torch

from src_model.postprocess import DEFAULT_INSTANCES, PostprocessConfig, instance_labels
from src_model.tissue import tissue_mask
from src_model.uncertainty import (
    disagreement,
    display_range,
    entropy,
    gland_table,
    rank_tiles,
    review_regions,
    tile_score,
    vote,
)


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


# --------------------------------------------------------------------------- review regions, plugin helpers


def _overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _disc_instances(h=300, w=500):
    yy, xx = np.mgrid[:h, :w]
    lab = np.zeros((h, w), np.int32)
    for i, (cy, cx, r) in enumerate([(60, 60, 40), (150, 250, 50), (240, 440, 45)], start=1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return lab


def test_review_regions_sizes_inside_non_overlapping_and_ranked():
    rng = np.random.default_rng(0)
    h, w = 300, 500
    u = rng.uniform(0, 0.05, (h, w)).astype(np.float32)
    u[230:260, 470:498] = 0.9  # an uncertain spot at the bottom-right edge
    lab = _disc_instances(h, w)
    regions = review_regions(None, uncertainty_map=u, instances=lab, n=10, min_size=128, context=16)
    assert 1 <= len(regions) <= 10
    scores = [s for s, _ in regions]
    assert scores == sorted(scores, reverse=True)
    for _, (y0, x0, y1, x1) in regions:
        assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
        assert y1 - y0 >= 128 and x1 - x0 >= 128  # shifted inside, never a sliver
    for i, (_, a) in enumerate(regions):
        for _, b in regions[i + 1:]:
            assert not _overlap(a, b)
    y0, x0, y1, x1 = regions[0][1]
    assert y0 <= 230 and y1 >= 260 and x0 <= 470 and x1 >= 498  # the uncertain spot comes first
    assert 0.0 <= regions[-1][0] <= regions[0][0] <= 1.0


def test_review_regions_prefers_the_uncertain_gland_and_small_images():
    h, w = 300, 500
    lab = _disc_instances(h, w)
    u = np.full((h, w), 0.02, np.float32)
    u[lab == 2] = 0.5
    top = review_regions(None, uncertainty_map=u, instances=lab, n=3)[0][1]
    cy, cx = (top[0] + top[2]) / 2, (top[1] + top[3]) / 2
    assert abs(cy - 150) < 50 and abs(cx - 250) < 50
    # glass scores nothing even when the map is high there
    tissue = np.ones((h, w), bool)
    tissue[:, :200] = False
    u2 = np.full((h, w), 0.1, np.float32)
    u2[:, :200] = 1.0
    best = review_regions(None, uncertainty_map=u2, instances=np.zeros((h, w), np.int32), tissue=tissue, n=1)[0][1]
    assert best[1] >= 200
    # an image smaller than min_size: one box, the whole image
    small = review_regions(None, uncertainty_map=np.ones((60, 90), np.float32), n=5, min_size=128)
    assert [b for _, b in small] == [(0, 0, 60, 90)]


def test_review_regions_from_a_prediction_like_object():
    class P:
        pass

    p = P()
    p.labels = (_disc_instances() > 0).astype(np.uint8)
    p.uncertainty = np.zeros(p.labels.shape, np.float32)
    p.uncertainty[140:160, 240:260] = 1.0
    img = np.full(p.labels.shape + (3,), (150, 60, 140), np.uint8)
    regions = review_regions(p, img, n=2, min_size=100)
    assert len(regions) == 2 and regions[0][0] > regions[1][0]
    y0, x0, y1, x1 = regions[0][1]
    assert y0 <= 140 and y1 >= 160 and x0 <= 240 and x1 >= 260


def test_display_range_is_robust_over_tissue():
    m = np.zeros((100, 100), np.float32)
    m[:, :50] = np.linspace(0.0, 0.08, 50)  # a faint map over tissue
    m[0, 0] = 50.0  # one outlier
    tissue = np.zeros_like(m, bool)
    tissue[:, :50] = True
    m[:, 50:] = 0.9  # glass, ignored
    lo, hi = display_range(m, tissue)
    assert 0.0 <= lo < 0.01 and 0.07 < hi <= 0.0801
    lo, hi = display_range(np.full((5, 5), 0.3), np.ones((5, 5), bool))
    assert lo == pytest.approx(0.3) and hi > lo
    lo, hi = display_range(m, np.zeros_like(tissue))  # no tissue: all pixels
    assert hi > lo


def test_gland_table_and_instance_labels():
    lab = _disc_instances()
    u = np.zeros(lab.shape, np.float32)
    u[lab == 2] = 0.4
    rows = gland_table(lab, u)
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert rows[1]["mean_uncertainty"] == pytest.approx(0.4)
    assert rows[0]["mean_uncertainty"] == 0.0
    assert rows[0]["area"] == int((lab == 1).sum())
    assert rows[0]["bbox"] == (20, 20, 101, 101)
    assert gland_table(np.zeros((4, 4), np.int32), np.zeros((4, 4))) == []
    # instance labels: two touching discs become two glands, a speck is dropped
    mask = np.zeros((200, 300), np.uint8)
    yy, xx = np.mgrid[:200, :300]
    mask[(yy - 100) ** 2 + (xx - 90) ** 2 <= 50 ** 2] = 1
    mask[(yy - 100) ** 2 + (xx - 185) ** 2 <= 50 ** 2] = 1
    mask[5:10, 5:10] = 1
    inst = instance_labels(mask)
    assert inst.dtype == np.int32 and inst.max() == 2 and inst[7, 7] == 0
    assert inst[100, 90] != inst[100, 185]
    assert DEFAULT_INSTANCES == PostprocessConfig(min_size=1600, fill_holes=True, split_h=16.0)


# --------------------------------------------------------------------------- Prediction.uncertainty

class _PixelModel(torch.nn.Module):
    """Three 'branches' that read the red channel: confident where it is far from 0.5."""

    def forward(self, x):
        z = x[:, 0] - 0.5
        return tuple(torch.stack([-s * z, s * z], dim=1) for s in (18.0, 20.0, 22.0))


def _synthetic_case():
    rng = np.random.default_rng(1)
    img = np.zeros((96, 130, 3), np.uint8)
    img[..., 1:] = 90
    truth = np.zeros((96, 130), bool)
    truth[20:70, 30:100] = True
    red = np.where(truth, 230, 25).astype(np.float64)
    red[40:60, 60:90] = 112  # gland the model is unsure about, and gets wrong (red < 127.5 -> background)
    img[..., 0] = np.clip(red + rng.normal(0, 2, red.shape), 0, 255).astype(np.uint8)
    return img, truth


def test_prediction_uncertainty_is_in_unit_range_and_finds_the_error_region():
    from src_model.inference import predict

    img, truth = _synthetic_case()
    pred = predict(_PixelModel(), img, tile=64, overlap=0.25)
    u = pred.uncertainty
    assert u.shape == truth.shape and u.dtype == np.float32
    assert float(u.min()) >= 0.0 and float(u.max()) <= 1.0
    wrong = (pred.labels > 0) != truth
    assert wrong[45:55, 65:85].all()  # the synthetic error region
    assert u[wrong].mean() > 5 * u[~wrong].mean()
    # ranks it first: every wrong pixel scores above the 90th percentile of the right ones
    assert u[wrong].min() > np.percentile(u[~wrong], 90)
    np.testing.assert_allclose(u, pred.entropy - pred.disagreement, atol=1e-5)  # expected entropy
    top = review_regions(pred, img, n=1, min_size=32, context=4)[0][1]
    assert top[0] <= 45 and top[2] >= 55 and top[1] <= 65 and top[3] >= 85


def test_tta_option_matches_plain_for_a_pixelwise_model_and_reports_progress():
    from src_model.inference import predict

    img, _ = _synthetic_case()
    plain = predict(_PixelModel(), img, tile=64, overlap=0.25)
    events = []
    for tta in (4, True):
        pred = predict(_PixelModel(), img, tile=64, overlap=0.25, tta=tta, callback=events.append)
        np.testing.assert_allclose(pred.probability, plain.probability, atol=1e-5)
        np.testing.assert_allclose(pred.uncertainty, pred.entropy, atol=1e-6)
        assert float(pred.uncertainty.min()) >= 0.0 and float(pred.uncertainty.max()) <= 1.0
    assert events[-1].step == events[-1].total and events[-1].total == 8 * (events[0].total // 4)
    with pytest.raises(ValueError, match="tta"):
        predict(_PixelModel(), img, tile=64, tta=3)


def test_review_regions_sharpen_prefers_hot_spots_over_broad_moderate_uncertainty():
    u = np.zeros((128, 512), np.float32)
    u[:, :128] = 0.3  # broad moderate uncertainty (mean 0.3)
    u[40:70, 300:330] = 1.0  # a hot spot (mean over a 128 box: 0.055)
    plain = review_regions(None, uncertainty_map=u, n=1, sharpen=1.0)[0][1]
    sharp = review_regions(None, uncertainty_map=u, n=1)[0][1]
    assert plain[3] <= 128 + 32 and sharp[1] <= 300 and sharp[3] >= 330
    with pytest.raises(ValueError):
        review_regions(None, uncertainty_map=u, sharpen=0)
