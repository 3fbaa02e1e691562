"""Forgetting after fine-tuning on a few corrected images: which recipe keeps what the model knew.

Protocol (issue 9): start from the bundled model, fine-tune on K whole "corrected" images (their ground
truth as the correction) with N more images as unlabelled tissue, then measure the mean pixel Dice on
the corrected images and on untouched images (neither corrected nor unlabelled), before and after.

Two stages, kept apart so that the recipe is never tuned on test images:

- ``select``: sessions built from GlaS *training* images only. ``val``: the corrected and the untouched
  images are the 8 validation images the bundled model never saw (``ssl_split(data, 0.1, 8, 0)["val"]``,
  listed in its model card), unlabelled and further untouched images are training images.
  ``newlab``: the same ids after one fixed HED stain shift (a "new lab"); untouched images are scored
  both shifted (the new lab) and as they are (the old lab). Several seeds (which images are corrected,
  and the training seed).
- ``test``: once, for the chosen recipe and for ``plain``: K=3 corrected GlaS test images, N=10 test images
  as unlabelled tissue, all 67 others untouched (the numbers of the issue).

Results: ``benchmarks/results/forgetting.json`` (every run, per image) and ``forgetting.md``; each stage
replaces its own part.

  python benchmarks/forgetting.py select --device cpu --threads 1 --seeds 0 --steps 120
  python benchmarks/forgetting.py test --recipes default plain --threads 1
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
from _common import RESULTS, add_data_argument, machine_info, require_glas, write_results

NAME = "forgetting"
K_CORRECTED = 3
N_UNLABELLED = 10
N_UNTOUCHED_TRAIN = 15
NEW_LAB_SIGMA = 0.25  # half-width of hed_jitter; one fixed draw (NEW_LAB_SEED) is the new lab's stain
NEW_LAB_SEED = 2026
#: Extra candidates measured besides the named recipes (variants of their strengths).
VARIANTS = {"l2sp_10": ("l2sp", {"l2sp": 10.0}),
            "distill_bn_w3": ("distill_bn", {"distill": 3.0}),
            "distill_bn_t1": ("distill_bn", {"distill_temperature": 1.0}),
            "distill_bn_l2sp": ("distill_bn", {"l2sp": 1.0}),
            "distill_bn_lowenc": ("distill_bn", {"encoder_lr": 0.1}),
            "distill_bn_low_lr": ("distill_bn", {"lr": 1e-4}),
            "distill_bn_lr3e-5": ("distill_bn", {"lr": 3e-5}),
            "distill_low_lr": ("distill", {"lr": 1e-4}),
            "distill_bn_lowenc_low_lr": ("distill_bn", {"encoder_lr": 0.1, "lr": 1e-4}),
            "distill_bn_frozen_enc": ("distill_bn", {"encoder_lr": 0.0}),
            "distill_bn_ema": ("distill_bn", {"ema": 0.95})}

Item = Tuple[str, np.ndarray, np.ndarray]  # (id, RGB uint8, mask)


def new_lab(image: np.ndarray) -> np.ndarray:
    """``image`` as the "new lab" stains it: one fixed HED stain shift (:func:`src_model.data.hed_jitter`)."""
    from src_model.data import hed_jitter

    x = image.astype(np.float32) / 255.0
    y = hed_jitter(np.random.default_rng(NEW_LAB_SEED), x, NEW_LAB_SIGMA)
    return (np.clip(y, 0, 1) * 255 + 0.5).astype(np.uint8)


def recipe_of(name: str):
    from src_model.finetune import get_recipe

    if name in VARIANTS:
        base, change = VARIANTS[name]
        return dataclasses.replace(get_recipe(base), name=name, **change)
    return get_recipe(name)


def load_items(data: Path, ids: Sequence[str], shifted: bool = False) -> List[Item]:
    from src_model.data import load_pairs

    return [(i, new_lab(img) if shifted else img, m) for i, (img, m) in zip(ids, load_pairs(data, ids), strict=True)]


def session(stage: str, kind: str, data: Path, seed: int) -> Dict[str, Any]:
    """Ids of a session: ``corrected``, ``unlabelled`` and the ``untouched`` groups."""
    from src_model.data import ids_of, read_split, ssl_split

    rng = np.random.default_rng(seed)
    if stage == "test":
        test = sorted(ids_of(read_split(data), split="test"))
        rng = np.random.default_rng(0)  # one fixed draw: the test protocol is run once
        order = rng.permutation(test).tolist()
        corrected, unlabelled = sorted(order[:K_CORRECTED]), sorted(order[K_CORRECTED:K_CORRECTED + N_UNLABELLED])
        return {"corrected": corrected, "unlabelled": unlabelled,
                "untouched": {"test": sorted(order[K_CORRECTED + N_UNLABELLED:])}, "shifted": False}
    split = ssl_split(data, 0.1, 8, 0)  # the bundled model's validation images (its model card)
    val = rng.permutation(split["val"]).tolist()
    seen = rng.permutation(split["train_all"]).tolist()
    corrected, untouched_val = sorted(val[:K_CORRECTED]), sorted(val[K_CORRECTED:])
    unlabelled = sorted(seen[:N_UNLABELLED])
    untouched_train = sorted(seen[N_UNLABELLED:N_UNLABELLED + N_UNTOUCHED_TRAIN])
    groups = {"val": untouched_val, "train": untouched_train}
    return {"corrected": corrected, "unlabelled": unlabelled, "untouched": groups, "shifted": kind == "newlab"}


def predict_labels(model, items: Sequence[Item], device: str) -> Dict[str, np.ndarray]:
    """Label map of each image, predicted with the evaluation tiling (as ``cdma evaluate``)."""
    from src_model.inference import predict
    from src_model.tiling import EVAL_OVERLAP, EVAL_TILE

    return {i: predict(model, img, tile=EVAL_TILE, overlap=EVAL_OVERLAP, device=device).labels > 0
            for i, img, _ in items}


def dice_of(labels: Dict[str, np.ndarray], items: Sequence[Item]) -> Dict[str, float]:
    from src_model.metrics import pixel_dice

    return {i: pixel_dice(labels[i], mask > 0) for i, _, mask in items}


def agreement_of(new: Dict[str, np.ndarray], old: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Dice of the new model's labels with the old model's, per image (src_model.agreement)."""
    from src_model.agreement import label_agreement

    out = {}
    for i in new:
        num, den = label_agreement(new[i], old[i])
        out[i] = 1.0 if den == 0 else num / den
    return out


