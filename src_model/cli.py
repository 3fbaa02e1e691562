"""The ``cdma`` command line: train, predict, evaluate, import-official; predict-slide and export
(whole slides, :mod:`src_model.cli_slide`).

Every sub-command has ``--help``, reports progress on stderr for long work, and exits with a
non-zero status and a one-line reason on bad input. Every numeric option is range-checked while
the arguments are parsed, and every input file is checked from its header, before any work starts
(exit status 2, one line on stderr naming the option or the file).

Only the standard library is imported at module level: the engine (and torch) is imported inside
the command functions, so ``cdma --help`` and argument errors are instant.
"""
from __future__ import annotations

import argparse
import csv
import errno
import json
import logging
import math
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

log = logging.getLogger("cdma")


class UserError(Exception):
    """Bad input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit status 2), usage left to --help."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ----------------------------------------------------------------------------- outputs
# Outputs are checked before any work: an existing file is never replaced without --force (as train and
# import-official), and a folder that cannot take a new file is said at once, not after minutes of work.
def writable_folder(folder: Path, what: str) -> None:
    """``folder`` (made if missing) can take a new file; else :class:`UserError` naming it and ``what``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".cdma-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{what}: cannot write in {folder} ({exc.strerror or exc})") from exc


def new_output_file(path: str, force: bool, option: str) -> Path:
    """An output file given as ``option``: not a folder, not an existing file unless ``force``, in a writable
    folder."""
    out = Path(path)
    if out.is_dir():
        raise UserError(f"{option} {out}: is a folder; give a file name")
    if out.exists() and not force:
        raise UserError(f"{option} {out}: exists; pass --force to overwrite it")
    writable_folder(out.parent, f"{option} {out}")
    return out


def _os_error_line(exc: BaseException) -> str:
    """One line for an OS error; a temporary file of an atomic write is named by its folder."""
    name = getattr(exc, "filename", None)
    if not isinstance(exc, OSError) or not name:
        return str(exc) or type(exc).__name__
    p = Path(str(name))
    where = p.parent if p.name.startswith(".") or p.name.endswith((".tmp", ".partial")) else p
    advice = "; free space there or write elsewhere" if exc.errno in _DISK_FULL else ""
    return f"{where}: {exc.strerror or exc}{advice}"


_DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def _log_levels(verbose: bool) -> None:
    """Our progress lines at INFO on stderr; other libraries' (ome-zarr, Dask) only from WARNING, and none of
    tifffile's (it logs, as errors, each way it tried to read a damaged file that is then refused in one line
    naming it), unless -v."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(message)s",
                        stream=sys.stderr)
    if not verbose:
        for name in OUR_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)
        logging.getLogger("tifffile").setLevel(logging.CRITICAL)


OUR_LOGGERS = ("cdma", "src_model", "napari_cdma")


def _int_in(lo: int, hi: int):
    """argparse type: an integer in ``lo..hi``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer in {lo}..{hi}, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def _float_in(lo: float, hi: float, lo_open: bool = False):
    """argparse type: a finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text!r}") from None
        if not math.isfinite(value) or value < lo or value > hi or (lo_open and value == lo):
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


def _branch(text: str):
    """argparse type of --branch: 'mean' or a branch number 1..3."""
    if text == "mean":
        return text
    if text in ("1", "2", "3"):
        return int(text)
    raise argparse.ArgumentTypeError(f"must be 'mean' or a branch number 1, 2 or 3, got {text!r}")


_DEVICE = re.compile(r"auto|cpu|cuda(:\d{1,2})?")


def _device(text: str) -> str:
    """argparse type of --device: auto, cpu, cuda or cuda:N."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def _split_rows(data: Path):
    """The rows of ``data/split.csv``; every problem is a UserError naming the folder or the file."""
    from .data import read_split

    if not data.exists():
        raise UserError(f"{data}: no such data folder")
    if not data.is_dir():
        raise UserError(f"{data}: not a folder (expected a data folder with images/, masks/, split.csv)")
    path = data / "split.csv"
    try:
        rows = read_split(data)
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a text CSV file (undecodable byte at position {exc.start})") from exc
    except csv.Error as exc:
        raise UserError(f"{path}: not a readable CSV file ({exc})") from exc
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    for n, row in enumerate(rows, start=2):
        if not row.id or not row.id.isprintable() or "/" in row.id or "\\" in row.id or row.id in (".", ".."):
            raise UserError(f"{path}: line {n}: unusable image id {row.id[:40]!r}")
    return rows


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


