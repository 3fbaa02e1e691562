"""The GlaS semi-supervised benchmark (issue 3): one command, resumable, results in benchmarks/results/.

Rows (same preset, step budget and seed):
  sup10    supervised only, 10 % of the training images labelled
  cdma10   CDMA: the same 10 % labelled + the other training images unlabelled
  full     supervised on all training images (the ceiling)
  single10 one decoder of about the same size, same supervision as sup10
  cdma10 is evaluated twice: prediction from the mean of the three branches and from branch 1.
  bundled  (not part of the table) CDMA with all training labels: candidate for the bundled model

A validation subset of the training images (``--val``, seeded) is never trained on; it is used to
pick the bundled model. Each row trains in ``runs/glas_ssl/<row>/`` with periodic checkpoints and
resumes from ``last.pt``; a finished row's metrics are in ``benchmarks/results/glas_ssl/<row>.json``
and are not recomputed.

Usage:
  python benchmarks/glas_ssl.py                       # all table rows, lite preset, CPU budget
  python benchmarks/glas_ssl.py --rows cdma10 --steps 3000 --preset paper --device cuda

``--data``: the GlaS folder (images/, masks/, split.csv); default ``$CDMA_GLAS``, else
``../shared/data/glas`` next to the repository. Without it the benchmark stops at once (exit code 2).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import _common
import torch
from _common import ROOT, add_data_argument, cpu_model, require_glas

from src_model import build_model, get_config
from src_model.checkpoint import read_checkpoint
from src_model.data import load_images, load_pairs, ssl_split, write_split_record
from src_model.evaluate import evaluate_model
from src_model.progress import drain
from src_model.trainer import TrainConfig, train

log = logging.getLogger("glas_ssl")
RESULTS = _common.RESULTS / "glas_ssl"
TABLE_ROWS = ("sup10", "cdma10", "full", "single10")



def row_spec(row: str, split: dict, preset: str):
    """(labelled ids, unlabelled ids, unsupervised?, model config) of a row."""
    cfg = get_config(preset)
    if row == "sup10":
        return split["labelled"], [], False, cfg
    if row == "cdma10":
        return split["labelled"], split["unlabelled"], True, cfg
    if row == "full":
        return split["train_all"], [], False, cfg
    if row == "single10":
        # one CBAM decoder, widened so the network has about as many parameters as MTNet
        base = sum(p.numel() for p in build_model(cfg).parameters())
        width = cfg.decoder_channels
        while True:
            cand = get_config(preset, branches=("cbam",), decoder_channels=width + cfg.norm_groups)
            if sum(p.numel() for p in build_model(cand).parameters()) > base:
                break
            width += cfg.norm_groups
        return split["labelled"], [], False, get_config(preset, branches=("cbam",), decoder_channels=width)
    if row == "bundled":
        return split["train_all"], split["train_all"], True, cfg
    raise SystemExit(f"unknown row {row!r}; valid: {', '.join(TABLE_ROWS + ('bundled',))}")


def run_name(row: str, seed: int) -> str:
    """Results and run folder name: the row, with ``_seed<k>`` for seeds other than 0."""
    return row if seed == 0 else f"{row}_seed{seed}"


def run_row(row: str, args, split: dict) -> dict:
    name = run_name(row, args.seed)
    out_json = RESULTS / f"{name}.json"
    if out_json.exists():
        log.info("%s: already finished (%s)", row, out_json)
        return json.loads(out_json.read_text())
    data_dir = Path(args.data)
    lab_ids, unl_ids, unsup, mcfg = row_spec(row, split, args.preset)
    run_dir = ROOT / "runs" / "glas_ssl" / name
    last = run_dir / "last.pt"
    tcfg = TrainConfig(steps=args.steps, batch_labelled=args.batch, batch_unlabelled=args.batch, patch=args.patch,
                       unsupervised=unsup, seed=args.seed, device=args.device, threads=args.threads,
                       warmup_steps=args.steps // 10, ramp_steps=args.steps // 5, checkpoint_every=50)
    model = build_model(mcfg)
    resume = last if last.exists() else None
    if resume is not None:
        log.info("%s: resuming from %s (step %d)", row, last, read_checkpoint(last)["step"])
    labelled = load_pairs(data_dir, lab_ids)
    unlabelled = load_images(data_dir, unl_ids)
    t0 = time.perf_counter()
    prior = json.loads((run_dir / "wall.json").read_text())["seconds"] if (run_dir / "wall.json").exists() else 0.0

    def report(ev):
        if ev.step % 25 == 0 or ev.step == ev.total:
            log.info("%s step %d/%d %s eta %.0fs", row, ev.step, ev.total,
                     {k: round(v, 4) for k, v in ev.metrics.items()}, ev.eta_s or -1)
        if ev.step % 50 == 0:
            (run_dir / "wall.json").write_text(json.dumps({"seconds": prior + time.perf_counter() - t0}))

    prov = {"benchmark": "glas_ssl", "row": row, "labelled_ids": lab_ids, "unlabelled_ids": unl_ids,
            "val_ids": split["val"], "data": "GlaS (research use only)"}
    result = drain(train(model, labelled, unlabelled, tcfg, run_dir, provenance=prov, resume=resume), report)
    wall = prior + time.perf_counter() - t0
    model.eval()
    record = {"row": name, "preset": args.preset, "steps": result.steps_done, "train_wall_s": round(wall, 1),
              "params": sum(p.numel() for p in model.parameters()), "n_labelled": len(lab_ids),
              "n_unlabelled": len(unl_ids), "unsupervised": unsup, "seed": args.seed,
              "batch": f"{args.batch}+{args.batch if unsup else 0}", "patch": args.patch,
              "checkpoint": str(result.checkpoint.relative_to(ROOT)), "hardware": hardware(),
              "command": command_for(row, args)}
    branches = ["mean", 1] if row == "cdma10" else ["mean"]
    if row == "bundled":
        record["val"] = drain(evaluate_model(model, data_dir, ids=split["val"]))["summary"]["all"]
    for br in branches:
        t1 = time.perf_counter()
        report_eval = drain(evaluate_model(model, data_dir, split="test", branch=br))
        key = "test" if br == "mean" else "test_branch1"
        record[key] = report_eval["summary"]
        record[key + "_eval_s"] = round(time.perf_counter() - t1, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = out_json.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(out_json)
    return record


def hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{cpu_model()}, {torch.get_num_threads()} torch threads"


def command_for(row: str, args) -> str:
    return (f"python benchmarks/glas_ssl.py --rows {row} --preset {args.preset} --steps {args.steps} "
            f"--batch {args.batch} --patch {args.patch} --seed {args.seed} --device {args.device}")


def write_table() -> Path:
    lines = ["| row | preset | steps | labelled+unlabelled imgs | train wall (s) | pixel Dice | IoU | object F1 "
             "| object Dice | object Hausdorff | Dice testA | Dice testB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    names = [p.stem for row in TABLE_ROWS for p in sorted(RESULTS.glob(f"{row}*.json"))
             if p.stem == row or p.stem.startswith(row + "_seed")]
    for row in names:
        r = json.loads((RESULTS / f"{row}.json").read_text())
        for key, label in (("test", row), ("test_branch1", row + " (branch 1)")):
            if key not in r:
                continue
            s = r[key]
            a = s["all"]
            lines.append(f"| {label} | {r['preset']} | {r['steps']} | {r['n_labelled']}+{r['n_unlabelled']} | "
                         f"{r['train_wall_s']} | {a['dice']:.4f} | {a['iou']:.4f} | {a['f1']:.4f} | "
                         f"{a['object_dice']:.4f} | {a['object_hausdorff']:.2f} | "
                         f"{s.get('testA', {}).get('dice', float('nan')):.4f} | "
                         f"{s.get('testB', {}).get('dice', float('nan')):.4f} |")
    cmds = [json.loads((RESULTS / f"{r}.json").read_text())["command"] for r in names]
    out = RESULTS.parent / "glas_ssl.md"
    out.write_text("# GlaS semi-supervised benchmark\n\nTest set = testA (60) + testB (20), whole images, "
                   "tiled inference. Pixel metrics: mean over images.\n\n" + "\n".join(lines) +
                   "\n\nCommands:\n\n" + "\n".join(f"    {c}" for c in cmds) + "\n")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(ap)
    ap.add_argument("--rows", nargs="+", default=list(TABLE_ROWS))
    ap.add_argument("--preset", default="lite")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=4, help="patches per stream per batch")
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--val", type=int, default=8, help="training images held out for model selection")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    require_glas(args.data, ap.prog)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    split = ssl_split(Path(args.data), args.fraction, args.val, args.seed)
    write_split_record(RESULTS / ("split.json" if args.seed == 0 else f"split_seed{args.seed}.json"), split)
    for row in args.rows:
        run_row(row, args, split)
    log.info("table: %s", write_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
