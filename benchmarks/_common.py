"""The benchmark harness, shared by the scripts in ``benchmarks/``.

- where things are: :data:`ROOT` (the repository), :data:`RESULTS` (``benchmarks/results``);
- the GlaS data: :func:`add_data_argument` (``--data``, default ``$CDMA_GLAS``, else
  ``../shared/data/glas`` next to the repository) and :func:`require_glas` (a one-line error and exit
  code 2 when it is missing);
- the machine: :func:`machine_info` (CPU model, usable cores, load average, torch version and threads,
  Python, platform, date);
- results: :func:`write_results` (``<name>.json`` + ``<name>.md``);
- plugin benchmarks: :func:`fill_store` (accepted GlaS regions in a project store) and
  :func:`ensure_display` (re-exec under ``xvfb-run -a`` when there is no display).

Benchmarks are run as scripts (``python benchmarks/x.py``), so this folder is on ``sys.path`` and
``from _common import ...`` works; ``src_model`` and ``napari_cdma`` come from the installed package.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

GLAS_ENV = "CDMA_GLAS"
GLAS_DEFAULT = ROOT.parent / "shared" / "data" / "glas"
GLAS_LAYOUT = ("images", "masks", "split.csv")
GLAS_SOURCE = ("GlaS is the gland segmentation data of the GlaS@MICCAI 2015 challenge (Warwick, "
               "https://warwick.ac.uk/fac/cross_fac/tia/data/glascontest/), expected as images/<id>.png, "
               "masks/<id>.png and split.csv (id,split,subset)")
REGION = 256  # side of an accepted region in the plugin benchmarks


# ---------------------------------------------------------------- GlaS data

def default_glas() -> Path:
    """``$CDMA_GLAS`` if set, else ``../shared/data/glas`` relative to the repository root."""
    env = os.environ.get(GLAS_ENV, "").strip()
    return Path(env) if env else GLAS_DEFAULT


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--data`` (the GlaS folder) to a benchmark's argument parser."""
    parser.add_argument("--data", type=Path, default=default_glas(),
                        help=f"GlaS folder with {', '.join(GLAS_LAYOUT)} (default: ${GLAS_ENV}, else "
                             f"../shared/data/glas next to the repository; now {default_glas()})")


def glas_problem(data: Path) -> Optional[str]:
    """What is wrong with ``data`` as a GlaS folder, or None."""
    if not Path(data).is_dir():
        return f"no GlaS data at {data} (no such folder)"
    missing = [name for name in GLAS_LAYOUT if not (Path(data) / name).exists()]
    if missing:
        return f"no GlaS data at {data} (missing {', '.join(missing)})"
    return None


def require_glas(data: Path, prog: Optional[str] = None) -> Path:
    """``data`` if it looks like the GlaS folder; else one line on stderr and exit code 2 (no traceback)."""
    problem = glas_problem(data)
    if problem is not None:
        prog = prog or Path(sys.argv[0]).name
        print(f"{prog}: error: {problem}. {GLAS_SOURCE}; point at it with --data PATH or the {GLAS_ENV} "
              "environment variable.", file=sys.stderr)
        raise SystemExit(2)
    return Path(data)


def glas_ids(data: Path, prefix: str = "train_") -> List[str]:
    """Image ids ``<prefix>*`` in ``data/images``, sorted as strings (train_1, train_10, ...)."""
    return sorted(p.stem for p in (Path(data) / "images").glob(f"{prefix}*.png"))


# ---------------------------------------------------------------- machine

def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def cpu_cores() -> int:
    """Cores this process may run on, as the engine counts them (:func:`src_model.runtime.cpu_cores`)."""
    from src_model.runtime import cpu_cores as engine_cpu_cores

    return int(engine_cpu_cores())


