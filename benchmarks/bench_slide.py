"""Whole slides: wall time, throughput and peak memory of ``cdma predict-slide``, against ``predict()`` and MONAI.

For each size S, an S x S pyramidal tiled TIFF (3 levels, zlib) is made in a temporary folder from
real GlaS training images (the mosaic of ``bench_predict_memory.make_tiff``). Then, each in a fresh
process with one torch thread per process (``OMP_NUM_THREADS=1``), interleaved (round by round, the
variants in turn, ``--repeats`` rounds) so that the shared machine's load falls on all alike:

* ``cdma predict-slide SLIDE --out STORE`` in one process (strip mode, the default), for ``--sizes``;
* ``cdma predict-slide ... --mode chunk`` (each chunk with its own halo) for ``--chunk-mode-sizes``;
* ``cdma predict-slide ... --workers 2`` (a local Dask cluster) for the sizes in ``--worker-sizes``,
  whose gland labels are compared with the one-process store (they must be identical);
* the in-memory path, :func:`src_model.inference.predict` on the whole level-0 image (read into
  memory first), for the sizes in ``--memory-sizes``, as the throughput reference;
* MONAI's ``sliding_window_inference`` on the whole level-0 image, same model (the mean of the
  three branches' softmax, as ``predict``), roi = our tile, overlap 0.2, Gaussian blending,
  ``sw_batch_size`` = our batch (8), for ``--monai-sizes``; its time over the strip run's time is
  reported as a ratio;
* ``cdma export STORE --geojson`` on the smallest size's store;
* ``cdma export STORE --in-store`` on the smallest size's store (the numbered glands the napari dock shows,
  ``STORE/labels/instances``): computed, then again (reused: the gland labels did not change). ``--number-store
  STORE`` measures only this, on a copy of an existing store (e.g. one kept with ``--keep``).

Memory: a wrapper process samples the resident memory of the command's whole process tree every
0.2 s (psutil; the Dask scheduler and workers included) and reports its peak sum and the peak of
the largest single process, and ``getrusage(RUSAGE_CHILDREN)`` (exact peak of the largest process
that ended). Throughput: level-0 megapixels of the slide per second of wall time (start-up, model
loading and, with workers, the cluster's start included).

    python benchmarks/bench_slide.py                    # --data: $CDMA_GLAS or ../shared/data/glas
    python benchmarks/bench_slide.py --sizes 16384 --chunk-mode-sizes --memory-sizes --monai-sizes  # memory

Results: ``benchmarks/results/slide.json`` and ``slide.md``; a run replaces the entries of the same
kind (run, chunk, size) and keeps the others, marked as earlier runs. On a shared machine wall times depend on the load
(recorded with each run); peak memory and CPU seconds hardly do.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from _common import RESULTS, add_data_argument, load_average, machine_info, require_glas, write_results

NAME = "slide"
LEVELS = 3
# The wrapper: runs the command given as its arguments and samples its process tree's memory.
WRAPPER = """import json, resource, subprocess, sys, time
import psutil
t = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
root = psutil.Process(p.pid)
peak_sum = peak_one = 0
while p.poll() is None:
    try:
        procs = [root] + root.children(recursive=True)
        rss = []
        for q in procs:
            try:
                rss.append(q.memory_info().rss)
            except psutil.Error:
                pass
        peak_sum, peak_one = max(peak_sum, sum(rss)), max(peak_one, max(rss, default=0))
    except psutil.Error:
        pass
    time.sleep(0.2)
out, err = p.communicate()
ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # every reaped descendant: the workers too
print(json.dumps({"rc": p.returncode, "wall_s": time.perf_counter() - t, "peak_tree_mb": peak_sum / 2**20,
                  "cpu_s": ru.ru_utime + ru.ru_stime,
                  "peak_process_mb": peak_one / 2**20,
                  "maxrss_children_mb": ru.ru_maxrss / 1024,
                  "stdout_tail": out.strip().splitlines()[-1:], "stderr_tail": err.strip().splitlines()[-2:]}))
"""
IN_MEMORY = """import json, sys, time
import tifffile
from src_model.checkpoint import load_model
from src_model.inference import predict
image = tifffile.imread(sys.argv[1])
model = load_model(None)
t = time.perf_counter()
p = predict(model, image)
print(json.dumps({"predict_s": time.perf_counter() - t, "foreground": float((p.labels > 0).mean())}))
"""
MONAI = """import json, sys, time
import tifffile, torch
from monai.inferers import sliding_window_inference
from src_model.checkpoint import load_model
from src_model.inference import prepare_model
from src_model.io import to_model_input
torch.set_num_threads(1)
image = tifffile.imread(sys.argv[1])
runner = prepare_model(load_model(None), "mean", "cpu")
def mean_softmax(x):  # (B, 3, T, T) -> (B, C, T, T): the mean of the branches' softmax, as predict()
    return torch.softmax(runner(x), dim=2).mean(1)
