"""Start-up cost: the ``cdma`` CLI, importing the plugin, and opening the dock in napari.

Every measurement is a fresh Python process (``--repeats`` times after ``--warmup`` discarded runs;
median and max reported), run in an empty temporary folder with ``PYTHONPATH=<repo>`` so that the
code of ``--repo`` is what gets imported (the same for this repository, so "before" and "after" are
measured alike); each process reports at exit which tree it imported and whether ``torch`` got
imported.

- ``cli_help``: ``python -c "import sys; sys.argv=['cdma','--help']; from src_model.cli import main; main()"``
  (what the ``cdma --help`` console script runs, in a form that works for any checkout), wall time;
- ``import_plugin``: ``python -c "import napari_cdma"``, wall time;
- ``dock``: in a real napari viewer, the time from ``viewer.window.add_plugin_dock_widget("napari-cdma",
  "CDMA")`` to the dock's first paint (its being shown), with the viewer already up;
  whether torch was imported before the call, right after the dock is shown, and 1 s later;
- for scale: ``python -c pass`` and ``python -c "import torch"``.

Wall times on a shared machine grow with its load: the load average is recorded per measurement.

Usage::

    python benchmarks/bench_startup.py                    # this checkout, label "after"
    git -C . worktree add /tmp/cdma-before 4c11fe9
    python benchmarks/bench_startup.py --repo /tmp/cdma-before --label before
    git -C . worktree remove /tmp/cdma-before

Each run replaces its label's entry in ``benchmarks/results/startup.json`` and keeps the others;
``startup.md`` shows all of them side by side. The dock needs a display: without one the script
re-execs itself under ``xvfb-run -a``. No GlaS data is needed.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from _common import RESULTS, ROOT, ensure_display, load_average, machine_info, write_results

# Appended to every probe: at exit, write what got imported to $CDMA_STARTUP_REPORT (a Python literal).
REPORTER = """
import atexit as _a, os as _o, sys as _s
def _cdma_report(extra={}):
    m = _s.modules
    info = {"torch": "torch" in m, "napari": "napari" in m, "modules": len(m),
            "qt": any(k in m for k in ("PyQt5", "PyQt6", "PySide2", "PySide6")),
            "src_model": getattr(m.get("src_model"), "__file__", None),
            "napari_cdma": getattr(m.get("napari_cdma"), "__file__", None)}
    info.update(extra)
    with open(_o.environ["CDMA_STARTUP_REPORT"], "w") as f:
        f.write(repr(info))
_a.register(_cdma_report)
"""

CLI_HELP = "import sys; sys.argv = ['cdma', '--help']; from src_model.cli import main; main()"

# The viewer comes up first (not timed); then add_plugin_dock_widget -> the dock's first paint is timed.
DOCK = """
import sys, time
from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QApplication
import napari

def pump(seconds, until=None):
    app = QApplication.instance()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        if until is not None and until():
            return True
        time.sleep(0.001)
    return False

viewer = napari.Viewer(title="napari-cdma start-up benchmark")
pump(60, lambda: viewer.window._qt_window.isVisible())
pump(1.0)  # let the window settle: first paints, deferred start-up work
torch_before = "torch" in sys.modules
plugin_before = sorted(k for k in sys.modules if k.split(".")[0] == "napari_cdma")

class FirstPaint(QObject):
    t = None
    def eventFilter(self, obj, event):
        if self.t is None and event.type() == QEvent.Type.Paint:
            self.t = time.perf_counter()
        return False

t0 = time.perf_counter()
dock, widget = viewer.window.add_plugin_dock_widget("napari-cdma", "CDMA")
t_returned = time.perf_counter()
watch = FirstPaint()
for w in (dock, widget if hasattr(widget, "installEventFilter") else getattr(widget, "native", None)):
    if w is not None:
        w.installEventFilter(watch)
painted = pump(60, lambda: watch.t is not None)
if painted:
    t_shown, criterion = watch.t, "first paint"
else:  # no paint seen (already painted during the call?): fall back to visibility
    t_shown, criterion = time.perf_counter(), "visible, no paint seen"
