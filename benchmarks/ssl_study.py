"""Does CDMA's semi-supervision pay? Scores the study's runs once each, then writes the table and plot (issue 12).

Two steps; the second is this one resumable command:

1. **Train** (a GPU lease; see the header of ``benchmarks/gpu_run.sh``): every run leaves ``<run>.pt``
   (weights) and ``<run>.json`` (the ``benchmarks/gpu_train.py`` record: row, seed, steps, batch, ...).
   Without a GPU, a tiny run of any row: ``python benchmarks/gpu_train.py --data ../shared/data/glas
   --row cdma5 --seed 0 --steps 20 --patch 64 --batch 2 --device cpu --out /tmp/r --copy-to runs/mine``.
2. **Evaluate and report** (anywhere, CPU is fine)::

     python benchmarks/ssl_study.py --runs runs/gpu_run runs/gpu_run2 --eval runs/ssl_study_eval

   Finds the records under ``--runs`` (recursively), scores each run's checkpoint on the GlaS test
   images unless ``--eval`` (or a ``--scores`` folder) already holds ``<run>.json`` (the protocol of
   ``benchmarks/eval_gpu_run.py``: tiled, mean of the branches; raw and post-processed), so it can be
   stopped and restarted; then writes ``<out>.json``, ``<out>.md`` and ``<out>.png`` (pixel Dice against
   the labelled fraction, mean ± sd over seeds, one line per method).

Differences are paired by seed (the seed draws the labelled set and the training randomness) against the
supervised-only row of the same fraction; the 95 % interval is mean ± t(0.975, n-1) · sd / sqrt(n).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import textwrap
from pathlib import Path

import numpy as np
from eval_gpu_run import DATA, post_config, score  # benchmarks/ is on sys.path (run as a script)
from scipy import stats

from src_model.evaluate import select_rows

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("ssl_study")

BASELINE = "supervised only"
# row -> (method, labelled %); the method names are the plot's lines
ROWS = {
    "sup5": (BASELINE, 5), "sup10": (BASELINE, 10),
    "cdma5": ("CDMA", 5), "cdma10": ("CDMA", 10),
    "cdma5_noise": ("CDMA + feature noise 0.3", 5), "cdma10_noise": ("CDMA + feature noise 0.3", 10),
    "cdma5_release": ("CDMA, released schedule (SGD, step)", 5),
    "cdma10_release": ("CDMA, released schedule (SGD, step)", 10),
    "mt5": ("mean teacher", 5), "mt10": ("mean teacher", 10),
    # issue 12 section 2: cdma10 with one change
    "cdma10_pool": ("CDMA, unlabelled pool x3 (scales 0.75, 1.5)", 10),
    "cdma10_w03": ("CDMA, unsupervised weight x0.3", 10), "cdma10_w3": ("CDMA, unsupervised weight x3", 10),
    "cdma10_noramp": ("CDMA, no warm-up or ramp (full weight from step 0)", 10),
    "cdma10_slowramp": ("CDMA, ramp over 50 % of the steps", 10),
}
# (score key, subset, metric, column label, digits)
METRICS = (("raw", "all", "dice", "pixel Dice", 4), ("raw", "all", "f1", "object F1", 4),
           ("post", "all", "dice", "pixel Dice (post)", 4), ("post", "all", "f1", "object F1 (post)", 4),
           ("raw", "testA", "dice", "Dice testA", 4), ("raw", "testB", "dice", "Dice testB", 4))
OFF_PLOT = ("cdma10_release",)  # far below the others (Dice ~0.6): it would flatten the plot; it is in the table
CLAIM = 0.03  # the paper: CDMA at 10 % labels >= supervised at 10 % + 3 points of pixel Dice


def paired(a, b, level: float = 0.95) -> dict:
    """Paired difference a - b over seeds: mean, sd and the t interval (n - 1 df); per-seed values."""
    d = np.asarray(a, float) - np.asarray(b, float)
    n = len(d)
    out = {"n": n, "mean": float(d.mean()), "per_seed": d.tolist()}
    if n >= 2:
        sd = float(d.std(ddof=1))
        half = float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n))
        out.update(sd=sd, ci95=[out["mean"] - half, out["mean"] + half])
    return out


def mean_sd(v) -> dict:
    return {"per_seed": list(v), "mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else None}


def find_runs(dirs) -> dict:
    """``{run name: {"record", "checkpoint"}}`` of the study rows' training records under ``dirs``."""
    runs = {}
    for d in dirs:
        for p in sorted(Path(d).rglob("*.json")):
            try:
                rec = json.loads(p.read_text())
            except (ValueError, UnicodeDecodeError):
                continue
            if not isinstance(rec, dict) or rec.get("row") not in ROWS or "seed" not in rec or "history" not in rec:
                continue
            ck = p.with_suffix(".pt")
            if not ck.exists():
                ck = next(Path(d).rglob(f"{p.stem}.pt"), None)
            runs.setdefault(rec["name"], {"record": rec, "checkpoint": ck})
    return runs


