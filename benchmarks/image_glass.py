"""Open glass on the dock's image path: what the rule (``src_model.tissue.image_open_glass`` /
``clear_open_glass``, applied in the dock's worker job ``napari_cdma._predict_stream.predict_job``) removes
and what it costs. GlaS training images only (the 8 validation ones among them), bundled model.

1. Each GlaS training image through the job (small: predicted whole): gland pixels the rule removes,
   pixel Dice of the class labels and of the dock's gland instances against the GlaS mask, with and
   without the rule; the largest glass region of each image against ``OPEN_GLASS_AREA``.
2. The 8 validation images pasted onto canvases of real GlaS glass (each canvas pixel a glass pixel,
   ``tissue_mask`` False, drawn at random from the validation images): 6000 x 6000 (all 8) and 3000 x 3000
   (4 images), streamed as the dock streams them, and 2000 x 2000 (the other 4, predicted whole). Each
   canvas through the job with the rule and without it: gland and uncertainty pixels on the glass (outside
   the pasted images), gland pixels and Dice inside them, and the time the rule took.

    python benchmarks/image_glass.py  ->  benchmarks/results/image_glass.{json,md}
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from _common import add_data_argument, load_average, machine_info, require_glas, write_results

VALIDATION = ["train_13", "train_20", "train_41", "train_45", "train_60", "train_69", "train_74", "train_78"]
CANVASES = [  # (side, streamed, ids, top-left corners)
    (6000, True, VALIDATION, [(y, x) for y in (800, 3500) for x in (300, 1800, 3300, 4800)]),
    (3000, True, VALIDATION[:4], [(400, 400), (400, 1800), (1800, 400), (1800, 1800)]),
    (2000, False, VALIDATION[4:], [(200, 200), (200, 1100), (1100, 200), (1100, 1100)]),
]


class Rule:
    """``src_model.tissue.clear_open_glass`` (looked up by the job at each run) switched off, or timed, and
    the class labels it was handed kept as they were before it."""

    def __init__(self) -> None:
        import src_model.tissue as tissue

        self.tissue, self.real = tissue, tissue.clear_open_glass
        self.seconds, self.before, self.image = 0.0, None, None

    def run(self, on: bool):
        self.seconds, self.before = 0.0, None

        def timed(glass, factor, r0, rgb, *maps):
            if r0 == 0 and len(rgb) == len(self.image):  # the whole path: one call on the whole maps
                self.before = maps[0].copy()
            t0 = time.perf_counter()
            n = self.real(glass, factor, r0, rgb, *maps) if on else 0
            self.seconds += time.perf_counter() - t0
            return n

        self.tissue.clear_open_glass = timed
        return self

    def restore(self) -> None:
        self.tissue.clear_open_glass = self.real


def job(model_path: str, image: np.ndarray, stream: bool):
    """The dock's worker job on ``image``: (gland instances, uncertainty, class labels or None, seconds)."""
    from napari_cdma._predict_stream import Block, predict_job

    unc = np.zeros(image.shape[:2], np.float16) if stream else None
    instances = np.zeros(image.shape[:2], np.int32)
    t0 = time.perf_counter()
    gen = predict_job(model_path, image, unc)
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        if isinstance(event, Block):
            h, w = event.labels.shape
            instances[event.y0:event.y0 + h, event.x0:event.x0 + w] = event.labels
    seconds = time.perf_counter() - t0
    assert result[0] == "ok", result
    _, prediction, extra = result
    if not stream:
        return extra["instances"], extra["uncertainty"], prediction.labels, seconds
    return instances, unc, None, seconds


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / s if s else 1.0


def largest_glass(image: np.ndarray) -> int:
    from scipy import ndimage as ndi

    from src_model.tissue import tissue_mask

    regions, n = ndi.label(~tissue_mask(image))
    return int(np.bincount(regions.ravel())[1:].max()) if n else 0


