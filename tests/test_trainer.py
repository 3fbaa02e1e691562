"""The trainer: overfits real GlaS patches, yields progress, cancels, checkpoints, resumes."""
import numpy as np
import pytest
import torch

from src_model import build_model, load_checkpoint
from src_model.checkpoint import read_checkpoint
from src_model.data import AugmentConfig, load_pairs
from src_model.progress import drain
from src_model.runtime import resolve_device
from src_model.trainer import TrainConfig, train

NO_AUG = AugmentConfig(flip_p=0, rot90_p=0, color_jitter=0, noise_p=0)


@pytest.fixture(scope="module")
def patches(glas_dir):
    """Four fixed 96x96 crops of real GlaS training images (tests/data/glas: 320 x 320 top-left crops)."""
    out = []
    for img, mask in load_pairs(glas_dir, ["train_1", "train_2", "train_5", "train_10"]):
        out.append((img[100:196, 200:296].copy(), (mask[100:196, 200:296] > 0).astype(np.uint8)))
    return out


def small_config(**kw):
    base = dict(steps=4, batch_labelled=2, batch_unlabelled=2, patch=64, warmup_steps=0, checkpoint_every=2,
                device="cpu", seed=0)
    base.update(kw)
    return TrainConfig(**base)


def dice(pred, gt):
    return 2 * np.logical_and(pred, gt).sum() / (pred.sum() + gt.sum())


def test_overfits_a_handful_of_real_glas_patches(tmp_path, patches):
    torch.manual_seed(0)
    model = build_model("lite")
    cfg = small_config(steps=150, batch_labelled=4, batch_unlabelled=4, patch=96, lr=3e-3, augment=NO_AUG,
                       lr_schedule="constant", checkpoint_every=0)
    result = drain(train(model, patches, [p[0] for p in patches], cfg, tmp_path))
    model.eval()
    with torch.inference_mode():
        x = torch.from_numpy(np.stack([p[0] for p in patches])).permute(0, 3, 1, 2).float() / 255
        probs = torch.stack([torch.softmax(z, 1) for z in model(x)]).mean(0)
    pred = probs.argmax(1).numpy() > 0
    gt = np.stack([p[1] for p in patches]) > 0
    assert dice(pred, gt) > 0.9, dice(pred, gt)
    assert result.history[-1]["sup"] < result.history[0]["sup"]


def test_progress_events_checkpoints_and_provenance(tmp_path, patches):
    torch.manual_seed(0)
    events = []
    result = drain(train(build_model("lite"), patches, [], small_config(), tmp_path, provenance={"who": "test"}),
                   events.append)
    assert [e.step for e in events] == [1, 2, 3, 4]
    assert all(e.total == 4 and e.stage == "train" for e in events)
    assert {"loss", "sup", "cdkd", "ent", "lr"} <= set(events[0].metrics)
    assert events[-1].eta_s == pytest.approx(0.0)
    data = read_checkpoint(result.checkpoint)
    assert data["step"] == 4 and "optimizer" in data and data["provenance"]["who"] == "test"
    assert data["provenance"]["train_config"]["steps"] == 4
    assert load_checkpoint(result.checkpoint).training is False


def test_cancel_between_steps_still_writes_a_checkpoint(tmp_path, patches):
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] > 2

    result = drain(train(build_model("lite"), patches, [], small_config(steps=50), tmp_path, cancel=cancel))
    assert result.cancelled and result.steps_done == 2
    assert read_checkpoint(result.checkpoint)["provenance"]["cancelled"] is True


def test_resume_continues_where_it_stopped_and_matches_uninterrupted(tmp_path, patches):
    torch.manual_seed(0)
    full = build_model("lite")
    drain(train(full, patches, [], small_config(steps=4, checkpoint_every=2), tmp_path / "full"))
    torch.manual_seed(0)
    part = build_model("lite")
    stop = {"n": 0}
    drain(train(part, patches, [], small_config(steps=4, checkpoint_every=2), tmp_path / "part",
                cancel=lambda: (stop.__setitem__("n", stop["n"] + 1), stop["n"] > 2)[1]))
    resumed = build_model("lite")
    result = drain(train(resumed, patches, [], small_config(steps=4, checkpoint_every=2), tmp_path / "part",
                         resume=tmp_path / "part" / "last.pt"))
    assert result.steps_done == 4 and [h["step"] for h in result.history] == [3, 4]


def test_deterministic_on_cpu_with_a_seed(tmp_path, patches):
    outs = []
    for k in range(2):
        torch.manual_seed(123)
        r = drain(train(build_model("lite"), patches, [p[0] for p in patches], small_config(steps=3),
                        tmp_path / str(k)))
        outs.append([h["loss"] for h in r.history])
    assert outs[0] == outs[1]


def test_supervised_only_ignores_unlabelled_stream(tmp_path, patches):
    r = drain(train(build_model("lite"), patches, [p[0] for p in patches], small_config(unsupervised=False),
                    tmp_path))
    assert all(h["w"] == 0 and h["cdkd"] == 0 for h in r.history)


def test_device_auto_is_cpu_without_cuda(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without CUDA
    assert resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device(name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_auto_is_cuda_when_available():
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("cuda").type == "cuda"