def _check_resumed_split(path: Path, labelled: Sequence[str], unlabelled: Sequence[str]) -> None:
    """A resumed run trains on the images it was started on: its split record is not replaced by another."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({exc}); the run's record of its images is damaged") from exc
    if not isinstance(old, dict):
        raise UserError(f"{path}: not a run's record of its images")
    was_l, was_u = sorted(old.get("labelled") or []), sorted(old.get("unlabelled") or [])
    if was_l != sorted(labelled) or was_u != sorted(unlabelled):
        raise UserError(f"{path}: the run was started on other images ({len(was_l)} labelled, {len(was_u)} "
                        f"unlabelled; now {len(labelled)} and {len(unlabelled)}); "
                        f"resume with its --labelled-ids / --labelled-fraction and --seed, or choose another --out")


def _init_file(init: str) -> Path:
    """The model file an ``--init`` value names (``bundled``: the packaged model), resolved."""
    from .checkpoint import BUNDLED_NAME, bundled_model_path

    return bundled_model_path() if init == BUNDLED_NAME else Path(init).expanduser().resolve()


def _check_resumed_kind(path: Path, fine_tune: bool, init: Optional[str]) -> None:
    """A run is resumed as the kind of run it is: a from-scratch run's last.pt is not continued as a fine-tuning
    (``--init`` with the recipe) nor a fine-tuning run's as a from-scratch one. Their models have the same structure
    and their optimisers (AdamW) the same state, so :meth:`~src_model.trainer.CDMATrainer.resume` took either; the
    kind is in the checkpoint's provenance (a fine-tuning run records its ``recipe``). A run started from a model
    (``--init``) is resumed only with that model's ``--init``: the provenance records the ``--init`` value as given
    (no checksum of the file), so the two are compared as resolved paths."""
    from .checkpoint import BUNDLED_NAME, read_checkpoint

    init_given = init is not None
    prov = read_checkpoint(path).get("provenance")
    if not isinstance(prov, dict) or prov.get("trainer") != "CDMATrainer" or "init" not in prov:
        return  # not a cdma train checkpoint: CDMATrainer.resume says what it is
    tuned = "recipe" in prov
    if fine_tune and not tuned and prov["init"] is None:
        raise UserError(f"{path}: a from-scratch training run, not a fine-tuning run; continue it with cdma train "
                        f"--resume without --init, or fine-tune from it with --init {path} and another --out")
    if tuned and not fine_tune:
        own = "--init" if prov["init"] in (None, BUNDLED_NAME) else f"--init {prov['init']}"
        said = "" if init_given else ", not a from-scratch training run"
        raise UserError(f"{path}: a fine-tuning run ({own}){said}; continue it with cdma train --resume {own}"
                        f"{' --schedule auto' if init_given else ''}, or choose another --out")
    was = prov["init"]
    if init_given and isinstance(was, str) and _init_file(was) != _init_file(init):
        raise UserError(f"{path}: the run was started from --init {was}, not --init {init}; continue it with "
                        f"cdma train --resume --init {was}, or start a run from --init {init} with another --out")


def _remove_partial_checkpoints(out: Path) -> None:
    """Remove the temporary files of checkpoints a killed run was writing (``last.pt.XXXX.tmp``, as
    :func:`src_model.fileio.atomic_write_bytes` names them): never a checkpoint, each up to the model's size."""
    for name in ("last.pt", "final.pt"):
        for tmp in out.glob(f"{name}.*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                continue
            log.info("removed %s, a checkpoint a killed run had not finished writing", tmp)


def cmd_train(args) -> int:
    from . import build_model, get_config
    from .checkpoint import BUNDLED_NAME, load_model
    from .data import ids_of, load_images, load_pairs, write_split_record
    from .distributed import from_env
    from .progress import drain
    from .runtime import resolve_device
    from .trainer import TrainConfig, train

    try:  # under torchrun every process runs this; only rank 0 writes files and reports progress
        main_rank = from_env().is_main
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if not main_rank:
        for name in ("", *OUR_LOGGERS):
            logging.getLogger(name).setLevel(logging.WARNING)
    data = Path(args.data)
    rows = _split_rows(data)
    train_ids = ids_of(rows, split="train")
    if not train_ids:
        raise UserError(f"{data}/split.csv has no rows with split 'train'")
    labelled = _labelled_ids(args, train_ids)
    unlabelled = [] if args.supervised_only else sorted(set(train_ids) - set(labelled))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; --out takes a folder")
    if (out / "final.pt").exists() and not args.resume:
        raise UserError(f"{out}/final.pt exists; choose another --out or pass --resume")
    if (out / "last.pt").exists() and not args.resume:  # a run that did not finish: its checkpoint is kept
        raise UserError(f"{out}/last.pt exists (a run that did not finish); pass --resume to continue it or choose "
                        f"another --out")
    if args.resume and not (out / "last.pt").is_file():
        raise UserError(f"{out}/last.pt: no such file to resume from (--resume continues a run in --out)")
    try:
        resolve_device(args.device)
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"--device {args.device}: {exc}") from exc
    if args.init is not None:
        model = load_model(None if args.init == BUNDLED_NAME else args.init)
        if args.preset_given:
            log.warning("--preset ignored: fine-tuning keeps the structure of %s", args.init)
    else:
        try:
            model = build_model(get_config(args.preset))
        except ValueError as exc:
            raise UserError(f"--preset: {exc}") from exc
    fine_tune = args.init is not None and args.schedule == "auto"  # the plugin's recipe (src_model.finetune)
    steps = args.steps or (None if fine_tune else DEFAULT_TRAIN_STEPS)
    if args.semi_supervised and args.supervised_only:
        raise UserError("--semi-supervised and --supervised-only contradict each other; give one")
    if args.semi_supervised and not fine_tune:
        log.warning("--semi-supervised ignored: training from scratch uses CDMA's terms unless --supervised-only")
    if args.recipe_given and not fine_tune:
        log.warning("--recipe ignored: it applies to fine-tuning (--init with --schedule auto)")
    if args.schedule == "release":
        cfg = TrainConfig.release(steps, seed=args.seed, device=args.device)
    else:
        cfg = TrainConfig(steps=steps or DEFAULT_TRAIN_STEPS, seed=args.seed, device=args.device)
    cfg.unsupervised = not args.supervised_only
    cfg.patch = args.patch
    if args.batch:
        cfg.batch_labelled = cfg.batch_unlabelled = args.batch
    if args.resume:
        _check_resumed_kind(out / "last.pt", fine_tune, args.init)
        _check_resumed_split(out / "split.json", labelled, unlabelled)
    # every image is read (and checked) before anything is written to --out
    pairs, images = load_pairs(data, labelled), load_images(data, unlabelled)
    if main_rank:
        write_split_record(out / "split.json", {"data": str(data), "labelled": labelled,
                                                "unlabelled": unlabelled, "seed": args.seed})
    world = from_env().world_size
    log.info("training %s: %d labelled, %d unlabelled images, %s steps -> %s%s",
             f"fine-tune (recipe {args.recipe})" if fine_tune else args.preset, len(labelled), len(unlabelled),
             steps or "the recipe's", out, f" ({world} processes, DDP)" if world > 1 else "")
    if main_rank:
        _remove_partial_checkpoints(out)
    resume = out / "last.pt" if args.resume else None
    prov = {"data": str(data), "labelled_ids": labelled, "init": args.init}
    if fine_tune:
        from .finetune import finetune

        overrides = {"patch": args.patch}
        if args.batch:
            overrides.update(batch_labelled=args.batch, batch_unlabelled=args.batch)
        run = finetune(model, pairs, images, out, recipe=args.recipe, steps=steps,
                       semi_supervised=args.semi_supervised, seed=args.seed, device=args.device,
                       overrides=overrides, provenance=prov, resume=resume)
    else:
        run = train(model, pairs, images, cfg, out, provenance=prov, resume=resume)
    result = drain(run, _progress_printer(args.progress) if main_rank else None)
    if main_rank:
        print(json.dumps({"event": "done", "checkpoint": str(result.checkpoint), "steps": result.steps_done}))
    return 0


