"""Tiled inference: shapes, blending without seams, progress, branch choice, fast path = plain model."""
import numpy as np
import pytest
import torch
from torch import nn

from src_model import build_model
from src_model import inference as inf
from src_model.inference import Prediction, predict, predict_tiles, tile_starts
from src_model.io import read_image
from src_model.model.fast import FastMTNet
from src_model.model.norms import FrozenBatchNorm2d
from src_model.progress import drain
from src_model.uncertainty import disagreement, entropy, vote


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # the test machine is shared; one thread keeps timings stable and avoids oversubscription
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _with_running_stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm non-trivial running statistics so that folding is really tested."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "running_mean") and m.running_mean is not None:
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=gen) * 0.2 - 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def lite():
    torch.manual_seed(0)
    return _with_running_stats(build_model("lite"))


@pytest.fixture(scope="module")
def crop(glas_dir):
    """A real 300 x 517 piece of GlaS tissue: a size that is no multiple of the tile."""
    return read_image(glas_dir / "images" / "testA_1.png")[:300, :517]


@pytest.fixture(scope="module")
def crop_prediction(lite, crop):
    return predict(lite, crop, tile=256, overlap=0.25, return_branches=True)


class Pointwise(nn.Module):
    """Three 'branches' whose output at a pixel depends on that pixel only (1x1 convolutions)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.heads = nn.ModuleList([nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 2, 1)) for _ in range(3)])

    def forward(self, x):
        return tuple(h(x) for h in self.heads)


def test_shapes_dtypes_ranges_non_multiple_size(crop_prediction):
    pr = crop_prediction
    assert isinstance(pr, Prediction)
    assert pr.probability.shape == (2, 300, 517) and pr.probability.dtype == np.float32
    assert pr.labels.shape == (300, 517) and pr.labels.dtype == np.uint8
    assert pr.branch_probs.shape == (3, 2, 300, 517) and pr.branch_probs.dtype == np.float32
    assert np.allclose(pr.probability.sum(0), 1.0, atol=1e-5)
    assert np.allclose(pr.branch_probs.sum(1), 1.0, atol=1e-5)
    assert np.allclose(pr.probability, pr.branch_probs.mean(0), atol=1e-6)
    assert np.array_equal(pr.foreground, pr.probability[1])
    assert np.array_equal(pr.labels, pr.probability.argmax(0))
    for name in ("disagreement", "entropy", "vote"):
        m = getattr(pr, name)
        assert m.shape == (300, 517) and m.dtype == np.float32
        assert m.min() >= 0.0 and m.max() <= 1.0


def test_uncertainty_maps_match_src_model_uncertainty(crop_prediction):
    pr = crop_prediction
    bp = torch.from_numpy(pr.branch_probs)
    assert np.allclose(pr.disagreement, disagreement(bp).numpy(), atol=1e-6)
    assert np.allclose(pr.entropy, entropy(bp).clamp(0, 1).numpy(), atol=1e-6)
    assert np.array_equal(pr.vote, vote(bp).numpy())


def test_tiny_image_is_padded_and_cropped(lite):
    img = np.random.default_rng(3).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    events = []
    pr = predict(lite, img, callback=events.append)
    assert pr.probability.shape == (2, 40, 50) and pr.labels.shape == (40, 50)
    assert pr.branch_probs is None
    assert [(e.step, e.total) for e in events] == [(1, 1)]
    one_px = predict(Pointwise(), np.full((1, 3, 3), 200, dtype=np.uint8), tile=32)
    assert one_px.probability.shape == (2, 1, 3)


def test_progress_counts_up_to_total(lite, crop):
    events = []
    result = drain(predict_tiles(lite, crop, tile=256, overlap=0.25, batch_size=4), events.append)
    n_tiles = len(tile_starts(300, 256, 0.25)) * len(tile_starts(517, 256, 0.25))
    assert n_tiles == 6
    assert [e.step for e in events] == [4, 6]
    assert all(e.total == n_tiles and e.stage == "predict" for e in events)
    assert events[-1].eta_s == 0.0
    assert isinstance(result, Prediction)


def test_tile_starts_cover_with_overlap():
    for length in (256, 257, 300, 517, 775, 2000):
        starts = tile_starts(length, 256, 0.25)
        assert starts[0] == 0 and starts[-1] + 256 == max(length, 256)
        gaps = np.diff(starts)
        assert (gaps <= 192).all() and (gaps > 0).all()
    assert tile_starts(100, 256, 0.25) == [0]


def test_blending_is_exact_for_a_pointwise_model():
    """Weights are normalised exactly: tiling a pixel-local model changes nothing, anywhere."""
    model = Pointwise()
    img = np.random.default_rng(4).integers(0, 256, (150, 223, 3), dtype=np.uint8)
    pr = predict(model, img, tile=64, overlap=0.25, return_branches=True)
    with torch.no_grad():
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        full = torch.stack([torch.softmax(z, 1)[0] for z in model(x)]).numpy()
    assert np.allclose(pr.branch_probs, full, atol=1e-5)
    assert np.allclose(pr.probability, full.mean(0), atol=1e-5)


def _seam_ratio(pred: Prediction, width: int) -> float:
    """Mean horizontal gradient at tile edges / mean horizontal gradient everywhere."""
    fg = pred.foreground.astype(np.float64)
    gx = np.abs(np.diff(fg, axis=1))
    starts = tile_starts(width, 256, 0.25)
    edges = sorted({s for s in starts if s > 0} | {s + 256 for s in starts if s + 256 < width})
    return float(gx[:, [e - 1 for e in edges]].mean() / gx.mean())


def test_no_seams_at_tile_edges(lite, crop, crop_prediction, monkeypatch):
    blended = _seam_ratio(crop_prediction, crop.shape[1])
    assert blended < 2.0
    # the statistic does detect seams: plain averaging of tiles (flat window) shows them
    monkeypatch.setattr(inf, "blend_window", lambda tile, floor=0.0: torch.ones(tile, tile))
    flat = _seam_ratio(predict(lite, crop, tile=256, overlap=0.25), crop.shape[1])
    assert flat > 3.0 * blended


def test_blend_window_smooth_and_never_zero():
    w = inf.blend_window(256)
    assert w.shape == (256, 256) and float(w.min()) > 0
    assert torch.allclose(w, w.T) and float(w.max()) <= 1.0
    assert float(w[128, 128]) > 0.99


def test_branch_one_uses_only_decoder1(lite, crop_prediction, crop):
    calls = {1: 0, 2: 0, 3: 0}
    handles = [getattr(lite, f"decoder{i}").register_forward_hook(
        lambda *_, i=i: calls.__setitem__(i, calls[i] + 1)) for i in (1, 2, 3)]
    try:
        pr = predict(lite, crop, tile=256, overlap=0.25, branch=1, return_branches=True)
    finally:
        for h in handles:
            h.remove()
    assert calls[1] > 0 and calls[2] == 0 and calls[3] == 0
    assert pr.branch_probs.shape == (1, 2, 300, 517)
    assert np.allclose(pr.probability, crop_prediction.branch_probs[0], atol=1e-5)
    assert not pr.disagreement.any() and not pr.vote.any()  # one branch cannot disagree
    with pytest.raises(ValueError, match="branch"):
        predict(lite, crop, branch=4)


@pytest.mark.parametrize("preset_kw", [dict(), dict(encoder_norm="frozen_bn"), dict(encoder_norm="group")])
def test_fast_model_matches_plain_model(preset_kw):
    torch.manual_seed(5)
    model = _with_running_stats(build_model("lite", **preset_kw), seed=5)
    x = torch.rand(2, 3, 128, 96)
    fast = FastMTNet(model)
    norms = (nn.BatchNorm2d, FrozenBatchNorm2d)
    assert fast.folded == sum(isinstance(m, norms) for m in model.modules())
    assert not any(isinstance(m, norms) for m in fast.modules())
    with torch.inference_mode():
        plain = torch.stack(model(x), 1)
        quick = fast(x)
    assert quick.shape == (2, 3, 2, 128, 96)
    assert torch.allclose(quick, plain, atol=1e-4, rtol=0)
    assert torch.allclose(torch.softmax(quick, 2), torch.softmax(plain, 2), atol=1e-5)


def test_fast_and_plain_predictions_agree_and_source_model_untouched(lite, crop_prediction, crop):
    before = {k: v.clone() for k, v in lite.state_dict().items()}
    lite.train()
    plain = predict(lite, crop, tile=256, overlap=0.25, fast=False, return_branches=True)
    assert lite.training  # the caller's mode is restored
    lite.eval()
    assert np.abs(plain.branch_probs - crop_prediction.branch_probs).max() < 1e-4
    assert all(torch.equal(before[k], v) for k, v in lite.state_dict().items())


def test_single_decoder_model_predicts_with_zero_disagreement():
    torch.manual_seed(0)
    model = build_model("lite", branches=("cbam",))
    image = np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    pred = predict(model, image, tile=64)
    assert pred.labels.shape == (70, 90)
    assert float(pred.disagreement.max()) == 0.0
    with pytest.raises(ValueError):
        predict(model, image, branch=2)


def test_bf16_precision_gives_nearly_the_same_prediction(glas_dir):
    torch.manual_seed(0)
    model = build_model("lite")
    image = read_image(glas_dir / "images" / "testA_1.png")[:200, :300]
    a = predict(model, image, tile=128)
    b = predict(model, image, tile=128, precision="bf16")
    assert np.abs(a.probability - b.probability).max() < 0.05
    assert (a.labels == b.labels).mean() > 0.98
    with pytest.raises(ValueError):
        predict(model, image, precision="fp8")