torch_shown = "torch" in sys.modules
pump(1.0)
_cdma_report({"dock_call_s": t_returned - t0, "dock_shown_s": t_shown - t0, "criterion": criterion,
              "visible": bool(dock.isVisible()), "torch_before_dock": torch_before,
              "plugin_modules_before_dock": plugin_before,
              "torch_when_shown": torch_shown, "torch_after_1s": "torch" in sys.modules})
sys.stdout.flush()
import os
os._exit(0)  # skip the viewer's teardown: only start-up is measured
"""

# The first Predict click in a fresh viewer: how long the click itself holds the GUI thread (before the
# worker thread takes over), whether torch was imported by then, and the event loop's worst lateness
# (a 10 ms timer) while the worker loads torch and the model and predicts.
PREDICT_CLICK = DOCK.split("t0 = time.perf_counter()")[0] + """
import numpy as np
from qtpy.QtCore import QTimer
dock, widget = viewer.window.add_plugin_dock_widget("napari-cdma", "CDMA")
layer = viewer.add_image(np.random.default_rng(0).integers(0, 255, (522, 775, 3), dtype=np.uint8),
                         name="he", rgb=True)
pump(1.0)
torch_before = "torch" in sys.modules
ticks = []
timer = QTimer()
timer.setInterval(10)
timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
timer.start()
pump(0.3)
t0 = time.perf_counter()
started = widget.predict_panel.predict(layer)
t_click = time.perf_counter() - t0
torch_after_click = "torch" in sys.modules
done = pump(120, lambda: not widget.predict_panel.running)
t_done = time.perf_counter() - t0
timer.stop()
gaps = [b - a - 0.010 for a, b in zip(ticks, ticks[1:]) if b > t0]
_cdma_report({"click_s": t_click, "started": bool(started), "finished": bool(done), "predict_s": t_done,
              "max_lateness_ms": 1000 * max(gaps) if gaps else None, "torch_before_click": torch_before,
              "torch_after_click_call": torch_after_click})
sys.stdout.flush()
import os
os._exit(0)
"""

PROBES: Dict[str, Dict[str, Any]] = {
    "python": {"code": "pass", "what": "`python -c pass` (interpreter start, for scale)", "tree": False},
    "import_torch": {"code": "import torch", "what": "`python -c \"import torch\"` (for scale)", "tree": False},
    "cli_help": {"code": CLI_HELP, "what": "`cdma --help` (as `python -c \"...src_model.cli.main()\"`)",
                 "tree": "src_model"},
    "import_plugin": {"code": "import napari_cdma", "what": "`python -c \"import napari_cdma\"`",
                      "tree": "napari_cdma"},
    "dock": {"code": DOCK, "what": "dock: `add_plugin_dock_widget` to the dock's first paint (viewer already up)",
             "tree": "napari_cdma"},
    "predict_click": {"code": PREDICT_CLICK, "tree": "napari_cdma",
                      "what": "first Predict click: GUI thread held by the click (fresh viewer, 775x522 RGB)"},
}


def git_describe(repo: Path) -> Dict[str, Any]:
    """The checkout's commit and whether its working tree has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD") or None,
            "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no"))}


def run_probe(name: str, python: str, repo: Path, timeout_s: float) -> Dict[str, Any]:
    """One fresh process running probe ``name``; returns its wall and CPU time and its report."""
    probe = PROBES[name]
    with tempfile.TemporaryDirectory(prefix="cdma_startup_") as tmp:
        report = Path(tmp) / "report.txt"
        # a first start: the dock finds no project store (not the user's ~/napari-cdma-project, which the
        # Predict probe would otherwise create and the next dock probe restore)
        env = dict(os.environ, PYTHONPATH=str(repo), CDMA_STARTUP_REPORT=str(report),
                   NAPARI_CDMA_PROJECT=str(Path(tmp) / "project"))
        for var in ("PYTHONSTARTUP", "PYTHONHOME"):
            env.pop(var, None)
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run([python, "-c", REPORTER + probe["code"]], cwd=tmp, env=env, capture_output=True,
                              text=True, timeout=timeout_s)
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0 or not report.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise RuntimeError(f"{name}: exit {proc.returncode}, no report: " + " | ".join(tail))
        out = ast.literal_eval(report.read_text())
    if probe["tree"]:
        where = out.get(probe["tree"])
        if not where or not Path(where).resolve().is_relative_to(repo):
            raise RuntimeError(f"{name}: imported {probe['tree']} from {where}, not from {repo}")
    out.update(wall_s=wall, cpu_s=(cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime))
    return out


