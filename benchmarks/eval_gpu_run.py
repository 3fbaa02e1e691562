"""Score checkpoints on GlaS images: raw masks, post-processed objects and (optionally) branch 1, one prediction each.

The protocol of ``src_model.evaluate.evaluate_model`` (whole images, 256-px tiles, overlap 0.25, mean of
the three branches; ``evaluate_image`` of ``labels > 0``), of ``benchmarks/glas_ssl.py`` (``test_branch1``:
branch 1 alone, here read from the same pass's blended per-branch probabilities) and of
``benchmarks/make_bundled.py`` (post-processing: objects and holes under the 5th percentile of the
training gland areas, rounded to 100 px, removed / filled, touching glands split with h = 16).

  python benchmarks/eval_gpu_run.py --ids train_13,... --out /tmp/eval/val A/*.pt
  python benchmarks/eval_gpu_run.py --split test --branch1 --out /tmp/eval/test B0/*.pt

Writes ``<out>/<checkpoint stem>.json`` (``raw``, ``post``, ``branch1``: per-subset summaries, plus
per-image rows) and skips checkpoints whose file exists, so it can be stopped and restarted.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from src_model.checkpoint import load_model, read_checkpoint
from src_model.data import image_path
from src_model.evaluate import select_rows
from src_model.inference import predict
from src_model.io import read_image, read_mask
from src_model.metrics import aggregate, evaluate_image
from src_model.postprocess import PostprocessConfig, to_instances

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("eval_gpu_run")
DATA = ROOT.parent / "shared" / "data" / "glas"


def min_gland_size(data: Path, ids) -> int:
    """As benchmarks/make_bundled.py: 5th percentile of the training gland areas, rounded to 100 px."""
    areas = []
    for i in ids:
        counts = np.bincount(read_mask(data / "masks" / f"{i}.png").ravel())[1:]
        areas.extend(counts[counts > 0].tolist())
    return int(round(np.percentile(areas, 5), -2))


def post_config(data: Path, split_h: float = 16.0) -> PostprocessConfig:
    """The post-processing of the bundled model (make_bundled.py), sized on the seed-0 training images."""
    split = json.loads((ROOT / "benchmarks/results/glas_ssl/split.json").read_text())
    return PostprocessConfig(min_gland_size(data, split["train_all"]), fill_holes=True, split_h=split_h)


def summarise(per_image):
    out = {s: aggregate([r for r in per_image if r["subset"] == s]) for s in sorted({r["subset"] for r in per_image})}
    out["all"] = aggregate(per_image)
    return out


def score(path: Path, data: Path, rows, post: PostprocessConfig, branch1: bool) -> dict:
    model = load_model(path)
    ck = read_checkpoint(path)
    per = {"raw": [], "post": [], "branch1": []}
    t0 = time.perf_counter()
    for row in rows:
        image = read_image(image_path(data, row.id))
        gt = read_mask(data / "masks" / f"{row.id}.png")
        pred = predict(model, image, tile=256, overlap=0.25, branch="mean", return_branches=branch1)
        fg = pred.labels > 0
        per["raw"].append({"id": row.id, "subset": row.subset, **evaluate_image(fg, gt)})
        per["post"].append({"id": row.id, "subset": row.subset,
                            **evaluate_image(to_instances(fg, post), gt, pred_instances=True)})
        if branch1:
            b1 = pred.branch_probs[0]
            per["branch1"].append({"id": row.id, "subset": row.subset, **evaluate_image(b1[1] > b1[0], gt)})
    out = {"checkpoint": str(path), "step": ck["step"], "row": ck["provenance"].get("row"),
           "eval_s": round(time.perf_counter() - t0, 1), "postprocess": vars(post),
           "ids": [r.id for r in rows]}
    for key, rows_ in per.items():
        if rows_:
            out[key] = summarise(rows_)
            out[key + "_per_image"] = rows_
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--split", default="test")
    ap.add_argument("--ids", help="comma-separated ids instead of a split")
    ap.add_argument("--branch1", action="store_true", help="also score branch 1 alone (glas_ssl's test_branch1)")
    ap.add_argument("--split-h", type=float, default=16.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    post = post_config(args.data, args.split_h)
    rows = select_rows(args.data, args.split, args.ids.split(",") if args.ids else None)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.checkpoints:
        dest = args.out / f"{path.stem}.json"
        if dest.exists():
            log.info("%s: done already", dest)
            continue
        res = score(path, args.data, rows, post, args.branch1)
        dest.write_text(json.dumps(res, indent=1))
        a, p = res["raw"]["all"], res["post"]["all"]
        log.info("%s (%d images, %.0fs): dice %.4f f1 %.4f | post dice %.4f f1 %.4f", path.stem, len(rows),
                 res["eval_s"], a["dice"], a["f1"], p["dice"], p["f1"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
