"""Predicting a large image in the dock: event-loop stalls, peak memory, wall time, Cancel, progress.

A real napari viewer with the CDMA dock and a ``--size`` x ``--size`` RGB image (default 6000) made
by tiling real GlaS test images (each cropped to 500 x 750 px, cycled in split.csv order), predicted
with the bundled model (the dock's defaults: no project store, the viewer's thread share):

0. opening the dock: the event-loop stalls from then until the imports it starts in threads of its own
   (what a prediction needs: torch and the engine, zarr, napari's labels modules) are done, and 1 s more
   (the Predict click comes after them; a user who clicks sooner gets the rest of them during step 1);
1. a full prediction, timed from the Predict click until the layers are handed over (the dock's
   hand-over steps included); a 10 ms QTimer measures its own lateness (the event-loop stall)
   throughout and for ``AFTER_S`` (2 s) after it, so that the first redraws of the layers handed
   over count too; the process's peak RSS is read from /proc (``VmHWM``, reset before the run
   through ``/proc/self/clear_refs``), and every tick notes whether the progress bar stood at
   100 % while the prediction was still running;
2. the same prediction again, cancelled when the progress bar passes ``--cancel-at`` (30 %): the time
   from the Cancel click to the worker thread's ``finished`` signal, and whether any layer of the
   cancelled run is left.

Each tick also reads the GUI thread's CPU time (``time.thread_time``): the GUI thread's own work between two
ticks, apart from the time it waited for a core or for the GIL (the machine is shared: other work on it
lengthens the stalls, not this).

While the timer is late by more than 30 ms, a watchdog thread samples the GUI thread's stack every
5 ms (``sys._current_frames``), and the stack of the prediction's worker thread once per stall: each
stall over 100 ms is reported with the GUI-thread calls seen most during it (the innermost call of
this project and of the libraries), or, when the GUI thread could not be sampled at all (the worker
held the GIL, or the process was not scheduled), with what the worker was doing.

Writes ``benchmarks/results/dock_large.json`` and ``.md``; the previous results (``--before``, by
default the results file being replaced) are kept as the "before" column. The 1-minute load average
is recorded at start and end: other work on the machine slows every number here.

Usage::

    python benchmarks/bench_dock_large.py [--size 6000] [--cancel-at 0.3] [--data GLAS] [--before JSON]

Re-execs itself under ``xvfb-run`` when no display is set.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from _common import (
    RESULTS,
    FullCollections,
    add_data_argument,
    ensure_display,
    glas_ids,
    load_average,
    machine_info,
    require_glas,
    wait_until,
    write_results,
)

INTERVAL_MS = 10
#: Seconds the stall timer keeps running after the layers are handed over (their first redraws).
AFTER_S = 2.0
CELL = (500, 750)  # GlaS images are at least 522 x 775


def tiled_glas(data: Path, size: int) -> np.ndarray:
    """A size x size RGB uint8 image tiled from GlaS test images (cropped to CELL, cycled). The few
    GlaS images smaller than CELL (453 x 589) leave black strips, as black frame padding does in some
    scans (1.1 Mpx of the 6000 x 6000 image)."""
    from src_model.io import read_image

    ids = glas_ids(data, prefix="test")
    out = np.zeros((size, size, 3), np.uint8)
    k = 0
    for y in range(0, size, CELL[0]):
        for x in range(0, size, CELL[1]):
            img = read_image(data / "images" / f"{ids[k % len(ids)]}.png")[:CELL[0], :CELL[1]]
            k += 1
            h, w = min(CELL[0], size - y, img.shape[0]), min(CELL[1], size - x, img.shape[1])
            out[y:y + h, x:x + w] = img[:h, :w]
    return out


def rss_mb() -> Dict[str, float]:
    """Current and peak resident memory of this process, MB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


#: Lateness after which the watchdog samples the GUI thread's stack, and its sampling period.
SAMPLE_AFTER_S, SAMPLE_EVERY_S = 0.03, 0.005


