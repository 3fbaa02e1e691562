"""Issue 12 table from the GPU run: supervised-only vs CDMA at 10 % labels over seeds, with paired CIs.

Inputs: the training records that ``benchmarks/gpu_train.py`` wrote (``<name>.json``) and the test
scores of ``benchmarks/eval_gpu_run.py`` (``<name>.json``), both named ``<row>_seed<k>``.

  python benchmarks/glas_ssl_gpu_report.py --records /tmp/gpu_res/B0 /tmp/gpu_res/B1 /tmp/gpu_res/B2 \\
      --scores /tmp/gpu_eval/testB --out benchmarks/results/glas_ssl_gpu

Writes ``<out>.json`` and ``<out>.md``. Differences are paired by seed (the seed draws the labelled
set, the validation hold-out and the training randomness, and is shared by the rows); the 95 %
interval is mean +- t(0.975, n-1) * sd / sqrt(n).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ssl_study import paired  # benchmarks/ is on sys.path (run as a script)

ROWS = ("sup10", "cdma10", "cdma10_release")
LABELS = {"sup10": "supervised only (10 % labelled)", "cdma10": "CDMA, glas_ssl recipe (AdamW, poly)",
          "cdma10_release": "CDMA, released schedule (SGD, step decay)"}
# (summary key, metric, label, digits); raw = protocol of benchmarks/glas_ssl.py
METRICS = (("raw", "dice", "pixel Dice", 4), ("raw", "f1", "object F1", 4), ("raw", "object_dice", "object Dice", 4),
           ("raw", "object_hausdorff", "object Hausdorff", 1), ("post", "dice", "pixel Dice (post)", 4),
           ("post", "f1", "object F1 (post)", 4))
PAIRS = (("cdma10", "sup10"), ("cdma10_release", "sup10"), ("cdma10", "cdma10_release"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=Path, nargs="+", required=True)
    ap.add_argument("--scores", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--note-file", type=Path, help="markdown appended to the report (reading, context)")
    args = ap.parse_args(argv)
    recs = {p.stem: json.loads(p.read_text()) for d in args.records for p in d.glob("*.json")}
    scores = {p.stem: json.loads(p.read_text()) for p in args.scores.glob("*.json")}
    seeds = sorted({r["seed"] for r in recs.values() if r["row"] in ROWS})
    seeds = [s for s in seeds if all(f"{row}_seed{s}" in scores for row in ROWS)]  # complete seeds only
    table = {}
    for row in ROWS:
        vals = {}
        for key, metric, _, _ in METRICS:
            v = [scores[f"{row}_seed{s}"][key]["all"][metric] for s in seeds]
            vals[f"{key}.{metric}"] = {"per_seed": v, "mean": float(np.mean(v)),
                                       "sd": float(np.std(v, ddof=1)) if len(v) > 1 else None}
        for sub in ("testA", "testB"):
            v = [scores[f"{row}_seed{s}"]["raw"][sub]["dice"] for s in seeds]
            vals[f"raw.dice.{sub}"] = {"per_seed": v, "mean": float(np.mean(v)),
                                       "sd": float(np.std(v, ddof=1)) if len(v) > 1 else None}
        if "branch1" in scores[f"{row}_seed{seeds[0]}"]:
            v = [scores[f"{row}_seed{s}"]["branch1"]["all"]["dice"] for s in seeds]
            vals["branch1.dice"] = {"per_seed": v, "mean": float(np.mean(v)),
                                    "sd": float(np.std(v, ddof=1)) if len(v) > 1 else None}
        table[row] = vals
    diffs = {}
    for a, b in PAIRS:
        diffs[f"{a}-{b}"] = {f"{key}.{metric}": paired(table[a][f"{key}.{metric}"]["per_seed"],
                                                       table[b][f"{key}.{metric}"]["per_seed"])
                             for key, metric, _, _ in METRICS}
    r0 = recs[f"sup10_seed{seeds[0]}"]
    runs = {name: {k: r[k] for k in ("steps", "batch", "patch", "train_wall_s", "steps_per_s", "n_labelled",
                                     "n_unlabelled", "stopped_by_deadline", "hardware", "torch", "seed")}
            for name, r in sorted(recs.items()) if r["row"] in ROWS}
    out = {"seeds": seeds, "rows": table, "paired_differences": diffs, "runs": runs, "hardware": r0["hardware"],
           "steps": r0["steps"], "test_images": len(scores[f"sup10_seed{seeds[0]}"]["ids"]),
           "postprocess": scores[f"sup10_seed{seeds[0]}"]["postprocess"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=1))

    def ms(v, d):
        return f"{v['mean']:.{d}f} ± {v['sd']:.{d}f}" if v["sd"] is not None else f"{v['mean']:.{d}f}"

    n = len(seeds)
    lines = [f"# GlaS at 10 % labels on a GPU: supervised only vs CDMA ({n} seeds, issue 12)", "",
             f"Lite preset, {r0['steps']} steps for every row, batch {recs[f'cdma10_seed{seeds[0]}']['batch']} "
             f"(supervised: {r0['batch']}) patches of {r0['patch']} px, seeds {', '.join(map(str, seeds))}. "
             f"The seed draws the 8 labelled images (10 % of 79), the 8 validation images held out (as "
             f"`benchmarks/glas_ssl.py`: never trained on, unused here) and the training randomness; CDMA rows "
             f"use the other 63 training images unlabelled. Trained side by side (12 trainings at once) on one "
             f"{r0['hardware']}; evaluated on the CPU on the whole test set "
             f"({out['test_images']} images: testA 60 + testB 20), tiled inference (256 px, overlap 0.25), "
             f"mean of the three branches, metrics averaged over images.", "",
             "## Per row: mean ± sd over seeds", "",
             "| row | " + " | ".join(lab for _, _, lab, _ in METRICS) + " | Dice testA | Dice testB |",
             "|---|" + "---|" * (len(METRICS) + 2)]
    for row in ROWS:
        t = table[row]
        lines.append(f"| {row}: {LABELS[row]} | " + " | ".join(ms(t[f'{k}.{m}'], d) for k, m, _, d in METRICS)
                     + f" | {ms(t['raw.dice.testA'], 4)} | {ms(t['raw.dice.testB'], 4)} |")
    lines += ["", "(post) = with the bundled model's post-processing "
              f"(objects and holes under {out['postprocess']['min_size']} px removed / filled, touching glands "
              f"split with h = {out['postprocess']['split_h']:g}); the other columns are raw masks, the protocol "
              "of `benchmarks/glas_ssl.py`.", "",
              f"## Paired differences over seeds (95 % CI, t-distribution with {n - 1} df)", "",
              "| difference | " + " | ".join(lab for _, _, lab, _ in METRICS) + " |",
              "|---|" + "---|" * len(METRICS)]
    for pair, dd in diffs.items():
        cells = []
        for k, m, _, d in METRICS:
            x = dd[f"{k}.{m}"]
            ci = f" [{x['ci95'][0]:+.{d}f}, {x['ci95'][1]:+.{d}f}]" if "ci95" in x else ""
            cells.append(f"{x['mean']:+.{d}f}{ci}")
        lines.append(f"| {pair.replace('-', ' − ')} | " + " | ".join(cells) + " |")
    lines += ["", "Per seed (pixel Dice / object F1, raw):", ""]
    for s in seeds:
        raw = {row: scores[f"{row}_seed{s}"]["raw"]["all"] for row in ROWS}
        lines.append(f"- seed {s}: " + ", ".join(f"{r} {raw[r]['dice']:.4f} / {raw[r]['f1']:.4f}" for r in ROWS))
    if "branch1.dice" in table["cdma10"]:
        lines += ["", "Branch 1 alone (the released prediction), pixel Dice: " + ", ".join(
            f"{row} {ms(table[row]['branch1.dice'], 4)}" for row in ROWS if "branch1.dice" in table[row]) + "."]
    lines += ["", "## Runs", "", "| run | steps | batch | train wall (s) | steps/s | labelled+unlabelled |",
              "|---|---|---|---|---|---|"]
    for name, r in runs.items():
        lines.append(f"| {name} | {r['steps']} | {r['batch']} | {r['train_wall_s']} | {r['steps_per_s']} | "
                     f"{r['n_labelled']}+{r['n_unlabelled']} |")
    if args.note_file:
        lines += ["", args.note_file.read_text().rstrip()]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(args.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