def _mean(d: Dict[str, float]) -> float:
    return float(np.mean(list(d.values())))


def run_session(task: Dict[str, Any]) -> List[Dict[str, Any]]:
    """All recipes of one (stage, kind, seed) session; the starting model is scored once."""
    import torch

    from src_model.checkpoint import load_model
    from src_model.finetune import finetune
    from src_model.progress import drain

    torch.set_num_threads(task["threads"])
    data, device = Path(task["data"]), task["device"]
    ses = session(task["stage"], task["kind"], data, task["seed"])
    shifted = ses["shifted"]
    corrected = load_items(data, ses["corrected"], shifted)
    unlabelled = [img for _, img, _ in load_items(data, ses["unlabelled"], shifted)]
    groups: Dict[str, List[Item]] = {}
    for name, ids in ses["untouched"].items():
        groups[name] = load_items(data, ids, shifted)
        if shifted:
            groups[f"{name}_old_lab"] = load_items(data, ids, False)
    base = load_model(None)
    groups["corrected"] = corrected
    base_labels = {g: predict_labels(base, items, device) for g, items in groups.items()}
    before = {g: dice_of(base_labels[g], items) for g, items in groups.items()}
    rows = []
    for rname in task["recipes"]:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            result = drain(finetune("bundled", [(img, m) for _, img, m in corrected], unlabelled, tmp,
                                    recipe=recipe_of(rname), steps=task["steps"], seed=task["seed"],
                                    device=device, semi_supervised=task["semi_supervised"]))
            model = load_model(result.checkpoint)
        train_s = time.perf_counter() - t0
        labels = {g: predict_labels(model, items, device) for g, items in groups.items()}
        after = {g: dice_of(labels[g], items) for g, items in groups.items()}
        agree = {g: agreement_of(labels[g], base_labels[g]) for g in groups if g != "corrected"}
        row = {"stage": task["stage"], "session": task["kind"], "seed": task["seed"], "recipe": rname,
               "semi_supervised": task["semi_supervised"], "steps": result.steps_done, "train_s": round(train_s, 1),
               "ids": ses, "mean_before": {g: _mean(v) for g, v in before.items()},
               "mean_after": {g: _mean(v) for g, v in after.items()},
               "per_image_before": before, "per_image_after": after, "agreement_per_image": agree,
               "agreement_mean": {g: _mean(v) for g, v in agree.items()},
               "agreement_min": {g: min(v.values()) for g, v in agree.items()}}
        row["change_points"] = {g: round(100 * (row["mean_after"][g] - row["mean_before"][g]), 2) for g in before}
        print(json.dumps({k: row[k] for k in ("session", "seed", "recipe", "train_s", "change_points")}),
              file=sys.stderr, flush=True)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- report