def glas_images(data: Path, ids, rule: Rule, model_path: str) -> dict:
    from src_model.io import read_image, read_mask
    from src_model.postprocess import instance_labels
    from src_model.tissue import image_open_glass

    rows = []
    for name in ids:
        image, truth = read_image(data / "images" / f"{name}.png"), read_mask(data / "masks" / f"{name}.png") > 0
        rule.image = image
        rule.run(True)
        instances, _, labels, seconds = job(model_path, image, stream=False)
        before = rule.before > 0
        t0 = time.perf_counter()
        glass, factor = image_open_glass(image)
        find_s = time.perf_counter() - t0
        rows.append({"id": name, "validation": name in VALIDATION, "shape": list(image.shape[:2]),
                     "largest_glass_px": largest_glass(image), "open_glass_coarse_px": int(glass.sum()),
                     "factor": factor, "gland_px_before": int(before.sum()),
                     "gland_px_removed": int((before & ~(labels > 0)).sum()),
                     "true_gland_px_removed": int((before & ~(labels > 0) & truth).sum()),
                     "dice_labels_before": dice(before, truth), "dice_labels_after": dice(labels > 0, truth),
                     "dice_instances_before": dice(instance_labels(before) > 0, truth),
                     "dice_instances_after": dice(instances > 0, truth),
                     "job_s": seconds, "find_s": find_s, "clear_s": rule.seconds})
        print(name, rows[-1]["gland_px_removed"], f"{seconds:.1f} s", flush=True)
    return {"images": rows}


def glass_pixels(data: Path, ids) -> np.ndarray:
    """Every glass pixel (``tissue_mask`` False) of the images ``ids``, (N, 3) uint8."""
    from src_model.io import read_image
    from src_model.tissue import tissue_mask

    out = []
    for name in ids:
        image = read_image(data / "images" / f"{name}.png")
        out.append(image[~tissue_mask(image)])
    return np.concatenate(out)


def canvases(data: Path, rule: Rule, model_path: str, seed: int = 0) -> list:
    from src_model.io import read_image, read_mask
    from src_model.tissue import image_open_glass

    pool = glass_pixels(data, VALIDATION)
    rng = np.random.default_rng(seed)
    out = []
    for side, stream, ids, corners in CANVASES:
        canvas = pool[rng.integers(0, len(pool), (side, side))]
        inside, truth = np.zeros((side, side), bool), np.zeros((side, side), bool)
        for name, (y, x) in zip(ids, corners, strict=True):
            image = read_image(data / "images" / f"{name}.png")
            h, w = image.shape[:2]
            canvas[y:y + h, x:x + w] = image
            inside[y:y + h, x:x + w] = True
            truth[y:y + h, x:x + w] = read_mask(data / "masks" / f"{name}.png") > 0
        row = {"side": side, "streamed": stream, "ids": ids, "glass_px": int((~inside).sum()),
               "glass_colour_median": [int(v) for v in np.median(pool, axis=0)], "glass_pool_px": int(len(pool))}
        t0 = time.perf_counter()
        glass, factor = image_open_glass(canvas)
        row.update(find_s=time.perf_counter() - t0, factor=factor)
        rule.image = canvas
        for on in (False, True):
            rule.run(on)
            load = load_average()
            instances, unc, _, seconds = job(model_path, canvas, stream)
            key = "on" if on else "off"
            gland = instances > 0
            row[key] = {"gland_px_glass": int((gland & ~inside).sum()), "unc_px_glass": int((unc[~inside] > 0).sum()),
                        "gland_px_inside": int((gland & inside).sum()), "dice_inside": dice(gland & inside, truth),
                        "job_s": seconds, "clear_s": rule.seconds, "load_before": load}
            if on:
                prev = row.pop("_gland")
                row["changed_inside_px"] = int(((gland != prev) & inside).sum())
                row["true_gland_removed_inside_px"] = int((prev & ~gland & truth & inside).sum())
            else:
                row["_gland"] = gland
            print(side, key, row[key], flush=True)
        out.append(row)
    return out