def _frames(frame: Any) -> List[str]:
    """``file:line:function`` of a stack, outermost first, paths shortened."""
    out = []
    for fs in traceback.extract_stack(frame):
        name = fs.filename
        for cut in ("site-packages/", str(Path(__file__).resolve().parents[1]) + "/"):
            if cut in name:
                name = name.split(cut, 1)[1]
        out.append(f"{name}:{fs.lineno}:{fs.name}")
    return out


def where(stack: List[str]) -> str:
    """The innermost call of this project (napari_cdma, src_model) and the innermost frame overall."""
    ours = [f for f in stack if f.startswith(("napari_cdma/", "src_model/"))]
    inner = stack[-1] if stack else "?"
    return f"{ours[-1]} > {inner}" if ours and ours[-1] != inner else inner


class Watchdog:
    """Samples the GUI thread's stack while the ticker is late (a daemon thread)."""

    def __init__(self) -> None:
        self.gui = threading.main_thread().ident
        self.beat: Optional[float] = None
        self.samples: List[Any] = []  # (beat, time, GUI stack, other threads' innermost frames or None)
        threading.Thread(target=self._run, name="stall-watchdog", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(SAMPLE_EVERY_S)
            beat = self.beat
            if beat is None or time.perf_counter() - beat < SAMPLE_AFTER_S:
                continue
            frames = sys._current_frames()
            gui = frames.pop(self.gui, None)
            first = not self.samples or self.samples[-1][0] != beat
            others = [where(_frames(f)) for f in frames.values()] if first else None
            self.samples.append((beat, time.perf_counter(), _frames(gui) if gui is not None else [], others))

    def explain(self, start: float, end: float) -> Dict[str, Any]:
        """What the GUI thread was seen doing in the stall from ``start`` (last tick) to ``end``."""
        got = [s for s in self.samples if s[0] == start and s[1] <= end + SAMPLE_EVERY_S]
        calls = Counter(where(s[2]) for s in got if s[2])
        others = next((s[3] for s in got if s[3] is not None), [])
        return {"samples": len(got), "gui": [{"n": n, "call": c} for c, n in calls.most_common(4)],
                "worker": [o for o in others if "napari_cdma/" in o or "src_model/" in o][:2]}


class Ticker:
    """A 10 ms QTimer that records its lateness and, per tick, what ``probe()`` returns; a
    :class:`Watchdog` explains the longest stalls."""

    def __init__(self, probe, watchdog: Optional[Watchdog] = None) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: List[float] = []
        self.cpu: List[float] = []  # the GUI thread's CPU time at each tick
        self.samples: List[Any] = []
        self.probe = probe
        self.watchdog = watchdog
        self.timer = QTimer()
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.ticks.append(now)
        self.cpu.append(time.thread_time())
        if self.watchdog is not None:
            self.watchdog.beat = now
        self.samples.append(self.probe())

    def start(self) -> None:
        self.ticks.clear()
        self.cpu.clear()
        self.samples.clear()
        self.timer.start()

    def stop(self) -> Dict[str, float]:
        self.timer.stop()
        if self.watchdog is not None:
            self.watchdog.beat = None
        late = np.array([max(0.0, (b - a) * 1000.0 - INTERVAL_MS) for a, b in zip(self.ticks, self.ticks[1:],
                                                                                     strict=False)])
        if late.size == 0:
            return {"n": 0}
        cpu = np.diff(np.array(self.cpu)) * 1000.0
        worst = np.argsort(-late)[:8]
        explain = self.watchdog.explain if self.watchdog is not None else lambda a, b: {}
        return {"n": int(late.size), "p50_ms": float(np.percentile(late, 50)),
                "p99_ms": float(np.percentile(late, 99)), "max_ms": float(late.max()),
                "over_100ms": int((late > 100).sum()), "over_500ms": int((late > 500).sum()),
                "gui_cpu_max_ms": float(cpu.max()), "gui_cpu_p99_ms": float(np.percentile(cpu, 99)),
                "gui_cpu_over_50ms": int((cpu > 50).sum()),
                # the longest stalls, each with the time since the start, what the probe saw just before
                # and what the GUI thread was doing
                "worst": [{"ms": float(late[i]), "gui_cpu_ms": float(cpu[i]),
                           "at_s": float(self.ticks[i] - self.ticks[0]),
                           "before": self.samples[i], "where": explain(self.ticks[i], self.ticks[i + 1])}
                          for i in worst]}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=6000, help="image side in pixels (default 6000)")
    p.add_argument("--cancel-at", type=float, default=0.3, help="progress fraction at which run 2 is cancelled")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed for the full prediction")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--before", type=Path, default=None,
                   help="earlier results (JSON) kept as the 'before' column (default: the file being replaced)")
    p.add_argument("--before-note", default="", help="what the 'before' column is (written under the table)")
    add_data_argument(p)
    args = p.parse_args(argv)
    before_path = args.before or args.out / "dock_large.json"
    before = _before(json.loads(before_path.read_text())) if before_path.exists() else None
    data = require_glas(args.data, p.prog).resolve()
    ensure_display()
    # no project store: the dock predicts with the bundled model, as on a first start
    os.environ["NAPARI_CDMA_PROJECT"] = str(Path(tempfile.mkdtemp(prefix="cdma_bench_")) / "no_store")

    import napari

    from napari_cdma._layers import names_for
    from napari_cdma._predict_stream import LIVE_SUFFIX

    results: Dict[str, Any] = {"size": args.size, "interval_ms": INTERVAL_MS, "load_avg_start": load_average(),
                               "data": str(data), "before": before, "before_note": args.before_note}
    watchdog = Watchdog()
    collections = FullCollections()
    image = tiled_glas(data, args.size)
    name = "large"
    viewer = napari.Viewer(title="napari-cdma large-image benchmark")
    try:
        viewer.add_image(image, name=name, rgb=True)
        del image  # the layer holds it
        wait_until(lambda: False, 1.0)  # let the first frames draw
        # 0. opening the dock: it imports what a prediction needs in threads of its own (warm-up), which
        # stalls the event loop too; measured until they are done (and 1 s more), before the click
        ticker = Ticker(lambda: (0, 0, False, "opening the dock"), watchdog)
        ticker.start()
        wait_until(lambda: False, 0.2)
        t_open = time.perf_counter()
        _, widget = viewer.window.add_plugin_dock_widget("napari-cdma", "CDMA")
        panel = widget.predict_panel
        stream = sys.modules["napari_cdma._predict_stream"]
        # the warm-up threads start WARM_DELAY_MS after the dock opens: wait until they have started and ended
        # (``warmed`` alone is true before they start)
        warmed = getattr(stream, "warm_finished", None) or getattr(stream, "warmed", lambda: True)
        wait_until(warmed, 300)
        freezer = getattr(panel, "freezer", None)
        if freezer is not None:  # the dock freezes the collector's objects at its next poll after the warm-up
            wait_until(lambda: freezer.frozen_at is not None, 5)
        warm_s = time.perf_counter() - t_open
        wait_until(lambda: False, 1.0)
        results["open"] = {"warm_s": warm_s, "stall": ticker.stop(),
                           "full_gc": collections.summary(t_open, time.perf_counter())}
        print("open", {k: v for k, v in results["open"]["stall"].items() if k != "worst"}, f"warm {warm_s:.1f} s",
              flush=True)
        results["rss_before_mb"] = rss_mb()["VmRSS"]

        def probe():
            bar = panel.progress
            return (bar.value(), bar.maximum(), panel.running, panel.status.text()[:40])

        # 1. full prediction
        ticker = Ticker(probe, watchdog)
        results["peak_reset"] = reset_peak()
        ticker.start()
        wait_until(lambda: False, 0.2)  # ticks before the click: the click's own GUI time is measured too
        t0 = time.perf_counter()
        assert widget.predict(name), panel.last_message
        # the dock's hand-over work left for later event-loop turns is part of the run (not the 0.3 s wait before
        # the store's save starts, which comes in the AFTER_S below)
        settled = getattr(widget, "handed_over", None) or getattr(widget, "settled", lambda: True)
        done = wait_until(lambda: not panel.running and settled(), args.timeout)
        wall = time.perf_counter() - t0
        # the redraws that follow the hand-over (the new layers' first draws) are part of the run too
        wait_until(lambda: False, AFTER_S)
        stall = ticker.stop()
        full_gc = collections.summary(t0 - 0.2, time.perf_counter())
        at_full = [s for s in ticker.samples if s[2] and s[1] > 0 and s[0] >= s[1]]
        # how long the bar stood at 100 % while the run was still going
        full_s = len(at_full) * INTERVAL_MS / 1000.0
        labels = viewer.layers[names_for(name)["prediction"]] if names_for(name)["prediction"] in viewer.layers \
            else None
        results["predict"] = {
            "completed": bool(done and labels is not None), "wall_s": wall, "stall": stall,
            "peak_rss_mb": rss_mb()["VmHWM"], "rss_after_mb": rss_mb()["VmRSS"],
            "progress_at_100_while_running_ticks": len(at_full), "progress_at_100_while_running_s_approx": full_s,
            "glands": int(len(widget.display_panel.glands)), "review_regions": len(widget.review_panel.tiles),
            "message": panel.last_message, "full_gc": full_gc,
        }
        print("predict", results["predict"], flush=True)

        # 2. cancelled at ~30 %
        stopped: Dict[str, float] = {}
        ticker = Ticker(probe, watchdog)
        ticker.start()
        wait_until(lambda: False, 0.2)
        assert widget.predict(name), panel.last_message
        worker = panel._worker
        worker.finished.connect(lambda: stopped.setdefault("t", time.perf_counter()))
        reached = wait_until(lambda: panel.progress.maximum() > 0
                             and panel.progress.value() >= args.cancel_at * panel.progress.maximum(), args.timeout)
        fraction = panel.progress.value() / max(1, panel.progress.maximum())
        t_click = time.perf_counter()
        panel.cancel_button.click()
        wait_until(lambda: "t" in stopped and not panel.running, 120)
        stall2 = ticker.stop()
        left = [ly.name for ly in viewer.layers if ly.name.endswith(LIVE_SUFFIX)]
        results["cancel"] = {"reached_fraction": fraction if reached else None,
                             "cancel_to_worker_stopped_s": stopped.get("t", float("nan")) - t_click,
                             "cancel_to_idle_s": time.perf_counter() - t_click if not panel.running else None,
                             "live_layers_left": left, "message": panel.last_message, "stall": stall2}
        print("cancel", results["cancel"], flush=True)
    finally:
        viewer.close()
    results["load_avg_end"] = load_average()
    results["machine"] = machine_info()
    write_results("dock_large", results, _markdown(results), args.out)
    return 0


