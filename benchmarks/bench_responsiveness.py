"""Is the viewer responsive while retraining? Event-loop lateness in a real napari viewer.

A 10 ms QTimer measures its own lateness (actual interval - 10 ms) for ``--seconds`` in each phase:

1. ``idle``: napari with the GlaS sample and the CDMA dock, nothing running;
2. ``retrain_subprocess``: the dock's Retrain (``RetrainJob``: a child process polled every 100 ms)
   on real GlaS regions in a temporary project store;
3. ``retrain_thread``: the same training in-process in a napari ``thread_worker`` (the design
   the plugin avoids), for comparison.

It also times click-to-layers for Predict on a GlaS image (first run includes model loading).
Writes ``benchmarks/results/responsiveness.json`` and ``.md``.

Usage::

    python benchmarks/bench_responsiveness.py [--seconds 20] [--no-thread] [--data GLAS]

``--data``: the GlaS folder (images/, masks/, split.csv) the regions come from; default ``$CDMA_GLAS``,
else ``../shared/data/glas`` next to the repository. Without it the benchmark stops at once (exit code 2).
Run headless with ``xvfb-run -a python benchmarks/bench_responsiveness.py`` (the script re-execs
itself under ``xvfb-run`` when no display is set).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from _common import (
    RESULTS,
    add_data_argument,
    cpu_cores,
    ensure_display,
    fill_store,
    glas_ids,
    load_average,
    machine_info,
    require_glas,
    wait_until,
    write_results,
)

INTERVAL_MS = 10
TRAIN_OPTS = dict(device="cpu", patch=128, batch_labelled=4, batch_unlabelled=4)


def _stats(lateness_ms: List[float]) -> Dict[str, float]:
    a = np.asarray(lateness_ms, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max()), "mean_ms": float(a.mean()),
            "frac_over_50ms": float((a > 50).mean())}


def measure(seconds: float) -> Dict[str, float]:
    """Run the Qt event loop for ``seconds`` with a 10 ms timer; return lateness statistics."""
    from qtpy.QtCore import QEventLoop, QTimer

    ticks: List[float] = []
    timer = QTimer()
    timer.setInterval(INTERVAL_MS)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    timer.start()
    loop.exec()
    timer.stop()
    late = [max(0.0, (b - a) * 1000.0 - INTERVAL_MS) for a, b in zip(ticks, ticks[1:], strict=False)]
    return _stats(late)


def base_checkpoint(tmp: Path) -> Path:
    """The bundled model if installed and readable, else a random ``lite`` model in ``tmp``."""
    import torch

    import src_model
    from src_model.checkpoint import CheckpointError, bundled_model_path, load_model, save_checkpoint

    try:
        load_model(bundled_model_path())
        return bundled_model_path()
    except CheckpointError:
        torch.manual_seed(0)
        path = tmp / "lite_random.pt"
        save_checkpoint(path, src_model.build_model("lite"), provenance={"torch": str(torch.__version__)})
        return path


def accept_regions(store: Any, base: Path, data: Path, n: int = 6) -> List[str]:
    """Accept the top-left 256 x 256 region of the first ``n`` GlaS train images (expert masks as
    corrections, an empty prediction); returns the image ids."""
    store.add_model(base, parent="bundled", promoted=True)
    filled = fill_store(store, data, glas_ids(data)[:n], n, per_image=1, boxes="top-left")
    return [r["image"] for r in filled["regions"]]


def thread_training_worker(store: Any, out_dir: Path):
    """A napari thread_worker running the same fine-tuning in-process (for comparison)."""
    from napari.qt.threading import create_worker

    def job():
        import torch

        from src_model import load_checkpoint
        from src_model.trainer import TrainConfig, train

        torch.set_num_threads(max(1, cpu_cores() - 1))  # as RetrainJob does for its child
        labelled = []
        for rec in store.training_regions():
            crop, corrected, _ = store.load_region(rec.region_id)
            labelled.append((crop, (corrected > 0).astype(np.uint8)))
        unlabelled = store.unlabelled_images() + [c for c, _ in labelled]
        opts = {k: v for k, v in TRAIN_OPTS.items()}
        config = TrainConfig.finetune(100_000, **opts)
        yield from train(load_checkpoint(store.current_model_path()), labelled, unlabelled, config, out_dir)

    return create_worker(job)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the benchmark and write the results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0, help="measuring time per phase")
    p.add_argument("--no-thread", action="store_true", help="skip the in-process thread_worker phase")
    p.add_argument("--out", type=Path, default=RESULTS)
    add_data_argument(p)
    args = p.parse_args(argv)
    data = require_glas(args.data, p.prog).resolve()
    ensure_display()

    import napari

    from napari_cdma._sample import SAMPLE_NAME
    from napari_cdma._widget_retrain import UI_REFRESH_S

    tmp = Path(tempfile.mkdtemp(prefix="cdma_bench_"))
    # the machine facts (cpu_count, platform, python, ...) join at the top level after the run: collecting
    # them imports torch, and the first Predict's time is to include that
    results: Dict[str, Any] = {"interval_ms": INTERVAL_MS, "seconds_per_phase": args.seconds,
                               "load_avg_1_5_15": load_average(), "data": str(data), "train_options": TRAIN_OPTS}
    viewer = napari.Viewer(title="napari-cdma benchmark")
    try:
        viewer.open_sample("napari-cdma", "glas_testA_1")
        _, widget = viewer.window.add_plugin_dock_widget("napari-cdma", "CDMA segmentation")
        base = base_checkpoint(tmp)
        results["base_model"] = str(base)
        store = widget.open_store(tmp / "project")
        results["regions"] = accept_regions(store, base, data)
        widget.open_store(tmp / "project")

        # Predict: click-to-layers, twice (the first includes loading torch and the model).
        results["torch_imported_before_predict"] = "torch" in sys.modules
        times = []
        for _ in range(2):
            before = widget.states.get(SAMPLE_NAME)
            t0 = time.perf_counter()
            widget.predict_panel.predict_button.click()
            ok = wait_until(lambda before=before: widget.states.get(SAMPLE_NAME) is not before
                            and not widget.predict_panel.running, 300)
            times.append(time.perf_counter() - t0 if ok else float("nan"))
        results["predict_click_to_layers_s"] = {"first": times[0], "second": times[1],
                                                "image": "GlaS testA_1 775x522"}

        results["idle"] = measure(args.seconds)

        panel = widget.retrain_panel
        panel.train_kwargs = dict(TRAIN_OPTS)
        panel.start(steps=100_000)
        wait_until(lambda: len(panel.loss_plot.values) > 0 or panel.state == "error", 180)
        steps0 = len(panel.loss_plot.values)
        results["retrain_subprocess"] = measure(args.seconds)
        results["retrain_subprocess"]["train_steps_during"] = len(panel.loss_plot.values) - steps0
        panel.cancel()
        wait_until(lambda: panel.state in ("cancelled", "error"), 60)
        results["retrain_subprocess"]["end_state"] = panel.state

        if not args.no_thread:
            steps: List[Any] = []
            worker = thread_training_worker(store, tmp / "thread_run")
            worker.yielded.connect(steps.append)
            # same dock updates as the subprocess phase (loss curve, progress, ETA; throttled alike)
            last_ui = [0.0]

            def show(ev: Any) -> None:
                panel.loss_plot.add_point(ev.step, float(ev.metrics.get("loss", float("nan"))), repaint=False)
                if time.monotonic() - last_ui[0] >= UI_REFRESH_S:
                    panel._show_progress(ev.to_dict())
                    panel.loss_plot.update()
                    last_ui[0] = time.monotonic()

            worker.yielded.connect(show)
            worker.start()
            wait_until(lambda: len(steps) > 0, 180)
            n0 = len(steps)
            results["retrain_thread"] = measure(args.seconds)
            results["retrain_thread"]["train_steps_during"] = len(steps) - n0
            worker.quit()
            wait_until(lambda: not worker.is_running, 120)
    finally:
        viewer.close()
        shutil.rmtree(tmp, ignore_errors=True)
    results["load_avg_end"] = load_average()
    results.update({k: v for k, v in machine_info().items() if k != "load_avg_1_5_15"})

    lines = ["# Viewer responsiveness (10 ms QTimer lateness)", "",
             f"{results['cpu_count']} CPU cores, {args.seconds:.0f} s per phase, {results['platform']}; "
             f"training options {TRAIN_OPTS}; load average (1 min) {results['load_avg_1_5_15'][0]:.2f} at start, "
             f"{results['load_avg_end'][0]:.2f} at end.", "",
             "| phase | p50 ms | p99 ms | max ms | > 50 ms | train steps |", "|---|---|---|---|---|---|"]
    for phase in ("idle", "retrain_subprocess", "retrain_thread"):
        s = results.get(phase)
        if s and s.get("n"):
            lines.append(f"| {phase} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['max_ms']:.1f} | "
                         f"{100 * s['frac_over_50ms']:.1f}% | {s.get('train_steps_during', '')} |")
    pt = results["predict_click_to_layers_s"]
    lines += ["", f"Predict click-to-layers on {pt['image']}: first {pt['first']:.2f} s (includes model load), "
              f"second {pt['second']:.2f} s."]
    write_results("responsiveness", results, "\n".join(lines), args.out, indent=1)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
