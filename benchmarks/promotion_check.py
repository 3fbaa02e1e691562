"""Calibration of the promotion rule's no-regression check (issue 9 item 2).

Does any statistic that the product can compute at promotion time, without ground truth, tell the
fine-tuned models that forgot from the others? The material is the simulated annotation sessions of
``benchmarks/annotation_session.py``: every round's fine-tuned model is kept
(``runs/annotation_session/<split>_<recipe>_<start>_<row>_s<seed>/round{1,2,3}.pt``; round 0 is the
session's starting model) and its record holds the images of the session, the regions accepted in
each round (held-out or not) and the measured Dice of untouched images that are not in the session.

For every round ``k`` the *candidate* is ``round{k}.pt`` and the *current* model the one it replaces
(``round{k-1}.pt``, or the starting model). The ground truth is the change of the untouched images'
mean Dice from the current model to the candidate, in points; the candidate *forgot* when it fell by
more than :data:`FORGOT_POINTS`. Each statistic uses only what the product has when it decides: both
models, the session images (the project's images), the boxes accepted so far and, inside the held-out
boxes, the pathologist's correction (here the GlaS mask pasted in). See :func:`round_stats`.

Only training / validation sessions (``trainval_*`` and ``check_*``) choose the statistic and its
threshold; the test sessions (``test_*``) are scored once, afterwards, with the choice frozen in
``--chosen`` (``--split test``).

Predictions (the dock's tiling, :func:`src_model.inference.predict`) are cached per (checkpoint,
image) under ``--cache`` (default ``/tmp/E_promote/cache``).

Usage::

    python benchmarks/promotion_check.py --split trainval            # calibrate, writes the report
    python benchmarks/promotion_check.py --split test --chosen NAME:THRESHOLD   # once, after choosing
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import annotation_session as AS  # the sessions' own image loading and record reading
import numpy as np
from _common import RESULTS, ROOT, add_data_argument, machine_info, require_glas

log = logging.getLogger("promotion_check")

NAME = "promotion_check"
WORK = ROOT / "runs" / "annotation_session"
FORGOT_POINTS = 0.5
CALIBRATION_SPLITS = ("trainval", "check")
#: Pixels where the current model's gland probability is below this or above 1 - this count as "confident".
CONFIDENT = 0.1

# name -> (what it is, direction): direction +1 = larger means more risk of forgetting
STATS: Dict[str, Tuple[str, int]] = {
    "disagree": ("1 - Dice of the two label maps on uncorrected tissue, pooled over images", +1),
    "disagree_worst": ("1 - Dice of the two label maps, worst image (images with >= 4000 gland px)", +1),
    "disagree_mean": ("1 - Dice of the two label maps, mean over images", +1),
    "disagree_strip": ("1 - Dice of the two label maps on the check strips (src_model.agreement.check_box)", +1),
    "flip_confident": ("share of pixels where the current model was confident (p<0.1 or p>0.9) whose label flipped",
                       +1),
    "flip_confident_worst": ("flip_confident, worst image", +1),
    "prob_l1": ("mean |p_new - p_old| of the gland probability on uncorrected tissue", +1),
    "prob_l1_worst": ("prob_l1, worst image", +1),
    "glands_lost": ("share of the current model's glands (post-processed) not kept by the candidate "
                    "(src_model.agreement.gland_matches)", +1),
    "glands_lost_worst": ("glands_lost, worst image", +1),
    "gland_mismatch": ("1 - gland F1 of the two models (glands kept both ways)", +1),
    "fg_change": ("change of the mean gland fraction on uncorrected tissue (new - old, signed)", +1),
    "fg_drop": ("old - new mean gland fraction (signed: the candidate predicts less gland)", +1),
    "fg_abs_change": ("|change of the mean gland fraction|, pooled", +1),
    "fg_abs_change_worst": ("|change of the gland fraction|, worst image", +1),
    "unc_change": ("change of the mean uncertainty map (Prediction.uncertainty) on uncorrected tissue, new - old",
                   +1),
    "unc_abs_change": ("|unc_change|", +1),
    "holdout_loss": ("old - new Dice on all held-out boxes, pooled (the correction as truth)", +1),
    "holdout_loss_worst": ("old - new held-out Dice, worst image", +1),
    "weight_change": ("relative L2 change of the weights, ||w_new - w_old|| / ||w_old||", +1),
    "product_disagree": ("1 - the product's own check as the session's retrain worker ran it (pooled agreement "
                         "on up to 16 crops of uncorrected tissue, src_model.agreement; from the record)", +1),
}


# ---------------------------------------------------------------- sessions

def session_dirs(prefixes: Sequence[str]) -> Dict[str, Dict[int, Dict[str, Any]]]:
    """``{dir name: {round: record}}`` for the sessions whose folder name starts with one of ``prefixes``
    and whose rounds were all kept."""
    recs = AS.read_records(RESULTS)
    by: Dict[str, Dict[int, Dict[str, Any]]] = {}
    for r in recs:
        name = f"{r['split']}_{r['recipe']}_{r['start']}_{r['row']}_s{r['seed']}"
        by.setdefault(name, {})[r["round"]] = r
    out = {}
    for name, rounds in sorted(by.items()):
        if not name.startswith(tuple(f"{p}_" for p in prefixes)):
            continue
        out[name] = {k: v for k, v in rounds.items() if k == 0 or (WORK / name / f"round{k}.pt").is_file()}
    return out


def model_path(name: str, start: str, rnd: int) -> Path:
    return AS.start_checkpoint(start) if rnd == 0 else WORK / name / f"round{rnd}.pt"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class Cache:
    """Predictions per (checkpoint, image, start variant) on disk: gland probability and uncertainty as
    uint8 (1/255 steps), labels as uint8; the models are loaded once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._models: Dict[Path, Any] = {}
        self._sha: Dict[Path, str] = {}
        self.predicted = 0

    def sha(self, path: Path) -> str:
        if path not in self._sha:
            self._sha[path] = _sha(path)
        return self._sha[path]

    def model(self, path: Path):
        from src_model import load_checkpoint

        if path not in self._models:
            self._models = {path: load_checkpoint(path)}  # one at a time: memory
        return self._models[path]

    def get(self, path: Path, image_id: str, variant: str, image: np.ndarray) -> Dict[str, np.ndarray]:
        f = self.folder / f"{self.sha(path)}_{variant}_{image_id}.npz"
        if f.is_file():
            with np.load(f) as z:
                return {k: z[k] for k in z.files}
        from src_model.inference import predict

        p = predict(self.model(path), image)
        out = {"labels": p.labels.astype(np.uint8),
               "fg": np.round(np.clip(p.foreground, 0, 1) * 255).astype(np.uint8),
               "unc": np.round(np.clip(p.uncertainty, 0, 1) * 255).astype(np.uint8)}
        tmp = f.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **out)
        tmp.replace(f)
        self.predicted += 1
        return out


