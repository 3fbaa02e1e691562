"""Walk 22: a held-out region accepted without edits gave the current model a perfect score ("v0001: not promoted;
held-out Dice 1.000 -> 0.997 on 1 region"): the truth there is its own prediction, so a new model can only lose.

The worker tells held-out regions accepted unedited (corrected gland pixels == the prediction's) from edited ones
and scores them apart (``Done.holdout_split`` in its event, ``metrics["holdout_split"]`` in the store); the rule
counts the unedited ones as a no-regression check and judges "better" on the edited ones; the dock's verdict and
``cdma retrain`` say so. Real store on disk, real retraining worker (through the dock under Xvfb and the ``cdma``
subprocess), real checkpoint."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from napari_cdma._widget_retrain import RetrainPanel
from napari_cdma.project.events import Done
from napari_cdma.project.retrain_job import (
    MIN_HOLDOUT_FOR_PROMOTION,
    UNEDITED_TOLERANCE,
    HeldPart,
    HoldoutSplit,
    Why,
    finish,
    held_out_text,
    rule_decision,
)
from napari_cdma.project.retrain_worker import accepted_unedited
from napari_cdma.project.store import ProjectStore

FAST_TRAIN = dict(device="cpu", patch=64, batch_labelled=2, batch_unlabelled=2)
TRAIN_BOX = (128, 224, 224, 320)
UNEDITED_BOX = (300, 50, 396, 146)  # the random lite model predicts some 1700 px of gland here: enough to score
EDITED_BOX = (40, 400, 136, 496)


def _own_prediction(checkpoint, image, box):
    """The model's labels of ``box`` as the worker scores a held-out region (in its whole image, the dock's tiling):
    what the dock showed and the pathologist accepted unedited."""
    from src_model import load_checkpoint
    from src_model.evaluate import predict_regions
    from src_model.progress import drain
    from src_model.tiling import DEFAULT_OVERLAP, DEFAULT_TILE

    y0, x0, y1, x1 = box
    labels = drain(predict_regions(load_checkpoint(checkpoint), [(image, np.zeros((y1 - y0, x1 - x0)), box)],
                                   tile=DEFAULT_TILE, overlap=DEFAULT_OVERLAP))[0]
    return np.asarray(labels).astype(np.uint16)


def _store(path, glas_dir, lite_checkpoint, edited_holdout: bool) -> ProjectStore:
    """Every 2nd accepted region held out: r0001 (trained on, edited), r0002 held out and accepted unedited from
    v0001's own prediction; with ``edited_holdout`` also r0003 (trained on) and r0004 held out, edited (the truth
    against an empty prediction)."""
    store = ProjectStore.open(path, holdout_fraction=0.5)
    store.add_model(lite_checkpoint, parent=None, note="random lite", promoted=True)
    source = glas_dir / "images" / "testA_1.png"
    image = np.asarray(Image.open(source).convert("RGB"))
    mask = (np.asarray(Image.open(glas_dir / "masks" / "testA_1.png")) > 0).astype(np.uint8)

    def accept(box, corrected, predicted):
        store.accept_region(image, box, corrected, predicted, model_version="v0001", source_path=source,
                            image_name="testA_1")

    def truth(box):
        y0, x0, y1, x1 = box
        return mask[y0:y1, x0:x1]

    accept(TRAIN_BOX, truth(TRAIN_BOX), np.zeros_like(truth(TRAIN_BOX)))
    own = _own_prediction(lite_checkpoint, image, UNEDITED_BOX)
    assert np.count_nonzero(own) >= 1300, np.count_nonzero(own)  # enough gland to be scored
    relabelled = np.where(own > 0, own + 7, 0).astype(np.uint16)  # other instance ids: still unedited
    accept(UNEDITED_BOX, relabelled, own)
    if edited_holdout:
        accept((300, 400, 396, 496), truth((300, 400, 396, 496)), np.zeros((96, 96), np.uint8))
        accept(EDITED_BOX, truth(EDITED_BOX), np.zeros_like(truth(EDITED_BOX)))
    assert [r.region_id for r in store.holdout_regions()] == (["r0002", "r0004"] if edited_holdout else ["r0002"])
    return store


def test_accepted_unedited_compares_gland_pixels_not_ids():
    pred = np.zeros((8, 8), np.uint16)
    pred[1:4, 1:4], pred[5:7, 5:7] = 1, 2
    assert accepted_unedited(np.where(pred > 0, pred + 10, 0), pred)  # ids differ, gland pixels equal
    assert accepted_unedited(np.zeros((4, 4)), np.zeros((4, 4)))
    edited = pred.copy()
    edited[0, 0] = 3
    assert not accepted_unedited(edited, pred)
    assert not accepted_unedited(pred[:4], pred)


def _done(old, new, n, agreement=0.99):
    return Done(checkpoint="/nowhere/final.pt", parent_model="v0001", steps_done=3, n_holdout=n, old_dice=old,
                new_dice=new, better=None if old is None else new > old, agreement=agreement, min_agreement=0.95,
                agreement_crops=3)


def _split(edited, unedited, from_="v0001"):
    e_n, e_old, e_new = edited
    u_n, u_old, u_new = unedited
    return HoldoutSplit(HeldPart(e_n, 5000 if e_n else 0, e_old, e_new), HeldPart(u_n, 2000, u_old, u_new),
                        {from_: u_n}, tuple(f"r{k:04d}@1" for k in range(u_n)))


def test_the_rule_judges_better_on_edited_regions_and_no_regression_on_unedited_ones():
    n = MIN_HOLDOUT_FOR_PROMOTION
    # the walk: one held-out region, unedited from v0001: before, "not better" pooled, as if the new model were worse
    walk = _done(1.0, 0.997, 1)
    promote, why, code, keep = rule_decision(walk, split=_split((0, None, None), (1, 1.0, 0.997)))
    assert not promote and code == Why.TOO_LITTLE and keep
    assert why.startswith("1 of 1 held-out regions was accepted unedited from v0001's own prediction: v0001 scores "
                          "1.000 there by construction; only edited held-out regions show whether a model fixes "
                          "errors; the decision rests on confirmed regions only: the new model kept the unedited one "
                          "(Dice 1.000 -> "
                          "0.997, within 0.02)"), why
    assert why.endswith("Keep new model anyway if you trust it"), why
    assert held_out_text(walk, _split((0, None, None), (1, 1.0, 0.997))) == \
        "held-out Dice 1.000 -> 0.997 on 1 region accepted unedited"

    # enough edited regions, better on them, the unedited ones kept within the tolerance: promoted, although the
    # pooled Dice (with the unedited regions at 1.000 for the current model) is not better
    split = _split((n, 0.80, 0.85), (2, 1.0, 1.0 - UNEDITED_TOLERANCE / 2))
    promote, why, code, keep = rule_decision(_done(0.95, 0.94, n + 2), split=split)
    assert promote and code == Why.BETTER and not keep, why
    assert "2 of 5 held-out regions were accepted unedited from v0001's own prediction" in why
    assert f"better on the {n} edited held-out regions (Dice 0.800 -> 0.850) and kept the unedited ones " \
        "(Dice 1.000 -> 0.990, within 0.02): it is now the current model" in why
    assert held_out_text(_done(0.95, 0.94, n + 2), split) == \
        f"held-out Dice 0.800 -> 0.850 on {n} edited regions, 1.000 -> 0.990 on 2 accepted unedited"

    # better on the edited ones but fell on confirmed tissue: the current model stays
    fell = _split((n, 0.80, 0.85), (2, 1.0, 0.95))
    promote, why, code, keep = rule_decision(_done(0.9, 0.9, n + 2), split=fell)
    assert not promote and code == Why.FELL_UNEDITED and not keep, why
    assert "the new model fell on the unedited ones by more than 0.02 (1.000 -> 0.950): the current model stays" in why
    # not better on the edited ones
    promote, why, code, keep = rule_decision(_done(0.9, 0.9, n + 1), split=_split((n, 0.85, 0.80), (1, 1.0, 1.0)))
    assert code == Why.NOT_BETTER and not keep
    assert not promote and f"not better on the {n} edited held-out regions (Dice 0.850 -> 0.800)" in why
    # too few edited ones: the user's decision, and the unedited ones do not count towards the minimum
    promote, why, code, keep = rule_decision(_done(0.9, 0.95, n + 2), split=_split((1, 0.80, 0.90), (n + 1, 1.0, 1.0)))
    assert not promote and code == Why.TOO_LITTLE and keep
    assert "decided on 1 edited held-out region (Dice 0.800 -> 0.900)" in why
    assert f"which needs {n} edited held-out regions" in why and "does not count towards it" in why
    # unedited from an older model: no "by construction", but said to favour it
    promote, why = rule_decision(walk, split=_split((0, None, None), (1, 0.97, 0.96), from_="bundled"))[:2]
    assert why.startswith("1 of 1 held-out regions was accepted unedited from bundled's prediction: such a region "
                          "favours the model that made it"), why

    # no split (a job from before it was kept) or no unedited region: the rule as before
    # ... and a split that is not of the event (other count, or it scored nothing where the event has Dice): unused
    unscored = HoldoutSplit(HeldPart(), HeldPart(n, 0), {"v0001": n}, ())
    for split in (None, _split((n, 0.80, 0.85), (0, None, None)), _split((n, 0.8, 0.85), (1, 1.0, 1.0)), unscored):
        assert rule_decision(_done(0.80, 0.85, n), split=split) == rule_decision(_done(0.80, 0.85, n))
    assert rule_decision(_done(0.80, 0.85, n))[0]


def test_finish_reads_the_split_from_the_done_event_and_an_event_without_one_works_as_before(tmp_path,
                                                                                           lite_checkpoint):
    """Review: the split and the training basis travelled beside the checkpoint as side files; they are the Done
    event's now, through the protocol line (to_json / parse_event) as the dock receives it."""
    from napari_cdma.project.events import parse_event, to_json

    store = ProjectStore.open(tmp_path / "store")
    store.add_model(lite_checkpoint, parent=None, note="random lite", promoted=True)
    old_run, new_run = tmp_path / "old", tmp_path / "new"
    for run in (old_run, new_run):
        run.mkdir()
        shutil.copy(lite_checkpoint, run / "final.pt")
    split = _split((0, None, None), (1, 1.0, 0.997))
    basis = {"train": ["r0001@1"], "holdout": ["r0002@1"], "recipe": "default", "steps": None,
             "semi_supervised": False, "seed": 0}
    old = finish(store, Done(checkpoint=str(old_run / "final.pt"), parent_model="v0001", steps_done=3, n_holdout=1,
                             old_dice=1.0, new_dice=0.997, better=False, agreement=0.99, min_agreement=0.95))
    assert "holdout_split" not in old.metrics and "trained_on" not in old.metrics
    assert old.metrics["decision"].startswith("decided on 1 held-out region(s)")
    sent = Done(checkpoint=str(new_run / "final.pt"), parent_model="v0001", steps_done=3, n_holdout=1,
                old_dice=1.0, new_dice=0.997, better=False, agreement=0.99, min_agreement=0.95,
                holdout_split=split.to_json(), trained_on=basis)
    received = parse_event(json.loads(to_json(sent)))
    assert received == sent
    new = finish(store, received)
    assert sorted(p.name for p in new_run.iterdir()) == ["final.pt"]  # nothing beside the checkpoint
    reopened = {m.version: m for m in ProjectStore.open(store.root).models()}
    assert reopened[new.version].metrics["trained_on"] == basis
    assert HoldoutSplit.from_json(reopened[new.version].metrics["holdout_split"]) == split
    assert "the decision rests on confirmed regions only" in reopened[new.version].metrics["decision"]
    assert HoldoutSplit.from_json(None) is None and HoldoutSplit.from_json({"edited": "x"}) is None


