"""Fine-tuning recipes (src_model.finetune): each regulariser does what it claims, on tiny real runs
from the bundled model on GlaS crops of tests/data."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from src_model.checkpoint import load_model
from src_model.data import load_images, load_pairs
from src_model.finetune import (
    RECIPES,
    DistillHook,
    EMAHook,
    L2SPHook,
    default_steps,
    distill_loss,
    finetune,
    get_recipe,
    softened_mean,
)
from src_model.inference import predict
from src_model.progress import drain

FAST = {"patch": 96, "batch_labelled": 2, "batch_unlabelled": 2}


@pytest.fixture(scope="module")
def data(glas_dir):
    (image, mask), = load_pairs(glas_dir, ["testA_1"])
    # A "correction" that contradicts the model: no gland anywhere in a gland-rich crop. Fine-tuning on it
    # pulls every prediction towards background unless something holds the old answers.
    crop = image[100:356, 200:456]
    labelled = [(crop, np.zeros(crop.shape[:2], np.uint8))]
    unlabelled = load_images(glas_dir, ["testA_2"])
    untouched = load_images(glas_dir, ["testB_4"])[0]
    return labelled, unlabelled, untouched


def _run(tmp_path, data, recipe, steps=6, semi_supervised=True, **change):
    labelled, unlabelled, _ = data
    r = dataclasses.replace(get_recipe(recipe), **{"lr": 1e-3, **change})  # a large step, so a few steps show
    out = tmp_path / f"{recipe}-{semi_supervised}-{sorted(change.items())}"
    torch.set_num_threads(1)
    result = drain(finetune("bundled", labelled, unlabelled, out, recipe=r, steps=steps,
                            semi_supervised=semi_supervised, seed=0, device="cpu", overrides=FAST))
    return result, load_model(result.checkpoint)


def _gland_probability(model, image):
    return predict(model, image, tile=256, overlap=0.25, device="cpu").probability[1]


def test_default_recipe_and_its_distillation_keep_untouched_tissue_closer_to_the_previous_model(tmp_path, data):
    untouched = data[2]
    before = _gland_probability(load_model(None), untouched)

    def drift(recipe):
        result, model = _run(tmp_path, data, recipe)
        return result, float(np.abs(_gland_probability(model, untouched) - before).mean())

    _, plain = drift("plain")
    _, default = drift("default")
    assert plain > 0.1  # the contradicting correction really moved the plain fine-tune
    assert default < 0.7 * plain
    # the distillation term itself: the same recipe with and without it
    _, without = drift("freeze_bn")
    result, with_distill = drift("distill_bn")
    assert all(h["distill"] > 0 for h in result.history)
    assert with_distill < 0.9 * without


def test_supervised_only_distils_on_replayed_unlabelled_patches(tmp_path, data):
    result, _ = _run(tmp_path, data, "distill", steps=2, semi_supervised=False)
    assert all(h["cdkd"] == 0 and h["ent"] == 0 for h in result.history)  # the CDMA terms are off
    assert all(h["distill"] > 0 for h in result.history)  # but the previous model still speaks


def test_frozen_encoder_and_frozen_batchnorm_statistics(tmp_path, data):
    start = load_model(None).state_dict()
    _, frozen = _run(tmp_path, data, "freeze_bn", steps=3, encoder_lr=0.0)
    _, plain = _run(tmp_path, data, "plain", steps=3)
    after, moved = frozen.state_dict(), plain.state_dict()
    enc_w = [k for k in start if k.startswith("encoder.") and k.endswith("weight")]
    stats = [k for k in start if k.endswith("running_mean")]
    assert enc_w and stats
    assert all(torch.allclose(after[k], start[k], atol=1e-6) for k in enc_w)  # encoder updates x0
    assert all(torch.equal(after[k], start[k]) for k in stats)  # statistics kept
    assert any(not torch.equal(moved[k], start[k]) for k in stats)  # (plain moves them)
    dec_w = [k for k in start if k.startswith("decoder") and k.endswith("weight")]
    assert any(not torch.allclose(after[k], start[k]) for k in dec_w)  # the rest still learns


def test_ema_result_lies_between_start_and_raw_weights(tmp_path, data):
    start = load_model(None).state_dict()
    raw_result, raw = _run(tmp_path, data, "plain", steps=3)
    ema_result, ema = _run(tmp_path, data, "plain", steps=3, ema=0.5)
    key = next(k for k in start if k.startswith("encoder.") and k.endswith("weight"))
    d_raw = (raw.state_dict()[key] - start[key]).norm()
    d_ema = (ema.state_dict()[key] - start[key]).norm()
    assert 0 < d_ema < d_raw
    from src_model.checkpoint import read_checkpoint

    assert read_checkpoint(ema_result.checkpoint)["provenance"]["weights"] == "ema"


def test_distill_loss_is_zero_for_the_teacher_itself_and_pulls_towards_it():
    torch.manual_seed(0)
    teacher = [torch.randn(2, 2, 8, 8) for _ in range(3)]
    target = softened_mean(teacher, 2.0)
    same = [torch.log(target) * 2.0] * 3  # logits whose softened softmax is the teacher's mean
    assert float(distill_loss(same, target, 2.0)) == pytest.approx(0.0, abs=1e-5)
    student = [torch.zeros(2, 2, 8, 8, requires_grad=True) for _ in range(3)]
    loss = distill_loss(student, target, 2.0)
    loss.backward()
    assert float(loss.detach()) > 0 and all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)


def test_l2sp_and_ema_hooks_on_a_small_module():
    net = torch.nn.Linear(3, 2)

    class T:  # the two attributes a hook reads from the trainer
        model = net
        device = torch.device("cpu")

    l2 = L2SPHook(net, alpha=2.0)
    assert float(l2.extra_loss(T, None, [], 0)["l2sp"]) == 0.0
    ema = EMAHook(net, decay=0.5)
    with torch.no_grad():
        net.weight.add_(1.0)
    assert float(l2.extra_loss(T, None, [], 0)["l2sp"]) == pytest.approx(0.5 * 2.0 * 6)  # 6 weights moved by 1
    start = ema.shadow["weight"].clone()
    ema.after_step(T)
    assert torch.allclose(ema.shadow["weight"], start + 0.5)


def test_distill_hook_without_unlabelled_patches_or_replay_adds_nothing():
    hook = DistillHook(torch.nn.Identity(), 1.0, 2.0)
    assert hook.extra_loss(None, torch.zeros(2, 3, 4, 4), [torch.zeros(2, 2, 4, 4)], n_labelled=2) == {}


def test_recipes_by_name_and_default_steps():
    assert {"default", "plain"} <= set(RECIPES) and RECIPES["plain"].distill == 0 and RECIPES["default"].distill > 0
    with pytest.raises(ValueError, match="valid: plain"):
        get_recipe("nope")
    tile = (np.zeros((256, 256, 3), np.uint8), np.zeros((256, 256), np.uint8))
    region = (np.zeros((128, 128, 3), np.uint8), np.zeros((128, 128), np.uint8))  # a session's review region
    for r in RECIPES.values():  # more corrected pixels never mean fewer steps, always within the recipe's range
        steps = [default_steps(r, [tile] * n) for n in range(1, 16)]
        assert steps == sorted(steps) and r.min_steps <= steps[0] and steps[-1] == r.max_steps
    r = RECIPES["default"]
    assert default_steps(r, [tile] * 10) == r.max_steps  # the dock's 10 regions: its 3-minute budget
    assert default_steps(r, [tile]) == r.min_steps < default_steps(r, [tile] * 5) < r.max_steps
    # the annotation-session candidates: a session round (4 trained 128-px regions, one tile) trains at least
    # 3 times the default's steps, and the dock's 10 regions no more than 130 (its turnaround)
    for name in ("more_steps", "more_steps_enc1", "more_steps_enc03", "more_steps_enc1_d3", "more_steps_lr1e3"):
        c = RECIPES[name]
        assert default_steps(c, [region] * 4) >= 3 * default_steps(r, [region] * 4)
        assert default_steps(c, [tile] * 10) == c.max_steps <= 130


def test_fine_tuning_never_trains_on_the_check_strip_of_its_unlabelled_images(tmp_path, data, monkeypatch):
    """With reserve_check, the distillation's replay patches come from the rest of each image only, never
    from its check strip (src_model.agreement.check_box), where agreement(..., reserved=True) compares."""
    import src_model.finetune as ft
    from src_model.agreement import check_box
    from src_model.checkpoint import read_checkpoint

    seen = []

    class Recording(ft.PatchSampler):
        def __init__(self, images, *a, **kw):
            seen.append([img.shape for img in images])
            super().__init__(images, *a, **kw)

    monkeypatch.setattr(ft, "PatchSampler", Recording)
    unlabelled = data[1]
    labelled, _, _ = data
    result = drain(finetune("bundled", labelled, unlabelled, tmp_path / "strip", recipe="default", steps=1,
                            semi_supervised=False, device="cpu", overrides=FAST, reserve_check=True))
    (shapes,) = seen
    strip = check_box(unlabelled[0].shape)
    assert strip is not None and shapes == [(unlabelled[0].shape[0], strip[1], 3)]
    assert read_checkpoint(result.checkpoint)["provenance"]["reserve_check"] is True
    _run(tmp_path, data, "default", steps=1, semi_supervised=False)  # the default trains on all of it
    assert seen[1] == [unlabelled[0].shape]
