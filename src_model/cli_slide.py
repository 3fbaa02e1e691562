"""The whole-slide sub-commands of ``cdma``: ``predict-slide`` and ``export``.

Registered on the ``cdma`` parser by :func:`add_parsers`; like the rest of the command line they
range-check every number while parsing (exit status 2, one line) and import the engine only when
a command runs.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

MAX_LEVEL = 64
MAX_WORKERS = 256
MIN_CHUNK, MAX_CHUNK = 256, 8192
MAX_CHUNKS = 10**9
MAX_AREA = 10**12
_ADDRESS = re.compile(r"[a-z]+://\S+|[\w.-]+:\d{1,5}")


def _chunk(text: str) -> int:
    """argparse type of --chunk: a power of two in MIN_CHUNK..MAX_CHUNK."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a power of two in {MIN_CHUNK}..{MAX_CHUNK}, got {text!r}") from None
    if not MIN_CHUNK <= value <= MAX_CHUNK or value & (value - 1):
        raise argparse.ArgumentTypeError(f"must be a power of two in {MIN_CHUNK}..{MAX_CHUNK}, got {value}")
    return value


def _address(text: str) -> str:
    if not _ADDRESS.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected a scheduler address such as tcp://host:8786, got {text!r}")
    return text


def cmd_predict_slide(args) -> int:
    from .checkpoint import load_model
    from .cli import UserError, _progress_printer
    from .progress import drain
    from .slide import open_slide
    from .slide_predict import predict_slide

    with open_slide(args.slide) as slide:  # SlideError names the file; checked before any work
        if args.level >= len(slide.levels):
            raise UserError(f"--level {args.level}: {args.slide} has levels 0..{len(slide.levels) - 1}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a store directory")
    load_model(args.model)  # a bad checkpoint is one line (CheckpointError) before the store is made
    result = drain(predict_slide(args.slide, out, model_path=args.model, level=args.level, chunk=args.chunk,
                                 tile=args.tile, overlap=args.overlap, branch=args.branch, batch_size=args.batch,
                                 min_tissue=args.min_tissue, device=args.device, workers=args.workers,
                                 scheduler=args.scheduler, max_chunks=args.max_chunks, mode=args.mode),
                   _progress_printer(args.progress))
    print(json.dumps({"event": "done", **result.__dict__}))
    return 0


def cmd_export(args) -> int:
    from .cli import UserError, _progress_printer, new_output_file, writable_folder
    from .export import GlandExtractor, write_geojson, write_instances, write_labels_ome_zarr, write_labels_tiff
    from .progress import drain
    from .slide_store import open_store

    if not (args.geojson or args.ome_zarr or args.tiff or args.in_store):
        raise UserError("nothing to export: give --geojson FILE, --ome-zarr OUT, --tiff OUT and/or --in-store")
    if args.in_store and (args.geojson or args.ome_zarr or args.tiff):
        raise UserError("--in-store numbers the glands inside the store on its own: run it without --geojson, "
                        "--ome-zarr and --tiff")
    store = open_store(args.store, mode="r+" if args.in_store else "r")  # StoreError names the path
    if args.ome_zarr and Path(args.ome_zarr).exists():
        raise UserError(f"--ome-zarr {args.ome_zarr}: exists; choose another path or remove it")
    if args.ome_zarr:
        writable_folder(Path(args.ome_zarr).parent, f"--ome-zarr {args.ome_zarr}")
    for option, path in (("--geojson", args.geojson), ("--tiff", args.tiff)):
        if path:  # before the work: never an existing file replaced without --force
            new_output_file(path, args.force, option)
    done = store.done()
    if not done.all():
        print(f"cdma export: warning: {int((~done).sum())} of {done.size} chunks are not predicted yet; "
              f"they export as background", file=sys.stderr, flush=True)
    split = {} if args.split_glands is None else {"split_h": args.split_glands}
    extractor = GlandExtractor(store, min_area=args.min_area, **split)
    report = {"event": "done", "store": str(store.path)}
    if args.in_store:
        out = drain(write_instances(store, extractor), _progress_printer(args.progress))
        report.update(glands=out["n_glands"], instances=str(store.path / "labels" / "instances"),
                      reused=out["reused"], stale=out["stale"], seconds=round(out["seconds"], 2))
        print(json.dumps(report))
        return 0
    if args.geojson:
        report["glands"] = write_geojson(extractor, args.geojson)
        report["geojson"] = str(args.geojson)
    else:
        for _ in extractor.features():
            pass
        report["glands"] = extractor.n_glands
    if args.ome_zarr:
        write_labels_ome_zarr(extractor, args.ome_zarr)
        report["ome_zarr"] = str(args.ome_zarr)
    if args.tiff:
        write_labels_tiff(extractor, args.tiff)
        report["tiff"] = str(args.tiff)
    print(json.dumps(report))
    return 0