# ----------------------------------------------------------------------------- predict
def _output_stems(images: Sequence[str], out: Path) -> List[str]:
    """The stem of each input's output files; two inputs writing the same files is an error."""
    seen = {}
    for path in images:
        stem = Path(path).stem
        if stem in seen:
            what = "is given twice" if Path(path).resolve() == Path(seen[stem]).resolve() else \
                f"and {seen[stem]} would both write the same files ({stem}_mask.png, {stem}_summary.json, ...) in {out}"
            raise UserError(f"{path} {what}; rename one, or predict them into different --out folders")
        seen[stem] = path
    return list(seen)


def cmd_predict(args) -> int:
    from .checkpoint import load_model
    from .fileio import atomic_write_bytes
    from .io import image_header, read_image
    from .progress import drain

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; --out takes a folder")
    stems = _output_stems(args.images, out)
    # every input is checked from its header before any work (ImageReadError names the file)
    headers = [image_header(path, page=args.page, series=args.series) for path in args.images]
    from .stream import check_memory, estimate_predict_bytes, output_names, predict_to_files, width_factor

    if out.is_dir() and not args.force:
        existing = [out / name for stem in stems
                    for name in (*output_names(stem, args.branches).values(), f"{stem}_summary.json")
                    if (out / name).exists()]
        if existing:
            more = f" and {len(existing) - 1} more output file(s)" if len(existing) > 1 else ""
            raise UserError(f"--out {out}: {existing[0].name}{more} already there; pass --force to overwrite, or "
                            f"choose another --out")
    for path, head in zip(args.images, headers, strict=True):
        shape = tuple(head["shape"])  # channels as io._to_hwc reads them: last axis, else a channel-first axis
        channels = 1 if len(shape) == 2 else shape[2] if shape[2] in (1, 3, 4) else shape[0]
        if channels == 1:
            log.warning("%s: a greyscale image; the model was trained on H&E colour images, so its glands "
                        "will be poor (it is predicted as grey RGB)", path)
    model = load_model(args.model)

    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    n_branches = 3 if args.branch == "mean" else 1
    for path, head in zip(args.images, headers, strict=True):
        parts = estimate_predict_bytes(head["height"], head["width"], read_bytes=head["read_bytes"], tile=args.tile,
                                       n_branches=n_branches, n_classes=model.config.num_classes,
                                       model_bytes=model_bytes, width_factor=width_factor(model.config),
                                       review_size=args.review_size)
        check_memory(str(path), parts)
    writable_folder(out, f"--out {out}")  # made here, after every check, and said now if it cannot take files
    model_name = str(getattr(model, "checkpoint_path", args.model))
    for path, stem in zip(args.images, stems, strict=True):
        image = read_image(path, page=args.page, series=args.series)
        try:
            result = drain(predict_to_files(model, image, out, stem, tile=args.tile, overlap=args.overlap,
                                            branch=args.branch, return_branches=args.branches,
                                            review_size=args.review_size),
                           _progress_printer(args.progress))
        except OSError as exc:  # a write into --out failed (a full disk): the error names no file; name --out
            if exc.filename:
                raise
            raise OSError(exc.errno, exc.strerror, str(out)) from exc
        del image
        summary = {"image": str(path), "model": model_name,
                   "page": args.page, "series": args.series,
                   "size": [result.height, result.width],
                   "foreground_fraction": result.foreground_fraction,
                   "mean_disagreement": result.mean_disagreement,
                   "mean_uncertainty": result.mean_uncertainty,
                   "review_size": args.review_size,
                   # a fixed grid (review_regions needs the whole map at once), ranked by the uncertainty map
                   "review_grid_by_uncertainty": [{"score": sc, "bbox": list(b)}
                                                  for sc, b in result.review_tiles[:10]],
                   "outputs": sorted(output_names(stem, args.branches).values())}
        text = json.dumps(summary, indent=2).encode("utf-8")  # renamed into place, as the maps: never half written
        atomic_write_bytes(out / f"{stem}_summary.json", lambda f, text=text: f.write(text))
        log.info("%s -> %s (foreground %.1f %%)", path, out / f"{stem}_mask.png", 100 * result.foreground_fraction)
    return 0


