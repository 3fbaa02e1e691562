"""The retraining worker: runs in its own process, started by :class:`~napari_cdma.project.retrain_job.RetrainJob`.

Usage: ``python -m napari_cdma.project.retrain_worker JOB.json``

``JOB.json`` keys:
    store (str): project store path.
    steps (int): optimiser steps.
    out_dir (str): where checkpoints go (``final.pt``).
    seed (int, default 0), device ("auto" | "cpu" | "cuda", default "auto").
    patch, batch_labelled, batch_unlabelled (int, optional): shortcuts for TrainConfig fields.
    config (dict, optional): any other TrainConfig field overrides.
    eval_tile (int, optional): tile size for scoring held-out regions (default
        ``src_model.tiling.EVAL_TILE``, 256, with overlap ``EVAL_OVERLAP``, 0.25: the released protocol).

Protocol: one JSON object per line on stdout (flushed), the events of
:mod:`napari_cdma.project.events` in order: ``Started``, ``Progress`` (per step), ``Evaluating``,
then ``Done``, or ``Cancelled`` (SIGTERM: the trainer stops between steps; exit 0) or ``Failed``
(exit code 1). Everything else (logging, library output, C-level prints) goes to stderr.

``Done.better`` is ``new_dice > old_dice`` on the pooled foreground pixels of the held-out regions,
or ``None`` when the store holds no held-out region (``message`` says so).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from .events import Cancelled, Done, Evaluating, Failed, Progress, RetrainEvent, Started, to_json

logger = logging.getLogger("napari_cdma.retrain_worker")

EXIT_ERROR = 1
_SHORTCUTS = ("patch", "batch_labelled", "batch_unlabelled")


class _Emitter:
    """Writes protocol events to the real stdout; the process's fd 1 is pointed at stderr."""

    def __init__(self) -> None:
        sys.stdout.flush()
        self._out: TextIO = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        os.dup2(2, 1)  # stray prints (Python or C) cannot corrupt the event stream
        sys.stdout = sys.stderr

    def __call__(self, event: RetrainEvent) -> None:
        self._out.write(to_json(event) + "\n")
        self._out.flush()


class _CancelFlag:
    """Set by SIGTERM (or SIGINT); the trainer checks it between steps."""

    def __init__(self) -> None:
        self.set = False

    def __call__(self) -> bool:
        return self.set

    def install(self) -> None:
        def handler(signum, frame):
            self.set = True
            logger.info("signal %d received: stopping after the current step", signum)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def _lower_priority_and_threads() -> int:
    """Be a polite background job: nice 10, and the retraining share of the cores
    (:func:`src_model.runtime.torch_threads`): the viewer's own prediction keeps the other half."""
    try:
        os.nice(10)
    except (AttributeError, OSError):
        pass
    from src_model.runtime import torch_threads

    threads = torch_threads("retrain")
    import torch

    torch.set_num_threads(threads)
    return threads


def _train_config(job: Dict[str, Any]):
    from src_model.trainer import TrainConfig

    overrides = dict(job.get("config") or {})
    for key in _SHORTCUTS:
        if key in job:
            overrides[key] = int(job[key])
    overrides["seed"] = int(job.get("seed", 0))
    overrides["device"] = str(job.get("device", "auto"))
    overrides["threads"] = 0  # set once here, politely, not by the trainer
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown training options {unknown}; valid: {', '.join(sorted(known))}")
    return TrainConfig.finetune(int(job["steps"]), **overrides)


def _score(model_path: Path, crops: Sequence[np.ndarray], truths: Sequence[np.ndarray], tile: int,
           device: str, cancel: Callable[[], bool]) -> Optional[float]:
    """Pooled Dice of a checkpoint on the held-out crops (engine: ``score_regions``), or None if cancelled."""
    from src_model import load_checkpoint
    from src_model.evaluate import score_regions
    from src_model.progress import drain

    regions = list(zip(crops, truths, strict=True))
    return drain(score_regions(load_checkpoint(model_path), regions, tile=tile, device=device, cancel=cancel))