def test_the_dock_says_the_held_out_region_was_accepted_unedited(qtbot, tmp_path, glas_dir, lite_checkpoint):
    """The walk's steps, with the real worker: r0002 held out, accepted unedited; Retrain."""
    store = _store(tmp_path / "store", glas_dir, lite_checkpoint, edited_holdout=False)
    panel = RetrainPanel(lambda: store)
    qtbot.addWidget(panel)
    panel.train_kwargs = dict(FAST_TRAIN)
    assert panel.start(steps=1)
    qtbot.waitUntil(lambda: panel.state in ("done", "error", "cancelled"), timeout=300_000)
    said = panel.last_message  # the whole verdict (on screen a short form, this in its tooltip: walk 23)
    assert panel.state == "done", said
    assert panel.result_label.toolTip() == said and said.count("1.000 -> ") == 2
    assert panel.result_label.text().count("1.000 -> ") == 1
    assert said.startswith("v0002: not promoted; held-out Dice 1.000 -> "), said
    assert " on 1 region accepted unedited; " in said, said
    assert ("1 of 1 held-out regions was accepted unedited from v0001's own prediction: v0001 scores 1.000 there by "
            "construction; only edited held-out regions show whether a model fixes errors; the decision rests on "
            "confirmed regions only: the new model ") in said, said
    assert "which needs 3 edited held-out regions" in said and said.endswith("Keep new model anyway if you trust it.")
    assert panel.keep_button.isVisibleTo(panel)
    kept = ProjectStore.open(store.root).models()[-1].metrics["holdout_split"]
    assert kept["regions"] == ["r0002@1"] and kept["unedited_from"] == {"v0001": 1}
    assert kept["unedited"]["n"] == 1 and kept["unedited"]["old_dice"] == pytest.approx(1.0)
    assert kept["edited"]["n"] == 0