# ----------------------------------------------------------------------------- evaluate
def _check_evaluation_files(data: Path, split: str, ids: Optional[List[str]]) -> None:
    """Before any work: the split file reads, every image and mask exists, and each mask has its
    image's size (from the headers); errors name the file."""
    from .data import image_path
    from .evaluate import select_rows
    from .io import image_header

    _split_rows(data)  # the split file's own problems, named
    try:
        rows = select_rows(data, split, ids)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    for row in rows:
        try:
            img = image_path(data, row.id)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        mask = data / "masks" / f"{row.id}.png"
        ih, mh = image_header(img), image_header(mask)
        if (ih["height"], ih["width"]) != (mh["height"], mh["width"]):
            raise UserError(f"{mask}: mask is {mh['height']} x {mh['width']} pixels but its image {img} is "
                            f"{ih['height']} x {ih['width']}")


def cmd_evaluate(args) -> int:
    from .checkpoint import load_model
    from .evaluate import ALL, evaluate_model
    from .postprocess import DEFAULT_INSTANCES, PostprocessConfig
    from .progress import drain

    data = Path(args.data)
    ids = [i.strip() for i in args.ids.split(",") if i.strip()] if args.ids is not None else None
    if ids is not None and not ids:
        raise UserError("--ids: no image ids given")
    _check_evaluation_files(data, args.split, ids)
    model = load_model(args.model)
    out = new_output_file(args.out, args.force, "--out") if args.out else None  # before the work, not after
    post = None
    if args.postprocess == "default":
        if args.min_object_size > 0 or args.split_glands > 0 or args.fill_lumens or args.max_hole is not None:
            raise UserError("--postprocess default sets the post-processing; drop --min-object-size, "
                            "--max-hole, --split-glands and --fill-lumens, or --postprocess")
        post = DEFAULT_INSTANCES
    elif args.min_object_size > 0 or args.split_glands > 0 or args.fill_lumens or args.max_hole is not None:
        post = PostprocessConfig(args.min_object_size, fill_holes=True, split_h=args.split_glands,
                                 max_hole=args.max_hole, lumen_holes=args.fill_lumens)
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
    if out is not None:
        from .fileio import atomic_write_json

        atomic_write_json(out, report)
    return 0


