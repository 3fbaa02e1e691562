"""RetrainJob: real worker subprocesses on a real store of GlaS crops, tiny lite model, 64 px patches."""
from __future__ import annotations

import os
import shutil
import signal
import time
from dataclasses import replace

import numpy as np
import pytest

from napari_cdma.project.events import FINAL_EVENTS, Cancelled, Done, Evaluating, Failed, Progress, Started
from napari_cdma.project.retrain_job import (
    MIN_HOLDOUT_FOR_PROMOTION,
    MIN_HOLDOUT_GLAND_PX,
    RetrainJob,
    finish,
    held_out_text,
    holdout_shortfall,
    rule_decision,
)
from napari_cdma.project.store import ProjectStore
from src_model.agreement import MIN_AGREEMENT

BOXES = [(40, 50, 136, 150), (200, 300, 264, 428), (100, 400, 228, 500), (300, 120, 380, 200),
         (330, 420, 430, 520)]
SOURCES = ("testA_1", "testA_2", "testB_4")  # whole images in tests/data/glas; region i comes from SOURCES[i % 3]


@pytest.fixture(scope="module")
def base_store(tmp_path_factory, glas_dir):
    """A store with a random lite model as current and 5 accepted regions (the 5th held out)."""
    import torch

    from src_model import build_model
    from src_model.checkpoint import save_checkpoint
    from src_model.io import read_image, read_mask

    root = tmp_path_factory.mktemp("retrain") / "store"
    store = ProjectStore.open(root)
    torch.manual_seed(0)
    ckpt = save_checkpoint(root.parent / "init.pt", build_model("lite"),
                           provenance={"torch": str(torch.__version__)})
    store.add_model(ckpt, parent=None, note="random lite", promoted=True)
    for i, box in enumerate(BOXES):
        name = SOURCES[i % 3]
        image, mask = read_image(glas_dir / "images" / f"{name}.png"), read_mask(glas_dir / "masks" / f"{name}.png")
        y0, x0, y1, x1 = box
        gt = mask[y0:y1, x0:x1]
        store.accept_region(image, box, gt, np.zeros_like(gt), model_version=store.current_model_version,
                            source_path=name + ".png")
    assert len(store.holdout_regions()) == 1 and len(store.training_regions()) == 4
    return root


@pytest.fixture
def store_path(base_store, tmp_path):
    dst = tmp_path / "store"
    shutil.copytree(base_store, dst)
    return dst


def _collect(job: RetrainJob, until, timeout: float):
    """Poll like the widget's timer does until ``until(events)`` or the timeout."""
    events, t0 = [], time.monotonic()
    while time.monotonic() - t0 < timeout:
        events += job.poll()
        if until(events):
            return events
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s; events: {[e.kind for e in events]}; "
                         f"log: {job.stderr_path.read_text()[-2000:]}")


def _final(events):
    return any(isinstance(e, FINAL_EVENTS) for e in events)