t = time.perf_counter()
with torch.inference_mode():
    prob = sliding_window_inference(to_model_input(image), roi_size=(320, 320), sw_batch_size=8,
                                    predictor=mean_softmax, overlap=0.2, mode="gaussian")
    labels = prob[0].argmax(0)
print(json.dumps({"predict_s": time.perf_counter() - t, "foreground": float((labels > 0).float().mean())}))
"""


def make_slide(data: Path, size: int, folder: Path) -> Dict[str, Any]:
    """A size x size pyramidal tiled TIFF of the GlaS mosaic (levels: every 2^k-th pixel)."""
    import numpy as np
    import tifffile
    from bench_predict_memory import make_tiff

    flat = folder / f"flat_{size}.tif"
    make_tiff(data, size, flat)
    image = tifffile.imread(flat)
    flat.unlink()
    path = folder / f"glas_{size}.tif"
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for k in range(LEVELS):
            level = np.ascontiguousarray(image[::2 ** k, ::2 ** k])
            extra = {"subifds": LEVELS - 1} if k == 0 else {"subfiletype": 1}
            tw.write(level, tile=(512, 512), photometric="rgb", compression="zlib", **extra)
    return {"path": str(path), "size": size, "megapixels": size * size / 1e6, "rgb_mb": 3 * size * size / 1e6,
            "file_mb": path.stat().st_size / 1e6}


def measure(cmd: List[str]) -> Dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    load = load_average()
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"wrapper failed: {proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["load_avg_at_start"] = load
    if res["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {res['stderr_tail']}")
    return res


def cdma(*args: Any) -> List[str]:
    return [sys.executable, "-m", "src_model.cli", *map(str, args)]


def same_glands(a: Path, b: Path) -> bool:
    import numpy as np

    from src_model.slide_store import open_store

    sa, sb = open_store(a), open_store(b)
    return all(np.array_equal(x[:], y[:]) for x, y in zip(sa.glands, sb.glands, strict=True)) and \
        np.array_equal(sa.uncertainty[0][:], sb.uncertainty[0][:])


def glands_agreement(a: Path, b: Path) -> str:
    """How two stores' level-0 gland labels and uncertainty agree, in words."""
    import numpy as np

    from src_model.slide_store import open_store

    sa, sb = open_store(a), open_store(b)
    ga, gb = sa.glands[0][:], sb.glands[0][:]
    du = np.abs(sa.uncertainty[0][:].astype(np.int16) - sb.uncertainty[0][:])
    return (f"{int((ga != gb).sum())} of {ga.size} gland labels differ, uncertainty differs by at most "
            f"{int(du.max())}/255")


def store_size(store: Path) -> str:
    """``"H x W"`` of a store (its notes name it so)."""
    from src_model.slide_store import open_store

    info = open_store(store).info
    return f"{info.height} x {info.width}"


def number_notes(store: Path, work: Path) -> List[str]:
    """Time and peak memory of numbering a store's glands into the store (``cdma export STORE --in-store``) on a
    copy of ``store`` in ``work``: computed, then reused."""
    size = store_size(store)
    copy = work / f"numbered_{store.name}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(store, copy)
    shutil.rmtree(copy / "labels" / "instances", ignore_errors=True)  # numbered from scratch
    notes = []
    for what in ("computed", "reused"):
        load = load_average()
        res = measure(cdma("export", copy, "--in-store"))
        if res["rc"] != 0:
            raise SystemExit(f"cdma export --in-store failed: {res['stderr_tail']}")
        out = json.loads(res["stdout_tail"][0])
        assert out["reused"] == (what == "reused"), out
        notes.append(f"numbered glands (cdma export --in-store, STORE/labels/instances) of the {size} "
                     f"store ({what}): {out['glands']} glands, {out['seconds']:.1f} s inside, "
                     f"{res['wall_s']:.1f} s for the process, CPU {res['cpu_s']:.1f} s, peak "
                     f"{res['peak_process_mb']:.0f} MiB (load {load[0]:.1f}).")
    shutil.rmtree(copy, ignore_errors=True)
    return notes