# ----------------------------------------------------------------------------- import-official
def cmd_import_official(args) -> int:
    from .checkpoint import load_torch_file, save_checkpoint
    from .official import OfficialCheckpointError, model_from_official

    src = Path(args.checkpoint)
    if not src.is_file():
        raise UserError(f"{src}: no such file")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; pass --force to overwrite it")
    sd = load_torch_file(src)  # zip and size checks first, weights only: CheckpointError names the file
    if isinstance(sd, dict) and sd.get("format") == "napari-cdma-checkpoint":  # before its state_dict is taken
        raise UserError(f"{src}: already a napari-cdma checkpoint; use it as it is")
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    try:
        model = model_from_official(sd)
    except OfficialCheckpointError as exc:
        raise UserError(f"{src}: {exc}") from exc
    save_checkpoint(out, model, provenance={"imported_from": str(src), "source": "official CDMA"},
                    overwrite=args.force)
    print(f"wrote {out}")
    return 0


# ----------------------------------------------------------------------------- parser
# Ranges of the numeric options (checked while parsing, before any work).
MAX_STEPS = 10_000_000
DEFAULT_TRAIN_STEPS = 1000  # cdma train from scratch
MAX_BATCH = 256
MIN_PATCH, MAX_PATCH = 32, 2048
MIN_TILE, MAX_TILE = 32, 2048
MAX_OVERLAP = 0.9
MIN_REVIEW, MAX_REVIEW = 16, 2048  # MAX_REVIEW = src_model.stream.MAX_REVIEW_SIZE (stream imports torch)
MAX_INDEX = 1_000_000
MAX_OBJECT_SIZE = 10**8
MAX_SPLIT_H = 1000.0


def cmd_retrain(args) -> int:
    from .cli_retrain import cmd_retrain as run

    return run(args, _progress_printer, UserError)


