"""Gland on glass: how much glass next to tissue predict-slide marks as gland, with and without
``drop_open_glass``, and what the rule costs on real glands (GlaS training / validation images only).

1. Each training image set on a 128-px margin of glass (grey 240) is predicted as a 3-level slide
   (chunk 256) with the rule and without it: gland pixels on the margin, and true gland pixels (GlaS
   masks) the rule removed.
2. The 8 validation images tiled 4 x 2 with 64-px glass gaps, and edge to edge: ``cdma export``'s
   glands (default split, minimum area 0 or the default) against the GlaS masks, object F1, with and
   without the rule; and the dock's per-image path (``predict`` + ``DEFAULT_INSTANCES``) on the same
   images in the same mosaic.

    python benchmarks/glass_margin.py  ->  benchmarks/results/glass_margin.{json,md}
"""
from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import ROOT, add_data_argument, load_average, machine_info, require_glas, write_results

sys.path.insert(0, str(ROOT / "tests"))  # tests/_slides.py: the pyramidal TIFF writer of the slide tests

VALIDATION = ["train_13", "train_20", "train_41", "train_45", "train_60", "train_69", "train_74", "train_78"]
GLASS = 240
MARGIN = 128


def _mask(data: Path, name: str) -> np.ndarray:
    from src_model.io import read_mask

    return read_mask(data / "masks" / f"{name}.png")


def _predict(slide: np.ndarray, folder: Path, rule: bool, chunk: int = 256) -> Path:
    from _slides import write_pyramidal_tiff

    import src_model.slide_predict as sp
    from src_model.progress import drain

    keep = sp.drop_open_glass
    if not rule:
        sp.drop_open_glass = lambda slide, level, y0, x0, rgb, glands, unc: (glands, unc)
    try:
        path = write_pyramidal_tiff(folder / f"{rule}.tif", slide, levels=3)
        drain(sp.predict_slide(path, folder / f"{rule}.zarr", chunk=chunk))
    finally:
        sp.drop_open_glass = keep
    return folder / f"{rule}.zarr"


def margins(data: Path, ids, work: Path) -> dict:
    from src_model.io import read_image
    from src_model.slide_store import open_store

    rows, tot = [], {"margin_gland_px_without": 0, "margin_gland_px_with": 0, "true_gland_px_removed": 0,
                     "wrong_gland_px_removed": 0, "true_gland_px": 0}
    for name in ids:
        folder = work / name
        folder.mkdir()
        image, mask = read_image(data / "images" / f"{name}.png"), _mask(data, name) > 0
        h, w = image.shape[:2]
        slide = np.full((h + 2 * MARGIN, w + 2 * MARGIN, 3), GLASS, np.uint8)
        slide[MARGIN:MARGIN + h, MARGIN:MARGIN + w] = image
        inside = np.zeros(slide.shape[:2], bool)
        inside[MARGIN:MARGIN + h, MARGIN:MARGIN + w] = True
        truth = np.zeros(slide.shape[:2], bool)
        truth[inside] = mask.ravel()
        g = {rule: open_store(_predict(slide, folder, rule)).glands[0][:] > 0 for rule in (True, False)}
        gone = g[False] & ~g[True]
        row = {"image": name, "margin_gland_px_without": int((g[False] & ~inside).sum()),
               "margin_gland_px_with": int((g[True] & ~inside).sum()),
               "true_gland_px_removed": int((gone & truth).sum()),
               "wrong_gland_px_removed": int((gone & ~truth & inside).sum()), "true_gland_px": int(truth.sum())}
        rows.append(row)
        for k in tot:
            tot[k] += row[k]
        shutil.rmtree(folder)
    return {"images": rows, "total": tot}