def weight_change(a: Path, b: Path) -> float:
    from src_model import load_checkpoint

    sa, sb = load_checkpoint(a).state_dict(), load_checkpoint(b).state_dict()
    num = den = 0.0
    for k, v in sa.items():
        if not v.is_floating_point() or "running" in k:
            continue
        num += float(((sb[k].float() - v.float()) ** 2).sum())
        den += float((v.float() ** 2).sum())
    return (num / den) ** 0.5 if den else 0.0


# ---------------------------------------------------------------- statistics

def round_stats(old: Dict[str, Dict[str, np.ndarray]], new: Dict[str, Dict[str, np.ndarray]],
                images: Dict[str, Tuple[np.ndarray, np.ndarray]], boxes: Dict[str, List[Tuple[int, int, int, int]]],
                held: Dict[str, List[Tuple[int, int, int, int]]]) -> Dict[str, Optional[float]]:
    """The candidate statistics of one round (see :data:`STATS`). ``images`` carries the expert mask, used
    only inside the held-out boxes (the accepted correction there)."""
    from src_model.agreement import MIN_IMAGE_GLAND_PX, check_box, excluded_mask, gland_matches, label_agreement

    per: Dict[str, Dict[str, float]] = {}
    pool = dict.fromkeys(("num", "den", "snum", "sden", "conf", "flip", "l1", "px", "fg_o", "fg_n", "u_o", "u_n",
                          "kept", "n_old", "kept_new", "n_new"), 0.0)
    for k, (img, _) in images.items():
        a, b = old[k], new[k]
        valid = ~excluded_mask(img.shape[:2], boxes.get(k, []))
        la, lb = a["labels"] > 0, b["labels"] > 0
        num, den = label_agreement(la, lb, valid)
        strip = check_box(img.shape)
        svalid = valid & excluded_mask(img.shape[:2], [strip]) if strip is not None else valid
        snum, sden = label_agreement(la, lb, svalid)
        pa, pb = a["fg"].astype(np.float32) / 255, b["fg"].astype(np.float32) / 255
        conf = valid & ((pa < CONFIDENT) | (pa > 1 - CONFIDENT))
        flip = int(np.count_nonzero(conf & (la != lb)))
        px = int(valid.sum())
        l1 = float(np.abs(pa - pb)[valid].sum())
        fg_o, fg_n = float(la[valid].sum()), float(lb[valid].sum())
        u_o = float(a["unc"][valid].astype(np.float64).sum() / 255)
        u_n = float(b["unc"][valid].astype(np.float64).sum() / 255)
        kept, n_old = gland_matches(la, lb, valid)
        kept_new, n_new = gland_matches(lb, la, valid)
        for key, v in (("num", num), ("den", den), ("snum", snum), ("sden", sden), ("conf", int(conf.sum())),
                       ("flip", flip), ("l1", l1), ("px", px), ("fg_o", fg_o), ("fg_n", fg_n), ("u_o", u_o),
                       ("u_n", u_n), ("kept", kept), ("n_old", n_old), ("kept_new", kept_new), ("n_new", n_new)):
            pool[key] += v
        per[k] = {"disagree": 1 - num / den if den else 0.0, "gland_px": den,
                  "flip_confident": flip / max(1, int(conf.sum())), "prob_l1": l1 / max(1, px),
                  "glands_lost": 1 - kept / n_old if n_old else 0.0,
                  "fg_abs_change": abs(fg_n - fg_o) / max(1, px)}
    big = [v for v in per.values() if v["gland_px"] >= MIN_IMAGE_GLAND_PX] or list(per.values())
    out: Dict[str, Optional[float]] = {
        "disagree": 1 - pool["num"] / pool["den"] if pool["den"] else 0.0,
        "disagree_worst": max(v["disagree"] for v in big),
        "disagree_mean": float(np.mean([v["disagree"] for v in per.values()])),
        "disagree_strip": 1 - pool["snum"] / pool["sden"] if pool["sden"] else 0.0,
        "flip_confident": pool["flip"] / max(1, pool["conf"]),
        "flip_confident_worst": max(v["flip_confident"] for v in per.values()),
        "prob_l1": pool["l1"] / max(1, pool["px"]),
        "prob_l1_worst": max(v["prob_l1"] for v in per.values()),
        "glands_lost": 1 - pool["kept"] / pool["n_old"] if pool["n_old"] else 0.0,
        "glands_lost_worst": max(v["glands_lost"] for v in big),
        "gland_mismatch": 1 - (pool["kept"] + pool["kept_new"]) / max(1, pool["n_old"] + pool["n_new"]),
        "fg_change": (pool["fg_n"] - pool["fg_o"]) / max(1, pool["px"]),
        "fg_drop": (pool["fg_o"] - pool["fg_n"]) / max(1, pool["px"]),
        "fg_abs_change": abs(pool["fg_n"] - pool["fg_o"]) / max(1, pool["px"]),
        "fg_abs_change_worst": max(v["fg_abs_change"] for v in per.values()),
        "unc_change": (pool["u_n"] - pool["u_o"]) / max(1, pool["px"]),
        "unc_abs_change": abs(pool["u_n"] - pool["u_o"]) / max(1, pool["px"]),
    }
    # held-out boxes: Dice against the correction, pooled over boxes and per image
    hn = {"o": [0, 0], "n": [0, 0]}
    per_h = []
    for k, bxs in held.items():
        gt = images[k][1] > 0
        s = {"o": [0, 0], "n": [0, 0]}
        for y0, x0, y1, x1 in bxs:
            t = gt[y0:y1, x0:x1]
            for m, pred in (("o", old[k]["labels"]), ("n", new[k]["labels"])):
                p = pred[y0:y1, x0:x1] > 0
                s[m][0] += 2 * int(np.count_nonzero(p & t))
                s[m][1] += int(p.sum()) + int(t.sum())
        for m in s:
            hn[m][0] += s[m][0]
            hn[m][1] += s[m][1]
        if s["o"][1] + s["n"][1] > 0:
            per_h.append((s["o"][0] / s["o"][1] if s["o"][1] else 1.0) - (s["n"][0] / s["n"][1] if s["n"][1] else 1.0))
    out["holdout_loss"] = ((hn["o"][0] / hn["o"][1] if hn["o"][1] else 1.0)
                           - (hn["n"][0] / hn["n"][1] if hn["n"][1] else 1.0)) if held else None
    out["holdout_loss_worst"] = max(per_h) if per_h else None
    out["n_images"] = len(images)
    out["compared_px"] = pool["px"]
    out["n_holdout_boxes"] = sum(len(v) for v in held.values())
    return out