def add_parsers(sub, *, int_in, float_in, branch, device, tile_range, max_overlap, max_batch) -> None:
    """Add ``predict-slide`` and ``export`` to the ``cdma`` sub-parsers (the range-checking argument
    types and limits are the ones of :mod:`src_model.cli`)."""
    from .slide_predict import DEFAULT_CHUNK, DEFAULT_MIN_TISSUE, MODES
    from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE

    ps = sub.add_parser(
        "predict-slide", help="predict a whole slide chunk by chunk into an OME-Zarr store (resumable)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Predict the glands and uncertainty of a whole slide (OME-Zarr, pyramidal TIFF, or a format\n"
                    "OpenSlide reads) into an OME-Zarr store, chunk by chunk:\n"
                    "  STORE/0..n              the slide's pixels at --level (RGB pyramid)\n"
                    "  STORE/labels/glands     1 = gland, 0 = background (pyramid)\n"
                    "  STORE/uncertainty       uint8 = round(255 x uncertainty) (pyramid)\n"
                    "By default strips of chunk rows are predicted in one pass each (--mode strip), finished\n"
                    "chunk rows written as they complete; --mode chunk predicts each chunk from the chunk plus a\n"
                    "halo of context. Either way the result equals one prediction of the whole level (to float\n"
                    "rounding), and memory is bounded by a band of tiles, not the slide. Chunks with less\n"
                    "tissue than --min-tissue are glass and skipped. Running again on the same --out continues\n"
                    "an interrupted run (finished chunks are kept). --workers N spreads chunks over a local\n"
                    "Dask cluster of N processes, --scheduler over an existing one.")
    ps.add_argument("slide", help="slide file or OME-Zarr directory")
    ps.add_argument("--out", required=True, help="the store (a .zarr directory; an earlier run's store is resumed)")
    ps.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    ps.add_argument("--level", type=int_in(0, MAX_LEVEL), default=0, help="slide level to predict (0 = full size)")
    group = ps.add_mutually_exclusive_group()
    group.add_argument("--workers", type=int_in(0, MAX_WORKERS), default=0,
                       help=f"local Dask worker processes, 0..{MAX_WORKERS} (0 = this process)")
    group.add_argument("--scheduler", type=_address, default=None,
                       help="address of a running Dask scheduler (its workers must see the slide and --out)")
    ps.add_argument("--chunk", type=_chunk, default=DEFAULT_CHUNK,
                    help=f"chunk side, a power of two in {MIN_CHUNK}..{MAX_CHUNK} (default {DEFAULT_CHUNK})")
    lo, hi = tile_range
    ps.add_argument("--tile", type=int_in(lo, hi), default=DEFAULT_TILE,
                    help=f"inference tile side, {lo}..{hi} (default {DEFAULT_TILE})")
    ps.add_argument("--overlap", type=float_in(0.0, max_overlap), default=DEFAULT_OVERLAP,
                    help=f"tile overlap, fraction, 0..{max_overlap} (default {DEFAULT_OVERLAP})")
    ps.add_argument("--batch", type=int_in(1, max_batch), default=8, help=f"tiles per forward pass, 1..{max_batch}")
    ps.add_argument("--min-tissue", type=float_in(0.0, 1.0), default=DEFAULT_MIN_TISSUE,
                    help=f"chunks with a smaller tissue fraction are skipped as glass (default {DEFAULT_MIN_TISSUE})")
    ps.add_argument("--branch", default="mean", type=branch, help="'mean' (default) or a branch 1, 2, 3")
    ps.add_argument("--device", type=device, default="cpu", help="cpu (default), auto, cuda or cuda:N")
    ps.add_argument("--mode", choices=MODES, default="strip",
                    help="strip (default): strips of chunk rows, one pass each; chunk: each chunk with its own halo")
    ps.add_argument("--max-chunks", type=int_in(1, MAX_CHUNKS), default=None,
                    help="compute at most this many chunks in this run (run again to continue)")
    ps.add_argument("--progress", choices=("text", "json"), default="text")
    ps.set_defaults(func=cmd_predict_slide)

    ex = sub.add_parser(
        "export", help="export a predict-slide store's glands (GeoJSON for QuPath, label images)",
        description="Export the glands of a predict-slide store: --geojson writes polygons that QuPath imports as "
                    "annotations (class 'Gland', measurements area_px, area_um2, mean_uncertainty; level-0 pixel "
                    "coordinates); --ome-zarr and --tiff write uint32 instance labels numbered as the GeoJSON "
                    "features.")
    ex.add_argument("store", help="the store written by cdma predict-slide")
    ex.add_argument("--geojson", help="GeoJSON file to write (a FeatureCollection)")
    ex.add_argument("--ome-zarr", help="OME-Zarr directory for the instance labels (must not exist)")
    ex.add_argument("--tiff", help="pyramidal TIFF file for the instance labels")
    ex.add_argument("--force", action="store_true", help="overwrite the --geojson and --tiff files if they exist")
    ex.add_argument("--in-store", action="store_true",
                    help="number the glands inside the store instead (STORE/labels/instances, uint32, with a "
                         "pyramid and a per-gland table: what the napari dock shows as '<slide> glands (numbered)'); "
                         "kept when the gland labels have not changed since")
    ex.add_argument("--progress", choices=("text", "json"), default="text",
                    help="progress of --in-store: lines on stderr, or JSON lines on stdout")
    ex.add_argument("--min-area", type=float_in(0.0, MAX_AREA), default=None,
                    help="drop glands smaller than this many level-0 pixels; 0 keeps all (default: the dock's "
                         "clean-up, 1300 pixels of the predicted level, src_model.postprocess.DEFAULT_INSTANCES, "
                         "i.e. 1300 x downsample^2 level-0 pixels)")
    ex.add_argument("--split-glands", type=float_in(0.0, 1000.0), default=None, metavar="H",
                    help="split touching glands at h-maxima of height H pixels of the distance to the background, "
                         "as the dock does (default: the bundled model's setting, "
                         "DEFAULT_INSTANCES.split_h, 24; 0: connected components)")
    ex.set_defaults(func=cmd_export)


__all__ = ["add_parsers", "cmd_export", "cmd_predict_slide"]