def test_retrain_reports_progress_scores_and_finish_promotes_by_rule(store_path):
    from src_model import load_checkpoint

    job = RetrainJob.start(store_path, steps=3, seed=0, device="cpu", patch=64, batch_labelled=2,
                           batch_unlabelled=2, eval_tile=128)
    t0 = time.monotonic()
    assert job.running and job.returncode is None
    assert time.monotonic() - t0 < 1.0  # start() does not wait for the worker
    events = _collect(job, _final, timeout=80)
    assert job.wait(10) and not job.running and job.returncode == 0
    kinds = [type(e) for e in events]
    progress = [e for e in events if isinstance(e, Progress)]
    assert [p.step for p in progress] == [1, 2, 3] and all(p.total == 3 for p in progress)
    assert all("loss" in p.metrics and p.eta_s is not None for p in progress)
    assert kinds[0] is Started and events[0].n_labelled == 4 and events[0].n_holdout == 1
    # the unlabelled stream is the 3 stored source images, not the 4 corrected crops as well
    assert events[0].n_unlabelled == len(SOURCES)
    assert kinds.index(Evaluating) > kinds.index(Progress) and kinds[-1] is Done
    done = events[-1]
    assert done.n_holdout == 1 and done.parent_model == "v0001"
    # The held-out region (testA_2, 100 x 100 px of stroma) holds no gland: no meaningless "0.000 -> 0.000",
    # the words say why, and the rule says its decision rests on too little.
    assert done.old_dice is None and done.new_dice is None and done.better is None
    assert done.message.startswith("held-out regions hold no glands to score (1 region)")
    assert held_out_text(done) == "held-out regions hold no glands to score (1 region)"
    assert rule_decision(done)[0] is False and "too little" in rule_decision(done)[1]
    load_checkpoint(done.checkpoint)  # the new checkpoint is a valid model
    # the no-regression check ran on the store's whole images, and every image has its row
    assert done.recipe == "default" and events[0].config["recipe"] == "default"
    assert done.agreement is not None and 0.0 <= done.agreement <= 1.0 and done.agreement_crops > 0
    assert done.min_agreement == MIN_AGREEMENT
    rows = {r.image: r for r in done.per_image}
    assert set(rows) == {f"{name}.png" for name in SOURCES}
    held_image = f"{SOURCES[4 % 3]}.png"  # the 5th region is the held-out one
    assert rows[held_image].n_holdout == 1 and rows[held_image].old_dice is None  # not scored: no gland
    assert all(r.agreement is not None and 0.0 <= r.agreement <= 1.0 for r in rows.values())
    assert all(r.n_holdout == 0 and r.new_dice is None for name, r in rows.items() if name != held_image)

    store = ProjectStore.open(store_path)
    # A random model after 3 steps changes most of the uncorrected tissue: refused even when it scored
    # better on enough held-out regions.
    assert done.agreement < MIN_AGREEMENT
    regressed = finish(store, replace(done, old_dice=0.8, new_dice=0.9, better=True,
                                      n_holdout=MIN_HOLDOUT_FOR_PROMOTION))
    assert not regressed.promoted and store.current_model_version == "v0001"
    assert "uncorrected tissue" in regressed.metrics["decision"]
    assert regressed.metrics["per_image"][0]["image"] in rows
    both = finish(store, replace(done, better=True, n_holdout=1))  # too few held out, and changed tissue
    assert not both.promoted and "too little to promote" in both.metrics["decision"]
    assert "changed the prediction of uncorrected tissue" in both.metrics["decision"]
    store = ProjectStore.open(store_path)
    done = replace(done, agreement=0.99)  # from here on: a candidate that kept the uncorrected tissue
    # Both rule outcomes for sure: the same real checkpoint reported worse, then better.
    worse = finish(store, replace(done, old_dice=0.9, new_dice=0.8, better=False))
    assert worse.version == "v0004" and worse.parent == "v0001" and not worse.promoted
    assert worse.metrics["new_dice"] == 0.8 and worse.metrics["n_holdout"] == 1
    assert worse.metrics["promoted_by"] == "rule" and store.current_model_version == "v0001"
    # better on enough held-out regions: promoted by the rule
    better = finish(store, replace(done, old_dice=0.8, new_dice=0.9, better=True,
                                   n_holdout=MIN_HOLDOUT_FOR_PROMOTION))
    assert better.promoted and store.current_model_version == "v0005"
    # nothing held out: never promoted by the rule; the user's override wins
    unscored = replace(done, old_dice=None, new_dice=None, better=None, n_holdout=0, message="")
    nothing = finish(store, unscored)
    assert not nothing.promoted and store.current_model_version == "v0005"
    assert nothing.metrics["decision"].startswith("no held-out region to decide on: too little to promote")
    # enough held-out regions, but too little gland in them: words, never a Dice, and not promoted
    thin = replace(done, n_holdout=MIN_HOLDOUT_FOR_PROMOTION,
                   message=holdout_shortfall(MIN_HOLDOUT_FOR_PROMOTION, 30) + "; agreement 0.990")
    assert held_out_text(thin) == ("held-out score rests on 30 px of gland in 3 regions: too little to compare "
                                   f"the models (at least {MIN_HOLDOUT_GLAND_PX} px)")
    promote, why, code, keep = rule_decision(thin)
    assert code == "too_little" and keep
    assert not promote and why.startswith("held-out score rests on 30 px of gland in 3 regions: too little to "
                                          "promote automatically")
    assert "Dice" not in held_out_text(thin) and "0.000" not in why
    assert not finish(store, thin).promoted and store.current_model_version == "v0005"
    forced = finish(store, unscored, promote=True)
    assert forced.promoted and forced.metrics["promoted_by"] == "user"
    reopened = ProjectStore.open(store_path)  # the history survives reopening
    assert reopened.current_model_version == "v0008"
    assert [m.version for m in reopened.models()] == [f"v000{i}" for i in range(1, 9)]
    with pytest.raises(TypeError, match="Done"):
        finish(store, Cancelled())
    # better on too few held-out regions (issue 9): not promoted, and the reason says why
    assert MIN_HOLDOUT_FOR_PROMOTION == 3
    weak = finish(reopened, replace(done, old_dice=0.865, new_dice=0.890, better=True, n_holdout=1))
    assert not weak.promoted and reopened.current_model_version == "v0008"
    assert weak.metrics["promoted_by"] == "rule"
    assert "decided on 1 held-out region(s): too little to promote automatically" in weak.metrics["decision"]
    assert "Keep new model anyway" in weak.metrics["decision"]
    # what it takes and how far it is, said (walks; walk 20: in accepted regions, from the store's own numbers)
    assert "which needs 3 held-out regions: 1 so far; about " in weak.metrics["decision"]
    assert "accepted region is held out)" in weak.metrics["decision"]
    enough_but_worse = finish(reopened, replace(done, old_dice=0.9, new_dice=0.8, better=False, n_holdout=3))
    assert not enough_but_worse.promoted and reopened.current_model_version == "v0008"


