"""The semi-supervision study: the mean-teacher hook and the paired statistics of benchmarks/ssl_study.py."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from src_model import build_model
from src_model.data import AugmentConfig, TwoStreamPatches, load_pairs
from src_model.mean_teacher import MeanTeacher, consistency_loss, ema_decay
from src_model.trainer import CDMATrainer, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
NO_AUG = AugmentConfig(flip_p=0, rot90_p=0, color_jitter=0, noise_p=0)


@pytest.fixture(scope="module")
def batch(glas_dir):
    pairs = load_pairs(glas_dir, ["train_1", "train_2"])
    return next(iter(TwoStreamPatches(pairs, [p[0] for p in pairs], 2, 2, 64, seed=0, augment_cfg=NO_AUG)))


def make_trainer(model, hook):
    cfg = TrainConfig(steps=10, batch_labelled=2, batch_unlabelled=2, patch=64, warmup_steps=0, ramp="step",
                      cdkd_weight=0.0, ent_weight=0.0, device="cpu", lr=1e-2)
    trainer = CDMATrainer(model, cfg, torch.device("cpu"), [hook])
    trainer.configure_optimizer()
    return trainer


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_teacher_is_an_ema_of_the_student(batch):
    torch.manual_seed(0)
    model = build_model("lite")
    hook = MeanTeacher(model, decay=0.3)
    trainer = make_trainer(model, hook)
    assert torch.equal(flat(hook.teacher), flat(model))  # starts as a copy
    for step in (1, 2, 3):
        before = flat(hook.teacher)
        trainer.train_step(batch)
        student = flat(model)
        # after optimiser step k the factor is min(1 - 1/(k+1), decay): 0.3 at every step here (0.5, 0.667 > 0.3)
        a = 0.3
        assert ema_decay(step, 0.3) == pytest.approx(a)
        assert torch.allclose(flat(hook.teacher), a * before + (1 - a) * student, atol=1e-6)
        assert not torch.allclose(flat(hook.teacher), student)  # it lags behind the student
    assert ema_decay(1, 0.99) == pytest.approx(0.5) and ema_decay(999, 0.99) == pytest.approx(0.99)
    assert all(not p.requires_grad for p in hook.teacher.parameters())


def test_consistency_is_zero_when_student_and_teacher_agree(batch):
    torch.manual_seed(0)
    model = build_model("lite").eval()  # eval: the student's forward is the teacher's
    hook = MeanTeacher(model, noise_std=0.0)
    trainer = make_trainer(model, hook)
    x = batch["image"]
    with torch.no_grad():
        logits = model(x)
    assert hook.extra_loss(trainer, x, logits, 2)["mt"].item() == pytest.approx(0.0, abs=1e-12)
    # a student that disagrees pays: the term is the mean squared softmax difference on unlabelled patches only
    other = [z.flip(1) for z in logits]
    got = hook.extra_loss(trainer, x, other, 2)["mt"].item()
    t = [torch.softmax(z[2:], 1) for z in logits]  # branch k of the student against branch k of the teacher
    expect = np.mean([((torch.softmax(z[2:], 1) - tk) ** 2).mean().item() for z, tk in zip(other, t, strict=True)])
    assert got > 0 and got == pytest.approx(expect, rel=1e-5)
    assert consistency_loss([z[2:] for z in other], t).item() == pytest.approx(expect, rel=1e-5)
    # before the warm-up ends the ramp is 0 and so is the term
    trainer.config.warmup_steps = 5
    assert hook.extra_loss(trainer, x, other, 2)["mt"].item() == 0.0


@pytest.fixture
def ssl_study(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # benchmarks run as scripts from their folder
    import ssl_study
    return ssl_study


def test_paired_difference_and_its_t_interval_by_hand(ssl_study):
    a, b = [0.80, 0.82, 0.84], [0.79, 0.80, 0.80]
    # by hand: d = 0.01, 0.02, 0.04; mean 0.07 / 3; sd = sqrt(sum (d - mean)^2 / 2);
    # t(0.975, 2 df) = 4.302653 (a t table); half-width = t * sd / sqrt(3)
    mean = 0.07 / 3
    sd = math.sqrt(((0.01 - mean) ** 2 + (0.02 - mean) ** 2 + (0.04 - mean) ** 2) / 2)
    half = 4.302653 * sd / math.sqrt(3)
    got = ssl_study.paired(a, b)
    assert got["n"] == 3 and got["per_seed"] == pytest.approx([0.01, 0.02, 0.04])
    assert got["mean"] == pytest.approx(mean) and got["sd"] == pytest.approx(sd)
    assert got["ci95"] == pytest.approx([mean - half, mean + half], rel=1e-5)
    assert got["ci95"][0] < 0 < got["ci95"][1]  # 3 seeds this spread: the interval holds 0
    # a constant gain over 4 seeds: sd 0, the interval is the point
    same = ssl_study.paired([0.9, 0.8, 0.7, 0.6], [0.85, 0.75, 0.65, 0.55])
    assert same["ci95"] == pytest.approx([0.05, 0.05]) and same["n"] == 4
    # two seeds: t(0.975, 1 df) = 12.7062
    two = ssl_study.paired([0.5, 0.7], [0.4, 0.4])
    assert two["ci95"] == pytest.approx([0.2 - 12.7062 * math.sqrt(0.02) / math.sqrt(2),
                                         0.2 + 12.7062 * math.sqrt(0.02) / math.sqrt(2)], rel=1e-4)
    assert "ci95" not in ssl_study.paired([0.5], [0.4])  # one seed: no interval
