"""GUI-thread stalls when a whole slide with a predicted store is opened with the dock open (the Whole slide panel).

A ``--side`` x ``--side`` pyramidal TIFF of GlaS test images and its complete prediction store (``<slide>.cdma.zarr``,
written from gland-like discs with the Predict view's settings, as ``tests/_slides.written_store``; its glands
numbered beforehand by ``cdma export STORE --in-store``, as the dock leaves them) are made in a temporary folder. In
one napari viewer (shown, Xvfb) with the dock open on a project store, the slide is opened by the plugin's reader
from a timer inside the running event loop, as a drag and drop opens it, then closed (every layer removed) and
opened again, each phase running until the panel is idle (review regions and accepted windows read, glands checked)
plus a second. During each phase:

* a 10 ms QTimer on the GUI thread measures the event loop's lateness (max and p99 of each tick's lateness);
* a watchdog thread samples the GUI thread's stack (``sys._current_frames``) every 5 ms, and the stalls longer than
  ``--stall-ms`` are named by the frames most of their samples were in;
* garbage collections on the GUI thread are timed (``gc.callbacks``);
* the GUI thread's CPU time (``time.thread_time``) and the process's (``time.process_time``, every thread: the
  workers and zarr's I/O thread) are summed: the work done, much less sensitive to the machine's load than the
  lateness (the GUI thread's time waiting on zarr's I/O thread or the GIL is not in its CPU time).

``--load N`` starts N busy-looping Python processes (``while True: pass``, at this process's priority) for the
measured phases, and stops them after. ``--label`` names the code measured ("before", "after"): a run replaces the
entries of its label and load, and keeps the others.

    python benchmarks/bench_slide_open.py --label after --load 0
    python benchmarks/bench_slide_open.py --label after --load 4
    # older code: a copy of the repository with the older files, its folder first on PYTHONPATH
    PYTHONPATH=/tmp/old benchmarks/bench_slide_open.py --label before --results benchmarks/results

Results: ``benchmarks/results/slide_open.json`` and ``slide_open.md``.
"""
from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from _common import RESULTS, ROOT, ensure_display, load_average, machine_info, write_results

NAME = "slide_open"
PLUGIN, WIDGET = "napari-cdma", "CDMA"
OWN = ("napari_cdma", "src_model")
#: The order of the labels in slide_open.md (newest first); others after them
ORDER = ("after", "50d9bb4", "ce29108", "before e39479c")


