"""The ``cdma`` command line: train, predict, evaluate, import-official.

Every sub-command has ``--help``, reports progress on stderr for long work, and exits with a
non-zero status and a one-line reason on bad input.

Only the standard library is imported at module level: the engine (and torch) is imported inside
the command functions, so ``cdma --help`` and argument errors are instant.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional, Sequence

log = logging.getLogger("cdma")


class UserError(Exception):
    """Bad input: reported as one line, exit status 2."""


def _progress_printer(fmt: str):
    """A progress callback: a human line on stderr, or JSON lines on stdout (``--progress json``)."""
    def show(ev):
        if fmt == "json":
            print(json.dumps({"event": "progress", **ev.to_dict()}), flush=True)
            return
        parts = " ".join(f"{k}={v:.4g}" for k, v in ev.metrics.items())
        eta = f" eta {ev.eta_s:.0f}s" if ev.eta_s is not None else ""
        print(f"[{ev.stage}] {ev.step}/{ev.total} {parts}{eta}", file=sys.stderr, flush=True)
    return show


# ----------------------------------------------------------------------------- train
def _labelled_ids(args, train_ids: Sequence[str]) -> List[str]:
    from .data import choose_labelled

    if args.labelled_ids:
        ids = [i.strip() for i in args.labelled_ids.split(",") if i.strip()]
        unknown = sorted(set(ids) - set(train_ids))
        if unknown:
            raise UserError(f"--labelled-ids: not training images in split.csv: {', '.join(unknown[:5])}")
        return sorted(ids)
    return choose_labelled(train_ids, args.labelled_fraction, args.seed)


def cmd_train(args) -> int:
    from . import build_model, get_config
    from .checkpoint import BUNDLED_NAME, load_model
    from .data import ids_of, load_images, load_pairs, read_split, write_split_record
    from .progress import drain
    from .trainer import TrainConfig, train

    data = Path(args.data)
    try:
        rows = read_split(data)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    train_ids = ids_of(rows, split="train")
    if not train_ids:
        raise UserError(f"{data}/split.csv has no rows with split 'train'")
    labelled = _labelled_ids(args, train_ids)
    unlabelled = [] if args.supervised_only else sorted(set(train_ids) - set(labelled))
    out = Path(args.out)
    if (out / "final.pt").exists() and not args.resume:
        raise UserError(f"{out}/final.pt exists; choose another --out or pass --resume")
    if args.init is not None:
        model = load_model(None if args.init == BUNDLED_NAME else args.init)
        if args.preset_given:
            log.warning("--preset ignored: fine-tuning keeps the structure of %s", args.init)
    else:
        model = build_model(get_config(args.preset))
    maker = TrainConfig.finetune if args.init is not None and args.schedule == "auto" else TrainConfig
    if args.schedule == "release":
        cfg = TrainConfig.release(args.steps, seed=args.seed, device=args.device)
    else:
        cfg = maker(steps=args.steps, seed=args.seed, device=args.device)
    cfg.unsupervised = not args.supervised_only
    cfg.patch = args.patch
    if args.batch:
        cfg.batch_labelled = cfg.batch_unlabelled = args.batch
    write_split_record(out / "split.json", {"data": str(data), "labelled": labelled, "unlabelled": unlabelled,
                                            "seed": args.seed})
    log.info("training %s: %d labelled, %d unlabelled images, %d steps -> %s",
             "fine-tune" if args.init else args.preset, len(labelled), len(unlabelled), args.steps, out)
    resume = out / "last.pt" if args.resume and (out / "last.pt").exists() else None
    prov = {"data": str(data), "labelled_ids": labelled, "init": args.init}
    result = drain(train(model, load_pairs(data, labelled), load_images(data, unlabelled), cfg, out,
                         provenance=prov, resume=resume), _progress_printer(args.progress))
    print(json.dumps({"event": "done", "checkpoint": str(result.checkpoint), "steps": result.steps_done}))
    return 0


# ----------------------------------------------------------------------------- predict
def cmd_predict(args) -> int:
    import numpy as np
    from PIL import Image

    from .checkpoint import load_model
    from .inference import predict_tiles
    from .io import read_image
    from .progress import drain
    from .tissue import tissue_mask
    from .uncertainty import rank_tiles

    model = load_model(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        image = read_image(path)
        pred = drain(predict_tiles(model, image, tile=args.tile, overlap=args.overlap, branch=args.branch,
                                   return_branches=args.branches),
                     _progress_printer(args.progress))
        stem = Path(path).stem
        Image.fromarray((pred.labels > 0).astype(np.uint8) * 255).save(out / f"{stem}_mask.png")
        Image.fromarray(np.round(pred.disagreement * 255).astype(np.uint8)).save(out / f"{stem}_disagreement.png")
        np.save(out / f"{stem}_disagreement.npy", pred.disagreement)
        np.save(out / f"{stem}_entropy.npy", pred.entropy)
        np.save(out / f"{stem}_probability.npy", pred.probability[1])
        if args.branches and pred.branch_probs is not None:
            np.save(out / f"{stem}_branch_probs.npy", pred.branch_probs[:, 1])
        tiles = rank_tiles(pred.disagreement, tissue_mask(image), review_size=args.review_size)
        summary = {"image": str(path), "model": str(getattr(model, "checkpoint_path", args.model)),
                   "foreground_fraction": float((pred.labels > 0).mean()),
                   "mean_disagreement": float(pred.disagreement.mean()),
                   "review_tiles": [{"score": s, "bbox": list(b)} for s, b in tiles[:10]]}
        (out / f"{stem}_summary.json").write_text(json.dumps(summary, indent=2))
        log.info("%s -> %s (foreground %.1f %%)", path, out / f"{stem}_mask.png", 100 * summary["foreground_fraction"])
    return 0


# ----------------------------------------------------------------------------- evaluate
def cmd_evaluate(args) -> int:
    from .checkpoint import load_model
    from .evaluate import ALL, evaluate_model
    from .postprocess import PostprocessConfig
    from .progress import drain

    model = load_model(args.model)
    ids = args.ids.split(",") if args.ids else None
    post = None
    if args.min_object_size > 0 or args.split_glands > 0:
        post = PostprocessConfig(args.min_object_size, fill_holes=True, split_h=args.split_glands)
    try:
        report = drain(evaluate_model(model, args.data, split=args.split, ids=ids, branch=args.branch,
                                      postprocess=post),
                       _progress_printer(args.progress))
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    keys = ("dice", "iou", "f1", "object_dice", "object_hausdorff")
    print("subset   n   " + "  ".join(f"{k:>16}" for k in keys))
    for subset, agg in report["summary"].items():
        n = sum(1 for r in report["per_image"] if subset == ALL or r["subset"] == subset)
        print(f"{subset:<7} {n:>3}   " + "  ".join(f"{agg[k]:>16.4f}" for k in keys))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


# ----------------------------------------------------------------------------- import-official
def cmd_import_official(args) -> int:
    import torch

    from .checkpoint import save_checkpoint
    from .official import OfficialCheckpointError, model_from_official

    src = Path(args.checkpoint)
    if not src.is_file():
        raise UserError(f"{src}: no such file")
    try:
        sd = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to unpickle safely is bad input
        raise UserError(f"{src}: not a readable torch state_dict ({type(exc).__name__})") from exc
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    try:
        model = model_from_official(sd)
    except OfficialCheckpointError as exc:
        raise UserError(f"{src}: {exc}") from exc
    save_checkpoint(args.out, model, provenance={"imported_from": str(src), "source": "official CDMA"},
                    overwrite=args.force)
    print(f"wrote {args.out}")
    return 0


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from .checkpoint import BUNDLED_NAME
    from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE, REVIEW_SIZE

    p = argparse.ArgumentParser(prog="cdma", description="CDMA semi-supervised histology segmentation engine.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train or fine-tune on a data folder (images/, masks/, split.csv)")
    t.add_argument("--data", required=True, help="folder with images/, masks/ and split.csv")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--labelled-fraction", type=float, default=0.1, help="share of training images used with labels")
    g.add_argument("--labelled-ids", help="comma-separated ids to use with labels (others: unlabelled)")
    t.add_argument("--init", nargs="?", const=BUNDLED_NAME, default=None,
                   help="fine-tune from this checkpoint (no value: the bundled model)")
    t.add_argument("--preset", default="lite", help="model preset when training from scratch (lite, paper)")
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--batch", type=int, default=0, help="patches per stream per batch (default: schedule's)")
    t.add_argument("--patch", type=int, default=256)
    t.add_argument("--schedule", choices=("auto", "release"), default="auto",
                   help="auto: AdamW/poly (finetune schedule with --init); release: the paper's SGD schedule")
    t.add_argument("--supervised-only", action="store_true", help="no unsupervised losses (baseline)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--out", required=True, help="output folder (checkpoints, split.json)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    t.add_argument("--progress", choices=("text", "json"), default="text")
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", help="predict masks and uncertainty maps for images")
    pr.add_argument("images", nargs="+", help="PNG/TIFF/JPEG/NumPy images")
    pr.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--branch", default="mean", type=lambda s: s if s == "mean" else int(s),
                    help="'mean' of the three branches (default) or 1 (branch 1, as released)")
    pr.add_argument("--branches", action="store_true", help="also write per-branch probabilities")
    pr.add_argument("--tile", type=int, default=DEFAULT_TILE,
                    help=f"side of the tiles of tiled inference, pixels (default {DEFAULT_TILE})")
    pr.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP,
                    help=f"overlap of neighbouring inference tiles, fraction of a tile (default {DEFAULT_OVERLAP})")
    pr.add_argument("--review-size", type=int, default=REVIEW_SIZE,
                    help=f"side of the squares ranked for review in the summary, pixels (default {REVIEW_SIZE})")
    pr.add_argument("--progress", choices=("text", "json"), default="text")
    pr.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="GlaS metrics of a checkpoint on a data folder and split")
    e.add_argument("--data", required=True)
    e.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    e.add_argument("--split", default="test", help="split or subset: test, testA, testB, train")
    e.add_argument("--ids", help="comma-separated image ids instead of a split")
    e.add_argument("--branch", default="mean", type=lambda s: s if s == "mean" else int(s))
    e.add_argument("--min-object-size", type=int, default=0,
                   help="drop predicted objects and fill holes smaller than this (pixels); 0 = raw masks")
    e.add_argument("--split-glands", type=float, default=0.0, metavar="H",
                   help="split touching glands by a distance-transform watershed with h-maxima seeds of height H px")
    e.add_argument("--out", help="write the full report (per image + summary) as JSON")
    e.add_argument("--progress", choices=("text", "json"), default="text")
    e.set_defaults(func=cmd_evaluate)

    i = sub.add_parser("import-official", help="convert an official CDMA state_dict to a napari-cdma checkpoint")
    i.add_argument("checkpoint")
    i.add_argument("--out", required=True)
    i.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    i.set_defaults(func=cmd_import_official)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .checkpoint import CheckpointError
    from .io import ImageReadError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.preset_given = "--preset" in argv
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except (UserError, CheckpointError, ImageReadError, FileExistsError, ValueError) as exc:
        print(f"cdma {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cdma {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