def test_held_out_glands_are_scored_and_the_corrections_are_not_unlabelled(store_path, glas_dir):
    """With a held-out region that holds glands the worker scores both models on the held-out regions; an
    image whose held-out regions hold none gets no Dice. The unlabelled stream stays the stored images."""
    from src_model.io import read_image, read_mask

    store = ProjectStore.open(store_path)
    image, mask = read_image(glas_dir / "images" / "testA_1.png"), read_mask(glas_dir / "masks" / "testA_1.png")
    for box in [(0, 0, 96, 96), (96, 0, 192, 96), (0, 96, 96, 192), (96, 96, 192, 192), (200, 200, 264, 264)]:
        y0, x0, y1, x1 = box
        store.accept_region(image, box, mask[y0:y1, x0:x1], np.zeros((y1 - y0, x1 - x0), np.uint8),
                            model_version=store.current_model_version, source_path="testA_1.png")
    held = store.holdout_regions()
    assert len(held) == 2 and held[-1].bbox == (200, 200, 264, 264)  # 3349 px of gland
    job = RetrainJob.start(store_path, steps=2, seed=0, device="cpu", patch=64, batch_labelled=2,
                           batch_unlabelled=2, eval_tile=128, agreement_crops=2)
    events = _collect(job, _final, timeout=120)
    started, done = events[0], events[-1]
    assert isinstance(started, Started) and started.n_labelled == 8 and started.n_unlabelled == len(SOURCES)
    assert isinstance(done, Done), events[-1]
    assert 0.0 <= done.old_dice <= 1.0 and 0.0 <= done.new_dice <= 1.0
    assert done.better == (done.new_dice > done.old_dice)
    assert done.message.startswith(f"held-out Dice {done.old_dice:.3f} -> {done.new_dice:.3f} on 2 regions "
                                   f"({int((mask[200:264, 200:264] > 0).sum())} px of gland)")
    rows = {r.image: r for r in done.per_image}
    assert rows["testA_1.png"].n_holdout == 1 and rows["testA_1.png"].old_dice is not None
    assert rows["testA_2.png"].n_holdout == 1 and rows["testA_2.png"].old_dice is None  # no gland there


def test_cancel_stops_within_a_step(store_path):
    job = RetrainJob.start(store_path, steps=100_000, device="cpu", patch=64, batch_labelled=2,
                           batch_unlabelled=2)
    _collect(job, lambda ev: any(isinstance(e, Progress) for e in ev) or _final(ev), timeout=60)
    t0 = time.monotonic()
    job.cancel()
    events = _collect(job, _final, timeout=15)
    assert isinstance(events[-1], Cancelled) and not events[-1].forced
    assert job.wait(5) and job.returncode == 0
    assert time.monotonic() - t0 < 10
    store = ProjectStore.open(store_path)
    assert store.current_model_version == "v0001" and len(store.models()) == 1


def test_killed_worker_is_reported_and_store_is_intact(store_path):
    before = ProjectStore.open(store_path)
    job = RetrainJob.start(store_path, steps=100_000, device="cpu", patch=64, batch_labelled=2,
                           batch_unlabelled=2)
    _collect(job, lambda ev: any(isinstance(e, Progress) for e in ev) or _final(ev), timeout=60)
    os.kill(job.pid, signal.SIGKILL)  # as the OOM killer would
    events = _collect(job, _final, timeout=15)
    assert isinstance(events[-1], Failed)
    assert "exited with code -9" in events[-1].message
    assert job.returncode == -signal.SIGKILL and not job.running
    after = ProjectStore.open(store_path)
    assert after.regions() == before.regions() and after.models() == before.models()
    assert after.current_model_version == "v0001"


def test_worker_error_is_an_event(tmp_path):
    ProjectStore.open(tmp_path / "empty")  # no regions accepted yet
    job = RetrainJob.start(tmp_path / "empty", steps=3, device="cpu", patch=64)
    events = _collect(job, _final, timeout=60)
    assert isinstance(events[-1], Failed) and "no accepted regions" in events[-1].message
    assert job.wait(5) and job.returncode != 0


def test_dock_retrains_supervised_by_default_and_adds_cdma_terms_when_asked(qtbot, store_path):
    """The panel's 'CDMA terms' box decides the job's mode; off by default (FINETUNE_SEMI_SUPERVISED)."""
    import json

    from napari_cdma._widget_retrain import RetrainPanel

    store = ProjectStore.open(store_path)
    panel = RetrainPanel(lambda: store)
    qtbot.addWidget(panel)
    panel.train_kwargs = {"device": "cpu", "patch": 64, "batch_labelled": 2, "batch_unlabelled": 2}
    seen = []
    for checked in (False, True):
        if checked:
            panel.semi_check.setChecked(True)
        assert panel.semi_check.isChecked() is checked
        assert panel.start(steps=100_000)
        job = panel.job
        seen.append(json.loads((job.out_dir / "JOB.json").read_text(encoding="utf-8"))["semi_supervised"])
        started = _collect(job, lambda ev: any(isinstance(e, Started) for e in ev) or _final(ev), timeout=60)
        config = next(e for e in started if isinstance(e, Started)).config
        job.cancel()
        _collect(job, _final, timeout=30)
        panel.job, panel.state = None, "idle"
        assert config["semi_supervised"] is checked
    assert seen == [False, True]