def load_average() -> List[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def machine_info(with_torch: bool = True) -> Dict[str, Any]:
    """Facts about this machine for a results file (imports torch unless ``with_torch`` is False).

    Keys: ``cpu``, ``cores`` (usable), ``cpu_count`` (all), ``load_avg_1_5_15``, ``python``, ``platform``,
    ``date``, and with torch ``torch`` (version) and ``torch_threads``.
    """
    info: Dict[str, Any] = {
        "cpu": cpu_model(), "cores": cpu_cores(), "cpu_count": os.cpu_count(), "load_avg_1_5_15": load_average(),
        "python": platform.python_version(), "platform": platform.platform(),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
    }
    if with_torch:
        import torch

        info["torch"] = str(torch.__version__)
        info["torch_threads"] = torch.get_num_threads()
    return info


# ---------------------------------------------------------------- results

def write_results(name: str, data: Any, markdown: str, out: Path = RESULTS, indent: int = 2) -> Tuple[Path, Path]:
    """Write ``out/<name>.json`` and ``out/<name>.md``; returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=indent), encoding="utf-8")
    md_path.write_text(markdown if markdown.endswith("\n") else markdown + "\n", encoding="utf-8")
    return json_path, md_path


# ---------------------------------------------------------------- plugin benchmarks

def ensure_display() -> None:
    """On Linux without a display, re-exec this script (``sys.argv``) under ``xvfb-run -a``, once."""
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and shutil.which("xvfb-run") \
            and not os.environ.get("CDMA_BENCH_NO_XVFB"):
        os.environ["CDMA_BENCH_NO_XVFB"] = "1"
        sys.stdout.flush()
        sys.stderr.flush()
        os.execvp("xvfb-run", ["xvfb-run", "-a", sys.executable, *sys.argv])


def wait_until(pred, timeout_s: float, pause_s: float = 0.002) -> bool:
    """Process Qt events until ``pred()`` or the timeout; False when it timed out."""
    from qtpy.QtWidgets import QApplication

    t0 = time.perf_counter()
    while not pred():
        if time.perf_counter() - t0 > timeout_s:
            return False
        QApplication.processEvents()
        time.sleep(pause_s)
    return True


def corner_boxes(mask: Any, n: int, rule: str = "most-glands", size: int = REGION) -> List[Tuple[int, int, int, int]]:
    """``n`` boxes ``(y0, x0, y1, x1)`` of ``size`` px at the image corners.

    ``rule="top-left"``: the top-left box (``n`` must be 1); ``"most-glands"``: the ``n`` corners (of 4)
    whose box holds the most gland pixels of ``mask``, in box order.
    """
    import numpy as np

    if rule == "top-left":
        if n != 1:
            raise ValueError("rule 'top-left' gives one box per image")
        return [(0, 0, size, size)]
    if rule != "most-glands":
        raise ValueError(f"unknown box rule {rule!r}")
    h, w = mask.shape
    corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size)]
    boxes = [(y, x, y + size, x + size) for y, x in corners]
    boxes.sort(key=lambda b: -int(np.count_nonzero(mask[b[0]:b[2], b[1]:b[3]])))
    return sorted(boxes[:n])


def fill_store(store: Any, data: Path, image_ids: Sequence[str], n_regions: int, *, per_image: int = 1,
               boxes: str = "most-glands", model: Any = None, unlabelled: bool = False,
               user: Optional[str] = None) -> Dict[str, Any]:
    """Accept ``n_regions`` corrected GlaS regions into a project store, as a pathologist would.

    Regions come from ``image_ids`` in order, ``per_image`` per image, placed by :func:`corner_boxes`
    (``boxes``). The correction is the expert mask (``> 0``); the prediction that was corrected is
    ``model``'s labels (tiled ``predict`` on the CPU), or empty without a model. Every region is stamped
    with the store's current model version, so add the starting model first. With ``unlabelled``
    every image of ``image_ids`` is also kept as unlabelled tissue.

    Returns ``{"regions": [{"region", "image", "bbox", "holdout"}, ...], "unlabelled_images": [...]}``.
    """
    import numpy as np

    from src_model.io import read_image, read_mask

    if -(-n_regions // per_image) > len(image_ids):
        raise ValueError(f"{n_regions} regions at {per_image} per image need {-(-n_regions // per_image)} "
                         f"images, got {len(image_ids)}")
    version = store.current_model_version
    accepted: List[Dict[str, Any]] = []
    kept: List[str] = []
    extra = {} if user is None else {"user": user}
    for image_id in image_ids:
        if len(accepted) >= n_regions and not unlabelled:
            break
        path = Path(data) / "images" / f"{image_id}.png"
        image = read_image(path)
        if len(accepted) < n_regions:
            mask = read_mask(Path(data) / "masks" / f"{image_id}.png")
            if model is not None:
                from src_model.inference import predict

                labels = predict(model, image, device="cpu").labels
            for box in corner_boxes(mask, min(per_image, n_regions - len(accepted)), boxes):
                y0, x0, y1, x1 = box
                corrected = (mask[y0:y1, x0:x1] > 0).astype(np.uint8)
                predicted = (labels[y0:y1, x0:x1] > 0).astype(np.uint8) if model is not None \
                    else np.zeros_like(corrected)
                rec = store.accept_region(image, box, corrected, predicted, model_version=version,
                                          source_path=str(path), **extra)
                accepted.append({"region": rec.region_id, "image": image_id, "bbox": list(box),
                                 "holdout": rec.holdout})
        if unlabelled:
            store.add_unlabelled_image(image, source_path=str(path))  # no-op for images already kept
            kept.append(image_id)
    return {"regions": accepted, "unlabelled_images": kept}


class FullCollections:
    """Python's full (generation 2) garbage collections while it records, each ``(start, ms, collected)``
    (``start``: ``time.perf_counter``), with a summary over a time window: what the dock's collector freeze
    (``napari_cdma/_gc.py``) is meant to shorten."""

    def __init__(self) -> None:
        import gc

        self.events: List[Tuple[float, float, int]] = []
        self._start: Optional[float] = None
        gc.callbacks.append(self._seen)

    def _seen(self, phase: str, info: Dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._start = time.perf_counter()
        elif self._start is not None:
            self.events.append((self._start, (time.perf_counter() - self._start) * 1000.0, int(info["collected"])))
            self._start = None

    def summary(self, start: float, end: float) -> Dict[str, Any]:
        """Count, longest and total milliseconds of the full collections that began in [start, end]."""
        import gc

        ms = [e[1] for e in self.events if start <= e[0] <= end]
        return {"n": len(ms), "max_ms": max(ms, default=0.0), "total_ms": float(sum(ms)),
                "frozen_objects": gc.get_freeze_count()}