def _measures(r: Dict[str, Any]) -> Dict[str, str]:
    """The table's values of one run (results as written by this script)."""
    pr, ca = r["predict"], r["cancel"]
    s = pr["stall"]
    return {
        "wall": f"{pr['wall_s']:.1f} s", "max": f"{s['max_ms']:.0f} ms",
        "p99": f"{s['p99_ms']:.1f} / {s['p50_ms']:.1f} ms", "over": f"{s['over_100ms']} / {s['over_500ms']}",
        "cpu": (f"{s['gui_cpu_max_ms']:.0f} / {s['gui_cpu_p99_ms']:.1f} ms ({s['gui_cpu_over_50ms']} ticks > 50 ms)"
                if "gui_cpu_max_ms" in s else "not measured"),
        "rss": f"{pr['peak_rss_mb']:.0f} MB (at start: {r['rss_before_mb']:.0f} MB)",
        "full": f"{pr['progress_at_100_while_running_s_approx']:.2f} s",
        "cancel": f"{ca['cancel_to_worker_stopped_s']:.2f} s (at {100 * (ca['reached_fraction'] or 0):.0f} %)",
        "left": f"{len(ca['live_layers_left'])}", "cmax": f"{ca['stall']['max_ms']:.0f} ms",
        "load": f"{r['load_avg_start'][0]} / {r['load_avg_end'][0]}",
        "gc": _gc_text(pr.get("full_gc")),
        "open": (f"{r['open']['stall']['max_ms']:.0f} ms ({r['open']['stall']['over_100ms']} ticks > 100 ms; "
                 f"imports done {r['open']['warm_s']:.1f} s after opening)") if "open" in r else "not measured",
    }


