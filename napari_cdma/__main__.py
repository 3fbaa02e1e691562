"""Demo entry point: ``python -m napari_cdma [--screenshot PATH] [--quit] [--model CKPT]``.

Opens napari with the GlaS sample image, docks the CDMA widget, runs Predict with the bundled
model (or ``--model``), waits for the layers, optionally saves a screenshot of the whole window
(canvas and dock) and quits. Headless: ``xvfb-run -a python -m napari_cdma --screenshot s.png --quit``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

logger = logging.getLogger("napari_cdma")

PLUGIN = "napari-cdma"
WIDGET = "CDMA"
SAMPLE_KEY = "glas_testA_1"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m napari_cdma",
        description="Open napari with the GlaS sample image and the CDMA dock, and run Predict with the "
                    "bundled model. Without a display, run it under xvfb-run with --screenshot and --quit.")
    p.add_argument("--screenshot", type=Path, metavar="PNG",
                   help="save a PNG of the window (canvas + dock) after Predict")
    p.add_argument("--quit", action="store_true", help="close napari once done (after the screenshot)")
    p.add_argument("--model", type=Path, metavar="CKPT",
                   help="checkpoint to predict with (default: the bundled model)")
    p.add_argument("--project", type=Path, metavar="DIR",
                   help="project store folder (default: $NAPARI_CDMA_PROJECT or ~/napari-cdma-project, "
                        "opened only if it exists; never the store a dock opened last)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S",
                   help="give up waiting for Predict after S seconds (default: 300)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Run the demo; returns the exit code (1 if Predict failed or timed out)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import napari
    from qtpy.QtCore import QTimer

    from ._sample import SAMPLE_NAME
    from ._widget import PROJECT_ENV

    # the demo's own store (--project, $NAPARI_CDMA_PROJECT or ~/napari-cdma-project), never the store a
    # pathologist opened last (walk 26: a new dock starts on that one): the sample's prediction stays out of a
    # lab's project, and the environment variable keeps the demo's store from being remembered as the last one
    os.environ[PROJECT_ENV] = str(args.project or os.environ.get(PROJECT_ENV) or Path.home() / "napari-cdma-project")
    viewer = napari.Viewer(title="napari-cdma")
    viewer.window.resize(1500, 900)
    viewer.open_sample(PLUGIN, SAMPLE_KEY)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    if args.project is not None:
        widget.open_store(args.project)
    if args.model is not None:
        widget.predict_panel.set_model_file(str(args.model))
    status = {"code": 1, "done": False}

    def finish() -> None:
        if status["done"]:
            return
        status["done"] = True
        ok = SAMPLE_NAME in widget.states
        status["code"] = 0 if ok else 1
        logger.info("predict %s: %s", "done" if ok else "failed", widget.predict_panel.last_message)
        if ok and widget.review_panel.tiles:
            widget.review_panel.tile_list.setCurrentRow(0)
        viewer.reset_view()
        QTimer.singleShot(800, after_render)

    def after_render() -> None:
        if args.screenshot is not None:
            args.screenshot.parent.mkdir(parents=True, exist_ok=True)
            viewer.screenshot(str(args.screenshot), canvas_only=False, flash=False)
            logger.info("screenshot saved to %s", args.screenshot)
        if args.quit:
            viewer.close()

    widget.predict_panel.idle.connect(finish)
    widget.predict_panel.failed.connect(lambda _msg: QTimer.singleShot(0, finish))
    if not widget.predict(SAMPLE_NAME):
        QTimer.singleShot(0, finish)
    QTimer.singleShot(int(args.timeout * 1000), finish)
    napari.run()
    return status["code"]


if __name__ == "__main__":
    sys.exit(main())
