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

def _round(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 5)
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v) for v in x]
    return x


def compact(part: Dict[str, Any]) -> None:
    """Scores the truth study from the per-draw values, then keeps only their means in the rows."""
    rows = part["rows"]
    if rows and f"loss_{HOLDOUT_SIZES[0]}" in rows[0]["truth"]:
        part["truth_study"] = score_truth(rows)
        for r in rows:
            for size in HOLDOUT_SIZES:
                r["truth"][f"loss_{size}_mean"] = float(np.mean(r["truth"].pop(f"loss_{size}")))


def write(out: Path, result: Dict[str, Any]) -> None:
    from src_model.fileio import atomic_write_bytes, atomic_write_json

    for split in ("trainval", "test"):
        if split in result:
            compact(result[split])
    result = _round(result)
    atomic_write_json(out / f"{NAME}.json", result)
    text = "\n".join(report_lines(result)) + "\n"
    atomic_write_bytes(out / f"{NAME}.md", lambda f: f.write(text.encode("utf-8")))


def _f(x: Optional[float], fmt: str = "{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def report_lines(result: Dict[str, Any]) -> List[str]:
    tv, te = result.get("trainval"), result.get("test")
    lines = ["# Promotion check calibration (issue 9 item 2)", "",
             "Can the product tell, when it decides, whether a fine-tuned model forgot? Material: every kept "
             "round of the simulated annotation sessions (`benchmarks/annotation_session.py`; the candidate is "
             "`round{k}.pt`, the current model the one it replaces). Ground truth: the change of the untouched "
             "images' mean Dice (images not in the session; 18, or 4 in the `check` sessions) from the current "
             f"model to the candidate; the candidate *forgot* when it fell by more than {FORGOT_POINTS} point. "
             "Statistics use only what the product has at promotion time: both models, the session images, the "
             "boxes accepted so far, and the correction inside the held-out boxes. Predictions: the dock's "
             "tiling on whole images, 1 torch thread. AUROC: how well the statistic ranks the rounds that forgot "
             "above the others (0.5 = chance; 95 % interval from resampling whole sessions). Threshold: the one "
             "with the largest (refused forgot share - refused good share), refusing when the statistic is above "
             "it.", "",
             "Choice: on the `trainval_*` and `check_*` sessions only; the `test_*` sessions were scored once "
             "afterwards with the choice frozen (commit 7ee97f3 holds the calibration and names the choice).", ""]
    if tv and te and tv.get("truth_study") and te.get("truth_study"):
        best = tv["scores"][0]
        ch = te["chosen"][0]
        other = te["chosen"][1:]
        gross = max(tv["rows"], key=lambda r: r["stats"]["disagree"])
        tvt, tet, ctv, cte = tv["truth_study"], te["truth_study"], tv["current_rule_check"], te["current_rule_check"]
        rest = max(r["stats"]["disagree"] for r in tv["rows"] if r is not gross)
        lines += ["## Result", "",
                  f"- **No statistic works.** Best on trainval: `{best['stat']}`, AUROC {best['auroc']:.2f} (95 % "
                  f"interval {best['auroc_ci95'][0]:.2f}-{best['auroc_ci95'][1]:.2f}, includes chance). Frozen and "
                  f"applied once to the test rounds: AUROC {_f(ch['auroc'], '{:.2f}')}; it would have refused "
                  f"{ch['refused_forgot']} / {ch['n_forgot']} forgetting rounds and {ch['refused_good']} / "
                  f"{ch['n'] - ch['n_forgot']} good rounds." + "".join(
                      f" The best statistic on uncorrected tissue (`{o['stat']}`): AUROC {_f(o['auroc'], '{:.2f}')}, "
                      f"refuses {o['refused_forgot']} / {o['n_forgot']} forgetting and {o['refused_good']} / "
                      f"{o['n'] - o['n_forgot']} good." for o in other),
                  f"- **Why:** the forgetting measured on untouched images barely shows on the project's own images, "
                  f"even with the truth. The session images' true Dice change outside the accepted boxes has Spearman "
                  f"{tvt['session_outside']['spearman_vs_change']:+.2f} (trainval) / "
                  f"{tet['session_outside']['spearman_vs_change']:+.2f} (test) with the untouched change. "
                  f"Simulated held-out sets of 20 boxes with the truth reach AUROC "
                  f"{tvt['holdout_20']['auroc_mean']:.2f} / {tet['holdout_20']['auroc_mean']:.2f}. "
                  "The labels themselves are noisy: a round's untouched change on 9 images has Spearman "
                  f"{reference_study(tv).get('split_half_spearman', float('nan')):.2f} (trainval) / "
                  f"{reference_study(te).get('split_half_spearman', float('nan')):.2f} (test) with its change on "
                  "the other 9 (section 'A reference set' below).",
                  "- **What a check on the project's tissue does catch:** gross change. The plain recipe's first "
                  f"round (Δ untouched {gross['untouched_change_points']:+.1f} points) disagrees on "
                  f"{gross['stats']['disagree']:.2f} of the gland pixels; every other trainval round disagrees on "
                  f"{rest:.2f} or less.",
                  f"- **The rule as it stands** (agreement >= 0.95) refused {cte['refused_forgot']} / "
                  f"{cte['n_forgot']} forgetting and {cte['refused_good']} / "
                  f"{cte['n'] - cte['n_forgot']} good test rounds. Those "
                  f"sessions distilled on all uncorrected tissue, so agreement there stays high. On trainval "
                  f"(check strips kept out of training in the `trainval_default` sessions) it refused "
                  f"{ctv['refused_forgot']} / {ctv['n_forgot']} forgetting "
                  f"and {ctv['refused_good']} / {ctv['n'] - ctv['n_forgot']} good rounds.",
                  "- The promotion rule is therefore left as it is.",
                  "- Side finding: the candidate's mean uncertainty map (`Prediction.uncertainty`) on uncorrected "
                  f"tissue rose in {sum(r['stats']['unc_change'] > 0 for r in tv['rows'] + te['rows'])} of "
                  f"{len(tv['rows']) + len(te['rows'])} rounds (median "
                  f"{float(np.median([r['stats']['unc_change'] for r in tv['rows']])):+.3f} trainval, "
                  f"{float(np.median([r['stats']['unc_change'] for r in te['rows']])):+.3f} test): each fine-tune "
                  "leaves the model less sure, on average, of tissue nobody corrected, which changes what the "
                  "review ranking shows next.", ""]
    if tv:
        lines += [f"Command: `{tv['command']}` ({tv['seconds']:.0f} s, load average "
                  f"{', '.join(str(x) for x in tv['machine']['load_avg_1_5_15'])}). Commands of the second part "
                  "below.", "",
                  f"## Calibration: trainval sessions ({len(tv['rows'])} rounds, "
                  f"{sum(r['forgot'] for r in tv['rows'])} forgot)", "",
                  "| statistic | rounds | forgot | Spearman vs Δ untouched | AUROC | 95 % interval | threshold | "
                  "refuses forgot | refuses good |", "|---|---|---|---|---|---|---|---|---|"]
        for sc in tv["scores"]:
            lines.append(f"| `{sc['stat']}` | {sc['n']} | {sc['n_forgot']} | {sc['spearman_vs_change']:+.2f} | "
                         f"{_f(sc['auroc'])} | {_f(sc['auroc_ci95'][0], '{:.2f}')}-{_f(sc['auroc_ci95'][1], '{:.2f}')} "
                         f"| {sc['threshold']:.4g} | {sc['refused_forgot']} / {sc['n_forgot']} | "
                         f"{sc['refused_good']} / {sc['n'] - sc['n_forgot']} |")
        lines += ["", "Statistics (larger = more suspect):", ""]
        lines += [f"- `{k}`: {v}" for k, v in result["stats"].items()]
        cur = tv["current_rule_check"]
        lines += ["", f"The product's check as it stands (agreement >= 0.95 on crops, as run by the sessions' "
                  f"retrain worker; recorded in {cur['n']} of the rounds): refuses {cur['refused_forgot']} / "
                  f"{cur['n_forgot']} that forgot and {cur['refused_good']} / {cur['n'] - cur['n_forgot']} good.", ""]
        pairs = [(r["stats"]["disagree"], r["stats"]["product_disagree"]) for r in tv["rows"]
                 if r["stats"].get("product_disagree") is not None]
        if len(pairs) >= 3:
            lines += [f"Sanity: `disagree` (whole images, this script) against `product_disagree` (the worker's crops, "
                      f"evaluation tiling) over {len(pairs)} rounds: Spearman "
                      f"{spearman([a for a, _ in pairs], [b for _, b in pairs]):.2f}.", ""]
        lines += noise_lines(tv, "trainval") + truth_lines(tv, "trainval") + reference_lines(tv, "trainval")
        lines += ["## Per round (trainval)", "",
                  "| session | round | Δ untouched (pts) | forgot | Δ session outside boxes, truth (pts) | disagree | "
                  "flip_confident | holdout_loss | held-out boxes | weight_change |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in tv["rows"]:
            st = r["stats"]
            lines.append(f"| {r['session']} | {r['round']} | {r['untouched_change_points']:+.2f} | "
                         f"{'yes' if r['forgot'] else 'no'} | {r['truth']['session_outside_change_points']:+.2f} | "
                         f"{st['disagree']:.4f} | {st['flip_confident']:.4f} | {_f(st['holdout_loss'], '{:+.4f}')} | "
                         f"{st['n_holdout_boxes']} | {st['weight_change']:.4f} |")
        lines.append("")
    if te:
        lines += [f"## Test sessions, scored once with the frozen choice ({len(te['rows'])} rounds, "
                  f"{sum(r['forgot'] for r in te['rows'])} forgot)", "",
                  f"Command: `{te['command']}` ({te['seconds']:.0f} s, load average "
                  f"{', '.join(str(x) for x in te['machine']['load_avg_1_5_15'])}).", "",
                  "| chosen on trainval | threshold | AUROC on test | refuses forgot | refuses good |",
                  "|---|---|---|---|---|"]
        for c in te["chosen"]:
            lines.append(f"| `{c['stat']}` | {c['threshold']:.4g} | {_f(c['auroc'])} | {c['refused_forgot']} / "
                         f"{c['n_forgot']} | {c['refused_good']} / {c['n'] - c['n_forgot']} |")
        cur = te["current_rule_check"]
        lines += ["", f"The product's check as it stands (agreement >= 0.95, {cur['n']} rounds that recorded it): "
                  f"refuses "
                  f"{cur['refused_forgot']} / {cur['n_forgot']} that forgot and {cur['refused_good']} / "
                  f"{cur['n'] - cur['n_forgot']} good.", "",
                  "Every statistic on test, after the choice (not used to choose): " + ", ".join(
                      f"`{s['stat']}` {_f(s['auroc'])}" for s in te["all_stats_after_choice"]) + " (AUROC).", ""]
        lines += noise_lines(te, "test") + truth_lines(te, "test") + reference_lines(te, "test")
    return lines


REFERENCE_SIZES = (1, 2, 4, 6, 9)
REFERENCE_DRAWS = 200


def reference_study(part: Dict[str, Any], seed: int = 0) -> Dict[str, Any]:
    """Not a product statistic today: a *reference set* of whole images with the truth, outside the project,
    scored before promotion. The untouched images of each session (18; sessions with fewer are skipped) are
    split at random into m reference images and the rest; does the reference images' Dice change tell
    whether the rest lost more than :data:`FORGOT_POINTS`? Read from the session records (per-image Dice)."""
    recs = {(f"{r['split']}_{r['recipe']}_{r['start']}_{r['row']}_s{r['seed']}", r["round"]): r
            for r in AS.read_records(RESULTS)}
    diffs = []
    for row in part["rows"]:
        a = recs[(row["session"], row["round"] - 1)]["untouched"]["per_image_dice"]
        b = recs[(row["session"], row["round"])]["untouched"]["per_image_dice"]
        if len(a) >= 18:
            diffs.append(100 * np.array([b[k] - a[k] for k in sorted(a)]))
    rng = np.random.default_rng(seed)
    out: Dict[str, Any] = {"rounds": len(diffs)}
    if len(diffs) >= 3:  # split-half reliability of a round's untouched change: 9 images against the other 9
        halves = []
        for _ in range(REFERENCE_DRAWS):
            x, y = [], []
            for d in diffs:
                order = rng.permutation(len(d))
                x.append(float(d[order[:len(d) // 2]].mean()))
                y.append(float(d[order[len(d) // 2:]].mean()))
            halves.append((float(np.corrcoef(x, y)[0, 1]), spearman(x, y)))
        out["split_half_r"] = float(np.mean([h[0] for h in halves]))
        out["split_half_spearman"] = float(np.mean([h[1] for h in halves]))
    for m in REFERENCE_SIZES:
        aucs, ref_f, ref_g, n_f = [], [], [], []
        for _ in range(REFERENCE_DRAWS):
            ref, forgot = [], []
            for d in diffs:
                order = rng.permutation(len(d))
                ref.append(float(d[order[:m]].mean()))
                forgot.append(bool(d[order[m:]].mean() < -FORGOT_POINTS))
            a = auroc([-x for x in ref], forgot)
            if a is not None:
                aucs.append(a)
            ref_f.append(sum(1 for x, f in zip(ref, forgot, strict=True) if f and x < 0))
            ref_g.append(sum(1 for x, f in zip(ref, forgot, strict=True) if not f and x < 0))
            n_f.append(sum(forgot))
        out[f"m{m}"] = {"images": m, "auroc_mean": float(np.mean(aucs)),
                        "auroc_p10_p90": [float(np.percentile(aucs, 10)), float(np.percentile(aucs, 90))],
                        "forgot_mean": float(np.mean(n_f)), "refused_forgot_mean": float(np.mean(ref_f)),
                        "refused_good_mean": float(np.mean(ref_g))}
    return out


def reference_lines(part: Dict[str, Any], split: str) -> List[str]:
    rs = reference_study(part)
    if not rs["rounds"]:
        return []
    out = [f"### A reference set outside the project ({split}; {rs['rounds']} rounds with 18 untouched images)", "",
           "Not available to the product today: m of the untouched images, with the truth, scored before "
           "promotion (refuse when their mean Dice fell); 'forgot' is then judged on the other 18 - m. Mean over "
           f"{REFERENCE_DRAWS} random splits. How much a round's untouched change is a property of the model "
           "rather than of the images drawn: the Pearson correlation over rounds of the change on one half of "
           f"the untouched images with the change on the other half is {rs.get('split_half_r', float('nan')):.2f} "
           f"(Spearman {rs.get('split_half_spearman', float('nan')):.2f}; mean over random halves).", "",
           "| reference images | AUROC mean | AUROC 10-90 % | forgot (mean) | refuses forgot | refuses good |",
           "|---|---|---|---|---|---|"]
    for m in REFERENCE_SIZES:
        r = rs[f"m{m}"]
        out.append(f"| {m} | {r['auroc_mean']:.3f} | {r['auroc_p10_p90'][0]:.2f}-{r['auroc_p10_p90'][1]:.2f} | "
                   f"{r['forgot_mean']:.1f} | {r['refused_forgot_mean']:.1f} | {r['refused_good_mean']:.1f} |")
    return out + [""]


def noise_lines(part: Dict[str, Any], split: str) -> List[str]:
    """How sure each round's label is: the standard error of the untouched change (paired over images)."""
    recs = {(f"{r['split']}_{r['recipe']}_{r['start']}_{r['row']}_s{r['seed']}", r["round"]): r
            for r in AS.read_records(RESULTS)}
    t_forgot, t_all, ses, sure = [], [], [], []
    for row in part["rows"]:
        a = recs[(row["session"], row["round"] - 1)]["untouched"]["per_image_dice"]
        b = recs[(row["session"], row["round"])]["untouched"]["per_image_dice"]
        d = 100 * np.array([b[k] - a[k] for k in a])
        se = float(d.std(ddof=1) / np.sqrt(len(d)))
        ses.append(se)
        t = d.mean() / se if se else 0.0
        t_all.append(t)
        sure.append(bool(t < -2))
        if row["forgot"]:
            t_forgot.append(t)
    n_sure = sum(1 for t in t_forgot if t < -2)
    aucs = []
    for stat, (_, sign) in STATS.items():
        sub = [(sign * r["stats"][stat], f) for r, f in zip(part["rows"], sure, strict=True)
               if r["stats"].get(stat) is not None]
        aucs.append((auroc([x for x, _ in sub], [f for _, f in sub]) or 0.0, stat))
    top = ", ".join(f"`{name}` {a:.2f}" for a, name in sorted(aucs, reverse=True)[:5])
    return [f"Noise of the ground truth ({split}): the standard error of a round's untouched change (paired over "
            f"its untouched images) is {np.median(ses):.2f} points (median; {min(ses):.2f}-{max(ses):.2f}); of the "
            f"{len(t_forgot)} rounds labelled 'forgot', {n_sure} fell by more than twice their standard error, and "
            f"{sum(1 for t in t_all if t > 2)} rounds rose by more than twice theirs. Post hoc, with only those "
            f"{n_sure} clear drops as 'forgot' (not used to choose), the best AUROCs are {top}.", ""]


def truth_lines(part: Dict[str, Any], split: str) -> List[str]:
    ts = part.get("truth_study")
    if not ts:
        return []
    so = ts["session_outside"]
    out = [f"### Could the project's images tell at all? ({split}; uses the expert masks, not a product statistic)", "",
           f"- The session images' own Dice outside the accepted boxes (the truth on all uncorrected tissue of the "
           f"project): Spearman {so['spearman_vs_change']:+.2f} with the untouched change, AUROC "
           f"{_f(so['auroc'])} for 'forgot'.",
           "- A larger held-out set: n random 128-px boxes of uncorrected tissue of the session images with the "
           f"truth, scored as held-out regions are (refuse when the pooled Dice fell); mean over {HOLDOUT_DRAWS} "
           "draws:", "", "| boxes | AUROC mean | AUROC 10-90 % of draws | refuses forgot | refuses good |",
           "|---|---|---|---|---|"]
    n = len(part["rows"])
    nf = sum(r["forgot"] for r in part["rows"])
    for size in HOLDOUT_SIZES:
        h = ts[f"holdout_{size}"]
        out.append(f"| {size} | {h['auroc_mean']:.3f} | {h['auroc_p10_p90'][0]:.2f}-{h['auroc_p10_p90'][1]:.2f} | "
                   f"{h['refused_forgot_mean']:.1f} / {nf} | {h['refused_good_mean']:.1f} / {n - nf} |")
    return out + [""]


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
    p.add_argument("--report", action="store_true", help="only rewrite the report from the JSON")
    add_data_argument(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(1)
    if args.report:
        write(args.out, json.loads((args.out / f"{NAME}.json").read_text(encoding="utf-8")))
        return 0
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