def border_pairs(path: Path) -> Dict[str, Any]:
    """In a store's numbered glands (level 0): the pairs of different labels touching across chunk sides, across
    control lines half-way between them, and those of the first where one label's box starts or stops on the side
    (a gland cut on the side); and the labels that cross a chunk side whole."""
    from scipy import ndimage as ndi

    from src_model.export import instance_levels
    from src_model.slide_store import open_store

    store = open_store(path)
    lab = instance_levels(store)[0][:]
    c = store.info.chunk

    def pairs(first: int) -> set:
        out = set()
        for axis in (0, 1):
            for y in range(first, lab.shape[axis], c):
                a, b = (lab[y - 1], lab[y]) if axis == 0 else (lab[:, y - 1], lab[:, y])
                m = (a > 0) & (b > 0) & (a != b)
                out |= {(min(p, q), max(p, q), axis, y) for p, q in zip(a[m].tolist(), b[m].tolist(), strict=True)}
        return out

    objs = ndi.find_objects(lab)
    sides = pairs(c)
    on_side = [(p, q, axis, y) for p, q, axis, y in sides
               if any(objs[r - 1][axis].start == y or objs[r - 1][axis].stop == y for r in (p, q))]
    whole = set()
    for axis in (0, 1):
        for y in range(c, lab.shape[axis], c):
            a, b = (lab[y - 1], lab[y]) if axis == 0 else (lab[:, y - 1], lab[:, y])
            whole |= set(a[(a > 0) & (a == b)].tolist())
    return {"store": str(path), "shape": list(lab.shape), "chunk": c, "glands": int(lab.max()),
            "pairs_across_chunk_sides": len(sides), "pairs_across_control_lines": len(pairs(c // 2)),
            "cut_on_a_side": len(on_side), "glands_crossing_a_side_whole": len(whole),
            "load_avg": list(load_average())}


def markdown(r: Dict[str, Any]) -> str:
    lines = ["# Whole slides: `cdma predict-slide` memory and throughput", "",
             "GlaS mosaics (real training-image tissue) as pyramidal tiled TIFFs; bundled lite model, chunk "
             f"{r['chunk']}, default tiles (320 px, overlap 0.2), one torch thread per process. Peak memory is "
             "the sampled resident memory of the whole process tree (Dask scheduler and workers included) and of "
             "its largest process; throughput counts level-0 pixels per second of wall time (start-up included).",
             "Prediction time: inside `predict_slide` (model loading, and the Dask cluster's start-up with "
             "workers, included) or around `predict()` (after the image was read); Mpx/s = level-0 megapixels / "
             "prediction time.",
             "CPU: user + system seconds of the whole process tree (start-up included; less sensitive to the "
             "machine's load than wall time).",
             "Modes of `cdma predict-slide`: strip (the default: strips of 4 chunk rows, one rolling-band pass each) "
             "and chunk (each chunk from its own window with a halo). MONAI: `sliding_window_inference` on the whole "
             "image with the same model (mean of the branches' softmax), roi 320, overlap 0.2, Gaussian blending, "
             "sw_batch_size 8.",
             "", "| run | chunk | slide | wall | prediction | Mpx/s | CPU | peak RSS, tree | "
             "peak RSS, largest process | load at start |", "|---|---|---|---|---|---|---|---|---|---|"]
    for run in r["runs"]:
        label = run["label"] + (" (earlier run)" if run.get("earlier") else "") + \
            (f" ({run['note']})" if run.get("note") else "")
        lines.append(f"| {label} | {run.get('chunk') or '-'} | {run['size']} x {run['size']} "
                     f"({run['megapixels']:.0f} Mpx, RGB {run['rgb_mb']:.0f} MB) | {run['wall_s']:.0f} s | "
                     f"{run['predict_s']:.0f} s | {run['mpx_per_s']:.3f} | "
                     f"{(format(run['cpu_s'], '.0f') + ' s') if 'cpu_s' in run else '-'} | "
                     f"{run['peak_tree_mb'] / 1024:.2f} GiB | {run['peak_process_mb'] / 1024:.2f} GiB | "
                     f"{run['load_avg_at_start'][0]:.1f} |")
    lines += [""]
    for note in r["notes"]:
        lines.append(f"- {note}")
    lines += ["", "Commands (slides in a temporary folder):", ""]
    lines += [f"    {run['command']}" for run in r["runs"]]
    m = r["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores, torch {m.get('torch')}, {m['date']}; "
              "other jobs shared the CPU (load averages above), so wall times are upper bounds."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(ap)
    ap.add_argument("--sizes", type=int, nargs="*", default=[8192], help="slide sides, pixels (strip mode)")
    ap.add_argument("--chunk-mode-sizes", type=int, nargs="*", default=[8192], help="sizes also run with --mode chunk")
    ap.add_argument("--worker-sizes", type=int, nargs="*", default=[], help="sizes also run with --workers 2")
    ap.add_argument("--memory-sizes", type=int, nargs="*", default=[8192], help="sizes also run in memory")
    ap.add_argument("--monai-sizes", type=int, nargs="*", default=[8192],
                    help="sizes also run with MONAI's sliding_window_inference")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved rounds of all variants")
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--extra-chunk", type=int, default=2048, help="a second chunk size, for --extra-chunk-sizes")
    ap.add_argument("--extra-chunk-sizes", type=int, nargs="*", default=[], help="sizes also run with --extra-chunk")
    ap.add_argument("--keep", action="store_true", help="keep the slides and stores")
    ap.add_argument("--number-store", type=Path, default=None,
                    help="only measure numbering the glands of this existing store (on a copy) and record it")
    ap.add_argument("--border-pairs", type=Path, nargs="*", default=None,
                    help="only count, in these stores' numbered glands, the pairs of labels touching across chunk "
                         "sides and across control lines half-way between them (JSON lines)")
    args = ap.parse_args()
    if args.border_pairs is not None:
        for store in args.border_pairs:
            print(json.dumps(border_pairs(store)), flush=True)
        return 0
    if args.number_store is not None:
        return number_only(args.number_store)
    data = require_glas(args.data)
    work = Path(tempfile.mkdtemp(prefix="cdma-bench-slide-"))
    runs: List[Dict[str, Any]] = []
    notes: List[str] = []
    try:
        for size in sorted(set(args.sizes) | set(args.worker_sizes) | set(args.memory_sizes)
                           | set(args.extra_chunk_sizes) | set(args.chunk_mode_sizes) | set(args.monai_sizes)):
            slide = make_slide(data, size, work)
            print(f"made {slide['path']} ({slide['file_mb']:.0f} MB)", file=sys.stderr, flush=True)
            plans = []
            path, c = slide["path"], args.chunk
            if size in args.sizes or size in args.worker_sizes or size in args.monai_sizes:
                plans.append(("1 process, strip mode", c, "1", ["--out", work / f"s{size}_1.zarr", "--chunk", c]))
            if size in args.chunk_mode_sizes:
                plans.append(("1 process, chunk mode", c, "k", ["--out", work / f"s{size}_k.zarr", "--chunk", c,
                                                                "--mode", "chunk"]))
            if size in args.worker_sizes:
                plans.append(("2 Dask workers, strip mode", c, "2", ["--out", work / f"s{size}_2.zarr", "--chunk", c,
                                                                     "--workers", 2]))
            if size in args.extra_chunk_sizes:
                plans.append(("1 process, strip mode", args.extra_chunk, "c",
                              ["--out", work / f"s{size}_c.zarr", "--chunk", args.extra_chunk]))
            if size in args.memory_sizes:
                plans.append(("in memory (predict)", None, "m", None))
            if size in args.monai_sizes:
                plans.append(("MONAI sliding_window_inference", None, "monai", None))
            for rnd in range(args.repeats):
                for label, chunk, tag, opts in plans:
                    if opts is not None:
                        shutil.rmtree(work / f"s{size}_{tag}.zarr", ignore_errors=True)  # a fresh store each round
                        cmd = cdma("predict-slide", path, *opts)
                        shown = " ".join(["cdma", *map(str, cmd[3:])])
                    elif tag == "m":
                        cmd = [sys.executable, "-c", IN_MEMORY, path]
                        shown = f"python -c <predict(load_model(), tifffile.imread(SLIDE))> {path}"
                    else:
                        cmd = [sys.executable, "-c", MONAI, path]
                        shown = (f"python -c <sliding_window_inference(tifffile.imread(SLIDE), roi 320, overlap 0.2, "
                                 f"gaussian, sw_batch_size 8, mean branch softmax)> {path}")
                    res = measure(cmd)
                    done = json.loads(res["stdout_tail"][0])
                    res.update(label=label, chunk=chunk, round=rnd, command=shown,
                               predict_s=done.get("seconds", done.get("predict_s")), **slide)
                    res["mpx_per_s"] = slide["megapixels"] / res["predict_s"]
                    runs.append(res)
                    print(json.dumps(res), file=sys.stderr, flush=True)
            mine = [r for r in runs if r["size"] == size]
            best, cpu = {}, {}
            for r in mine:
                best.setdefault(r["label"], []).append(r["predict_s"])
                cpu.setdefault(r["label"], []).append(r["cpu_s"])
            strip = min(best.get("1 process, strip mode", [0])) or None
            if strip and "in memory (predict)" in best:
                notes.append(f"{size} x {size}: strip mode takes {strip / min(best['in memory (predict)']):.2f} x the "
                             f"prediction time of the in-memory predict() (best of {args.repeats} interleaved rounds) "
                             f"and {min(cpu['1 process, strip mode']) / min(cpu['in memory (predict)']):.2f} x its CPU "
                             "seconds (whole processes: start-up, slide reading and store writing included).")
            if strip and "1 process, chunk mode" in best:
                notes.append(f"{size} x {size}: chunk mode takes {min(best['1 process, chunk mode']) / strip:.2f} x "
                             f"the time of strip mode.")
            if strip and "MONAI sliding_window_inference" in best:
                notes.append(f"{size} x {size}: MONAI sliding_window_inference / streamed strip mode, same model and "
                             f"run: {min(best['MONAI sliding_window_inference']) / strip:.2f} in prediction time, "
                             f"{min(cpu['MONAI sliding_window_inference']) / min(cpu['1 process, strip mode']):.2f} "
                             "in CPU seconds (> 1: ours is faster; MONAI holds the whole image and its output in "
                             "memory).")
            if size in args.chunk_mode_sizes and size in args.sizes:
                a, b = work / f"s{size}_1.zarr", work / f"s{size}_k.zarr"
                notes.append(f"{size} x {size}: strip and chunk mode stores: {glands_agreement(a, b)}.")
            if size in args.worker_sizes:
                same = same_glands(work / f"s{size}_1.zarr", work / f"s{size}_2.zarr")
                notes.append(f"{size} x {size}: 1 process and 2 Dask workers give "
                             f"{'identical' if same else 'DIFFERENT'} gland labels (every pyramid level) and "
                             f"uncertainty.")
            if args.sizes and size == min(args.sizes):
                t = time.perf_counter()
                res = measure(cdma("export", work / f"s{size}_1.zarr", "--geojson", work / f"s{size}.geojson"))
                glands = json.loads(res["stdout_tail"][0])["glands"]
                notes.append(f"cdma export --geojson on the {size} x {size} store: {glands} glands in "
                             f"{res['wall_s']:.0f} s ({(time.perf_counter() - t):.0f} s with the wrapper), peak "
                             f"{res['peak_process_mb']:.0f} MiB.")
                notes += number_notes(work / f"s{size}_1.zarr", work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    old = json.loads((RESULTS / f"{NAME}.json").read_text()) if (RESULTS / f"{NAME}.json").exists() else {}
    key = lambda run: (run["label"], run.get("chunk"), run["size"])  # noqa: E731  (a run replaces its own kind)
    mine = {key(run) for run in runs}
    # rows of the benchmark before strip mode (no "round") are marked as earlier runs
    kept = [dict(run, earlier=True) if "round" not in run else run for run in old.get("runs", [])
            if key(run) not in mine]
    sizes = {run["size"] for run in runs}
    notes_kept = [n if n.startswith("earlier run: ") else f"earlier run: {n}" for n in old.get("notes", [])
                  if not any(n.split("earlier run: ")[-1].startswith(f"{s} x {s}") or f"{s} x {s} store" in n
                             for s in sizes)]
    results = {"chunk": args.chunk, "runs": sorted(kept + runs, key=lambda r: (r["size"], r.get("earlier", False),
                                                                              r["label"])),
               "notes": notes_kept + notes, "machine": machine_info()}
    write_results(NAME, results, markdown(results))
    print(markdown(results))
    return 0


def number_only(store: Path) -> int:
    """``--number-store``: the numbering notes of ``store`` replace the earlier ones of its size."""
    work = Path(tempfile.mkdtemp(prefix="cdma-bench-number-"))
    try:
        notes = number_notes(store, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    old = json.loads((RESULTS / f"{NAME}.json").read_text())
    size = store_size(store)
    kept = [n for n in old.get("notes", []) if not (n.startswith("numbered glands") and f"of the {size} store" in n)]
    results = {**old, "notes": kept + notes}
    write_results(NAME, results, markdown(results))
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