def scores_for(runs: dict, eval_dir: Path, extra, data: Path, split: str = "test") -> dict:
    """Score of every run: read from ``eval_dir`` / ``extra`` folders, else computed now and written."""
    rows = post = None
    out = {}
    for name, run in sorted(runs.items()):
        found = [Path(d) / f"{name}.json" for d in [eval_dir, *extra] if (Path(d) / f"{name}.json").exists()]
        if found:
            out[name] = json.loads(found[0].read_text())
            continue
        if run["checkpoint"] is None:
            log.warning("%s: no checkpoint and no score; left out", name)
            continue
        if rows is None:
            rows, post = select_rows(data, split, None), post_config(data)
        res = score(run["checkpoint"], data, rows, post, branch1=False)
        eval_dir.mkdir(parents=True, exist_ok=True)
        (eval_dir / f"{name}.json").write_text(json.dumps(res, indent=1))
        log.info("%s (%d images, %.0fs): dice %.4f f1 %.4f", name, len(rows), res["eval_s"], res["raw"]["all"]["dice"],
                 res["raw"]["all"]["f1"])
        out[name] = res
    return out


def pair_diff(table: dict, row: str, base: str) -> dict:
    """Paired difference row - base over the seeds both rows have, for every metric."""
    t = table[row]
    common = [s for s in t["seeds"] if s in table[base]["seeds"]]
    pick = {r: [table[r]["seeds"].index(s) for s in common] for r in (row, base)}
    d = {"vs": base, "seeds": common, "steps": [t["steps"], table[base]["steps"]],
         "same_steps": t["steps"] == table[base]["steps"]}
    for key, sub, metric, *_ in METRICS:
        k = f"{key}.{sub}.{metric}"
        d[k] = paired([table[row][k]["per_seed"][i] for i in pick[row]],
                      [table[base][k]["per_seed"][i] for i in pick[base]])
    return d


def study(runs: dict, scores: dict, references=()) -> dict:
    """Per-row summaries, paired differences against supervised-only at the same fraction (``paired_differences``)
    and against each row of ``references`` (``reference_differences``: every other non-baseline row of the same
    fraction minus the reference), per-seed values."""
    table = {}
    for row, (method, frac) in ROWS.items():
        names = sorted((r["record"]["seed"], n) for n, r in runs.items() if r["record"]["row"] == row and n in scores)
        if not names:
            continue
        recs = [runs[n]["record"] for _, n in names]
        entry = {"method": method, "fraction": frac, "seeds": [s for s, _ in names],
                 "steps": sorted({r["steps"] for r in recs}), "batch": sorted({r["batch"] for r in recs}),
                 "n_labelled": sorted({r["n_labelled"] for r in recs}),
                 "n_unlabelled": sorted({r["n_unlabelled"] for r in recs}), "runs": [n for _, n in names]}
        for key, sub, metric, *_ in METRICS:
            entry[f"{key}.{sub}.{metric}"] = mean_sd([scores[n][key][sub][metric] for _, n in names])
        table[row] = entry
    diffs = {}
    for row, t in table.items():
        base = next((b for b, bt in table.items() if bt["method"] == BASELINE and bt["fraction"] == t["fraction"]),
                    None)
        if t["method"] == BASELINE or base is None:
            continue
        diffs[f"{row}-{base}"] = pair_diff(table, row, base)
    ref_diffs = {}
    for ref in references:
        if ref not in table:
            continue
        for row, t in table.items():
            if row != ref and t["method"] != BASELINE and t["fraction"] == table[ref]["fraction"]:
                ref_diffs[f"{row}-{ref}"] = pair_diff(table, row, ref)
    claim = {}
    for pair, d in diffs.items():  # diffs: against supervised-only only
        if table[d["vs"]]["fraction"] == 10 and pair.startswith("cdma"):
            x = d["raw.all.dice"]
            claim[pair] = {"mean": x["mean"], "ci95": x.get("ci95"), "n": x["n"], "same_steps": d["same_steps"],
                           "met": bool(x["mean"] >= CLAIM and x.get("ci95") and x["ci95"][0] > 0 and x["n"] >= 3)}
    return {"rows": table, "paired_differences": diffs, "reference_differences": ref_diffs, "claim": claim}