def build_parser() -> argparse.ArgumentParser:
    from .checkpoint import BUNDLED_NAME
    from .recipes import RECIPES
    from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE, REVIEW_SIZE

    p = _Parser(prog="cdma", description="CDMA semi-supervised histology segmentation engine.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train or fine-tune on a data folder (images/, masks/, split.csv)",
                       description="Train or fine-tune on a data folder. Under torchrun (e.g. torchrun "
                                   "--nproc_per_node 2 -m src_model.cli train ...) it trains data-parallel: "
                                   "each process draws its own patches (global batch = processes x --batch) "
                                   "and rank 0 writes the checkpoints.")
    t.add_argument("--data", required=True, help="folder with images/, masks/ and split.csv")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--labelled-fraction", type=_float_in(0.0, 1.0, lo_open=True), default=0.1,
                   help="share of training images used with labels, in (0, 1]")
    g.add_argument("--labelled-ids", help="comma-separated ids to use with labels (others: unlabelled)")
    t.add_argument("--init", nargs="?", const=BUNDLED_NAME, default=None,
                   help="fine-tune from this checkpoint (no value: the bundled model)")
    t.add_argument("--preset", default="lite", help="model preset when training from scratch (lite, paper)")
    t.add_argument("--steps", type=_int_in(1, MAX_STEPS), default=None,
                   help=f"optimiser steps, 1..{MAX_STEPS} (default {DEFAULT_TRAIN_STEPS}; with --init: the "
                        "recipe's for the amount of labelled pixels)")
    t.add_argument("--recipe", choices=list(RECIPES), default="default",
                   help="fine-tuning recipe with --init (default: the one chosen by benchmarks/forgetting.py, "
                        "which keeps what the model knew; plain: no regulariser)")
    t.add_argument("--batch", type=_int_in(0, MAX_BATCH), default=0,
                   help=f"patches per stream per batch, 1..{MAX_BATCH} (default 0: the schedule's)")
    t.add_argument("--patch", type=_int_in(MIN_PATCH, MAX_PATCH), default=256,
                   help=f"side of the training patches, pixels, {MIN_PATCH}..{MAX_PATCH}")
    t.add_argument("--schedule", choices=("auto", "release"), default="auto",
                   help="auto: AdamW/poly (with --init: the fine-tuning --recipe); release: the paper's SGD schedule")
    t.add_argument("--supervised-only", action="store_true", help="no unsupervised losses (baseline)")
    t.add_argument("--semi-supervised", action="store_true",
                   help="with --init: add CDMA's unsupervised terms to the fine-tuning (default off, by measurement)")
    t.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0)
    t.add_argument("--device", type=_device, default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    t.add_argument("--out", required=True, help="output folder (checkpoints, split.json)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    t.add_argument("--progress", choices=("text", "json"), default="text")
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser(
        "predict", help="predict masks and uncertainty maps for images",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Predict masks and uncertainty maps. For each input STEM.ext, writes into --out:\n"
                    "  STEM_mask.png            255 = gland, 0 = background\n"
                    "  STEM_uncertainty.npy     the uncertainty map: mean of the three branches' entropies\n"
                    "                           (expected entropy, as the plugin's uncertainty layer; chosen\n"
                    "                           on validation because it finds the model's errors; with\n"
                    "                           --branch N, that branch's entropy)\n"
                    "  STEM_disagreement.npy    branch disagreement (Jensen-Shannon divergence of the branches)\n"
                    "  STEM_disagreement.png    disagreement x 255, 8-bit\n"
                    "  STEM_entropy.npy         entropy of the mean of the branches\n"
                    "  STEM_probability.npy     gland probability\n"
                    "  STEM_branch_probs.npy    with --branches: each branch's gland probability (branch x H x W)\n"
                    "  STEM_summary.json        size, foreground_fraction, mean_uncertainty, mean_disagreement,\n"
                    "                           review_grid_by_uncertainty: the 10 squares of a --review-size grid\n"
                    "                           with the highest uncertainty (90th percentile over tissue; a fixed\n"
                    "                           grid, not the plugin's gland-centred review regions, which need\n"
                    "                           the whole map in memory)\n"
                    "The .npy maps are float16 (H x W) in [0, 1].\n\n"
                    "Images are processed tile row by tile row and maps written as they are finished, so memory\n"
                    "stays near the size of the RGB image plus a fixed working set; an image that would not fit\n"
                    "in the available memory is refused before any work.")
    pr.add_argument("images", nargs="+", help="PNG/TIFF/JPEG/NumPy images (distinct file stems)")
    pr.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--branch", default="mean", type=_branch,
                    help="'mean' of the three branches (default) or 1, 2, 3 (one branch; 1 as released)")
    pr.add_argument("--branches", action="store_true", help="also write per-branch probabilities")
    pr.add_argument("--tile", type=_int_in(MIN_TILE, MAX_TILE), default=DEFAULT_TILE,
                    help=f"side of the tiles of tiled inference, pixels, {MIN_TILE}..{MAX_TILE} "
                         f"(default {DEFAULT_TILE})")
    pr.add_argument("--overlap", type=_float_in(0.0, MAX_OVERLAP), default=DEFAULT_OVERLAP,
                    help=f"overlap of neighbouring inference tiles, fraction of a tile, 0..{MAX_OVERLAP} "
                         f"(default {DEFAULT_OVERLAP})")
    pr.add_argument("--review-size", type=_int_in(MIN_REVIEW, MAX_REVIEW), default=REVIEW_SIZE,
                    help=f"side of the grid squares ranked by uncertainty for review in the summary, pixels, "
                         f"{MIN_REVIEW}..{MAX_REVIEW} (default {REVIEW_SIZE})")
    pr.add_argument("--page", type=_int_in(0, MAX_INDEX), default=None,
                    help="page of a multi-page TIFF to predict (0-based; such files are refused without it)")
    pr.add_argument("--series", type=_int_in(0, MAX_INDEX), default=None,
                    help="series of a multi-series TIFF to predict (0-based; such files are refused without it)")
    pr.add_argument("--force", action="store_true", help="overwrite the output files of these images in --out")
    pr.add_argument("--progress", choices=("text", "json"), default="text")
    pr.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="GlaS metrics of a checkpoint on a data folder and split")
    e.add_argument("--data", required=True)
    e.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    e.add_argument("--split", default="test", help="split or subset: test, testA, testB, train")
    e.add_argument("--ids", help="comma-separated image ids instead of a split")
    e.add_argument("--branch", default="mean", type=_branch, help="'mean' (default) or a branch 1, 2, 3")
    e.add_argument("--min-object-size", type=_int_in(0, MAX_OBJECT_SIZE), default=0,
                   help="drop predicted objects and fill holes smaller than this (pixels); 0 = raw masks")
    e.add_argument("--split-glands", type=_float_in(0.0, MAX_SPLIT_H), default=0.0, metavar="H",
                   help="split touching glands by a distance-transform watershed with h-maxima seeds of height H px "
                        f"(0..{MAX_SPLIT_H:g})")
    e.add_argument("--max-hole", type=_int_in(0, MAX_OBJECT_SIZE), default=None, metavar="PX",
                   help="fill holes smaller than PX pixels (default: --min-object-size)")
    e.add_argument("--fill-lumens", action="store_true",
                   help="after splitting, fill every hole that one gland encloses alone (a ring-shaped prediction "
                        "becomes a filled gland; background between several glands stays)")
    e.add_argument("--postprocess", choices=("none", "default"), default="none",
                   help="'default': the plugin's post-processing (src_model.postprocess.DEFAULT_INSTANCES) instead "
                        "of the flags above; 'none' (default): the flags above, raw masks without them")
    e.add_argument("--out", help="write the full report (per image + summary) as JSON")
    e.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    e.add_argument("--progress", choices=("text", "json"), default="text")
    e.set_defaults(func=cmd_evaluate)

    i = sub.add_parser("import-official", help="convert an official CDMA state_dict to a napari-cdma checkpoint")
    i.add_argument("checkpoint")
    i.add_argument("--out", required=True)
    i.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    i.set_defaults(func=cmd_import_official)

    from .cli_retrain import add_parser as add_retrain_parser

    add_retrain_parser(sub, cmd_retrain, int_in=_int_in, device=_device, max_steps=MAX_STEPS, recipes=RECIPES)

    from .cli_slide import add_parsers as add_slide_parsers

    add_slide_parsers(sub, int_in=_int_in, float_in=_float_in, branch=_branch, device=_device,
                      tile_range=(MIN_TILE, MAX_TILE), max_overlap=MAX_OVERLAP, max_batch=MAX_BATCH)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .checkpoint import CheckpointError
    from .io import ImageReadError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.preset_given = "--preset" in argv
    args.recipe_given = "--recipe" in argv
    _log_levels(args.verbose)
    try:
        return args.func(args)
    except (UserError, CheckpointError, ImageReadError, FileExistsError, ValueError) as exc:
        # ValueError includes the streaming path's MemoryBudgetError (image too large for this machine)
        print(f"cdma {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, MemoryError) as exc:  # a full disk, a folder that cannot be written, ...: one line too
        print(f"cdma {args.command}: error: {_os_error_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"cdma {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # python -m src_model.cli: run the imported module's main, so that the sub-command
    # modules' ``from .cli import UserError`` is the class this main catches (not a second copy in __main__)
    from src_model.cli import main as _main

    raise SystemExit(_main())