def _row_key(r: Dict[str, Any]) -> Tuple[str, int, str, bool]:
    return r["session"], r["seed"], r["recipe"], bool(r["semi_supervised"])


def _mean_agreement(rows: Sequence[Dict[str, Any]]):
    """Mean over rows (that measured it) of the mean agreement with the starting model on untouched images."""
    vals = [float(np.mean(list(r["agreement_mean"].values()))) for r in rows if "agreement_mean" in r]
    return round(float(np.mean(vals)), 4) if vals else None


def summarize(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per (session, recipe): mean over seeds of each group's change, in Dice points."""
    out = []
    keys = sorted({(r["session"], r["recipe"], r["semi_supervised"]) for r in rows})
    for ses, rec, ss in keys:
        sel = [r for r in rows if (r["session"], r["recipe"], r["semi_supervised"]) == (ses, rec, ss)]
        groups = sorted(sel[0]["change_points"])
        out.append({"session": ses, "recipe": rec, "semi_supervised": ss, "n_seeds": len(sel),
                    "train_s": round(float(np.mean([r["train_s"] for r in sel])), 1),
                    "change_points": {g: round(float(np.mean([r["change_points"][g] for r in sel])), 2)
                                      for g in groups},
                    "agreement_mean": _mean_agreement(sel),
                    "worst_untouched_points": round(min(min(v for g, v in r["change_points"].items()
                                                            if g != "corrected") for r in sel), 2)})
    return out


def _cdma(r: Dict[str, Any]) -> str:
    return " (CDMA terms on)" if r["semi_supervised"] else " (supervised-only)"


def markdown(doc: Dict[str, Any]) -> str:
    lines = ["# Forgetting after fine-tuning on 3 corrected images (`benchmarks/forgetting.py`)", "",
             "Change of the mean pixel Dice, in points (x100), after fine-tuning the bundled model on K=3 whole "
             "corrected images with N=10 unlabelled images. `corrected`: the 3 corrected images; other columns: "
             "untouched images (neither corrected nor unlabelled). `_old_lab`: the untouched images without the "
             "new lab's stain shift. Worst: the largest drop of any untouched group in any seed.", ""]
    for stage in ("select", "select_cpu", "test"):
        part = doc.get(stage)
        if not part:
            continue
        lines += [f"## {stage}: {part['what']}", ""]
        for run in part.get("runs") or [part]:
            lines += [f"Command: `{run['command']}`", "",
                      f"Machine: {run['machine'].get('cpu')}, torch threads {run['threads']}, device {run['device']}; "
                      f"{run['steps']} steps; wall {run['wall_s']:.0f} s"
                      + (f"; load average {run['machine']['load_avg_1_5_15']}" if "load_avg_1_5_15" in run["machine"]
                         else "") + ".", ""]
        for ses in sorted({s["session"] for s in part["summary"]}):
            rows = [s for s in part["summary"] if s["session"] == ses]
            groups = sorted(rows[0]["change_points"], key=lambda g: (g != "corrected", g))
            lines += [f"### session `{ses}` ({rows[0]['n_seeds']} seed(s))", "",
                      "| recipe | " + " | ".join(groups) + " | worst untouched | agreement | train s |",
                      "|---|" + "---|" * (len(groups) + 3)]
            for s in sorted(rows, key=lambda s: -s["change_points"]["corrected"]):
                lines.append(f"| {s['recipe']}{_cdma(s)} | "
                             + " | ".join(f"{s['change_points'][g]:+.2f}" for g in groups)
                             + f" | {s['worst_untouched_points']:+.2f} | "
                             + ("-" if s.get("agreement_mean") is None else f"{s['agreement_mean']:.4f}")
                             + f" | {s['train_s']:.0f} |")
            lines.append("")
        if stage in ("test", "select_cpu"):
            lines.append("Agreement (Dice of the new model's labels with the starting model's, whole images; "
                         "src_model.agreement) on untouched images, mean and lowest image:")
            lines.append("")
            for r in part["rows"]:
                lines.append(f"- `{r['session']}` seed {r['seed']} `{r['recipe']}`{_cdma(r)}: " + "; ".join(
                    f"{g} {r['agreement_mean'][g]:.4f} (min {r['agreement_min'][g]:.3f}, change "
                    f"{r['change_points'][g]:+.2f})" for g in sorted(r["agreement_mean"])))
            lines.append("")
        if stage == "test":
            for r in part["rows"]:
                b, a = r["mean_before"], r["mean_after"]
                lines.append(f"- `{r['recipe']}`{_cdma(r)}: corrected {b['corrected']:.4f} -> {a['corrected']:.4f}; "
                             f"{len(r['per_image_before']['test'])} untouched test images {b['test']:.4f} -> "
                             f"{a['test']:.4f} ({r['change_points']['test']:+.2f} points)")
            lines.append("")
        if part.get("note"):
            lines += [part["note"], ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=("select", "test"))
    add_data_argument(ap)
    ap.add_argument("--recipes", nargs="+", default=None,
                    help="recipe names (src_model.finetune.RECIPES or this script's VARIANTS); "
                         "default: all for select, 'default plain' for test")
    ap.add_argument("--sessions", nargs="+", default=["val", "newlab"], choices=("val", "newlab"))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--supervised-only", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1, help="sessions run side by side (processes)")
    ap.add_argument("--chunk", type=int, default=0, help="recipes per process (0: all of a session in one)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--note", default="")
    ap.add_argument("--rows", nargs="+", type=Path, help="only write the report, from these rows files (JSON lines)")
    args = ap.parse_args(argv)
    data = require_glas(args.data)
    from src_model.finetune import RECIPES

    recipes = args.recipes or (["default", "plain"] if args.stage == "test"
                               else [r for r in [*RECIPES, *VARIANTS] if r != "default"])
    kinds = ["test"] if args.stage == "test" else args.sessions
    seeds = [0] if args.stage == "test" else args.seeds
    chunks = [recipes[i:i + args.chunk] for i in range(0, len(recipes), args.chunk)] if args.chunk else [recipes]
    tasks = [{"stage": args.stage, "kind": k, "seed": s, "data": str(data), "device": args.device,
              "threads": args.threads, "steps": args.steps, "recipes": c,
              "semi_supervised": not args.supervised_only} for s in seeds for k in kinds for c in chunks]
    t0 = time.perf_counter()
    rows_path = Path(args.out) / f"{NAME}_{args.stage}_rows.jsonl"  # every finished session at once
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    if not args.rows:
        rows_path.write_text("")
    rows: List[Dict[str, Any]] = []

    def keep(part: List[Dict[str, Any]]) -> None:
        rows.extend(part)
        with rows_path.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in part)

    if args.rows:
        rows = [json.loads(line) for p in args.rows for line in Path(p).read_text().splitlines() if line.strip()]
    elif args.jobs > 1:
        import multiprocessing as mp

        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as ex:
            for fut in as_completed([ex.submit(run_session, t) for t in tasks]):
                keep(fut.result())
    else:
        for t in tasks:
            keep(run_session(t))
    json_path = Path(args.out) / f"{NAME}.json"
    doc = json.loads(json_path.read_text()) if json_path.exists() else {}
    what = ("sessions from GlaS training/validation images (choosing the recipe)" if args.stage == "select"
            else "GlaS test images, run once")
    run = {"command": "python benchmarks/forgetting.py " + " ".join(argv or sys.argv[1:]), "machine": machine_info(),
           "threads": args.threads, "device": args.device, "steps": args.steps, "wall_s": time.perf_counter() - t0,
           "semi_supervised": not args.supervised_only}
    old = doc.get(args.stage) or {}
    # a rerun replaces only the rows it ran again (same session, seed, recipe and CDMA switch); the others,
    # and the record of the runs that made them, stay
    new_keys = {_row_key(r) for r in rows}
    kept = [r for r in old.get("rows", []) if _row_key(r) not in new_keys] if not args.rows else []
    runs = [*old.get("runs", [{k: old[k] for k in ("command", "machine", "threads", "device", "steps", "wall_s")
                               if k in old}] if old else []), run] if kept else [run]
    doc[args.stage] = {"what": what, **run, "note": args.note or old.get("note", ""), "runs": runs,
                       "summary": summarize(kept + rows), "rows": kept + rows}
    write_results(NAME, doc, markdown(doc), out=args.out)
    print(markdown({args.stage: doc[args.stage]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