def plot_rows(table: dict, path: Path, title: str) -> None:
    """Pixel Dice (test, raw) of each row: mean ± sd over seeds and the per-seed values (same colour per seed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(table)
    fig, ax = plt.subplots(figsize=(7.2, 4.2), dpi=120)
    for i, r in enumerate(rows):
        v = table[r]["raw.all.dice"]
        ax.errorbar([i], [v["mean"]], yerr=[v["sd"] or 0], marker="o", color="k", capsize=5, zorder=3)
        for s, y in zip(table[r]["seeds"], v["per_seed"], strict=True):
            ax.plot([i + 0.15], [y], marker="x", linestyle="", color=f"C{s % 10}",
                    label=f"seed {s}" if i == 0 else None)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(rows, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("pixel Dice, GlaS test (mean ± sd; x = seeds)")
    ax.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot(table: dict, path: Path, title: str = "GlaS, lite preset: does semi-supervision pay?") -> None:
    """Pixel Dice (test, raw) against the labelled fraction, mean ± sd over seeds, one line per method
    (rows of :data:`OFF_PLOT` left out); with one fraction only, one point per row (:func:`plot_rows`)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = {r: t for r, t in table.items() if r not in OFF_PLOT}
    if len({t["fraction"] for t in table.values()}) == 1:  # one fraction (e.g. issue 12 section 2): row by row
        plot_rows(table, path, title)
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    methods = list(dict.fromkeys(t["method"] for t in table.values()))
    for i, m in enumerate(methods):
        pts = sorted((t["fraction"], t["raw.all.dice"]) for t in table.values() if t["method"] == m)
        x = np.array([f for f, _ in pts], float) + (i - (len(methods) - 1) / 2) * 0.12  # dodge the error bars
        ax.errorbar(x, [v["mean"] for _, v in pts], yerr=[v["sd"] or 0 for _, v in pts], marker="o", capsize=4,
                    label=m, linewidth=1.5)
    ax.set_xticks(sorted({t["fraction"] for t in table.values()}))
    ax.set_xlabel("labelled training images (%)")
    ax.set_ylabel("pixel Dice, GlaS test (mean ± sd over seeds)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def diff_table(diffs: dict) -> list:
    """Markdown rows of a table of paired differences (the first four metrics)."""
    lines = ["| difference | n | steps | " + " | ".join(m[3] for m in METRICS[:4]) + " |", "|---|---|---|" + "---|" * 4]
    for pair, d in diffs.items():
        cells = []
        for k, s, m, _, dig in METRICS[:4]:
            x = d[f"{k}.{s}.{m}"]
            ci = f" [{x['ci95'][0]:+.{dig}f}, {x['ci95'][1]:+.{dig}f}]" if "ci95" in x else ""
            cells.append(f"{x['mean']:+.{dig}f}{ci}")
        steps = f"{'/'.join(map(str, d['steps'][0]))} vs {'/'.join(map(str, d['steps'][1]))}"
        lines.append(f"| {pair.replace('-', ' − ')} | {len(d['seeds'])} | {steps}{'' if d['same_steps'] else ' (!)'} | "
                     + " | ".join(cells) + " |")
    return lines


def markdown(out: dict, png_name: str, note: str = "", title: str = "") -> str:
    table, diffs = out["rows"], out["paired_differences"]

    def ms(v, d):
        return f"{v['mean']:.{d}f} ± {v['sd']:.{d}f}" if v["sd"] is not None else f"{v['mean']:.{d}f}"

    lines = [f"# {title or 'Does semi-supervision pay? GlaS, lite preset (issue 12)'}", "",
             f"Test set: {out['test_images']} images (testA + testB), scored once per run by "
             "`benchmarks/ssl_study.py` (tiled 256 px, overlap 0.25, mean of the three branches; metrics averaged "
             "over images). (post) = the bundled model's post-processing. Mean ± sd over seeds; the seed draws the "
             "labelled images and the training randomness.", "",
             "| row | method | labelled | seeds | steps | batch | " + " | ".join(m[3] for m in METRICS) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(METRICS)]
    for row, t in table.items():
        lines.append(f"| {row} | {t['method']} | {t['fraction']} % ({'/'.join(map(str, t['n_labelled']))} img) | "
                     f"{len(t['seeds'])} | {'/'.join(map(str, t['steps']))} | {'/'.join(t['batch'])} | "
                     + " | ".join(ms(t[f'{k}.{s}.{m}'], d) for k, s, m, _, d in METRICS) + " |")
    one = len({t["fraction"] for t in table.values()}) == 1
    lines += ["", f"![pixel Dice {'of each row' if one else 'against labelled fraction'}]({png_name})", ""]
    off = [r for r in OFF_PLOT if r in table]
    if off:
        lines += [f"(The plot leaves out {', '.join(off)}: far below the others, see the table.)", ""]
    lines += ["## Paired differences against supervised only (same fraction, same seeds; 95 % CI, t with n-1 df)", "",
              *diff_table(diffs)]
    refs = list(dict.fromkeys(d["vs"] for d in out.get("reference_differences", {}).values()))
    for ref in refs:
        lines += ["", f"## Paired differences against {ref} (same seeds; 95 % CI, t with n-1 df)", "",
                  *diff_table({p: d for p, d in out["reference_differences"].items() if d["vs"] == ref})]
    lines += ["", "(!) = the two rows ran different step counts: their difference mixes the method with the "
              "schedule length.", "", "## The paper's claim: CDMA@10 % >= supervised@10 % + 3 points pixel Dice, "
              "mean over >= 3 seeds, 95 % CI excluding 0", ""]
    for pair, c in out["claim"].items():
        ci = f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]" if c["ci95"] else "(no CI)"
        lines.append(f"- {pair.replace('-', ' − ')}: {c['mean']:+.4f} {ci}, n = {c['n']}: "
                     f"{'met' if c['met'] else 'not met'}{'' if c['same_steps'] else ' (different step counts)'}")
    lines += ["", "## Per seed", "", "| row | seed | steps | training wall (s) | pixel Dice | object F1 (post) |",
              "|---|---|---|---|---|---|"]
    for row, t in table.items():
        for i, s in enumerate(t["seeds"]):
            run = out["runs"][t["runs"][i]]
            lines.append(f"| {row} | {s} | {run['steps']} | {run.get('train_wall_s', '')} | "
                         f"{t['raw.all.dice']['per_seed'][i]:.4f} | {t['post.all.f1']['per_seed'][i]:.4f} |")
    if note:
        lines += ["", note.strip()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, nargs="+", required=True, help="folders holding <run>.json + <run>.pt")
    ap.add_argument("--eval", type=Path, required=True, help="folder of the per-run test scores (written here)")
    ap.add_argument("--scores", type=Path, nargs="*", default=[], help="more folders of scores (read only)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ssl_study")
    ap.add_argument("--note-file", type=Path, help="markdown appended to the report (the reading)")
    ap.add_argument("--reference", nargs="*", default=[],
                    help="rows to pair the other rows against as well (e.g. cdma10 for issue 12 section 2)")
    ap.add_argument("--title", default="", help="the report's title (default: the GPU study's)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    runs = find_runs(args.runs)
    scores = scores_for(runs, args.eval, args.scores, args.data)
    out = study(runs, scores, args.reference)
    out["runs"] = {n: {k: r["record"].get(k) for k in ("row", "seed", "steps", "batch", "patch", "n_labelled",
                                                        "n_unlabelled", "train_wall_s", "hardware", "torch")}
                   for n, r in sorted(runs.items()) if n in scores}
    out["test_images"] = len(next(iter(scores.values()))["ids"]) if scores else 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=1))
    if out["rows"]:
        plot(out["rows"], args.out.with_suffix(".png"), args.title or "GlaS, lite preset: does semi-supervision pay?")
    note = args.note_file.read_text() if args.note_file else ""
    args.out.with_suffix(".md").write_text(markdown(out, args.out.with_suffix(".png").name, note, args.title))
    log.info("wrote %s.{json,md,png}: %d rows, %d runs", args.out, len(out["rows"]), len(out["runs"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