def mosaic_scores(data: Path, gap: int, work: Path) -> dict:
    from src_model.checkpoint import load_model
    from src_model.export import GlandExtractor, rasterize
    from src_model.inference import predict
    from src_model.io import read_image
    from src_model.metrics import object_scores
    from src_model.postprocess import DEFAULT_INSTANCES, to_instances
    from src_model.slide_store import open_store

    images = [read_image(data / "images" / f"{v}.png") for v in VALIDATION]
    H, W = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
    slide = np.full((2 * H + 3 * gap, 4 * W + 5 * gap, 3), GLASS, np.uint8)
    truth, dock = np.zeros(slide.shape[:2], np.int32), np.zeros(slide.shape[:2], np.int32)
    model = load_model()
    for k, (v, im) in enumerate(zip(VALIDATION, images, strict=True)):
        y, x = gap + (k // 4) * (H + gap), gap + (k % 4) * (W + gap)
        box = (slice(y, y + im.shape[0]), slice(x, x + im.shape[1]))
        slide[box] = im
        m = _mask(data, v).astype(np.int32)
        truth[box] = np.where(m > 0, m + truth.max(), 0)
        lab = to_instances(predict(model, im).labels > 0, DEFAULT_INSTANCES).astype(np.int32)
        dock[box] = np.where(lab > 0, lab + dock.max(), 0)
    keys = ("f1", "precision", "recall", "object_dice")
    out = {"dock_per_image": {k: round(float(v), 4) for k, v in object_scores(dock, truth).items() if k in keys}}
    for rule in (True, False):
        folder = work / f"mosaic{gap}_{rule}"
        folder.mkdir()
        store = open_store(_predict(slide, folder, rule, chunk=512))
        inside = (truth > 0) | (slide != GLASS).any(axis=2)
        out[f"export_rule_{rule}"] = {"gland_px_on_gaps": int(((store.glands[0][:] > 0) & ~inside).sum())}
        for name, kw in (("min_area_0", {"min_area": 0}), ("min_area_default", {})):
            feats = list(GlandExtractor(store, **kw).features())
            scores = object_scores(rasterize(feats, slide.shape[:2]), truth)
            out[f"export_rule_{rule}"][name] = {"glands": len(feats),
                                                **{k: round(float(v), 4) for k, v in scores.items() if k in keys}}
    out["gt_glands"] = int(len(np.unique(truth)) - 1)
    return out


def report(res: dict) -> str:
    t = res["margins"]["total"]
    lines = ["# Gland on glass next to tissue (predict-slide, bundled model)", "",
             f"Machine: {res['machine']['cpu']}, load {res['load_start']} -> {res['load_end']}, "
             f"{res['seconds']:.0f} s.",
             "Command: `python benchmarks/glass_margin.py`", "",
             f"## {len(res['margins']['images'])} GlaS training images, each on a {MARGIN}-px glass margin "
             f"(grey {GLASS})", "",
             "| | without the rule | with `drop_open_glass` |", "|---|---|---|",
             f"| gland px on the margins | {t['margin_gland_px_without']} | {t['margin_gland_px_with']} |",
             f"| true gland px removed (of {t['true_gland_px']}) | - | {t['true_gland_px_removed']} "
             f"({100 * t['true_gland_px_removed'] / max(1, t['true_gland_px']):.2f} %) |",
             f"| wrong gland px removed inside the images | - | {t['wrong_gland_px_removed']} |", ""]
    worst = sorted(res["margins"]["images"], key=lambda r: -r["true_gland_px_removed"] / max(1, r["true_gland_px"]))[:5]
    lines.append("Most true gland removed: " + ", ".join(
        f"{r['image']} {100 * r['true_gland_px_removed'] / max(1, r['true_gland_px']):.1f} %" for r in worst) + ".")
    lines += ["", "## The 8 validation images tiled 4 x 2: object F1 of `cdma export` against the GlaS masks", "",
              "| mosaic | rule | gland px on the gaps | export, min area 0: glands / F1 | export, default min area: "
              "glands / F1 / object Dice | dock's per-image path F1 |",
              "|---|---|---|---|---|---|"]
    for gap, m in res["mosaics"].items():
        for rule in (False, True):
            e = m[f"export_rule_{rule}"]
            lines.append(f"| {gap}-px gaps | {'on' if rule else 'off'} | {e['gland_px_on_gaps']} | "
                         f"{e['min_area_0']['glands']} / {e['min_area_0']['f1']:.3f} | "
                         f"{e['min_area_default']['glands']} / "
                         f"{e['min_area_default']['f1']:.3f} / {e['min_area_default']['object_dice']:.3f} | "
                         f"{m['dock_per_image']['f1']:.3f} |")
    n_gt = next(iter(res["mosaics"].values()))["gt_glands"]
    lines += ["", f"GT glands in the mosaic: {n_gt}. Object F1 pooled over the mosaic "
              "(`src_model.metrics.object_scores`); the mosaic without gaps joins glands cut at the tiles' edges."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(p)
    p.add_argument("--images", type=int, default=0, help="only the first N training images (0 = all)")
    args = p.parse_args(argv)
    data = require_glas(args.data)
    import torch

    torch.set_num_threads(1)
    with (data / "split.csv").open(newline="") as f:
        ids = [r["id"] for r in csv.DictReader(f) if r["split"] == "train"]
    ids = ids[:args.images] if args.images else ids
    t0, load0 = time.time(), load_average()
    with tempfile.TemporaryDirectory(prefix="glass_margin_") as tmp:
        work = Path(tmp)
        res = {"margins": margins(data, ids, work),
               "mosaics": {str(gap): mosaic_scores(data, gap, work) for gap in (64, 0)}}
    res.update(seconds=time.time() - t0, load_start=load0, load_end=load_average(), machine=machine_info())
    md = report(res)
    write_results("glass_margin", res, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
