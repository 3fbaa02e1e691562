"""Retrain turnaround: 10 accepted regions, the real RetrainJob, lite preset, finetune schedule.

What it simulates: a pathologist accepts ``--regions`` corrected 256 x 256 regions (the expert GlaS
annotation stands in for the correction, the current model's prediction is what was corrected),
then presses Retrain. The regions come from the GlaS *validation* images of
``benchmarks/results/glas_ssl/split.json`` (``"val"``): the bundled model never trained on them and
they are not the benchmark test set. Two regions per image (the two image corners, of the four,
with the most gland pixels); the store's rule holds out every 5th region, so 10 regions train on 8
and score on 2. The whole validation images are added as unlabelled tissue.

It measures, with :class:`napari_cdma.project.retrain_job.RetrainJob` (a child process, niced, one core
left free), the wall time from ``start()`` to the ``done`` event, seconds per step, the held-out
Dice of the old and new model that the worker reports, and whether :func:`finish` promotes the new
model by the rule. The load average at start is recorded: the machine may be shared.

Usage::

    python benchmarks/bench_retrain.py [--model CKPT] [--steps N] [--recipe NAME] [--regions 10] [--seed 0] [--append]
                                       [--data GLAS]

Try other fine-tuning settings with ``--recipe``, ``--patch``, ``--batch``, ``--lr``; ``--append`` adds a row.
``--data``: the GlaS folder (images/, masks/, split.csv); default ``$CDMA_GLAS``, else
``../shared/data/glas`` next to the repository. Without it the benchmark stops at once (exit code 2).

Writes ``benchmarks/results/retrain.json`` and ``retrain.md``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from _common import RESULTS, ROOT, add_data_argument, fill_store, machine_info, require_glas, write_results

SPLIT = RESULTS / "glas_ssl" / "split.json"
STAND_IN = ROOT / "runs" / "glas_ssl" / "bundled" / "last.pt"
GOAL_S = 180.0

log = logging.getLogger("bench_retrain")


def starting_model(explicit: Optional[Path], tmp: Path) -> Tuple[Path, str]:
    """(a private copy of the starting checkpoint, where it came from).

    Order: ``--model``, the bundled model, the ``bundled`` row of the GlaS benchmark (a stand-in
    that a background run may still be rewriting, hence the copy).
    """
    from src_model.checkpoint import bundled_model_path

    if explicit is not None:
        src = explicit
    elif bundled_model_path().is_file():
        src = bundled_model_path()
    elif STAND_IN.is_file():
        src = STAND_IN
    else:
        raise SystemExit(f"no starting model: pass --model (no bundled model, no {STAND_IN})")
    dst = tmp / "start.pt"
    shutil.copyfile(src, dst)
    return dst, str(src)


def accept_regions(store: Any, model_path: Path, data: Path, n_regions: int) -> Dict[str, Any]:
    """Accept ``n_regions`` regions from the validation images, 2 per image (the corners with the most
    gland pixels; the model's prediction is what was corrected), and keep every validation image as
    unlabelled tissue; returns what was accepted."""
    from src_model import load_checkpoint

    val = sorted(json.loads(SPLIT.read_text(encoding="utf-8"))["val"], key=lambda s: int(s.split("_")[1]))
    per_image = 2
    n_images = -(-n_regions // per_image)
    if n_images > len(val):
        raise SystemExit(f"{n_regions} regions need {n_images} validation images, split.json has {len(val)}")
    return fill_store(store, data, val, n_regions, per_image=per_image, boxes="most-glands",
                      model=load_checkpoint(model_path), unlabelled=True, user="benchmark")


def run_job(store_path: Path, steps: int, out_dir: Path, options: Dict[str, Any],
            timeout_s: float) -> Dict[str, Any]:
    """Start a RetrainJob, poll it every 100 ms as the widget does; returns timings and the final event."""
    from napari_cdma.project.retrain_job import RetrainJob

    t0 = time.perf_counter()
    job = RetrainJob.start(store_path, steps, out_dir=out_dir, **options)
    t_first_step = t_started = t_eval = None
    steps_seen: List[Tuple[int, float]] = []
    final: Optional[Dict[str, Any]] = None
    started: Dict[str, Any] = {}
    while final is None:
        if time.perf_counter() - t0 > timeout_s:
            job.cancel()
            job.wait(60)
            raise SystemExit(f"retraining did not finish within {timeout_s:.0f} s")
        for typed in job.poll():  # typed events (napari_cdma.project.events), read here as plain records
            now = time.perf_counter() - t0
            event = {"event": typed.kind, **dataclasses.asdict(typed)}
            kind = event["event"]
            if kind == "started":
                t_started, started = now, event
            elif kind == "progress":
                t_first_step = now if t_first_step is None else t_first_step
                steps_seen.append((int(event["step"]), now))
                if event["step"] % 10 == 0:
                    log.info("step %d/%d at %.1f s, loss %.3f", event["step"], event["total"], now,
                             event["metrics"].get("loss", float("nan")))
            elif kind == "evaluating":
                t_eval = now
            elif kind in ("done", "cancelled", "error"):
                final = dict(event, t=now, typed=typed)
        time.sleep(0.1)
    turnaround = final["t"]
    if final["event"] != "done":
        raise SystemExit(f"retraining ended with {final}")
    t_last_step = steps_seen[-1][1] if steps_seen else float("nan")
    n = len(steps_seen)
    # s/step from the progress events (the first step also pays for the first batch's set-up).
    s_per_step = (t_last_step - steps_seen[0][1]) / (n - 1) if n > 1 else float("nan")
    return {"turnaround_s": turnaround, "started_event_s": t_started, "first_step_s": t_first_step,
            "last_step_s": t_last_step,
            "evaluate_s": turnaround - t_eval if t_eval is not None else float("nan"), "s_per_step": s_per_step,
            "done": final, "config": started.get("config"), "n_labelled": started.get("n_labelled"),
            "n_unlabelled": started.get("n_unlabelled"), "n_holdout": started.get("n_holdout")}


def _row(run: Dict[str, Any]) -> str:
    j, d, c = run["job"], run["job"]["done"], run["job"]["config"] or {}
    return (f"| {d['steps_done']} | {c.get('recipe')} | {c.get('semi_supervised')} | {run['seed']} | "
            f"{run['start_step']} | {run['loadavg_start'][0]:.2f} | "
            f"{j['turnaround_s']:.1f} | {j['s_per_step']:.2f} | {j['first_step_s']:.1f} | {j['evaluate_s']:.1f} | "
            f"{_dice(d['old_dice'])} | {_dice(d['new_dice'])} | {_gain(d)} | {run['promoted']} |")


def _dice(value: Optional[float]) -> str:
    return "not scored" if value is None else f"{value:.4f}"


def _gain(done: Dict[str, Any]) -> str:
    """New minus old held-out Dice; the worker leaves both unset when the held-out regions hold too little gland."""
    if done["old_dice"] is None or done["new_dice"] is None:
        return "-"
    return f"{done['new_dice'] - done['old_dice']:+.4f}"


def write_report(runs: List[Dict[str, Any]], out: Path) -> str:
    """Write ``retrain.json`` (all runs) and ``retrain.md`` (a table, one row per run)."""
    from src_model.runtime import torch_threads

    r = runs[-1]
    lines = [
        "# Retrain turnaround (10 accepted regions, the dock's recipe and default steps)", "",
        f"{r['cores']} CPU cores ({r['cpu']}), torch {r['torch']}. The worker runs niced (10) with "
        f"{torch_threads('retrain', r['cores'])} torch thread(s), as in the plugin; the load average at "
        "start (1 min) is in the table: wall times grow with it.", "",
        f"Regions: {len(r['store']['regions'])} of 256 x 256 from GlaS validation images "
        f"{sorted({x['image'] for x in r['store']['regions']})} (never trained on by the starting model, not "
        f"the test set), 2 per image; the expert masks are the corrections; {r['job']['n_labelled']} train, "
        f"{r['job']['n_holdout']} held out (every 5th), {r['job']['n_unlabelled']} unlabelled images. "
        f"Starting model: `{r['start_model']}` (training step in the table).", "",
        "| steps | recipe | semi-supervised | seed | start model step | load | turnaround s | s/step | "
        "start-up s | held-out eval s | old Dice | new Dice | gain | promoted |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ] + [_row(run) for run in runs]
    lines += ["", f"Goal: under {GOAL_S:.0f} s with a Dice gain on the held-out regions. Turnaround = "
              "`RetrainJob.start()` to the `done` event (process start, torch import, reading the store, training, "
              "scoring old and new model on the held-out regions); start-up = start() to the first step. "
              "Held-out Dice is pooled over the pixels of the 2 held-out regions (the worker's score): a noisy "
              "measure. Promoted = by `finish()`'s rule (held-out Dice and agreement on uncorrected tissue).", "",
              "Commands (in row order):", ""] + [f"    {run['command']}" for run in runs]
    text = "\n".join(lines) + "\n"
    write_results("retrain", {"goal_s": GOAL_S, "runs": runs}, text, out, indent=1)
    return text


def main(argv: Optional[List[str]] = None) -> int:
    """Run the benchmark and write the results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="starting checkpoint (default: the bundled model)")
    p.add_argument("--steps", type=int, default=None,
                   help="optimiser steps (default: the dock's, the recipe's steps for the corrected area)")
    p.add_argument("--regions", type=int, default=10, help="accepted regions (2 per validation image)")
    p.add_argument("--patch", type=int, default=None, help="patch side (default: the finetune schedule's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the finetune schedule's)")
    p.add_argument("--batch", type=int, default=None, help="labelled and unlabelled batch size (default: schedule's)")
    p.add_argument("--recipe", default=None,
                   help="fine-tuning recipe (src_model.recipes; default: the dock's, 'default')")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--append", action="store_true", help="add a row to the existing results instead of replacing them")
    p.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--keep", action="store_true", help="keep the temporary store")
    add_data_argument(p)
    args = p.parse_args(argv)
    data = require_glas(args.data, p.prog).resolve()
    if not SPLIT.is_file():
        print(f"{p.prog}: error: no {SPLIT} (the validation images come from it: run benchmarks/glas_ssl.py first)",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from napari_cdma.project.retrain_job import finish
    from napari_cdma.project.store import ProjectStore
    from src_model.checkpoint import read_checkpoint

    options: Dict[str, Any] = {"device": "cpu"}
    if args.patch is not None:
        options["patch"] = args.patch
    if args.batch is not None:
        options["batch_labelled"] = options["batch_unlabelled"] = args.batch
    if args.lr is not None:
        options["config"] = {"lr": args.lr}
    if args.recipe is not None:
        from src_model.recipes import get_recipe

        try:
            options["recipe"] = get_recipe(args.recipe).name
        except ValueError as exc:
            p.error(str(exc))

    tmp = Path(tempfile.mkdtemp(prefix="cdma_bench_retrain_"))
    try:
        start_ckpt, start_src = starting_model(args.model, tmp)
        start_step = int(read_checkpoint(start_ckpt).get("step", 0))
        t0 = time.perf_counter()
        store = ProjectStore.open(tmp / "project")
        store.add_model(start_ckpt, parent="bundled", promoted=True, note=f"benchmark start: {start_src}")
        filled = accept_regions(store, start_ckpt, data, args.regions)
        setup_s = time.perf_counter() - t0
        log.info("store ready in %.1f s: %d regions (%d held out)", setup_s, len(filled["regions"]),
                 sum(r["holdout"] for r in filled["regions"]))

        load_start = os.getloadavg()
        job = run_job(store.root, args.steps, tmp / "run", dict(options, seed=args.seed), args.timeout)
        load_end = os.getloadavg()
        store.refresh()
        record = finish(store, job["done"].pop("typed"))
        log.info("turnaround %.1f s; held-out Dice %.4f -> %.4f; promoted %s", job["turnaround_s"],
                 job["done"]["old_dice"], job["done"]["new_dice"], record.promoted)
        info = machine_info()
        job["done"]["checkpoint"] = Path(job["done"]["checkpoint"]).name  # the temp dir is gone afterwards
        results = {
            "command": "python benchmarks/bench_retrain.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            **{k: info[k] for k in ("date", "cores", "cpu", "platform", "python", "torch")},
            "loadavg_start": list(load_start), "loadavg_end": list(load_end), "data": str(data),
            "start_model": start_src, "start_step": start_step, "seed": args.seed, "store_setup_s": setup_s,
            "options": options, "steps": args.steps,
            "store": filled, "job": job, "promoted": record.promoted, "model_version": record.version,
            "goal_s": GOAL_S, "goal_met": job["turnaround_s"] < GOAL_S,
            "dice_gain": None if _gain(job["done"]) == "-" else float(_gain(job["done"])),
        }
    finally:
        if args.keep:
            log.info("store kept in %s", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    runs = [results]
    previous = args.out / "retrain.json"
    if args.append and previous.is_file():
        runs = json.loads(previous.read_text(encoding="utf-8")).get("runs", []) + runs
    print(write_report(runs, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