def run(job: Dict[str, Any], emit: Callable[[RetrainEvent], None], cancel: Callable[[], bool]) -> int:
    """Fine-tune the store's current model and score it; returns the exit code."""
    from src_model import load_checkpoint
    from src_model.progress import drain
    from src_model.tiling import EVAL_TILE
    from src_model.trainer import train

    from .store import ProjectStore, StoreError

    store = ProjectStore.open(job["store"], create=False)
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    parent = store.current_model_version
    parent_path = store.current_model_path()
    config = _train_config(job)

    train_records = store.training_regions()
    holdout_records = store.holdout_regions()
    if not train_records:
        raise ValueError("no accepted regions to train on (held-out regions are kept for validation); "
                         "accept more corrected regions first")
    # A region whose files are missing or damaged is left out with a warning (never read as zeros).
    labelled: List[Tuple[np.ndarray, np.ndarray]] = []
    held = []
    skipped: List[str] = []
    for rec in train_records + holdout_records:
        try:
            crop, corrected, predicted = store.load_region(rec.region_id)
        except StoreError as exc:
            logger.warning("skipping damaged region %s: %s", rec.region_id, exc)
            skipped.append(rec.region_id)
            continue
        if rec.holdout:
            held.append((crop, corrected, predicted))
        else:
            labelled.append((crop, (corrected > 0).astype(np.uint8)))
    train_records = [r for r in train_records if r.region_id not in skipped]
    if skipped:
        logger.warning("%d damaged region(s) left out of retraining: %s", len(skipped), ", ".join(skipped))
    if not labelled:
        raise ValueError(f"every region to train on is damaged ({', '.join(skipped)}); withdraw them or "
                         "restore the store from a backup")
    unlabelled = store.unlabelled_images(skip_damaged=True) + [crop for crop, _ in labelled]
    emit(Started(model_version=parent, n_labelled=len(labelled), n_unlabelled=len(unlabelled),
                 n_holdout=len(held), pid=os.getpid(), config=config.to_dict()))
    if cancel():
        emit(Cancelled(steps_done=0))
        return 0

    model = load_checkpoint(parent_path)
    import torch

    # str(): torch.__version__ is a TorchVersion, which weights_only loading refuses.
    provenance = {"parent_model": parent, "store": str(store.root), "torch": str(torch.__version__),
                  "regions": [f"{r.region_id}@{r.version}" for r in train_records]}

    def on_progress(p) -> None:
        emit(Progress(step=p.step, total=p.total, eta_s=p.eta_s,
                      metrics={k: float(v) for k, v in p.metrics.items()}))

    result = drain(train(model, labelled, unlabelled, config, out_dir, cancel=cancel, provenance=provenance),
                   on_progress)
    if result.cancelled or cancel():
        emit(Cancelled(steps_done=result.steps_done))
        return 0

    emit(Evaluating(n_holdout=len(held)))
    tile = int(job.get("eval_tile", EVAL_TILE))
    device = config.device
    if held:
        crops = [c for c, _, _ in held]
        truths = [t for _, t, _ in held]
        old = _score(parent_path, crops, truths, tile, device, cancel)
        new = None if old is None else _score(result.checkpoint, crops, truths, tile, device, cancel)
        if old is None or new is None:
            emit(Cancelled(steps_done=result.steps_done))
            return 0
        better: Optional[bool] = new > old
        message = f"held-out Dice {old:.3f} -> {new:.3f} on {len(held)} regions"
    else:
        old = new = better = None
        message = "no held-out regions yet: the new model cannot be scored; promote it by hand if wanted"
    emit(Done(checkpoint=str(result.checkpoint), old_dice=old, new_dice=new, better=better,
              n_holdout=len(held), parent_model=parent, steps_done=result.steps_done, message=message))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: ``python -m napari_cdma.project.retrain_worker JOB.json``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    emit = _Emitter()
    cancel = _CancelFlag()
    cancel.install()
    if len(argv) != 1:
        emit(Failed(message="usage: python -m napari_cdma.project.retrain_worker JOB.json"))
        return EXIT_ERROR
    t0 = time.perf_counter()
    try:
        job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
        threads = _lower_priority_and_threads()
        logger.info("retraining with %d torch threads: %s", threads, job)
        code = run(job, emit, cancel)
    except Exception as exc:  # report every failure as an event, then exit non-zero
        logger.exception("retraining failed")
        emit(Failed(message=f"{type(exc).__name__}: {exc}"))
        return EXIT_ERROR
    logger.info("worker finished in %.1f s", time.perf_counter() - t0)
    return code


if __name__ == "__main__":
    sys.exit(main())