#: Held-out set sizes (128-px boxes of verified tissue) simulated in :func:`simulated_holdout`.
HOLDOUT_SIZES = (1, 3, 5, 10, 20, 40)
HOLDOUT_BOX = 128
HOLDOUT_DRAWS = 40


def simulated_holdout(old, new, images, boxes, rng: np.random.Generator) -> Dict[str, Any]:
    """Not a product statistic (it reads the expert mask outside the accepted boxes): how well a larger
    held-out set would decide. For each size n of :data:`HOLDOUT_SIZES`, :data:`HOLDOUT_DRAWS` draws of n
    random 128-px boxes of tissue outside the accepted boxes on the session images, each scored as the
    held-out regions are (old - new pooled Dice against the truth). Also the truth-based change of the
    session images' Dice outside the accepted boxes (what the held-out set estimates)."""
    from src_model.agreement import excluded_mask
    from src_model.tissue import tissue_mask

    cands = []  # (image, y0, x0, stats (2|O&T|, |O|+|T|, 2|N&T|, |N|+|T|))
    tot = np.zeros(4)
    for k, (img, gt) in images.items():
        h, w = gt.shape
        corrected = excluded_mask((h, w), boxes.get(k, []))
        valid = ~corrected
        t = (gt > 0) & valid
        o, n = (old[k]["labels"] > 0) & valid, (new[k]["labels"] > 0) & valid
        tot += [2 * np.count_nonzero(o & t), o.sum() + t.sum(), 2 * np.count_nonzero(n & t), n.sum() + t.sum()]
        tissue = tissue_mask(img)
        for y in range(0, h - HOLDOUT_BOX + 1, HOLDOUT_BOX // 2):
            for x in range(0, w - HOLDOUT_BOX + 1, HOLDOUT_BOX // 2):
                sl = (slice(y, y + HOLDOUT_BOX), slice(x, x + HOLDOUT_BOX))
                if corrected[sl].any() or tissue[sl].mean() < 0.3:
                    continue
                tt, oo, nn = gt[sl] > 0, old[k]["labels"][sl] > 0, new[k]["labels"][sl] > 0
                cands.append([2 * np.count_nonzero(oo & tt), oo.sum() + tt.sum(), 2 * np.count_nonzero(nn & tt),
                              nn.sum() + tt.sum()])
    c = np.asarray(cands, dtype=float)
    out: Dict[str, Any] = {"session_outside_change_points": 100 * (tot[2] / tot[3] - tot[0] / tot[1]),
                           "candidate_boxes": len(c)}
    for size in HOLDOUT_SIZES:
        vals = []
        for _ in range(HOLDOUT_DRAWS):
            pick = c[rng.choice(len(c), size=min(size, len(c)), replace=False)].sum(axis=0)
            old_d = pick[0] / pick[1] if pick[1] else 1.0
            new_d = pick[2] / pick[3] if pick[3] else 1.0
            vals.append(old_d - new_d)
        out[f"loss_{size}"] = vals
    return out


def study_rows(prefixes: Sequence[str], data: Path, cache: Cache) -> List[Dict[str, Any]]:
    """One row per retrained round of the sessions named by ``prefixes``: statistics and ground truth."""
    rows = []
    sessions = session_dirs(prefixes)
    for i, (name, rounds) in enumerate(sessions.items(), start=1):
        r0 = rounds.get(0)
        if r0 is None:
            continue
        start = r0["start"]
        images = AS.load_images(data, r0["session_ids"], start)
        variant = "newlab" if start == "newlab" else "plain"
        t0 = time.perf_counter()
        preds = {}
        for rnd in sorted(rounds):
            path = model_path(name, start, rnd)
            preds[rnd] = {k: cache.get(path, k, variant, img) for k, (img, _) in images.items()}
        boxes: Dict[str, List[Tuple[int, int, int, int]]] = {}
        held: Dict[str, List[Tuple[int, int, int, int]]] = {}
        for rnd in sorted(r for r in rounds if r > 0):
            if rnd - 1 not in preds:
                break
            for reg in rounds[rnd]["regions"]:
                boxes.setdefault(reg["image"], []).append(tuple(reg["box"]))
                if reg["holdout"]:
                    held.setdefault(reg["image"], []).append(tuple(reg["box"]))
            stats = round_stats(preds[rnd - 1], preds[rnd], images, boxes, held)
            stats["weight_change"] = weight_change(model_path(name, start, rnd - 1), model_path(name, start, rnd))
            agree = rounds[rnd]["train"].get("agreement")
            stats["product_disagree"] = None if agree is None else 1 - agree
            truth = simulated_holdout(preds[rnd - 1], preds[rnd], images, boxes,
                                      np.random.default_rng([r0["seed"], rnd, len(rows)]))
            rec, parent = rounds[rnd], rounds[rnd - 1]
            change = 100 * (rec["untouched"]["dice"] - parent["untouched"]["dice"])
            rows.append({"session": name, "split": r0["split"], "recipe": r0["recipe"], "start": start,
                         "row": r0["row"], "seed": r0["seed"], "round": rnd,
                         "reserve_check": r0.get("reserve_check"),
                         "untouched_change_points": change, "forgot": change < -FORGOT_POINTS,
                         "session_change_points": 100 * (rec["session"]["dice"] - parent["session"]["dice"]),
                         "rule_promote": rec["train"].get("rule_promote"), "stats": stats, "truth": truth})
        log.info("%d/%d %s: %.0f s (%d predicted so far)", i, len(sessions), name, time.perf_counter() - t0,
                 cache.predicted)
    return rows


# ---------------------------------------------------------------- scoring a statistic

def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> Optional[float]:
    """P(score of a positive > score of a negative), ties half."""
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    if not pos or not neg:
        return None
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def choose_threshold(scores: Sequence[float], positive: Sequence[bool]) -> Tuple[float, int, int]:
    """Refuse when score > t: the ``t`` with the largest TPR - FPR (ties: the one refusing fewer good rounds).
    Returns (t, forgetting rounds refused, good rounds refused)."""
    v = sorted(set(scores))
    cands = [v[0] - 1e-9] + [(a + b) / 2 for a, b in zip(v[:-1], v[1:], strict=True)] + [v[-1] + 1e-9]
    npos, nneg = sum(positive), len(positive) - sum(positive)
    best = None
    for t in cands:
        tp = sum(1 for s, p in zip(scores, positive, strict=True) if p and s > t)
        fp = sum(1 for s, p in zip(scores, positive, strict=True) if not p and s > t)
        j = tp / max(1, npos) - fp / max(1, nneg)
        key = (j, -fp)
        if best is None or key > best[0]:
            best = (key, t, tp, fp)
    return best[1], best[2], best[3]


def cluster_bootstrap_auroc(rows: List[Dict[str, Any]], stat: str, n: int = 2000, seed: int = 0
                            ) -> Tuple[Optional[float], Optional[float]]:
    """95 % interval of the AUROC, resampling whole sessions (rounds of one session are not independent)."""
    rng = np.random.default_rng(seed)
    names = sorted({r["session"] for r in rows})
    by = {s: [r for r in rows if r["session"] == s and r["stats"].get(stat) is not None] for s in names}
    vals = []
    for _ in range(n):
        pick = [by[names[i]] for i in rng.integers(0, len(names), len(names))]
        flat = [r for p in pick for r in p]
        a = auroc([r["stats"][stat] for r in flat], [r["forgot"] for r in flat])
        if a is not None:
            vals.append(a)
    if not vals:
        return None, None
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


def score_truth(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """How the truth-based quantities of :func:`simulated_holdout` track the forgetting: the session
    images' own Dice change outside the boxes, and the held-out decision with n boxes (mean AUROC over
    draws; refusing when the pooled held-out Dice fell, the rule's own test)."""
    forgot = [r["forgot"] for r in rows]
    change = [r["untouched_change_points"] for r in rows]
    outside = [r["truth"]["session_outside_change_points"] for r in rows]
    out: Dict[str, Any] = {"session_outside": {"spearman_vs_change": spearman(outside, change),
                                               "auroc": auroc([-x for x in outside], forgot)}}
    for size in HOLDOUT_SIZES:
        aucs, ref_f, ref_g = [], [], []
        for d in range(HOLDOUT_DRAWS):
            s = [r["truth"][f"loss_{size}"][d] for r in rows]
            aucs.append(auroc(s, forgot))
            ref_f.append(sum(1 for x, f in zip(s, forgot, strict=True) if f and x > 0))
            ref_g.append(sum(1 for x, f in zip(s, forgot, strict=True) if not f and x > 0))
        out[f"holdout_{size}"] = {"boxes": size, "auroc_mean": float(np.mean(aucs)),
                                  "auroc_p10_p90": [float(np.percentile(aucs, 10)), float(np.percentile(aucs, 90))],
                                  "refused_forgot_mean": float(np.mean(ref_f)),
                                  "refused_good_mean": float(np.mean(ref_g))}
    return out


def score_stats(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = []
    for stat, (what, sign) in STATS.items():
        sub = [r for r in rows if r["stats"].get(stat) is not None]
        if len(sub) < 3:
            continue
        s = [sign * r["stats"][stat] for r in sub]
        forgot = [r["forgot"] for r in sub]
        t, tp, fp = choose_threshold(s, forgot)
        lo, hi = cluster_bootstrap_auroc(sub, stat)
        out.append({"stat": stat, "what": what, "n": len(sub), "n_forgot": sum(forgot),
                    "spearman_vs_change": spearman(s, [r["untouched_change_points"] for r in sub]),
                    "auroc": auroc(s, forgot), "auroc_ci95": [lo, hi], "threshold": t,
                    "refused_forgot": tp, "refused_good": fp})
    return sorted(out, key=lambda d: -(d["auroc"] or 0))


def apply_threshold(rows: List[Dict[str, Any]], stat: str, t: float) -> Dict[str, Any]:
    sign = STATS[stat][1]
    sub = [r for r in rows if r["stats"].get(stat) is not None]
    forgot = [r["forgot"] for r in sub]
    s = [sign * r["stats"][stat] for r in sub]
    refused = [x > t for x in s]
    return {"stat": stat, "threshold": t, "n": len(sub), "n_forgot": sum(forgot),
            "refused_forgot": sum(1 for f, x in zip(forgot, refused, strict=True) if f and x),
            "refused_good": sum(1 for f, x in zip(forgot, refused, strict=True) if not f and x),
            "auroc": auroc(s, forgot),
            "spearman_vs_change": spearman(s, [r["untouched_change_points"] for r in sub])}


# ---------------------------------------------------------------- report

def write(out: Path, result: Dict[str, Any]) -> None:
    from src_model.fileio import atomic_write_json

    atomic_write_json(out / f"{NAME}.json", result)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", choices=("trainval", "test"), default="trainval",
                   help="trainval: the trainval_* and check_* sessions (calibration); test: the test_* sessions, "
                        "scored once with --chosen")
    p.add_argument("--chosen", default=None,
                   help="STAT:THRESHOLD[,STAT:THRESHOLD] chosen on trainval (needed for --split test; refuse when "
                        "the statistic is above the threshold)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/E_promote/cache"))
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--predict-only", action="store_true", help="fill the prediction cache, compute nothing else")
    add_data_argument(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(1)
    data = require_glas(args.data, p.prog).resolve()
    cache = Cache(args.cache)
    command = " ".join(["python", "benchmarks/promotion_check.py", *(sys.argv[1:] if argv is None else argv)])
    t0 = time.perf_counter()
    prefixes = CALIBRATION_SPLITS if args.split == "trainval" else ("test",)
    if args.predict_only:
        for name, rounds in session_dirs(prefixes).items():
            r0 = rounds[0]
            images = AS.load_images(data, r0["session_ids"], r0["start"])
            for rnd in sorted(rounds):
                for k, (img, _) in images.items():
                    cache.get(model_path(name, r0["start"], rnd), k,
                              "newlab" if r0["start"] == "newlab" else "plain", img)
            log.info("%s cached (%d predicted)", name, cache.predicted)
        return 0
    rows = study_rows(prefixes, data, cache)
    path = args.out / f"{NAME}.json"
    result = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    part = {"command": command, "machine": machine_info(), "seconds": round(time.perf_counter() - t0, 1),
            "predicted": cache.predicted, "rows": rows}
    if args.split == "trainval":
        part["scores"] = score_stats(rows)
        part["truth_study"] = score_truth(rows)
    else:
        if not args.chosen:
            p.error("--split test needs --chosen STAT:THRESHOLD (chosen on trainval)")
        part["chosen"] = [apply_threshold(rows, stat, float(t))
                          for stat, t in (c.split(":") for c in args.chosen.split(","))]
        part["all_stats_after_choice"] = score_stats(rows)
    from src_model.agreement import MIN_AGREEMENT

    part["current_rule_check"] = apply_threshold(rows, "product_disagree", 1 - MIN_AGREEMENT)
    result[args.split] = part
    result["forgot_points"] = FORGOT_POINTS
    result["stats"] = {k: v[0] for k, v in STATS.items()}
    write(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
