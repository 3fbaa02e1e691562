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


def _fake(row, seed, dice, steps=1500):
    """A training record and a score of one run, as find_runs / scores_for return them."""
    rec = {"name": f"{row}_seed{seed}", "row": row, "seed": seed, "steps": steps, "batch": "4+4",
           "n_labelled": 8, "n_unlabelled": 63}
    sub = {"dice": dice, "f1": dice / 2}
    return rec, {"raw": {"all": sub, "testA": sub, "testB": sub}, "post": {"all": sub}}


def test_study_pairs_rows_by_seed_against_the_baseline_and_a_reference(ssl_study):
    dice = {"sup10": [0.80, 0.78, 0.79], "cdma10": [0.81, 0.80, 0.79], "cdma10_pool": [0.83, 0.81, 0.80]}
    runs, scores = {}, {}
    for row, vals in dice.items():
        for seed in (2, 0, 1):  # any order: pairing goes by seed
            rec, sc = _fake(row, seed, vals[seed])
            runs[rec["name"]], scores[rec["name"]] = {"record": rec}, sc
    del scores["cdma10_pool_seed1"]  # an unscored run: the pool row has seeds 0 and 2 only
    out = ssl_study.study(runs, scores, references=["cdma10"])
    assert out["rows"]["cdma10_pool"]["seeds"] == [0, 2]
    d = out["reference_differences"]["cdma10_pool-cdma10"]["raw.all.dice"]
    assert d["n"] == 2 and d["per_seed"] == pytest.approx([0.02, 0.01])  # seed 0, seed 2; seed 1 left out
    assert set(out["reference_differences"]) == {"cdma10_pool-cdma10"}  # neither the baseline nor cdma10 itself
    base = out["paired_differences"]["cdma10-sup10"]["raw.all.dice"]
    assert base["per_seed"] == pytest.approx([0.01, 0.02, 0.0])
    # the paper's claim is checked against supervised-only only, never against the reference
    assert set(out["claim"]) == {"cdma10-sup10", "cdma10_pool-sup10"}
    md = ssl_study.markdown({**out, "runs": {n: r["record"] for n, r in runs.items()}, "test_images": 80}, "x.png",
                            title="CPU section 2")
    assert md.startswith("# CPU section 2") and "## Paired differences against cdma10 " in md
    assert "| cdma10_pool − cdma10 | 2 | 1500 vs 1500 | +0.0150" in md


@pytest.fixture
def gpu_train(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_train
    return gpu_train


def test_ramp_rows_change_only_the_schedule_of_cdma10(gpu_train):
    split = {"labelled": ["a"], "unlabelled": ["b"], "train_all": ["a", "b"], "fraction": 0.1}
    cfgs = {r: gpu_train.row_setup(r, split, 1000, 4, 128, 0, "cpu", 0.1)[2]
            for r in ("cdma10", "cdma10_noramp", "cdma10_slowramp")}
    assert (cfgs["cdma10"].warmup_steps, cfgs["cdma10"].ramp_steps) == (100, 200)  # the recipe: 10 %, 20 %
    assert (cfgs["cdma10_noramp"].warmup_steps, cfgs["cdma10_noramp"].ramp_steps) == (0, 0)
    assert (cfgs["cdma10_slowramp"].warmup_steps, cfgs["cdma10_slowramp"].ramp_steps) == (100, 500)
    from src_model.losses import ramp_weight
    nr = cfgs["cdma10_noramp"]
    assert ramp_weight(0, nr.warmup_steps, nr.ramp, nr.ramp_steps) == 1.0  # full weight from the first step
    base = cfgs["cdma10"].to_dict()
    for r in ("cdma10_noramp", "cdma10_slowramp"):
        changed = {k for k, v in cfgs[r].to_dict().items() if base[k] != v}
        assert changed <= {"warmup_steps", "ramp_steps"}, changed


def test_cdma5_release_is_cdma10_release_at_5_percent(gpu_train):
    split = {"labelled": ["a"], "unlabelled": ["b"], "train_all": ["a", "b"], "fraction": 0.05}
    cfg = {r: gpu_train.row_setup(r, split, 1000, 4, 128, 0, "cpu", 0.1)[2]
           for r in ("cdma5_release", "cdma10_release", "cdma5")}
    assert "cdma5_release" in gpu_train.ROWS and gpu_train.row_fraction("cdma5_release") == 0.05
    assert cfg["cdma5_release"] == cfg["cdma10_release"]  # the released schedule; the fraction comes from the split
    assert (cfg["cdma5_release"].optimizer, cfg["cdma5_release"].lr_schedule) == ("sgd", "step")
    assert cfg["cdma5"].optimizer != "sgd" and cfg["cdma5_release"].unsupervised