def test_cdma_retrain_shows_edited_and_unedited_held_out_dice_apart(tmp_path, glas_dir, lite_checkpoint):
    store = _store(tmp_path / "store", glas_dir, lite_checkpoint, edited_holdout=True)
    run = subprocess.run([sys.executable, "-m", "src_model.cli", "retrain", str(store.root), "--steps", "1",
                          "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "v0002: not promoted: 1 of 2 held-out regions was accepted unedited" in run.stderr, run.stderr[-3000:]
    done = json.loads(run.stdout.strip().splitlines()[-1])
    split = HoldoutSplit.from_json(done["holdout_split"])
    assert split.regions == ("r0002@1",) and split.edited.n == 1 and split.unedited.n == 1
    assert split.unedited.old_dice == pytest.approx(1.0) and split.edited.scored
    assert f"held-out Dice {split.edited.dice()} on 1 edited region, {split.unedited.dice()} on 1 accepted unedited " \
           f"(1 of 2 held-out accepted unedited: r0002@1)" in run.stderr, run.stderr[-3000:]
    assert not done["promoted"]
    assert done["decision"].startswith("1 of 2 held-out regions was accepted unedited from v0001's own prediction: "
                                       "v0001 scores 1.000 there by construction; only edited held-out regions show "
                                       "whether a model fixes errors; decided on 1 edited held-out region (Dice "), \
        done["decision"]
