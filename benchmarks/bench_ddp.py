"""DDP on the CPU: two gloo processes against one process with the same global batch.

Three real ``cdma train`` runs on GlaS with the same labelled images (``--labelled-fraction`` of the
training ids drawn with seed 0), the default schedule, ``--steps`` steps:

- ``ddp``: ``torchrun --standalone --nproc_per_node 2 -m src_model.cli train --batch B`` (seed 0),
  one thread per process;
- ``one``: ``python -m src_model.cli train --batch 2B`` (seed 0), ``--one-threads`` threads (1);
- ``one_seed1``: the same with seed 1: how far two one-process runs that differ only in their random
  draws are apart, the yardstick for "the same loss curve within tolerance".

The curves are the per-step losses each run reports (under DDP: the mean over the ranks), smoothed
by a moving mean of ``--window`` steps. Reported: the mean absolute difference of the smoothed curves
(ddp vs one, and one vs one_seed1), the mean loss of the first and last ``--window`` steps, and the
wall time of each run. Goal: the ddp-vs-one difference is no larger than the seed-to-seed one.

Usage::

    python benchmarks/bench_ddp.py [--data GLAS] [--steps 150] [--patch 128] [--batch 2] [--window 15]

Writes ``benchmarks/results/ddp.json`` and ``ddp.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from _common import ROOT, add_data_argument, machine_info, require_glas, write_results


def run(launcher: List[str], args: List[str], threads: int, out: Path) -> Dict[str, Any]:
    """One ``cdma train`` run; returns its per-step losses and wall time."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(threads)
    cmd = [*launcher, "-m", "src_model.cli", "train", *args, "--out", str(out), "--progress", "json"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"bench_ddp: {' '.join(cmd)} failed ({r.returncode}): {r.stderr[-2000:]}")
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    losses = [e["metrics"]["loss"] for e in events if e.get("event") == "progress"]
    return {"command": " ".join(cmd), "threads": threads, "wall_s": round(wall, 1), "loss": losses}


def smooth(values: List[float], window: int) -> List[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def mean_abs_diff(a: List[float], b: List[float]) -> float:
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_argument(p)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--batch", type=int, default=2, help="patches per stream per process under DDP")
    p.add_argument("--labelled-fraction", type=float, default=0.1)
    p.add_argument("--window", type=int, default=15)
    p.add_argument("--one-threads", type=int, default=1,
                   help="torch threads of the one-process runs (1: as each DDP process; more threads than free "
                        "cores on a shared machine slow torch down a lot)")
    a = p.parse_args()
    data = require_glas(a.data)
    from src_model.data import choose_labelled, ids_of, read_split

    labelled = choose_labelled(ids_of(read_split(data), split="train"), a.labelled_fraction, 0)
    common = ["--data", str(data), "--labelled-ids", ",".join(labelled), "--steps", str(a.steps),
              "--patch", str(a.patch), "--device", "cpu"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    info = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            "ddp": run(torchrun, [*common, "--batch", str(a.batch), "--seed", "0"], 1, Path(tmp) / "ddp"),
            "one": run([sys.executable], [*common, "--batch", str(2 * a.batch), "--seed", "0"], a.one_threads,
                       Path(tmp) / "one"),
            "one_seed1": run([sys.executable], [*common, "--batch", str(2 * a.batch), "--seed", "1"], a.one_threads,
                             Path(tmp) / "one_seed1"),
        }
    curves = {k: smooth(v["loss"], a.window) for k, v in runs.items()}
    w = a.window
    summary = {k: {"first": sum(v["loss"][:w]) / w, "last": sum(v["loss"][-w:]) / w, "wall_s": v["wall_s"]}
               for k, v in runs.items()}
    result = {"machine": info, "settings": vars(a) | {"data": str(data), "labelled": labelled},
              "global_batch_per_stream": 2 * a.batch,
              "diff_ddp_vs_one": mean_abs_diff(curves["ddp"], curves["one"]),
              "diff_one_vs_seed1": mean_abs_diff(curves["one"], curves["one_seed1"]),
              "summary": summary, "runs": runs}
    rows = "\n".join(f"| {k} | {runs[k]['threads']} | {s['first']:.3f} | {s['last']:.3f} | {s['wall_s']:.0f} |"
                     for k, s in summary.items())
    md = (f"# DDP: two gloo processes vs one process, same global batch\n\n"
          f"`python benchmarks/bench_ddp.py --steps {a.steps} --patch {a.patch} --batch {a.batch}` on "
          f"{info['cpu']} ({info['cores']} cores, load {info['load_avg_1_5_15']}), torch {info['torch']}, "
          f"{info['date']}. GlaS, {len(labelled)} labelled images (fraction {a.labelled_fraction}, seed 0), lite "
          f"preset, default schedule; global batch {2 * a.batch} + {2 * a.batch} patches of {a.patch} px "
          f"(DDP: {a.batch} + {a.batch} per process).\n\n"
          f"| run | threads per process | loss, first {w} steps | loss, last {w} steps | wall s |\n"
          f"|---|---|---|---|---|\n{rows}\n\n"
          f"Mean absolute difference of the loss curves (moving mean of {w} steps): DDP vs one process "
          f"**{result['diff_ddp_vs_one']:.4f}**; one process seed 0 vs seed 1 (the yardstick) "
          f"**{result['diff_one_vs_seed1']:.4f}**. Goal: the first is no larger than the second: "
          f"**{'met' if result['diff_ddp_vs_one'] <= result['diff_one_vs_seed1'] else 'not met'}**.\n")
    write_results("ddp", result, md)
    print(md)


if __name__ == "__main__":
    main()
