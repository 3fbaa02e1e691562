"""Write the replay pack (``src_model/bundled/replay/``): reference crops of GlaS training images on which
fine-tuning keeps distilling towards the previous model (:mod:`src_model.replay_pack`).

The crops come only from the images the 10 % split of the semi-supervised benchmark labels
(``ssl_split(data, 0.1, 8, 0)["labelled"]``). Those images are never session or untouched images of the
simulated annotation sessions (``benchmarks/annotation_session.py``: ``--split trainval`` draws from that
split's validation and unlabelled images, ``--split test`` from the test images), so a pack made of them cannot
leak the images a session measures forgetting on. The bundled model was trained on every training image, these
included.

Per image ``--per-image`` crops of ``--size`` px, drawn with a fixed seed among positions that are mostly tissue
(:func:`src_model.tissue.tissue_mask`), so the pack holds glands, stroma and lumen as the images do. Each crop's
expert mask (gland 255, else 0) goes to ``masks/`` under the same name: the reference check of fine-tuning
(:mod:`src_model.reference_check`) scores models on them.

Usage:
  python benchmarks/make_replay_pack.py [--data GLAS] [--size 320] [--per-image 2]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _common import add_data_argument, require_glas

from src_model.data import load_pairs, ssl_split
from src_model.replay_pack import MASK_DIR, PACK_DIR
from src_model.tissue import tissue_mask


def crops(img: np.ndarray, size: int, n: int, rng: np.random.Generator, min_tissue: float = 0.6):
    """``n`` crops of ``size`` px, mostly tissue and not overlapping by more than half a side."""
    tissue = tissue_mask(img)
    h, w = img.shape[:2]
    picked: list = []
    for _ in range(500):
        if len(picked) == n:
            break
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        if tissue[y:y + size, x:x + size].mean() < min_tissue:
            continue
        if any(abs(y - py) < size // 2 and abs(x - px) < size // 2 for py, px in picked):
            continue
        picked.append((y, x))
    return [((y, x), img[y:y + size, x:x + size]) for y, x in picked]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(ap)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--per-image", type=int, default=2)
    ap.add_argument("--out", type=Path, default=PACK_DIR)
    args = ap.parse_args()
    data = require_glas(args.data)
    from PIL import Image

    ids = ssl_split(data, 0.1, 8, 0)["labelled"]
    rng = np.random.default_rng(20261130)
    args.out.mkdir(parents=True, exist_ok=True)
    masks = args.out / MASK_DIR
    masks.mkdir(exist_ok=True)
    for old in [*args.out.glob("*.png"), *masks.glob("*.png")]:
        old.unlink()
    index = []
    for name, (img, truth) in zip(ids, load_pairs(data, ids), strict=True):
        for k, ((y, x), crop) in enumerate(crops(img, args.size, args.per_image, rng)):
            f = args.out / f"{name}_{k}.png"
            Image.fromarray(crop).save(f, optimize=True)
            gland = np.where(truth[y:y + args.size, x:x + args.size] > 0, 255, 0).astype(np.uint8)
            Image.fromarray(gland).convert("1").save(masks / f.name, optimize=True)
            index.append({"file": f.name, "image": name, "y": y, "x": x, "size": args.size})
    (args.out / "index.json").write_text(json.dumps({"source_ids": ids, "crops": index}, indent=1) + "\n")
    total = sum(f.stat().st_size for f in args.out.glob("*.png"))
    print(f"{len(index)} crops from {len(ids)} images, {total / 1e6:.2f} MB in {args.out}")


if __name__ == "__main__":
    main()
