"""The semi-supervision study: the mean-teacher hook and the paired statistics of benchmarks/ssl_study.py."""
import numpy as np
import pytest
import torch

from src_model import build_model
from src_model.data import AugmentConfig, TwoStreamPatches, load_pairs
from src_model.mean_teacher import MeanTeacher, consistency_loss, ema_decay
from src_model.trainer import CDMATrainer, TrainConfig

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
