"""Pack GlaS training images small enough to travel with the repo to a device machine, and unpack them.

The device machine cannot see ``/work/shared``; the working tree that travels is limited to 64 MiB and
the training PNGs are about 60 MB. Images are re-encoded losslessly as WebP (pixel-exact, checked on
packing), masks stay PNG. Only ``split == "train"`` images are packed: no test image leaves for training.

  python benchmarks/pack_glas.py pack   --src ../shared/data/glas --dst .gpu_data/glas
  python benchmarks/pack_glas.py unpack --src .gpu_data/glas      --dst /tmp/glas

GlaS is for research use only (see its README); the pack is an ignored folder, never committed.
"""
from __future__ import annotations

import argparse
import csv
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def _pack_one(args):
    src, dst, image_id = args
    img = Image.open(src / "images" / f"{image_id}.png").convert("RGB")
    out = dst / "images" / f"{image_id}.webp"
    img.save(out, format="WEBP", lossless=True, quality=100, method=4, exact=True)
    with Image.open(out) as back:
        if not np.array_equal(np.asarray(back.convert("RGB")), np.asarray(img)):
            raise SystemExit(f"{out}: WebP round trip is not pixel-exact")
    shutil.copyfile(src / "masks" / f"{image_id}.png", dst / "masks" / f"{image_id}.png")
    return out.stat().st_size


def _unpack_one(args):
    src, dst, image_id = args
    webp = src / "images" / f"{image_id}.webp"
    try:
        with Image.open(webp) as im:
            rgb = im.convert("RGB")
    except OSError:  # a Pillow built without WebP: OpenCV reads it too
        import cv2

        rgb = Image.fromarray(cv2.cvtColor(cv2.imread(str(webp), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    rgb.save(dst / "images" / f"{image_id}.png", compress_level=1)
    shutil.copyfile(src / "masks" / f"{image_id}.png", dst / "masks" / f"{image_id}.png")


def train_ids(split_csv: Path):
    with split_csv.open(newline="") as f:
        return [r["id"] for r in csv.DictReader(f) if r["split"] == "train"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("pack", "unpack"))
    ap.add_argument("--src", type=Path, required=True)
    ap.add_argument("--dst", type=Path, required=True)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    ids = train_ids(args.src / "split.csv")
    for sub in ("images", "masks"):
        (args.dst / sub).mkdir(parents=True, exist_ok=True)
    # split.csv keeps every row (evaluation by id needs them); only train images are present
    shutil.copyfile(args.src / "split.csv", args.dst / "split.csv")
    if args.action == "unpack":  # a pack may leave images out (e.g. the validation ones, to fit the 64 MiB)
        ids = [i for i in ids if (args.src / "images" / f"{i}.webp").exists()]
    fn = _pack_one if args.action == "pack" else _unpack_one
    with ProcessPoolExecutor(args.workers) as ex:
        sizes = list(ex.map(fn, [(args.src, args.dst, i) for i in ids]))
    if args.action == "pack":
        print(f"packed {len(ids)} training images: {sum(sizes) / 2**20:.1f} MiB of WebP", file=sys.stderr)
    else:
        print(f"unpacked {len(ids)} training images to {args.dst}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
