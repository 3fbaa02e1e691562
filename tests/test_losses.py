"""Each CDMA loss against a direct computation of its formula on random tensors."""
import math

import pytest
import torch

from src_model.losses import cdkd_loss, cdma_loss, entropy_loss, kd_loss, ramp_weight, soft_dice_loss, supervised_loss


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(3, 2, 5, 4, generator=g) * 3 for _ in range(3)]


@pytest.fixture
def target():
    return torch.randint(0, 2, (3, 5, 4), generator=torch.Generator().manual_seed(1))


def direct_dice(p, y):
    """Per class over the whole batch: 1 - mean_c (2 sum p g + s) / (sum p^2 + sum g^2 + s)."""
    vals = []
    for c in range(p.shape[1]):
        pc = p[:, c].flatten().tolist()
        gc = [1.0 if v == c else 0.0 for v in y.flatten().tolist()]
        inter = sum(a * b for a, b in zip(pc, gc, strict=True))
        den = sum(a * a for a in pc) + sum(b * b for b in gc)
        vals.append((2 * inter + 1e-5) / (den + 1e-5))
    return 1 - sum(vals) / len(vals)


def direct_ce(z, y):
    total, n = 0.0, 0
    for b in range(z.shape[0]):
        for i in range(z.shape[2]):
            for j in range(z.shape[3]):
                col = z[b, :, i, j].tolist()
                lse = math.log(sum(math.exp(v) for v in col))
                total += lse - col[int(y[b, i, j])]
                n += 1
    return total / n


def softmax_list(col, t=1.0):
    e = [math.exp(v / t) for v in col]
    s = sum(e)
    return [v / s for v in e]


def direct_kd(zs, zt, T):
    total, n = 0.0, 0
    for b in range(zs.shape[0]):
        for i in range(zs.shape[2]):
            for j in range(zs.shape[3]):
                ps = softmax_list(zs[b, :, i, j].tolist(), T)
                pt = softmax_list(zt[b, :, i, j].tolist(), T)
                total += sum(a * math.log(a / c) for a, c in zip(pt, ps, strict=True))
                n += 1
    return T * T * total / n


def test_soft_dice_matches_formula(logits, target):
    p = torch.softmax(logits[0], 1)
    assert soft_dice_loss(p, target).item() == pytest.approx(direct_dice(p, target), rel=1e-5)


def test_supervised_is_mean_over_branches_of_half_dice_half_ce(logits, target):
    expected = sum(0.5 * direct_dice(torch.softmax(z, 1), target) + 0.5 * direct_ce(z, target) for z in logits) / 3
    assert supervised_loss(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_kd_matches_formula_and_detaches_teacher(logits):
    s = logits[0].clone().requires_grad_()
    t = logits[1].clone().requires_grad_()
    val = kd_loss(s, t, 10.0)
    assert val.item() == pytest.approx(direct_kd(logits[0], logits[1], 10.0), rel=1e-4)
    val.backward()
    assert s.grad is not None and t.grad is None


def test_cdkd_sums_six_ordered_pairs_over_three(logits):
    expected = sum(direct_kd(logits[a], logits[b], 10.0) for a in range(3) for b in range(3) if a != b) / 3
    assert cdkd_loss(logits, 10.0).item() == pytest.approx(expected, rel=1e-4)


def test_entropy_of_mean_probability_normalised(logits):
    total, n = 0.0, 0
    for b in range(3):
        for i in range(5):
            for j in range(4):
                ps = [softmax_list(z[b, :, i, j].tolist()) for z in logits]
                pm = [sum(p[c] for p in ps) / 3 for c in range(2)]
                total += -sum(v * math.log(v) for v in pm)
                n += 1
    assert entropy_loss(logits).item() == pytest.approx(total / n / math.log(2), rel=1e-5)


def test_total_combines_terms_with_weights(logits, target):
    out = cdma_loss(logits, target, n_labelled=2, weight=0.5)
    sup = supervised_loss([z[:2] for z in logits], target[:2])
    expected = sup + 0.5 * (0.1 * cdkd_loss(logits) + 0.1 * entropy_loss(logits))
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    off = cdma_loss(logits, target, n_labelled=2, weight=0.0)
    assert off["loss"].item() == pytest.approx(sup.item(), rel=1e-6)


def test_unlabelled_targets_do_not_touch_supervised_term(logits, target):
    other = target.clone()
    other[2] = 1 - other[2]
    a = cdma_loss(logits, target, n_labelled=2, weight=1.0)["loss"]
    b = cdma_loss(logits, other, n_labelled=2, weight=1.0)["loss"]
    assert a.item() == pytest.approx(b.item())


def test_ramp_weight_schedules():
    assert ramp_weight(14, 15) == 0.0 and ramp_weight(15, 15) == 1.0
    assert ramp_weight(10, 10, "sigmoid", 100) == pytest.approx(math.exp(-5))
    assert ramp_weight(60, 10, "sigmoid", 100) == pytest.approx(math.exp(-5 * 0.25))
    assert ramp_weight(500, 10, "sigmoid", 100) == 1.0
    with pytest.raises(ValueError):
        ramp_weight(20, 10, "cosine", 5)


def direct_weighted_ce(z, y, w):
    total, norm = 0.0, 0.0
    for b in range(z.shape[0]):
        for i in range(z.shape[2]):
            for j in range(z.shape[3]):
                col = z[b, :, i, j].tolist()
                lse = math.log(sum(math.exp(v) for v in col))
                total += float(w[b, i, j]) * (lse - col[int(y[b, i, j])])
                norm += float(w[b, i, j])
    return total / norm


def test_pixel_weighted_supervised_loss_weighs_only_the_ce_term(logits, target):
    w = torch.ones(target.shape)
    w[:, 1:3, 2:] = 5.0  # a boundary band weighs 5x
    expect = sum(0.5 * direct_dice(torch.softmax(z, 1), target) + 0.5 * direct_weighted_ce(z, target, w)
                 for z in logits) / 3
    assert supervised_loss(logits, target, w).item() == pytest.approx(expect, rel=1e-5)
    # a map of ones is the unweighted loss; the weighted one differs
    assert supervised_loss(logits, target, torch.ones(target.shape)).item() == pytest.approx(
        supervised_loss(logits, target).item(), rel=1e-6)
    assert abs(supervised_loss(logits, target, w).item() - supervised_loss(logits, target).item()) > 1e-3


def test_zero_term_weights_switch_the_unsupervised_terms_off(logits, target):
    out = cdma_loss(logits, target, 2, 1.0, cdkd_weight=0.0, ent_weight=0.0)
    assert out["cdkd"].item() == 0 and out["ent"].item() == 0
    assert out["loss"].item() == pytest.approx(supervised_loss([z[:2] for z in logits], target[:2]).item())