def _agree(values: List[bool]) -> Any:
    """True / False when all repeats agree, else the list."""
    return values[0] if len(set(values)) == 1 else values


def measure(name: str, python: str, repo: Path, repeats: int, warmup: int, timeout_s: float) -> Dict[str, Any]:
    """``warmup`` discarded runs, then ``repeats`` measured ones; medians, maxima and the load average."""
    for _ in range(warmup):
        run_probe(name, python, repo, timeout_s)
    load_start = load_average()
    runs = [run_probe(name, python, repo, timeout_s) for _ in range(repeats)]
    key = {"dock": "dock_shown_s", "predict_click": "click_s"}.get(name, "wall_s")
    times = [r[key] for r in runs]
    res: Dict[str, Any] = {
        "what": PROBES[name]["what"], "timed": key, "times_s": times, "median_s": statistics.median(times),
        "max_s": max(times), "cpu_s_median": statistics.median(r["cpu_s"] for r in runs),
        "torch_imported": _agree([r["torch"] for r in runs]), "napari_imported": _agree([r["napari"] for r in runs]),
        "qt_imported": _agree([r["qt"] for r in runs]), "modules_median": statistics.median(r["modules"] for r in runs),
        "load_avg_start": load_start, "load_avg_end": load_average(),
    }
    if PROBES[name]["tree"]:
        res["imported_from"] = str(Path(runs[0][PROBES[name]["tree"]]).parent)
    if name == "dock":
        res.update({
            "call_s_median": statistics.median(r["dock_call_s"] for r in runs),
            "process_wall_s_median": statistics.median(r["wall_s"] for r in runs),
            "criterion": _agree([r["criterion"] for r in runs]),
            "torch_before_dock": _agree([r["torch_before_dock"] for r in runs]),
            "plugin_modules_before_dock": runs[0]["plugin_modules_before_dock"],
            "torch_when_shown": _agree([r["torch_when_shown"] for r in runs]),
            "torch_after_1s": _agree([r["torch_after_1s"] for r in runs]),
        })
    if name == "predict_click":
        lateness = [r["max_lateness_ms"] for r in runs if r.get("max_lateness_ms") is not None]
        res.update({
            "started": _agree([r["started"] for r in runs]), "finished": _agree([r["finished"] for r in runs]),
            "predict_s_median": statistics.median(r["predict_s"] for r in runs),
            "max_lateness_ms_median": statistics.median(lateness) if lateness else None,
            "max_lateness_ms_max": max(lateness) if lateness else None,
            "torch_before_click": _agree([r["torch_before_click"] for r in runs]),
            "torch_after_click_call": _agree([r["torch_after_click_call"] for r in runs]),
        })
    return res


def _yes(v: Any) -> str:
    return {True: "yes", False: "no"}.get(v, str(v)) if isinstance(v, bool) else f"varies {v}"