def discs(h: int, w: int, seed: int = 0) -> Any:
    """Gland-like discs (uint8 0/1), as tests/test_slide_instances_stalls.py draws them."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = np.zeros((h, w), np.uint8)
    for _ in range(h * w // 12000):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(12, 40)
        y0, y1, x0, x1 = max(0, cy - r), min(h, cy + r + 1), max(0, cx - r), min(w, cx + r + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        out[y0:y1, x0:x1] |= ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8)
    return out


def make_case(folder: Path, side: int, chunk: int) -> Path:
    """The slide ``folder/case.tif`` and its complete, numbered store ``folder/case.cdma.zarr``."""
    sys.path.insert(0, str(ROOT / "tests"))
    from _slides import glas_mosaic, write_pyramidal_tiff, written_store

    image = glas_mosaic(ROOT / "tests" / "data" / "glas", side, side)
    slide = write_pyramidal_tiff(folder / "case.tif", image, levels=4)
    store = folder / "case.cdma.zarr"
    written_store(slide, store, image, discs(side, side), chunk)
    subprocess.run([sys.executable, "-m", "src_model.cli", "export", str(store), "--in-store"], check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return slide


class Sampler(threading.Thread):
    """Samples the GUI thread's stack every ``every`` s: (time, ((file, function, line), ...) innermost last)."""

    def __init__(self, ident: int, every: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.target, self.every = ident, every
        self.samples: List[Any] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            frame = sys._current_frames().get(self.target)
            t = time.perf_counter()
            stack = []
            while frame is not None and len(stack) < 80:
                code = frame.f_code
                stack.append((code.co_filename, code.co_name, frame.f_lineno))
                frame = frame.f_back
            self.samples.append((t, tuple(reversed(stack))))
            time.sleep(self.every)


class Probe:
    """A 10 ms timer's ticks, the stack sampler and the GUI thread's garbage collections, over one phase."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.ticks = [time.perf_counter()]
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.sampler = Sampler(threading.get_ident())
        self.gcs: List[Any] = []
        self._gc_t0: Optional[float] = None
        self._main = threading.get_ident()

    def _gc(self, phase: str, info: Dict[str, Any]) -> None:
        if threading.get_ident() != self._main:
            return
        if phase == "start":
            self._gc_t0 = time.perf_counter()
        elif self._gc_t0 is not None:
            self.gcs.append((self._gc_t0, time.perf_counter() - self._gc_t0, info.get("generation")))

    def start(self) -> None:
        self.ticks = [time.perf_counter()]
        self.timer.start()
        self.sampler.start()
        gc.callbacks.append(self._gc)

    def stop(self, stall_ms: float) -> Dict[str, Any]:
        import numpy as np

        self.timer.stop()
        self.sampler.stop_flag.set()
        self.sampler.join()
        gc.callbacks.remove(self._gc)
        ticks = np.array(self.ticks + [time.perf_counter()])
        late = np.diff(ticks) - 0.010
        stalls = []
        for i in np.argsort(late)[::-1]:
            if late[i] * 1000 < stall_ms or len(stalls) >= 6:
                break
            t0, t1 = ticks[i], ticks[i + 1]
            stalls.append({"ms": round(float(late[i]) * 1000, 1), "at_s": round(float(t0 - ticks[0]), 2),
                           "gc_ms": round(sum(d for t, d, _ in self.gcs if t0 <= t <= t1) * 1000, 1),
                           "frames": self.name_stall(t0, t1)})
        return {"max_ms": round(float(late.max()) * 1000, 1), "p99_ms": round(float(np.percentile(late, 99)) * 1000, 1),
                "seconds": round(float(ticks[-1] - ticks[0]), 1), "ticks": int(len(late)),
                "gc_max_ms": round(max((d for _, d, _ in self.gcs), default=0.0) * 1000, 1),
                "gc_gen2": sum(1 for _, _, g in self.gcs if g == 2), "stalls": stalls}

    def name_stall(self, t0: float, t1: float) -> List[str]:
        """The frames the stall's samples were in, with the share of samples (each frame counted once a sample);
        the plugin's own frames, and the innermost frame of each sample, napari's included."""
        samples = [s for t, s in self.sampler.samples if t0 <= t <= t1]
        if not samples:
            return []
        inclusive: collections.Counter = collections.Counter()
        inner: collections.Counter = collections.Counter()
        for stack in samples:
            seen = set()
            for f, fn, _ in stack:
                short = _short(f)
                if any(short.startswith(o) for o in OWN) or "napari/" in f and "napari/utils/events" not in f:
                    seen.add(f"{short}:{fn}")
            inclusive.update(seen)
            f, fn, line = stack[-1]
            inner[f"{_short(f)}:{fn}:{line}"] += 1
        n = len(samples)
        out = [f"{k} {100 * c // n}%" for k, c in inclusive.most_common(14)]
        out += [f"innermost {k} {100 * c // n}%" for k, c in inner.most_common(4)]
        return [f"{n} samples"] + out


def _short(path: str) -> str:
    """A frame's file from its package on (napari_cdma/..., napari/...), wherever it is installed."""
    for key in ("/napari_cdma/", "/src_model/"):
        if key in path:
            return key[1:] + path.rsplit(key, 1)[1]
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    return path


def run_loop(pred, timeout_s: float) -> bool:
    """Run the Qt event loop (not processEvents: timers and painting as in the viewer) until ``pred()``."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    t0 = time.perf_counter()
    check = QTimer()
    check.setInterval(20)
    check.timeout.connect(lambda: loop.quit() if pred() or time.perf_counter() - t0 > timeout_s else None)
    check.start()
    if not pred():
        loop.exec_()
    check.stop()
    return bool(pred())


def idle(panel: Any) -> bool:
    return panel._reopening is None and not panel.numbering and not panel._steps and not panel.running


def phase(viewer: Any, panel: Any, slide: Path, stall_ms: float) -> Dict[str, Any]:
    """Open ``slide`` from a timer in the running event loop and measure until the panel is idle plus 1 s."""
    from qtpy.QtCore import QTimer

    probe = Probe()
    opened: List[Any] = []
    run_loop(lambda: True, 0)
    probe.start()
    t0, cpu0, proc0 = time.perf_counter(), time.thread_time(), time.process_time()
    QTimer.singleShot(50, lambda: opened.append(viewer.open(str(slide), plugin=PLUGIN)))
    ok = run_loop(lambda: bool(opened) and idle(panel) and f"{opened[0][0].name} uncertainty" in viewer.layers
                  and panel.tile_list.count() > 0, 180)
    done_s = time.perf_counter() - t0
    end = time.perf_counter() + 1.0
    run_loop(lambda: time.perf_counter() > end, 5)
    gui_cpu, proc_cpu = time.thread_time() - cpu0, time.process_time() - proc0
    out = probe.stop(stall_ms)
    out.update(settled=ok, settled_s=round(done_s, 2), load_1=round(os.getloadavg()[0], 2),
               gui_cpu_s=round(gui_cpu, 2), cpu_s=round(proc_cpu, 2))
    return out


def measure(slide: Path, project: Path, load: int, stall_ms: float) -> Dict[str, Any]:
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    try:
        _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    except KeyError:  # a copy of the code before a0904d9 (the widget was named so then)
        _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, "CDMA segmentation")
    assert dock.open_store(project) is not None
    panel = dock.slide_panel
    freezer = getattr(dock.predict_panel, "freezer", None)  # the dock's warm-up (imports, the collector's freeze)
    run_loop(lambda: freezer is not None and freezer.frozen_at is not None, 60)
    # and the panel's import of what a slide's open imports, where the panel has it (not before commit 'warm the
    # slide reader'): the slide is opened by someone who opened the dock a few seconds before
    if hasattr(panel, "_warm_reader"):
        run_loop(lambda: panel.reader_warming is not None and not panel.reader_warming.is_alive(), 60)
    run_loop(lambda: False, 2)
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
    try:
        time.sleep(2.0 if load else 0)
        first = phase(viewer, panel, slide, stall_ms)
        viewer.layers.clear()
        run_loop(lambda: idle(panel), 30)
        end = time.perf_counter() + 2.0
        run_loop(lambda: time.perf_counter() > end, 5)
        again = phase(viewer, panel, slide, stall_ms)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
    viewer.close()
    return {"open": first, "open again": again}


def markdown(results: Dict[str, Any]) -> str:
    lines = ["# Opening a predicted slide with the dock open: GUI-thread lateness", "",
             "`python benchmarks/bench_slide_open.py --label L --load N` (a 10 ms QTimer on the GUI thread; the "
             "slide opened by the reader from inside the event loop, measured until the panel is idle plus 1 s; "
             "load: N busy `while True: pass` processes at the viewer's priority). Stalls are named by a 5 ms "
             "sampling of the GUI thread's stack. Each run waits for the dock's warm-up (and the Whole slide panel's "
             "import of the slide reader's modules, where the code has it) before the slide is opened. Labels: "
             "`before e39479c`: the Whole slide panel before commit e39479c (a copy of the repository with the older "
             "`_widget_slide.py` and `_slide_view.py`, first on `PYTHONPATH`); `ce29108`: at commit ce29108 (both "
             "2026-12-03 ~07:20); `50d9bb4`: at commit 50d9bb4 (a copy of it first on `PYTHONPATH`), and `after`: "
             "with the reader's imports warmed in a thread and the overlays' first levels read in the workers (both "
             "2026-12-03 ~10:20-10:40). Each pair within 15 minutes on the same 2-core machine, shared with other "
             "users: the load column counts them too, and it varied from 2 to 8 between runs. `02fada4` and "
             "`50d9bb4 rerun` (2026-12-03 ~14:25), then `50d9bb4 rerun 2` and `1bd8fac` (~18:05, the working tree "
             "then) are such pairs, run again for the second open: its lateness was higher on the newer code in the "
             "two earlier single pairs, lower in the last. The CPU columns (from the last pair on: the GUI thread's, "
             "and the process's, all its threads but not the numbering's process) are the work done, about the same "
             "on both codes; the lateness also counts the waits for the 2 shared cores.",
             ""]
    first = [k for lb in ORDER for k in sorted(results["runs"]) if k.startswith(f"{lb}, ")]
    for key in first + [k for k in sorted(results["runs"]) if k not in first]:
        run = results["runs"][key]
        lines += [f"## {key} ({run['side']} x {run['side']} px slide, chunks of {run['chunk']} px, "
                  f"{run['machine']['cores']} cores, {run['machine']['date']})", "",
                  "| phase | max ms | p99 ms | gc max ms | settled s | GUI-thread CPU s | process CPU s "
                  "| load (1 min) |",
                  "|---|---|---|---|---|---|---|---|"]
        for name in ("open", "open again"):
            p = run[name]
            lines.append(f"| {name} | {p['max_ms']} | {p['p99_ms']} | {p['gc_max_ms']} | {p['settled_s']} | "
                         f"{p.get('gui_cpu_s', '-')} | {p.get('cpu_s', '-')} | {p['load_1']} |")
        lines.append("")
        for name in ("open", "open again"):
            for s in run[name]["stalls"][:3]:
                lines.append(f"- {name}: {s['ms']} ms at {s['at_s']} s (gc {s['gc_ms']} ms): "
                             + "; ".join(s["frames"][:9]))
        lines.append("")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=8192)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--load", type=int, default=0, help="busy processes during the measured phases")
    parser.add_argument("--label", default="after", help="the code measured (before, after)")
    parser.add_argument("--stall-ms", type=float, default=100.0, help="stalls named by their stack samples")
    parser.add_argument("--keep", type=Path, default=None, help="make (or reuse) the slide in this folder")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="folder of slide_open.json/.md (a copy of older code can write into this repository's)")
    args = parser.parse_args(argv)
    ensure_display()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        slide = folder / "case.tif"
        if not (slide.exists() and (folder / "case.cdma.zarr").exists()):
            t0 = time.perf_counter()
            slide = make_case(folder, args.side, args.chunk)
            print(f"made the slide and its store in {time.perf_counter() - t0:.0f} s", flush=True)
        for stale in ("cdma_review.json",):  # the review regions ranked again at the first open, as on a fresh store
            (folder / "case.cdma.zarr" / stale).unlink(missing_ok=True)
        run = measure(slide, Path(tmp) / "project", args.load, args.stall_ms)
    import napari_cdma

    run.update(side=args.side, chunk=args.chunk, load=args.load, label=args.label, machine=machine_info(False),
               code=str(Path(napari_cdma.__file__).parent))  # which copy of the plugin was measured
    print(json.dumps(run, indent=1))
    if args.no_write:
        return 0
    path = args.results / f"{NAME}.json"
    results = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    results["runs"][f"{args.label}, load {args.load}"] = run
    write_results(NAME, results, markdown(results), out=args.results)
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
