"""Simulated annotation sessions (issue 9): GlaS ground truth stands in for the pathologist.

A session is a few GlaS images opened as new slides. Each round:

1. the current model predicts the session images (the dock's tiling and post-processing);
2. regions are picked: the top 5 review regions over all session images
   (:func:`src_model.uncertainty.review_regions`, the dock's "Look here next", skipping boxes
   corrected before), or, in the control row, random boxes of the same sizes;
3. the expert mask is pasted into each region as the correction (:func:`src_model.simulate.paste_correction`)
   and the region is accepted into a real :class:`napari_cdma.project.store.ProjectStore` (in a
   temporary folder), which decides the held-out regions (every 5th) and keeps the images as
   unlabelled tissue, as in the dock;
4. the store's current model is retrained as the dock's Retrain does: the retrain worker's ``run``
   (:mod:`napari_cdma.project.retrain_worker`: its training data from the store, the fine-tuning recipe
   and its default steps, held-out scoring and agreement with the current model), in this process;
5. the product's promotion rule is recorded (:func:`napari_cdma.project.retrain_job.rule_decision`) and
   the new model is kept ("Keep new model anyway": every round continues from the newest model);
6. the new model is measured: Dice and object F1 (post-processed as the dock shows glands) on the
   session images and, separately, on untouched images that are not in the session.

Starting points: ``ten`` (a lite model trained on 10 % of the labels on a GPU, ``runs/gpu_run/cdma10_seed0.pt``,
never committed and lost; its records stay in the results), ``ten_cpu`` (the same recipe, 3000 steps, retrained
on a CPU and committed: ``benchmarks/models/cdma10_seed0.pt``, see ``benchmarks/models/README.md``),
``bundled`` (the shipped model) and ``newlab`` (the bundled model on images with a fixed HED stain shift,
sigma 0.3, seed 0, chosen on validation images: Dice 0.915 -> 0.840 there). Rows: ``ranked_cdma``,
``random_cdma``, ``ranked_sup`` (supervised-only fine-tuning).

``--split check`` builds sessions from the 8 validation images of the 10 % split (for choosing and
checking settings); ``--split trainval`` from those and the training images the 10 % model saw only
without labels (more and larger sessions, still no test image: used to calibrate the promotion's
no-regression check); ``--split test`` (default) from GlaS test images: session and untouched images are
drawn by the seed and shared by the rows of one seed.

Resumable: one record per (start, row, seed, round) is added to ``<out>/annotation_session.json``
(written atomically) as soon as it is measured, with the round's model kept under ``--work``; a rerun
skips what is done and rebuilds an interrupted session's store from its records.

Usage::

    python benchmarks/annotation_session.py [--starts ten_cpu,bundled,newlab] [--rows ...] [--seeds 0]
        [--split test|check] [--threads 1] [--data GLAS] [--quick]

Writes ``annotation_session.json``, ``.md`` and ``.png`` (Dice against corrected area) in ``--out``.
"""
from __future__ import annotations

import argparse
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from _common import RESULTS, ROOT, add_data_argument, machine_info, require_glas

log = logging.getLogger("annotation_session")

NAME = "annotation_session"
STARTS = ("ten", "ten_cpu", "bundled", "newlab")
ROWS = {"ranked_cdma": ("ranked", True), "random_cdma": ("random", True), "ranked_sup": ("ranked", False)}
TEN_MODEL = ROOT / "runs" / "gpu_run" / "cdma10_seed0.pt"
TEN_CPU_MODEL = ROOT / "benchmarks" / "models" / "cdma10_seed0.pt"
TEN_STARTS = {"ten": TEN_MODEL, "ten_cpu": TEN_CPU_MODEL}  # the 10 % models: room to improve
NEWLAB = {"sigma": 0.3, "seed": 0}
SPLIT_FRACTION, SPLIT_VAL, SPLIT_SEED = 0.1, 8, 0  # the split the 10 % models were trained on


# ---------------------------------------------------------------- images of a session

def session_ids(data: Path, split: str, seed: int, n_session: int, n_untouched: int) -> Tuple[List[str], List[str]]:
    """(session ids, untouched ids), drawn by ``seed`` from the test images or the validation images."""
    from src_model.data import ids_of, read_split, ssl_split

    if split == "check":
        pool = sorted(ssl_split(data, SPLIT_FRACTION, SPLIT_VAL, SPLIT_SEED)["val"])
    elif split == "trainval":  # training images whose labels the 10 % model never saw (val + unlabelled pool)
        part = ssl_split(data, SPLIT_FRACTION, SPLIT_VAL, SPLIT_SEED)
        pool = sorted(part["val"] + part["unlabelled"])
    else:
        pool = sorted(ids_of(read_split(data), split="test"))
    order = np.random.default_rng([seed, 9]).permutation(len(pool))
    picked = [pool[i] for i in order]
    if len(picked) < n_session + 1:
        raise SystemExit(f"{len(pool)} {split} images: too few for {n_session} session images and 1 untouched")
    return sorted(picked[:n_session]), sorted(picked[n_session:n_session + n_untouched])