def markdown(res: dict) -> str:
    imgs = res["glas"]["images"]
    val = [r for r in imgs if r["validation"]]

    def mean(rows, key):
        return float(np.mean([r[key] for r in rows]))

    lines = ["# Open glass on the dock's image path (bundled model)", "",
             f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores, torch threads as the dock sets "
             f"them (`torch_threads('viewer')`); load {res['load_start']} -> {res['load_end']}, "
             f"{res['seconds']:.0f} s.",
             "Command: `python benchmarks/image_glass.py`", "",
             f"## {len(imgs)} GlaS training images through the dock's job (predicted whole)", "",
             "| | images | gland px removed by the rule | pixel Dice, labels before / after | "
             "pixel Dice, gland instances before / after |", "|---|---|---|---|---|"]
    for label, rows in (("all training", imgs), ("of which validation", val)):
        lines.append(f"| {label} | {len(rows)} | {sum(r['gland_px_removed'] for r in rows)} "
                     f"(of {sum(r['gland_px_before'] for r in rows)}) | {mean(rows, 'dice_labels_before'):.4f} / "
                     f"{mean(rows, 'dice_labels_after'):.4f} | {mean(rows, 'dice_instances_before'):.4f} / "
                     f"{mean(rows, 'dice_instances_after'):.4f} |")
    big = max(imgs, key=lambda r: r["largest_glass_px"])
    lines += ["", f"Dice: mean over images. Largest glass region (`tissue_mask` False, 4-connected) in any "
                  f"training image: {big['largest_glass_px']} px ({big['id']}), against `OPEN_GLASS_AREA` = "
                  f"{res['open_glass_area']}; images with any open glass: "
                  + ", ".join(f"{r['id']} ({r['open_glass_coarse_px']} px, {r['gland_px_removed']} gland px "
                              f"removed, {r['true_gland_px_removed']} of them true gland; pixel Dice of the labels "
                              f"{r['dice_labels_before']:.4f} -> {r['dice_labels_after']:.4f})"
                              for r in imgs if r["open_glass_coarse_px"])
                  + f". Cost of the rule per image: finding the open glass {1000 * mean(imgs, 'find_s'):.1f} ms "
                  "mean, clearing "
                  f"{1000 * mean(imgs, 'clear_s'):.2f} ms, of a job of {mean(imgs, 'job_s'):.2f} s.", "",
              "## GlaS validation images pasted on real glass, through the dock's job", "",
              "| canvas | path | glass px | rule | gland px on glass | uncertainty px > 0 on glass | gland px inside / "
              "Dice inside | job (s) | rule's time (s): find + clear | load before |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in res["canvases"]:
        for key in ("off", "on"):
            r = row[key]
            cost = f"{row['find_s']:.2f} + {r['clear_s']:.2f}" if key == "on" else "-"
            lines.append(f"| {row['side']} x {row['side']} | {'streamed' if row['streamed'] else 'whole'} | "
                         f"{row['glass_px']} | {key} | {r['gland_px_glass']} | {r['unc_px_glass']} | "
                         f"{r['gland_px_inside']} / {r['dice_inside']:.4f} | {r['job_s']:.1f} | {cost} | "
                         f"{r['load_before']} |")
    row = res["canvases"][0]
    lines += ["", f"Canvases: every pixel a glass pixel drawn at random from the {row['glass_pool_px']} glass pixels "
                  f"of the 8 validation images (median colour {row['glass_colour_median']}), the images pasted at "
                  "fixed places with glass between them. Coarse factor (the open glass is found on the block mean, "
                  f"at most {res['glass_side']} px a side): "
                  + ", ".join(f"{r['side']}: {r['factor']}" for r in res["canvases"])
                  + ". Gland px inside the images changed by the rule (of which true gland removed): "
                  + ", ".join(f"{r['side']}: {r['changed_inside_px']} ({r['true_gland_removed_inside_px']})"
                              for r in res["canvases"])
                  + ". 'find' is one call of `image_open_glass` on the canvas, timed apart; 'clear' the "
                    "`clear_open_glass` calls inside the job (per band when streamed). Job times are wall times on "
                    "a shared machine (the run without the rule first) and differ between the two runs by more "
                    "than the rule's own time."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(parser)
    parser.add_argument("--limit", type=int, default=None, help="only the first N training images (a quick run)")
    args = parser.parse_args(argv)
    data = require_glas(args.data)

    from src_model.checkpoint import bundled_model_path
    from src_model.tissue import GLASS_SIDE, OPEN_GLASS_AREA

    with (data / "split.csv").open(newline="") as f:
        ids = [r["id"] for r in csv.DictReader(f) if r["split"] == "train"]
    ids = ids[:args.limit] if args.limit else ids
    model_path = str(bundled_model_path())
    start, load_start = time.perf_counter(), load_average()
    rule = Rule()
    try:
        res = {"machine": machine_info(), "load_start": load_start, "open_glass_area": OPEN_GLASS_AREA,
               "glass_side": GLASS_SIDE, "canvases": canvases(data, rule, model_path),
               "glas": glas_images(data, ids, rule, model_path)}
    finally:
        rule.restore()
    res.update(load_end=load_average(), seconds=time.perf_counter() - start)
    paths = write_results("image_glass", res, markdown(res))
    print(*paths, sep="\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