def _gc_text(g: Optional[Dict[str, Any]]) -> str:
    if not g:
        return "not measured"
    return (f"{g['n']}, longest {g['max_ms']:.0f} ms, total {g['total_ms']:.0f} ms "
            f"({g['frozen_objects']} objects frozen)")


def _before(old: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The table's values of earlier results (their own 'before' is dropped)."""
    try:
        return {"measures": _measures(old), "load_avg_start": old["load_avg_start"],
                "load_avg_end": old["load_avg_end"]}
    except (KeyError, TypeError, IndexError):
        return None


ROWS = [("wall", "wall time, Predict click to layers handed over", ""),
        ("max", "event-loop stall (10 ms timer lateness) max", "< 100 ms"),
        ("p99", "stall p99 / p50", ""), ("over", "ticks late by > 100 ms / > 500 ms", ""),
        ("cpu", "GUI-thread CPU between two ticks: max / p99", ""),
        ("rss", "peak RSS of the napari process during predict", "< 1536 MB"),
        ("full", "progress at 100 % while work remained", "0"),
        ("cancel", "Cancel click to worker stopped", "< 1 s"),
        ("left", "layers of the cancelled run left", "0"), ("cmax", "stall max during the cancelled run", ""),
        ("open", "stall max while the dock opens and warms up (before the click)", ""),
        ("gc", "full garbage collections during the run: count, longest, total", ""),
        ("load", "1-minute load average, start / end", "")]


def _explained(w: Dict[str, Any]) -> str:
    where_ = w.get("where") or {}
    out = ""
    if where_.get("gui"):
        out += "; GUI thread in " + ", ".join(f"`{c['call']}` ({c['n']})" for c in where_["gui"][:2])
    else:
        out += "; GUI thread not sampled (the GIL or the CPU elsewhere)"
    if where_.get("worker"):  # at the stall's first sample: what the worker had just been doing
        out += "; worker in " + ", ".join(f"`{c}`" for c in where_["worker"])
    return out


def _markdown(r: Dict[str, Any]) -> str:
    pr, m = r["predict"], r["machine"]
    s = pr["stall"]
    now, old = _measures(r), (r.get("before") or {}).get("measures")
    head = ["| measure | value | before | target |", "|---|---|---|---|"] if old else \
        ["| measure | value | target |", "|---|---|---|"]
    rows = [f"| {label} | {now[k]} | {old.get(k, '') + ' |' if old else ''} {target} |" for k, label, target in ROWS]
    return "\n".join([
        f"# Large image in the dock ({r['size']} x {r['size']} RGB, bundled model)", "",
        f"{m['cores']} usable cores ({m['cpu']}), torch {m['torch']}; load average (1/5/15 min) "
        f"{r['load_avg_start']} at start, {r['load_avg_end']} at end. Image tiled from GlaS test images.", "",
        *head, *rows,
        *(["", f"Before: {r['before_note']}"] if old and r.get("before_note") else []),
        "", "Longest stalls while the dock opened and imported what a prediction needs (before the click):", "",
        *[f"- {w['ms']:.0f} ms ({w.get('gui_cpu_ms', float('nan')):.0f} ms of GUI-thread CPU) at {w['at_s']:.1f} s"
          f"{_explained(w)}" for w in (r.get("open") or {}).get("stall", {}).get("worst", [])[:4]],
        "", "Longest stalls of the full run (when, the progress bar just before, and the calls the watchdog saw on "
        "the GUI thread, with the number of 5 ms samples):", "",
        *[f"- {w['ms']:.0f} ms ({w.get('gui_cpu_ms', float('nan')):.0f} ms of GUI-thread CPU) at {w['at_s']:.1f} s, "
          f"progress {w['before'][0]}/{w['before'][1]}"
          f"{'' if w['before'][2] else ' (before the click)'}{_explained(w)}" for w in s.get("worst", [])],
        "", f"Glands found: {pr['glands']}; review regions: {pr['review_regions']}. "
        f"Measured by `benchmarks/bench_dock_large.py`.",
    ])


if __name__ == "__main__":
    sys.exit(main())