def load_images(data: Path, ids: Sequence[str], start: str) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """``{id: (image, mask)}``; ``newlab`` images get the fixed stain shift."""
    from src_model.data import load_pairs
    from src_model.simulate import stain_shift

    pairs = load_pairs(data, ids)
    if start == "newlab":
        pairs = [(stain_shift(img, NEWLAB["sigma"], NEWLAB["seed"]), gt) for img, gt in pairs]
    return dict(zip(ids, pairs, strict=True))


def start_checkpoint(start: str) -> Path:
    from src_model.checkpoint import bundled_model_path

    return TEN_STARTS.get(start) or bundled_model_path()


# ---------------------------------------------------------------- measuring

def predict_all(model, images: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> Dict[str, Any]:
    """The dock's prediction of each image (default tiling): ``{id: Prediction}``."""
    from src_model.inference import predict

    return {k: predict(model, img) for k, (img, _) in images.items()}


def measure(preds: Dict[str, Any], images: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> Dict[str, Any]:
    """Dice and object F1 of the post-processed glands (as the dock shows them), mean over images."""
    from src_model.metrics import aggregate, evaluate_image
    from src_model.postprocess import instance_labels

    per = {k: evaluate_image(instance_labels(preds[k]), gt, pred_instances=True) for k, (_, gt) in images.items()}
    agg = aggregate(list(per.values()))
    return {"dice": agg["dice"], "f1": agg["f1"], "dice_pooled": agg["dice_pooled"], "f1_pooled": agg["f1_pooled"],
            "object_dice": agg["object_dice"], "per_image_dice": {k: round(v["dice"], 4) for k, v in per.items()}}


def shown_dice(preds: Dict[str, Any], images: Dict[str, Tuple[np.ndarray, np.ndarray]],
               taken: Dict[str, List[Tuple[int, int, int, int]]]) -> float:
    """Mean Dice of what the pathologist sees: the glands with every accepted correction pasted in."""
    from src_model.metrics import pixel_dice
    from src_model.postprocess import instance_labels
    from src_model.simulate import paste_correction

    return float(np.mean([pixel_dice(paste_correction(instance_labels(preds[k]), gt, taken.get(k, [])), gt > 0)
                          for k, (_, gt) in images.items()]))


# ---------------------------------------------------------------- one round

def pick(row: str, preds: Dict[str, Any], images, taken, n: int, rng: np.random.Generator):
    """The regions corrected this round: ranked review regions, or random ones of the same sizes."""
    from src_model.simulate import random_regions, top_regions
    from src_model.uncertainty import review_regions

    ranked = {k: review_regions(preds[k], images[k][0]) for k in preds}
    picks = top_regions(ranked, n, taken)
    if ROWS[row][0] == "random":
        sizes = [(b[2] - b[0], b[3] - b[1]) for _, _, b in picks]
        picks = random_regions(rng, sizes, {k: img.shape[:2] for k, (img, _) in images.items()}, taken)
    return picks


def accept(store, picks, preds, images, taken) -> List[Dict[str, Any]]:
    """Paste the expert mask into each pick and accept it into the store, as the dock's Accept does."""
    from src_model.postprocess import instance_labels
    from src_model.simulate import paste_correction

    out = []
    for key, score, box in picks:
        img, gt = images[key]
        shown = instance_labels(preds[key]) > 0
        corrected = paste_correction(shown, gt, [box])
        y0, x0, y1, x1 = box
        rec = store.accept_region(img, box, corrected[y0:y1, x0:x1], shown[y0:y1, x0:x1].astype(np.uint8),
                                  model_version=store.current_model_version, user="simulated")
        taken.setdefault(key, []).append(box)
        out.append({"image": key, "box": list(box), "score": None if math.isnan(score) else round(score, 4),
                    "area": (y1 - y0) * (x1 - x0), "holdout": rec.holdout,
                    "changed_px": int(np.count_nonzero(corrected[y0:y1, x0:x1] != shown[y0:y1, x0:x1]))})
    return out


def change_stats(old: Dict[str, Any], new: Dict[str, Any], taken: Dict[str, List[Tuple[int, int, int, int]]]
                 ) -> Dict[str, Dict[str, Any]]:
    """Per image, how the new model's labels differ from the old model's on whole images (the corrected
    boxes of ``taken`` left out): gland Dice of the two, gland pixels, and glands kept both ways
    (:func:`src_model.agreement.gland_matches`). For calibrating the promotion's no-regression check."""
    from src_model.agreement import check_box, excluded_mask, gland_matches, label_agreement

    def stats(a, b, valid):
        num, den = label_agreement(a, b, valid)
        kept_old, n_old = gland_matches(a, b, valid)
        kept_new, n_new = gland_matches(b, a, valid)
        return {"dice": round(num / den, 5) if den else 1.0, "gland_px": den, "glands_old": n_old,
                "glands_kept": kept_old, "glands_new": n_new, "glands_new_matched": kept_new}

    out = {}
    for k in old:
        a, b = old[k].labels, new[k].labels
        valid = ~excluded_mask(a.shape, taken.get(k, []))
        out[k] = stats(a, b, valid)
        box = check_box(a.shape)
        if box is not None and taken:  # session images: the check strip and the rest apart
            strip = excluded_mask(a.shape, [box])
            out[k]["strip"] = stats(a, b, valid & strip)
            out[k]["rest"] = stats(a, b, valid & ~strip)
    return out


class _CaptureAgreement:
    """Keeps the result of the retrain worker's :func:`src_model.agreement.agreement` call (its crops,
    per-image values and worst image) without computing it twice."""

    def __init__(self) -> None:
        self.result: Optional[Dict[str, Any]] = None

    def __enter__(self):
        import src_model.agreement as mod

        self._mod, self._orig = mod, mod.agreement

        def wrapped(*a, **kw):
            self.result = yield from self._orig(*a, **kw)
            return self.result

        mod.agreement = wrapped
        return self

    def __exit__(self, *exc) -> None:
        self._mod.agreement = self._orig


def retrain(store, work: Path, semi: bool, args, seed: int) -> Dict[str, Any]:
    """Retrain exactly as the dock's Retrain does: the retrain worker's ``run`` on the store (its training
    data, recipe and default steps, held-out scoring and agreement), in this process; the new model is
    kept (``register="yes"``, "Keep new model anyway") and the promotion rule's own decision is recorded."""
    from napari_cdma.project import retrain_worker
    from napari_cdma.project.events import Done, Failed, Started
    from napari_cdma.project.retrain_job import rule_decision

    events: List[Any] = []
    job = {"store": str(store.root), "out_dir": str(work), "recipe": args.recipe, "seed": seed, "device": "cpu",
           "semi_supervised": semi, "register": "yes"}
    if args.steps:
        job["steps"] = args.steps
    t0 = time.perf_counter()
    with _CaptureAgreement() as captured:
        retrain_worker.run(job, events.append, lambda: False)
    done = [e for e in events if isinstance(e, Done)]
    if not done:
        raise RuntimeError(f"retraining ended without a result: {[e for e in events if isinstance(e, Failed)]}")
    ev, started = done[0], next(e for e in events if isinstance(e, Started))
    store.refresh()
    promote, reason = rule_decision(ev)[:2]
    from src_model.checkpoint import read_checkpoint

    # the reference check's decision (recipes with check_drop), from the new model's provenance
    check = read_checkpoint(ev.checkpoint).get("provenance", {}).get("reference_check")
    return {"reference_check": check, "steps_done": ev.steps_done, "train_s": round(time.perf_counter() - t0, 1),
            "n_labelled": started.n_labelled, "n_unlabelled": started.n_unlabelled, "n_holdout": ev.n_holdout,
            "holdout_old_dice": ev.old_dice, "holdout_new_dice": ev.new_dice, "agreement": ev.agreement,
            "rule_promote": promote, "rule_reason": reason, "recipe": ev.recipe, "config": started.config,
            "agreement_detail": captured.result, "checkpoint": str(store.current_model_path())}


# ---------------------------------------------------------------- sessions and records

Key = Tuple[str, str, str, str, int]  # split, recipe, start, row, seed


def record_path(out: Path, key: Key, rnd: int) -> Path:
    split, recipe, start, row, seed = key
    return out / NAME / "records" / f"{split}_{recipe}_{start}_{row}_s{seed}_r{rnd}.json"


def _key(r: Dict[str, Any]) -> Key:
    return r["split"], r["recipe"], r["start"], r["row"], r["seed"]


def read_records(out: Path) -> List[Dict[str, Any]]:
    import json

    folder = out / NAME / "records"
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def run_session(key: Key, data: Path, args) -> None:
    """Run (or finish) the rounds of one session, writing one record per round."""
    import inspect

    from napari_cdma.project.store import ProjectStore
    from src_model import load_checkpoint
    from src_model.fileio import atomic_write_json
    from src_model.finetune import finetune
    from src_model.recipes import get_recipe

    split, recipe, start, row, seed = key
    # whether fine-tuning keeps each image's check strip out of training (src_model.agreement.check_box)
    reserve_check = inspect.signature(finetune).parameters["reserve_check"].default
    done = {r["round"]: r for r in read_records(args.out) if _key(r) == key}
    params = get_recipe(recipe).to_dict()
    stale = sorted(r for r, rec in done.items() if _settings(rec.get("recipe_params", params)) != _settings(params))
    if stale:  # the recipe of that name changed since: resuming would mix two recipes in one session
        raise SystemExit(f"{key}: rounds {stale} ran recipe {recipe!r} with other parameters than it has now; "
                         "run the current parameters under another recipe name (or another --out)")
    if all(r in done for r in range(args.rounds + 1)):
        log.info("%s: done", key)
        return
    sess_ids, other_ids = session_ids(data, split, seed, args.session_images, args.untouched)
    images = load_images(data, sess_ids, start)
    others = {"untouched": load_images(data, other_ids, "bundled")}
    if start == "newlab":
        others["untouched_newlab"] = load_images(data, other_ids, start)
    work = args.work / f"{split}_{recipe}_{start}_{row}_s{seed}"
    work.mkdir(parents=True, exist_ok=True)
    rows_i = list(ROWS).index(row)
    with tempfile.TemporaryDirectory(prefix="cdma-session-") as tmp:
        store = ProjectStore.open(Path(tmp) / "store", create=True)
        if start in TEN_STARTS:
            store.add_model(start_checkpoint(start), parent=None, promoted=True, note="starting point")
        taken: Dict[str, List[Tuple[int, int, int, int]]] = {}
        resumed = 0  # rebuild the store of the rounds already done (their models are kept in ``work``)
        while resumed + 1 in done and (work / f"round{resumed + 1}.pt").is_file():
            picks = [(p["image"], float("nan"), tuple(p["box"])) for p in done[resumed + 1]["regions"]]
            model = load_checkpoint(store.current_model_path())
            accept(store, picks, predict_all(model, {k: images[k] for k, _, _ in picks}), images, taken)
            store.add_model(work / f"round{resumed + 1}.pt", parent=store.current_model_version, promoted=True,
                            note="rebuilt from the session's records")
            resumed += 1
        if resumed:
            log.info("%s: resumed after round %d", key, resumed)
        area = sum(p["area"] for r in range(1, resumed + 1) for p in done[r]["regions"])
        changed = sum(p["changed_px"] for r in range(1, resumed + 1) for p in done[r]["regions"])
        model = load_checkpoint(store.current_model_path())
        preds = predict_all(model, images)

        def write(rnd: int, extra: Dict[str, Any]) -> None:
            t0 = time.perf_counter()
            rec: Dict[str, Any] = {"split": split, "recipe": recipe, "start": start, "row": row, "seed": seed,
                                   "round": rnd, "recipe_params": get_recipe(recipe).to_dict(),
                                   "session_ids": sess_ids, "untouched_ids": other_ids, "command": args.command,
                                   "reserve_check": reserve_check,
                                   "model_version": store.current_model_version, "corrected_area_px": area,
                                   "changed_px": changed, **extra, "session": measure(preds, images),
                                   "session_shown_dice": shown_dice(preds, images, taken)}
            for name, imgs in others.items():
                other_preds[name] = predict_all(model, imgs)
                rec[name] = measure(other_preds[name], imgs)
            for name, old in parent_preds.items():  # how this round's model differs from the one it replaces
                rec.setdefault("vs_parent", {})[name] = change_stats(
                    old, preds if name == "session" else other_preds[name], taken if name == "session" else {})
            rec["measure_s"] = round(time.perf_counter() - t0, 1)
            atomic_write_json(record_path(args.out, key, rnd), rec)
            log.info("%s round %d: session Dice %.4f F1 %.4f, untouched Dice %.4f (area %d px)", key, rnd,
                     rec["session"]["dice"], rec["session"]["f1"], rec["untouched"]["dice"], area)

        other_preds: Dict[str, Dict[str, Any]] = {}
        parent_preds: Dict[str, Dict[str, Any]] = {}
        if resumed == 0 and 0 not in done:
            write(0, {})
        for rnd in range(resumed + 1, args.rounds + 1):
            t0 = time.perf_counter()
            parent_preds = {"session": preds, **{name: other_preds.get(name) or predict_all(model, imgs)
                                                 for name, imgs in others.items()}}
            rng = np.random.default_rng([seed, rnd, rows_i])
            picks = pick(row, preds, images, taken, args.regions, rng)
            regions = accept(store, picks, preds, images, taken)
            info = retrain(store, Path(tmp) / f"train{rnd}", ROWS[row][1], args, seed)
            model_path = Path(info.pop("checkpoint"))
            shutil.copyfile(model_path, work / f"round{rnd}.pt")
            area += sum(p["area"] for p in regions)
            changed += sum(p["changed_px"] for p in regions)
            model = load_checkpoint(store.current_model_path())
            preds = predict_all(model, images)
            write(rnd, {"regions": regions, "train": info, "round_s": round(time.perf_counter() - t0, 1),
                        "load_avg": machine_info(with_torch=False)["load_avg_1_5_15"]})


# ---------------------------------------------------------------- report

def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _cell(values: Sequence[float], scale: float = 1.0, fmt: str = "{:.3f}") -> str:
    """Mean over seeds, with the standard deviation when there are several."""
    if not values:
        return "-"
    v = np.asarray(values, dtype=float) * scale
    return fmt.format(v.mean()) + (f" ± {fmt.replace('+', '').format(v.std(ddof=1))}" if len(v) > 1 else "")


def summarize(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per (split, start, row, round): means over seeds, untouched Dice change vs round 0, and the targets."""
    by: Dict[Tuple, Dict[int, Dict[str, Any]]] = {}
    for r in records:
        by.setdefault((r["split"], r["recipe"], r["start"], r["row"]), {}).setdefault(r["round"], {})[r["seed"]] = r
    table = []
    order = {name: i for i, name in enumerate((*STARTS, *ROWS))}
    for (split, recipe, start, row), rounds in sorted(by.items(), key=lambda kv: (*kv[0][:2], order[kv[0][2]],
                                                                                order[kv[0][3]])):
        for rnd, seeds in sorted(rounds.items()):
            base = rounds.get(0, {})
            d_unt = [(s["untouched"]["dice"] - base[k]["untouched"]["dice"]) for k, s in seeds.items() if k in base]
            d_ses = [(s["session"]["dice"] - base[k]["session"]["dice"]) for k, s in seeds.items() if k in base]
            rule = [s["train"]["rule_promote"] for s in seeds.values() if "train" in s]
            table.append({"split": split, "recipe": recipe, "start": start, "row": row, "round": rnd,
                          "seeds": sorted(seeds),
                          "corrected_area_px": [s["corrected_area_px"] for s in seeds.values()],
                          "changed_px": [s["changed_px"] for s in seeds.values()],
                          "session_dice": [s["session"]["dice"] for s in seeds.values()],
                          "session_f1": [s["session"]["f1"] for s in seeds.values()],
                          "session_shown_dice": [s["session_shown_dice"] for s in seeds.values()],
                          "session_dice_gain": d_ses,
                          "untouched_dice": [s["untouched"]["dice"] for s in seeds.values()],
                          "untouched_f1": [s["untouched"]["f1"] for s in seeds.values()],
                          "untouched_dice_change": d_unt,
                          "untouched_newlab_dice": [s["untouched_newlab"]["dice"] for s in seeds.values()
                                                    if "untouched_newlab" in s],
                          "rule_promotes": f"{sum(rule)}/{len(rule)}" if rule else "-",
                          "train_s": [s["train"]["train_s"] for s in seeds.values() if "train" in s]})
    return {"table": table}


def _targets(table: List[Dict[str, Any]], rounds: int) -> List[str]:
    """The issue-9 targets read off one section's table (paired over seeds where two rows are compared)."""
    get = {(t["start"], t["row"], t["round"]): t for t in table}
    lines = []
    for start in STARTS:
        last = {row: get.get((start, row, rounds)) for row in ROWS}
        if last["ranked_cdma"] is None:
            continue
        g = last["ranked_cdma"]["session_dice_gain"]
        goal = " (target >= 5 points)" if start in TEN_STARTS else ""
        per_seed = ", ".join(f"{100 * x:+.1f}" for x in g)
        lines.append(f"- **{start}, gain**: ranked + CDMA, session Dice after {rounds} rounds "
                     f"{_cell(g, 100, '{:+.1f}')} points (per seed {per_seed}){goal}.")
        for other, what in (("random_cdma", "ranked minus random (equal area)"),
                            ("ranked_sup", "CDMA minus supervised-only fine-tune")):
            if last[other] is not None:
                a, b = last["ranked_cdma"], last[other]
                common = [s for s in a["seeds"] if s in b["seeds"]]
                diff = [a["session_dice"][a["seeds"].index(s)] - b["session_dice"][b["seeds"].index(s)] for s in common]
                lines.append(f"- **{start}, {what}**: session Dice {_cell(diff, 100, '{:+.1f}')} points "
                             f"(per seed {', '.join(f'{100 * x:+.1f}' for x in diff)}; seeds {common}).")
        worst = [(min(t["untouched_dice_change"]), t["row"], t["round"]) for t in table
                 if t["start"] == start and t["round"] > 0 and t["untouched_dice_change"]]
        if worst:
            w = min(worst)
            ok = all(x[0] >= -0.005 for x in worst)
            lines.append(f"- **{start}, no forgetting** (untouched Dice drop <= 0.5 points in every round of every "
                         f"row): {'met' if ok else 'not met'}; largest drop {100 * w[0]:+.2f} points "
                         f"({w[1]}, round {w[2]}).")
    return lines


FORGOT_POINTS = 0.5  # a round's model "forgot" when the untouched images lost more than this vs its parent


def check_rows(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per retrained round that recorded how its model differs from its parent: the untouched
    images' Dice change vs the parent (points), the old check's value (pooled Dice of the two label maps on
    the uncorrected tissue the fine-tune distilled on: the old check's domain, whole images), the new
    check's (the retrain worker's :func:`src_model.agreement.agreement` on the check strips: pooled and
    worst image) and the promotion rule's own decision."""
    by = {(_key(r), r["round"]): r for r in records}
    rows = []
    for (key, rnd), r in sorted(by.items()):
        parent = by.get((key, rnd - 1))
        detail = (r.get("train") or {}).get("agreement_detail")
        if rnd == 0 or parent is None or "vs_parent" not in r or not detail:
            continue
        ses = r["vs_parent"]["session"].values()
        rest = [v.get("rest", v) for v in ses]
        num = sum(v["dice"] * v["gland_px"] for v in rest)
        den = sum(v["gland_px"] for v in rest)
        rows.append({"split": key[0], "recipe": key[1], "start": key[2], "row": key[3], "seed": key[4],
                     "round": rnd,
                     "untouched_change_points": 100 * (r["untouched"]["dice"] - parent["untouched"]["dice"]),
                     "old_check": num / den if den else None, "new_check": detail.get("pooled"),
                     "new_check_worst": detail.get("worst"), "crops": detail.get("crops"),
                     "rule_promote": r["train"]["rule_promote"]})
    return rows


def choose_threshold(values: Sequence[float], forgot: Sequence[bool]) -> Tuple[float, int]:
    """The threshold ``t`` (promote when value >= t) that decides most rows right (refuse the models that
    forgot, promote the others): midpoints between the sorted values; ties go to the highest ``t``."""
    v = sorted(set(values))
    cands = [v[0] - 1e-3] + [(a + b) / 2 for a, b in zip(v[:-1], v[1:], strict=True)] + [v[-1] + 1e-3]
    scored = [(sum((x >= t) != f for x, f in zip(values, forgot, strict=True)), t) for t in cands]
    best = max(n for n, _ in scored)
    return max(t for n, t in scored if n == best), best


def confusion(values: Sequence[Optional[float]], forgot: Sequence[bool], t: float) -> str:
    """'promoted a / n that forgot, b / m that did not' for the check ``value >= t``."""
    pf = sum(1 for x, f in zip(values, forgot, strict=True) if f and x is not None and x >= t)
    pn = sum(1 for x, f in zip(values, forgot, strict=True) if not f and x is not None and x >= t)
    nf, nn = sum(forgot), len(forgot) - sum(forgot)
    return f"promotes {pf} / {nf} that forgot, {pn} / {nn} that did not"


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.4f}"


def calibration_lines(rows: List[Dict[str, Any]]) -> List[str]:
    """The no-regression check's calibration section: per-round values and the confusion of old and new checks."""
    from src_model.agreement import MIN_AGREEMENT

    if not rows:
        return []
    forgot = [r["untouched_change_points"] < -FORGOT_POINTS for r in rows]
    out = ["### No-regression check: distilled tissue versus check strips", "",
           f"A round's model *forgot* when the untouched images' mean Dice fell by more than {FORGOT_POINTS} "
           "point against the model it replaces (the one the check compares it with). Sessions run with the "
           "check strip kept out of fine-tuning (`reserve_check` in each record). Distilled: Dice of the two "
           "label maps on the uncorrected tissue the fine-tune distilled on (whole images; the domain of the "
           "product's check, src_model.agreement with reserved=False). Strip: the retrain worker's agreement "
           "on the check strips (crops, pooled; and its worst image). Both against "
           f"src_model.agreement.MIN_AGREEMENT = {MIN_AGREEMENT} and against the best threshold on these rows "
           "(in-sample: an upper bound on what a threshold could do).", "",
           "| start | row | seed | round | Δ untouched vs parent (pts) | forgot | distilled | strip | "
           "strip, worst image | crops | rule promoted |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r, f in zip(rows, forgot, strict=True):
        out.append(f"| {r['start']} | {r['row']} | {r['seed']} | {r['round']} | "
                   f"{r['untouched_change_points']:+.2f} | "
                   f"{'yes' if f else 'no'} | {_fmt(r['old_check'])} | {_fmt(r['new_check'])} | "
                   f"{_fmt(r['new_check_worst'])} | {r['crops']} | {'yes' if r['rule_promote'] else 'no'} |")
    out.append("")
    for name, key, limit in (("distilled-tissue check", "old_check", MIN_AGREEMENT),
                             ("strip check", "new_check", MIN_AGREEMENT),
                             ("strip check, worst image", "new_check_worst", None)):
        vals = [r[key] for r in rows]
        if any(v is None for v in vals):
            continue
        t, right = choose_threshold(vals, forgot)
        line = f"- **{name}**: best threshold on these rows {t:.4f} ({right} / {len(rows)} right: " \
               f"{confusion(vals, forgot, t)})"
        if limit is not None:
            line += f"; at its limit {limit}: {confusion(vals, forgot, limit)}"
        out.append(line + ".")
    return out + [""]


def _settings(params: Dict[str, Any]) -> Dict[str, Any]:
    """A recipe's parameters without its name and description (what the fine-tune actually does); a parameter
    added to :class:`~src_model.recipes.Recipe` after a record was written counts at its default."""
    import dataclasses

    from src_model.recipes import Recipe

    defaults = {f.name: f.default for f in dataclasses.fields(Recipe) if f.default is not dataclasses.MISSING}
    return {k: v for k, v in {**defaults, **params}.items() if k not in ("name", "description")}


def recipe_note(recipe: str, records: List[Dict[str, Any]]) -> Optional[str]:
    """A line for a section whose records ran recipe ``recipe`` with other parameters than the recipe of that
    name has now (a recipe renamed or changed since): the current recipes with the records' parameters."""
    from src_model.recipes import RECIPES

    used = [_settings(r["recipe_params"]) for r in records if "recipe_params" in r]
    if not used or recipe not in RECIPES or all(u == _settings(RECIPES[recipe].to_dict()) for u in used):
        return None
    current = _settings(RECIPES[recipe].to_dict())
    parts = []
    for u in [u for i, u in enumerate(used) if u not in used[:i]]:  # each parameter set once, in record order
        same = [n for n, r in RECIPES.items() if n != recipe and _settings(r.to_dict()) == u]
        diff = ", ".join(f"{k}={v}" for k, v in u.items() if current.get(k) != v)
        now = f"now `{'`, `'.join(same)}`" if same else "no current recipe"
        parts.append(f"{diff} ({now})" if u != current else "the current parameters")
    return f"Not all of these records ran the current `{recipe}`; they ran: " + "; ".join(parts) + "."


def comparison_lines(records: List[Dict[str, Any]]) -> List[str]:
    """One row per (split, start, row, recipe) with the session Dice gain after the last round and the
    untouched images' worst change vs round 0 over the rounds, per seed: the recipes side by side."""
    by: Dict[Tuple, Dict[int, Dict[int, Dict[str, Any]]]] = {}
    for r in records:
        by.setdefault((r["split"], r["start"], r["row"], r["recipe"]), {}).setdefault(r["seed"], {})[r["round"]] = r
    rows = []
    for (split, start, row, recipe), seeds in sorted(by.items()):
        gain, worst, last_round = [], [], []
        for _, rounds in sorted(seeds.items()):
            last = max(rounds)
            if 0 not in rounds or last == 0:
                continue
            gain.append(100 * (rounds[last]["session"]["dice"] - rounds[0]["session"]["dice"]))
            worst.append(min(100 * (rounds[k]["untouched"]["dice"] - rounds[0]["untouched"]["dice"])
                             for k in rounds if k > 0))
            last_round.append(last)
        if gain:
            rows.append(f"| {split} | {start} | {row} | `{recipe}` | {', '.join(map(str, sorted(seeds)))} | "
                        f"{', '.join(map(str, last_round))} | {', '.join(f'{g:+.1f}' for g in gain)} | "
                        f"{np.mean(gain):+.1f} | {', '.join(f'{w:+.2f}' for w in worst)} | "
                        f"{'yes' if min(worst) >= -FORGOT_POINTS else 'no'} |")
    if not rows:
        return []
    return ["## Recipes side by side", "",
            "Session Dice gain after the last round (vs round 0) and the untouched images' worst Dice change vs "
            f"round 0 over the rounds, per seed, in points; 'kept' = no round lost more than {FORGOT_POINTS} point.",
            "", "| split | start | row | recipe | seeds | last round | session gain | mean gain | worst Δ untouched "
            "| kept |", "|---|---|---|---|---|---|---|---|---|---|", *rows, ""]


def write_report(out: Path, args, meta: Dict[str, Any]) -> None:
    """``annotation_session.json`` (every record and the summary), ``.md`` and the efficiency plot(s)."""
    from src_model.fileio import atomic_write_bytes, atomic_write_json

    records = read_records(out)
    summary = summarize(records)
    atomic_write_json(out / f"{NAME}.json", {"meta": meta, "summary": summary, "records": records})
    lines = ["# Simulated annotation sessions (issue 9)", "",
             "GlaS expert masks stand in for the pathologist's corrections; see the docstring of "
             "`benchmarks/annotation_session.py` for a round. Values are means over seeds (± sd when several); "
             "Dice and F1 are the post-processed glands, as the dock shows them, mean over images. "
             "Area = cumulative corrected box area; changed = pixels the correction changed; shown = session Dice "
             "with the accepted corrections pasted in; Δ untouched = change of the untouched images' Dice vs "
             "round 0 in points. The new model is kept every round; 'rule' = how often the product's promotion "
             "rule would have promoted it.", "",
             f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} usable cores (shared with other jobs; "
             "each round records its load average), 1 torch thread unless the command says otherwise.", "",
             "Commands (each record keeps its own):", ""]
    lines += [f"    {c}" for c in sorted({r.get("command", "") for r in records} - {""})] + [""]
    from src_model.recipes import RECIPES

    # the sections that ran the current default recipe's parameters (under whatever name) come first
    default = _settings(RECIPES["default"].to_dict())
    current = {(r["split"], r["recipe"]) for r in records if _settings(r.get("recipe_params", {})) == default}
    sections = sorted({(t["split"], t["recipe"]) for t in summary["table"]},
                      key=lambda sr: (("test", "check", "trainval", "quick").index(sr[0]), sr not in current,
                                      sr[1] != "default", sr[1]))
    lines += comparison_lines(records)
    for split, recipe in sections:
        table = [t for t in summary["table"] if (t["split"], t["recipe"]) == (split, recipe)]
        lines += [f"## {split} sessions, recipe `{recipe}`", ""]
        note = recipe_note(recipe, [r for r in records if (r["split"], r["recipe"]) == (split, recipe)])
        if note:
            lines += [note, ""]
        rounds = max(t["round"] for t in table)
        lines += _targets(table, rounds) + [""]
        lines += ["| start | row | round | seeds | area px | changed px | session Dice | session F1 | shown Dice | "
                  "untouched Dice | untouched F1 | Δ untouched (pts) | rule | train s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for t in table:
            lines.append(f"| {t['start']} | {t['row']} | {t['round']} | {len(t['seeds'])} | "
                         f"{_cell(t['corrected_area_px'], fmt='{:.0f}')} | {_cell(t['changed_px'], fmt='{:.0f}')} | "
                         f"{_cell(t['session_dice'])} | {_cell(t['session_f1'])} | {_cell(t['session_shown_dice'])} | "
                         f"{_cell(t['untouched_dice'])} | {_cell(t['untouched_f1'])} | "
                         f"{_cell(t['untouched_dice_change'], 100, '{:+.2f}')} | {t['rule_promotes']} | "
                         f"{_cell(t['train_s'], fmt='{:.0f}')} |")
        newlab = [t for t in table if t["untouched_newlab_dice"]]
        if newlab:
            lines += ["", "newlab: Dice of the untouched images in the new lab's stain: " + ", ".join(
                f"{t['row']} r{t['round']} {_cell(t['untouched_newlab_dice'])}" for t in newlab)]
        lines += calibration_lines([r for r in check_rows(records) if (r["split"], r["recipe"]) == (split, recipe)])
        main = split == "test" and (split, recipe) in current  # the plot of the current default's test sessions
        png = out / (f"{NAME}.png" if main else f"{NAME}_{split}_{recipe}.png")
        atomic_write_bytes(png, lambda f, table=table: plot(table, f))
        lines += ["", f"Plot: `{png.name}` (session Dice against corrected area, untouched Dice below; means over "
                  "seeds, bars = sd over seeds, mostly how hard each seed's images are).", ""]
    atomic_write_bytes(out / f"{NAME}.md", lambda f: f.write(("\n".join(lines) + "\n").encode("utf-8")))


def plot(table: List[Dict[str, Any]], fileobj) -> None:
    """Annotation efficiency: session Dice (top) and untouched Dice (bottom) against corrected area, per start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    starts = [s for s in STARTS if any(t["start"] == s for t in table)]
    fig, axes = plt.subplots(2, len(starts), figsize=(4.2 * len(starts), 6.4), squeeze=False)
    for j, start in enumerate(starts):
        for row in ROWS:
            pts = sorted((t for t in table if t["start"] == start and t["row"] == row), key=lambda t: t["round"])
            if not pts:
                continue
            x = [_mean(t["corrected_area_px"]) / 1000 for t in pts]
            for i, key in enumerate(("session_dice", "untouched_dice")):
                axes[i, j].errorbar(x, [_mean(t[key]) for t in pts], color=f"C{list(ROWS).index(row)}",
                                    yerr=[float(np.std(t[key])) for t in pts], marker="o", capsize=3, label=row)
        axes[0, j].set_title(start)
        axes[1, j].set_xlabel("corrected area (1000 px)")
    axes[0, 0].set_ylabel("session Dice")
    axes[1, 0].set_ylabel("untouched Dice")
    for ax in axes[0]:  # each panel names its own rows (a start may have run fewer rows, in the same colours)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(fileobj, format="png", dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- main

def main(argv: Optional[List[str]] = None) -> int:
    import sys

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--starts", default=",".join(s for s in STARTS if s != "ten"),
                   help=f"comma-separated, from {', '.join(STARTS)} (default: all but the lost GPU model's ten)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {', '.join(ROWS)}")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (session images, training, random regions)")
    p.add_argument("--split", choices=("test", "check", "trainval"), default="test",
                   help="test: GlaS test images; check: the 8 validation images; trainval: the validation images "
                        "and the training images the 10 %% model saw without labels (check and trainval: for "
                        "choosing settings)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--regions", type=int, default=5, help="regions corrected per round")
    p.add_argument("--session-images", type=int, default=6)
    p.add_argument("--untouched", type=int, default=18)
    p.add_argument("--recipe", default="default", help="fine-tuning recipe (src_model.finetune)")
    p.add_argument("--steps", type=int, default=None, help="fine-tuning steps (default: the recipe's)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--quick", action="store_true",
                   help="tiny smoke: 1 round of 2 regions, 2 session images, 1 untouched, 2 steps, first start")
    p.add_argument("--out", type=Path, default=None, help=f"results folder (default {RESULTS}; --quick: a temp folder)")
    p.add_argument("--work", type=Path, default=None,
                   help="where each round's model is kept (default runs/annotation_session; --quick: the temp folder)")
    p.add_argument("--report", action="store_true", help="only rewrite the report from the records")
    add_data_argument(p)
    args = p.parse_args(argv)
    args.command = " ".join(["python", "benchmarks/annotation_session.py", *(sys.argv[1:] if argv is None else argv)])
    data = require_glas(args.data, p.prog).resolve()
    split = args.split
    starts, rows = args.starts.split(","), args.rows.split(",")
    for name, got, valid in (("start", starts, STARTS), ("row", rows, ROWS)):
        bad = [g for g in got if g not in valid]
        if bad:
            p.error(f"unknown {name} {bad}; valid: {', '.join(valid)}")
    if args.quick:
        args.rounds, args.regions, args.session_images, args.untouched = 1, 2, 2, 1
        args.steps = args.steps or 2
        starts, split = starts[:1], "quick"
        tmp = Path(tempfile.gettempdir()) / "cdma_annotation_session_quick"
        args.out = args.out or tmp
        args.work = args.work or tmp / "work"
    args.out = args.out or RESULTS
    args.work = args.work or ROOT / "runs" / NAME
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    import torch

    torch.set_num_threads(args.threads)
    meta = {"machine": machine_info(), "threads": args.threads, "command": args.command,
            "newlab": NEWLAB, "recipe": args.recipe, "steps": args.steps}
    missing = [TEN_STARTS[s] for s in starts if s in TEN_STARTS and not TEN_STARTS[s].is_file()]
    if missing and not args.report:
        print(f"{p.prog}: error: no {missing[0]} (a 10 % model)", file=sys.stderr)
        return 2
    if not args.report:
        for start in starts:
            for row in rows:
                for seed in (int(s) for s in args.seeds.split(",")):
                    run_session((split, args.recipe, start, row, seed), data, args)
                    write_report(args.out, args, meta)
    write_report(args.out, args, meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
