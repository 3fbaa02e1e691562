"""Peak memory of ``cdma predict`` on a large RGB TIFF made of real GlaS tissue.

A ``--size`` x ``--size`` RGB uint8 TIFF (default 12000 x 12000 = 432 MB) is tiled from GlaS
training images (each image, mirrored alternately so neighbours meet at matching edges) and
written uncompressed with tifffile. Then ``cdma predict IMAGE --out DIR`` runs as a subprocess of
a small wrapper process that reports ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` (the peak
resident set of the ``cdma`` process alone); wall time, exit status, the last stderr line and the
size of the files written are recorded too.

``--repo`` chooses the code that runs (``PYTHONPATH=<repo>``; default this checkout), so the code
before the streaming path can be measured alike::

    mkdir /tmp/cdma-before && git archive b5e7d80 src_model | tar -x -C /tmp/cdma-before
    python benchmarks/bench_predict_memory.py --repo /tmp/cdma-before --label before --code "b5e7d80 (git archive)"
    python benchmarks/bench_predict_memory.py

Each run replaces its label's entry in ``benchmarks/results/predict_memory.json`` and keeps the
others; ``predict_memory.md`` shows them side by side. Needs the GlaS data (``--data`` or
``$CDMA_GLAS``); the TIFF goes to a temporary folder (``--keep`` keeps it).
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
from typing import Any, Dict

from _common import RESULTS, ROOT, add_data_argument, glas_ids, load_average, machine_info, require_glas, write_results

NAME = "predict_memory"
# The wrapper: runs the command given as its arguments, prints the child's peak RSS (kB) as JSON.
WRAPPER = ("import json, resource, subprocess, sys, time\n"
           "t = time.perf_counter()\n"
           "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
           "print(json.dumps({'rc': p.returncode, 'wall_s': time.perf_counter() - t, "
           "'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
           "'stderr_tail': p.stderr.strip().splitlines()[-3:]}))\n")


def make_tiff(data: Path, size: int, path: Path) -> Dict[str, Any]:
    """A size x size RGB uint8 TIFF tiled from GlaS training images (mirrored alternately)."""
    import numpy as np
    import tifffile

    from src_model.io import read_image

    ids = glas_ids(data)
    if not ids:
        raise SystemExit(f"{data}/images: no train_*.png")
    canvas = np.empty((size, size, 3), dtype=np.uint8)
    k, y, row = 0, 0, 0
    while y < size:
        x, col, row_h = 0, 0, None
        while x < size:
            img = read_image(Path(data) / "images" / f"{ids[k % len(ids)]}.png")
            k += 1
            if row_h is None:
                row_h = img.shape[0]
            img = img[:row_h] if img.shape[0] >= row_h else np.pad(img, ((0, row_h - img.shape[0]), (0, 0), (0, 0)),
                                                                   mode="reflect")
            if col % 2:
                img = img[:, ::-1]
            if row % 2:
                img = img[::-1]
            h, w = min(row_h, size - y), min(img.shape[1], size - x)
            canvas[y:y + h, x:x + w] = img[:h, :w]
            x, col = x + w, col + 1
        y, row = y + row_h, row + 1
    tifffile.imwrite(path, canvas, photometric="rgb")
    info = {"path": str(path), "shape": list(canvas.shape), "bytes": int(canvas.nbytes),
            "file_bytes": path.stat().st_size, "glas_images_used": k}
    del canvas
    return info


def run_predict(repo: Path, image: Path, out: Path, extra) -> Dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(repo))
    cmd = [sys.executable, "-m", "src_model.cli", "predict", str(image), "--out", str(out), *extra]
    load = load_average()
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, env=env,
                          cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise SystemExit(f"wrapper failed: {proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    files = sorted(out.iterdir()) if out.is_dir() else []
    res.update({"command": " ".join(["cdma", *cmd[3:]]), "load_avg_at_start": load,
                "peak_rss_mb": round(res["maxrss_kb"] / 1024, 1),
                "outputs": {p.name: p.stat().st_size for p in files},
                "outputs_mb": round(sum(p.stat().st_size for p in files) / 2**20, 1)})
    return res


def git_rev(repo: Path) -> str:
    try:
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "src_model"], capture_output=True,
                               text=True).stdout.strip()
        return rev + (" + uncommitted changes" if dirty else "")
    except (subprocess.CalledProcessError, OSError):
        return "not a git checkout"


def markdown(results: Dict[str, Any]) -> str:
    lines = ["# `cdma predict` peak memory", "",
             "Peak resident memory of the `cdma predict` process (`getrusage(RUSAGE_CHILDREN).ru_maxrss` of a "
             "wrapper process), on an RGB uint8 TIFF tiled from real GlaS training images, written uncompressed. "
             "Peak memory does not depend on the machine's load; wall times do, and on a shared machine runs at "
             "different times are not comparable (load average at each start below).", "",
             "| label | code | image | peak RSS | peak / image | wall | outputs | exit |",
             "|---|---|---|---|---|---|---|---|"]
    for label, r in results.items():
        if not isinstance(r, dict) or "run" not in r:
            continue
        run, img = r["run"], r["image"]
        lines.append(f"| {label} | {r['code']} | {img['shape'][0]} x {img['shape'][1]} x 3 "
                     f"({img['bytes'] / 1e6:.0f} MB) | {run['peak_rss_mb'] / 1024:.2f} GiB | "
                     f"{run['maxrss_kb'] * 1024 / img['bytes']:.2f}x | {run['wall_s']:.0f} s | "
                     f"{run['outputs_mb']:.0f} MiB | {run['rc']} |")
    lines += ["", "Commands:", ""]
    for label, r in results.items():
        if isinstance(r, dict) and "run" in r:
            lines.append(f"    # {label}: PYTHONPATH={r['repo']}  ({r['machine']['cpu']}, {r['machine']['cores']} "
                         f"cores, load {r['run']['load_avg_at_start']})")
            lines.append(f"    {r['run']['command']}")
    lines += ["", "Outputs of each run (bytes):", ""]
    for label, r in results.items():
        if isinstance(r, dict) and "run" in r:
            lines.append(f"- {label}: " + ", ".join(f"`{k}` {v}" for k, v in r["run"]["outputs"].items()))
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(ap)
    ap.add_argument("--size", type=int, default=12000, help="side of the square test image, pixels")
    ap.add_argument("--repo", type=Path, default=ROOT, help="checkout whose src_model runs (PYTHONPATH)")
    ap.add_argument("--label", default="after")
    ap.add_argument("--code", help="what code --repo holds when it is not a git checkout, e.g. 'b5e7d80 (git archive)'")
    ap.add_argument("--keep", action="store_true", help="keep the TIFF and the outputs")
    ap.add_argument("extra", nargs="*", help="more cdma predict options (after --)")
    args = ap.parse_args()
    data = require_glas(args.data)
    code = args.code or git_rev(args.repo)  # the code as the run starts
    work = Path(tempfile.mkdtemp(prefix="cdma-predict-mem-"))
    try:
        t0 = time.perf_counter()
        image = make_tiff(data, args.size, work / f"glas_{args.size}.tif")
        image["make_s"] = round(time.perf_counter() - t0, 1)
        print(f"made {image['path']} ({image['bytes'] / 1e6:.0f} MB) in {image['make_s']} s", file=sys.stderr)
        run = run_predict(args.repo.resolve(), Path(image["path"]), work / "out", args.extra)
        print(json.dumps(run, indent=1), file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    json_path = RESULTS / f"{NAME}.json"
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    results[args.label] = {"repo": str(args.repo.resolve()), "code": code, "image": image, "run": run,
                           "machine": machine_info()}
    write_results(NAME, results, markdown(results))
    print(f"{args.label}: peak RSS {run['peak_rss_mb'] / 1024:.2f} GiB "
          f"({run['maxrss_kb'] * 1024 / image['bytes']:.2f}x the image), {run['wall_s']:.0f} s, exit {run['rc']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