def to_markdown(runs: Dict[str, Dict[str, Any]]) -> str:
    labels = sorted(runs, key=lambda k: (k != "before", k != "after", k))
    lines = ["# Start-up time", "",
             "Fresh processes, each with `PYTHONPATH=<checkout>` in an empty folder; median / max of the "
             "repeats (seconds) and whether `torch` was imported. Wall times grow with the machine's load "
             "(load average, 1 min, at the start of each measurement in brackets).", ""]
    for label in labels:
        r = runs[label]
        m = r["machine"]
        dirty = " + uncommitted changes" if r["git"]["uncommitted_changes"] else ""
        lines.append(f"- **{label}**: `{r['repo']}` at {r['git']['commit']}{dirty}; {r['date']}; {m['cpu']}, "
                     f"{m['cores']} cores, Python {m['python']}, torch {m['torch']}; {r['repeats']} repeats after "
                     f"{r['warmup']} warm-up; load average {m['load_avg_1_5_15']} at start, "
                     f"{r['load_avg_end']} at end.")
    lines += ["", "| measurement | " + " | ".join(f"{lb}: median / max s | {lb}: torch" for lb in labels) + " |",
              "|---|" + "---|---|" * len(labels)]
    names = [n for n in PROBES if any(n in runs[lb]["measurements"] for lb in labels)]
    for name in names:
        cells = []
        for label in labels:
            s = runs[label]["measurements"].get(name)
            if s is None:
                cells += ["-", "-"]
                continue
            if "error" in s:
                cells += ["failed: " + s["error"].split(" | ")[-1].strip()[-100:].replace("|", "/"), "-"]
                continue
            if name == "dock":
                torch_cell = (f"before call {_yes(s['torch_before_dock'])}, shown {_yes(s['torch_when_shown'])}, "
                              f"+1 s {_yes(s['torch_after_1s'])}")
            elif name == "predict_click":
                torch_cell = (f"before click {_yes(s['torch_before_click'])}, when the click returned "
                              f"{_yes(s['torch_after_click_call'])}; event loop max lateness until the "
                              f"prediction is shown: median {s['max_lateness_ms_median']:.0f} / max "
                              f"{s['max_lateness_ms_max']:.0f} ms")
            else:
                torch_cell = _yes(s["torch_imported"])
            cells += [f"{s['median_s']:.2f} / {s['max_s']:.2f} ({s['load_avg_start'][0]:.2f})", torch_cell]
        lines.append(f"| {PROBES[name]['what']} | " + " | ".join(cells) + " |")
    lines += ["", "Dock: the viewer is created and settled first (not timed); timed is "
              "`add_plugin_dock_widget(\"napari-cdma\", \"CDMA\")` until the dock's first paint event "
              "(it is shown); this includes importing the widget module and everything it imports "
              "(`plugin_modules_before_dock` in the JSON lists what napari had imported of the plugin before).", "",
              "Commands:", ""] + [f"    {runs[lb]['command']}" for lb in labels]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", type=Path, default=ROOT, help="checkout to measure (default: this repository)")
    p.add_argument("--label", default=None,
                   help="name of this entry in the results (default: 'after' for this repository, else 'before')")
    p.add_argument("--repeats", type=int, default=5, help="measured runs per measurement")
    p.add_argument("--warmup", type=int, default=1, help="discarded runs first (byte-code caches, fonts)")
    p.add_argument("--only", nargs="+", choices=list(PROBES), default=list(PROBES), help="measurements to run")
    p.add_argument("--python", default=sys.executable, help="interpreter (default: this one, the venv's)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per process")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    repo = args.repo.resolve()
    if not (repo / "src_model").is_dir() or not (repo / "napari_cdma").is_dir():
        print(f"{p.prog}: error: {repo} is not a napari-cdma checkout (no src_model/ and napari_cdma/)",
              file=sys.stderr)
        return 2
    if {"dock", "predict_click"} & set(args.only):
        ensure_display()
    label = args.label or ("after" if repo == ROOT else "before")
    command = "python benchmarks/bench_startup.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))

    entry: Dict[str, Any] = {"label": label, "repo": str(repo), "git": git_describe(repo), "python": args.python,
                             "repeats": args.repeats, "warmup": args.warmup, "command": command.strip(),
                             "machine": machine_info(), "measurements": {}}
    entry["date"] = entry["machine"]["date"]
    failed = 0
    for name in args.only:
        print(f"{label}: {name} ...", file=sys.stderr, flush=True)
        try:
            s = measure(name, args.python, repo, args.repeats, args.warmup, args.timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:  # record it, measure the rest
            failed += 1
            entry["measurements"][name] = {"what": PROBES[name]["what"], "error": str(exc)}
            print(f"{label}: {name}: FAILED: {exc}", file=sys.stderr, flush=True)
            continue
        entry["measurements"][name] = s
        print(f"{label}: {name}: median {s['median_s']:.3f} s, max {s['max_s']:.3f} s, torch "
              f"{s['torch_imported']}, load {s['load_avg_start'][0]:.2f}", file=sys.stderr, flush=True)
    entry["load_avg_end"] = load_average()

    previous = args.out / "startup.json"
    runs: Dict[str, Any] = {}
    if previous.is_file():
        runs = json.loads(previous.read_text(encoding="utf-8")).get("runs", {})
    runs[label] = entry
    text = to_markdown(runs)
    write_results("startup", {"runs": runs}, text, args.out)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
