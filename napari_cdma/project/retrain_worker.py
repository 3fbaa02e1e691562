"""The retraining worker: runs in its own process, started by :class:`~napari_cdma.project.retrain_job.RetrainJob`.

Usage: ``python -m napari_cdma.project.retrain_worker JOB.json``

``JOB.json`` keys:
    store (str): project store path.
    steps (int or null): optimiser steps (null: the recipe's default for the amount of corrected pixels).
    out_dir (str): where checkpoints go (``final.pt``).
    recipe (str, default "default"): the fine-tuning recipe (``src_model.finetune.RECIPES``).
    semi_supervised (bool, default src_model.recipes.FINETUNE_SEMI_SUPERVISED): True adds CDMA's unsupervised terms.
    seed (int, default 0), device ("auto" | "cpu" | "cuda", default "auto").
    patch, batch_labelled, batch_unlabelled (int, optional): shortcuts for TrainConfig fields.
    config (dict, optional): any other TrainConfig field overrides.
    eval_tile, eval_overlap (optional): tiling for scoring held-out regions (default
        ``src_model.tiling.DEFAULT_TILE`` / ``DEFAULT_OVERLAP``, 320 / 0.2: the dock's, so that a region accepted
        unchanged scores 1.0 for the model that predicted it; each region in its source image, :func:`in_context`).
    agreement_crops (int, optional): crops of uncorrected tissue compared with the current model
        (default ``src_model.agreement.AGREEMENT_MAX_CROPS``).
    register ("auto" | "yes" | "no", optional): add the model to the store before ``Done`` (promoted by
        the rule of :func:`~napari_cdma.project.retrain_job.finish`, always, or never), as ``cdma retrain``
        does; absent: the caller registers it (the dock).

``Done.trained_on`` is what the job trained on: the accepted regions it read before training and the settings
(:func:`~napari_cdma.project.retrain_job.training_basis`), kept with the new version by
:func:`~napari_cdma.project.retrain_job.finish`. ``Done.holdout_split`` says which held-out regions were accepted
unedited (:func:`accepted_unedited`) and the Dice of the edited and the unedited ones apart
(:class:`~napari_cdma.project.retrain_job.HoldoutSplit`), which the promotion rule reads.

Protocol: one JSON object per line on stdout (flushed), the events of
:mod:`napari_cdma.project.events` in order: ``Started``, ``Progress`` (per step), ``Evaluating``,
then ``Done``, or ``Cancelled`` (SIGTERM: the trainer stops between steps; exit 0) or ``Failed``
(exit code 1). Everything else (logging, library output, C-level prints) goes to stderr.

``Done.better`` is ``new_dice > old_dice`` on the pooled foreground pixels of all held-out regions,
or ``None`` (and both Dice ``None``) when the store holds no held-out region or its held-out regions
hold less gland than :data:`~napari_cdma.project.retrain_job.MIN_HOLDOUT_GLAND_PX`: a Dice over a few
pixels says nothing. ``Done.message`` starts with the held-out result in words (the Dice, or why there
is none, with the amount of gland), then ``"; "`` and the agreement. ``Done.agreement`` is the
agreement of the new model with the current one on uncorrected tissue of the store's images
(:mod:`src_model.agreement`), ``Done.per_image`` both, image by image.
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

from src_model.recipes import FINETUNE_SEMI_SUPERVISED  # torch-free

from .events import Cancelled, Done, Evaluating, Failed, ImageScore, Progress, RetrainEvent, Started, to_json

logger = logging.getLogger("napari_cdma.retrain_worker")

EXIT_ERROR = 1
_SHORTCUTS = ("patch", "batch_labelled", "batch_unlabelled")
# TrainConfig fields that finetune() sets from its own arguments (recipe, steps, seed, ...)
_FINETUNE_ARGS = ("steps", "seed", "device", "threads", "unsupervised")


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


def _overrides(job: Dict[str, Any]) -> Dict[str, Any]:
    """TrainConfig fields the job sets besides the recipe (``config`` and the shortcuts), checked."""
    from src_model.trainer import TrainConfig

    overrides = dict(job.get("config") or {})
    for key in _SHORTCUTS:
        if key in job:
            overrides[key] = int(job[key])
    known = {f.name for f in dataclasses.fields(TrainConfig)} - set(_FINETUNE_ARGS)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown training options {unknown}; valid: {', '.join(sorted(known))}")
    return overrides


def _image_name(records: Sequence[Any], image_hash: str) -> str:
    """A region's source file name for an image hash, else the start of the hash."""
    for rec in records:
        if rec.image_hash == image_hash and rec.source_path:
            return Path(str(rec.source_path)).name
    return f"image {image_hash[:10]}"


# image hash -> (held-out regions, old Dice, new Dice); the Dice are None on too little gland
_PerImage = Dict[str, Tuple[int, Optional[float], Optional[float]]]


def _gland_px(held: Sequence[Tuple[Any, np.ndarray, np.ndarray]]) -> int:
    """Corrected gland pixels in held-out regions."""
    return int(sum(int(np.count_nonzero(truth)) for _, _, truth in held))


#: A held-out region's source image up to this many pixels is scored whole, as the dock predicts it
#: (:func:`in_context`); of a larger one, a window of :data:`HELD_CONTEXT_PX` around the region.
WHOLE_CONTEXT_PIXELS = 2048 * 2048
HELD_CONTEXT_PX = 512


def in_context(rec: Any, crop: np.ndarray, truth: np.ndarray, whole: Dict[str, np.ndarray]) -> Tuple[Any, ...]:
    """A held-out region as :func:`~src_model.evaluate.score_regions` scores it: ``(image, truth, box)`` with its
    whole source image when the store holds it (``whole``: hash -> pixels) and it has at most
    :data:`WHOLE_CONTEXT_PIXELS`, or a window of :data:`HELD_CONTEXT_PX` around the region of a larger one;
    else the region alone, ``(crop, truth)``.

    Scored alone, a region is predicted from what the model never sees in use, and on other tiles than the
    dock's; uncertain tissue (where review regions, and so held-out regions, lie) flips with either. The
    current model scored 0.679 on a region the pathologist had accepted unchanged from its own prediction
    (pathologist walk). On six 128 px boxes of GlaS testA_1 labelled with the dock's own prediction, the
    bundled model scored 0.00-1.00 alone (mean 0.59) and 1.00 on each in its whole image at the dock's tiling
    (``src_model.tiling.DEFAULT_TILE`` / ``DEFAULT_OVERLAP``; 0.22-1.00 at the evaluation tiling, 256 / 0.25)."""
    image = whole.get(rec.image_hash)
    y0, x0, y1, x1 = (int(v) for v in rec.bbox)
    if image is None or image.shape[0] < y1 or image.shape[1] < x1 or crop.shape[:2] != (y1 - y0, x1 - x0):
        return crop, truth
    h, w = image.shape[:2]
    if h * w <= WHOLE_CONTEXT_PIXELS:
        return image, truth, (y0, x0, y1, x1)
    wy0, wx0 = max(0, y0 - HELD_CONTEXT_PX), max(0, x0 - HELD_CONTEXT_PX)
    wy1, wx1 = min(h, y1 + HELD_CONTEXT_PX), min(w, x1 + HELD_CONTEXT_PX)
    return image[wy0:wy1, wx0:wx1], truth, (y0 - wy0, x0 - wx0, y1 - wy0, x1 - wx0)


def training_pairs(items: Sequence[Tuple[Any, np.ndarray, np.ndarray]], whole: Dict[str, np.ndarray],
                   context: bool) -> List[Tuple[np.ndarray, np.ndarray]]:
    """The fine-tuning's labelled pairs from ``(record, crop, corrected)`` of the regions to train on.

    Without ``context``: ``(crop, corrected > 0)``, each region alone (mirrored out to the training patch when
    smaller). With it (a recipe's ``in_context``): the region in its source image as :func:`in_context` frames a
    held-out region (the whole image, or a window around the region of a large one), labelled only inside its
    box (:func:`src_model.data.in_context_mask`; the rest :data:`~src_model.data.IGNORE`), so that training
    sees the tissue around the correction, as the dock does when it predicts; a region whose source image the
    store lacks is trained alone."""
    from src_model.data import in_context_mask

    pairs = []
    for rec, crop, corrected in items:
        framed = in_context(rec, crop, corrected, whole) if context else ()
        if len(framed) == 3:  # in its source image (in_context gives the region alone when it has none)
            image, truth, box = framed
            pairs.append((image, in_context_mask(image.shape[:2], box, truth)))
        else:
            pairs.append((crop, (np.asarray(corrected) > 0).astype(np.uint8)))
    return pairs


def accepted_unedited(corrected: np.ndarray, predicted: np.ndarray) -> bool:
    """A region was accepted unedited: its corrected mask's gland pixels are the prediction's it corrected (instance
    ids may differ: the held-out Dice sees only gland pixels, so the model that made the prediction scores 1.000 on
    it by construction)."""
    corrected, predicted = np.asarray(corrected), np.asarray(predicted)
    return corrected.shape == predicted.shape and bool(np.array_equal(corrected > 0, predicted > 0))


def _score_held(old_model, new_model, held: Sequence[Tuple[Any, np.ndarray, np.ndarray]], tile: int,
                overlap: float, device: str, cancel: Callable[[], bool], whole: Dict[str, np.ndarray],
                unedited: Optional[set] = None
                ) -> Optional[Tuple[float, float, _PerImage, Dict[bool, Tuple[Optional[float], Optional[float]]]]]:
    """Pooled Dice of both models on all held-out regions, each with its context (:func:`in_context`; ``whole``:
    the store's whole images by hash), and per source image (not scored, None, on an image whose held-out
    regions hold too little gland), from one prediction of each image by each model; None if cancelled. The last
    item: the pooled Dice of both models on the regions accepted unedited (key True; ``unedited``: their region ids)
    and on the edited ones (False), ``(None, None)`` where those hold too little gland."""
    from src_model.evaluate import predict_regions
    from src_model.metrics import pooled_dice
    from src_model.progress import drain

    from .retrain_job import MIN_HOLDOUT_GLAND_PX

    held = sorted(held, key=lambda h: h[0].image_hash)  # one image's regions in a row: it is predicted once
    regions = [in_context(rec, crop, truth, whole) for rec, crop, truth in held]
    labels = []
    for model in (old_model, new_model):
        got = drain(predict_regions(model, regions, tile=tile, overlap=overlap, device=device, cancel=cancel))
        if got is None:
            return None
        labels.append(got)

    def dice(which: int, keep: Callable[[Any], bool]) -> float:
        return pooled_dice([(lab, truth) for lab, (rec, _, truth) in zip(labels[which], held, strict=True)
                            if keep(rec)])

    per: _PerImage = {}
    for image_hash in sorted({rec.image_hash for rec, _, _ in held}):
        mine = [h for h in held if h[0].image_hash == image_hash]
        if _gland_px(mine) < MIN_HOLDOUT_GLAND_PX:
            per[image_hash] = (len(mine), None, None)
            continue
        per[image_hash] = (len(mine), *(dice(k, lambda rec, h=image_hash: rec.image_hash == h) for k in (0, 1)))
    unedited = unedited or set()
    parts: Dict[bool, Tuple[Optional[float], Optional[float]]] = {}
    for flag in (False, True):
        mine = [h for h in held if (h[0].region_id in unedited) is flag]
        parts[flag] = ((None, None) if _gland_px(mine) < MIN_HOLDOUT_GLAND_PX else
                       tuple(dice(k, lambda rec, f=flag: (rec.region_id in unedited) is f) for k in (0, 1)))
    return dice(0, lambda rec: True), dice(1, lambda rec: True), per, parts


def _agreement(images: Sequence[Tuple[str, np.ndarray]], regions: Sequence[Any], old_model, new_model, device: str,
               max_crops: int, cancel: Callable[[], bool]):
    """Agreement of the new model with the current one on the uncorrected tissue of the store's whole
    ``images`` (hash, pixels; the boxes of the live accepted ``regions`` left out); None if cancelled."""
    from src_model.agreement import agreement
    from src_model.progress import drain

    with_boxes = [(image_hash, image, [tuple(int(v) for v in r.bbox) for r in regions if r.image_hash == image_hash])
                  for image_hash, image in images]
    return drain(agreement(old_model, new_model, with_boxes, max_crops=max_crops, device=device, cancel=cancel))


def _per_image_rows(records, held_per: _PerImage, agree: Dict[str, Any]) -> Tuple[ImageScore, ...]:
    rows = []
    for image_hash in sorted(set(held_per) | set(agree["per_image"])):
        n, old, new = held_per.get(image_hash, (0, None, None))
        a = agree["per_image"].get(image_hash, {}).get("agreement")
        rows.append(ImageScore(image=_image_name(records, image_hash), n_holdout=n, old_dice=old, new_dice=new,
                               agreement=a, image_hash=image_hash))
    return tuple(rows)


def run(job: Dict[str, Any], emit: Callable[[RetrainEvent], None], cancel: Callable[[], bool]) -> int:
    """Fine-tune the store's current model with the recipe, score it; returns the exit code."""
    from src_model import load_checkpoint
    from src_model.agreement import AGREEMENT_MAX_CROPS, MIN_AGREEMENT
    from src_model.finetune import default_steps, finetune, get_recipe
    from src_model.progress import drain
    from src_model.tiling import DEFAULT_OVERLAP, DEFAULT_TILE

    from .retrain_job import (
        MIN_HOLDOUT_GLAND_PX,
        HeldPart,
        HoldoutSplit,
        holdout_shortfall,
        plural,
        training_basis,
    )
    from .store import ProjectStore, StoreError

    store = ProjectStore.open(job["store"], create=False)
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    parent = store.current_model_version
    parent_path = store.current_model_path()
    recipe = get_recipe(str(job.get("recipe") or "default"))
    overrides = _overrides(job)
    register = job.get("register")
    if register not in (None, "auto", "yes", "no"):
        raise ValueError(f"register must be auto, yes or no, got {register!r}")

    train_records = store.training_regions()
    holdout_records = store.holdout_regions()
    if not train_records:
        raise ValueError("no accepted regions to train on (held-out regions are kept for validation); "
                         "accept more corrected regions first")
    steps_asked = int(job["steps"]) if job.get("steps") else None
    semi = bool(job.get("semi_supervised", FINETUNE_SEMI_SUPERVISED))
    seed, device = int(job.get("seed", 0)), str(job.get("device", "auto"))
    # what this job trains on, as the store read now holds it; sent in Done, finish() keeps it with the new version,
    # so that a retraining with nothing new since is told before it starts (retrain_job.nothing_new)
    trained_on = training_basis(train_records, holdout_records, recipe=job.get("recipe"), steps=steps_asked,
                                semi_supervised=semi, seed=seed)
    # A region whose files are missing or damaged is left out with a warning (never read as zeros).
    to_train = []
    held = []
    skipped: List[str] = []
    unedited = set()  # held-out regions accepted unedited: the truth there is a model's own prediction
    for rec in train_records + holdout_records:
        try:
            crop, corrected, predicted = store.load_region(rec.region_id)
        except StoreError as exc:
            logger.warning("skipping damaged region %s: %s", rec.region_id, exc)
            skipped.append(rec.region_id)
            continue
        (held if rec.holdout else to_train).append((rec, crop, corrected))
        if rec.holdout and accepted_unedited(corrected, predicted):
            unedited.add(rec.region_id)
    train_records = [r for r in train_records if r.region_id not in skipped]
    if skipped:
        logger.warning("%d damaged region(s) left out of retraining: %s", len(skipped), ", ".join(skipped))
    if not to_train:
        raise ValueError(f"every region to train on is damaged ({', '.join(skipped)}); withdraw them or "
                         "restore the store from a backup")
    # The stored images, read once. All of them are the unlabelled tissue: the recipe distils towards the
    # previous model on patches of them (the accepted regions' own crops are not added to this stream). The
    # whole ones: the recipe may train the regions in them, held-out regions are scored in them, and the
    # agreement check compares the models on them.
    stored = store.stored_images(skip_damaged=True)
    unlabelled = [image for _, image, _ in stored]
    whole_images = [(digest, image) for digest, image, whole in stored if whole]
    del stored
    labelled = training_pairs(to_train, dict(whole_images), recipe.in_context)
    steps = steps_asked or default_steps(recipe, labelled)
    config = {"recipe": recipe.name, "steps": steps, "semi_supervised": semi, "seed": seed, "device": device,
              **overrides}
    emit(Started(model_version=parent, n_labelled=len(labelled), n_unlabelled=len(unlabelled),
                 n_holdout=len(held), pid=os.getpid(), config=config))
    if cancel():
        emit(Cancelled(steps_done=0))
        return 0
    import torch

    # str(): torch.__version__ is a TorchVersion, which weights_only loading refuses.
    provenance = {"parent_model": parent, "store": str(store.root), "torch": str(torch.__version__),
                  "regions": [f"{r.region_id}@{r.version}" for r in train_records]}

    def on_progress(p) -> None:
        emit(Progress(step=p.step, total=p.total, eta_s=p.eta_s,
                      metrics={k: float(v) for k, v in p.metrics.items()}))

    # threads=0: the worker set them once, politely (_lower_priority_and_threads)
    result = drain(finetune(parent_path, labelled, unlabelled, out_dir, recipe=recipe, steps=steps,
                            semi_supervised=semi, seed=seed, device=device, threads=0, cancel=cancel,
                            overrides=overrides, provenance=provenance), on_progress)
    if result.cancelled or cancel():
        emit(Cancelled(steps_done=result.steps_done))
        return 0

    emit(Evaluating(n_holdout=len(held)))
    tile = int(job.get("eval_tile", DEFAULT_TILE))
    overlap = float(job.get("eval_overlap", DEFAULT_OVERLAP))
    old_model, new_model = load_checkpoint(parent_path), load_checkpoint(result.checkpoint)
    held_per: _PerImage = {}
    gland_px = _gland_px(held)
    old = new = better = None
    parts: Dict[bool, Tuple[Optional[float], Optional[float]]] = {False: (None, None), True: (None, None)}
    if held and gland_px >= MIN_HOLDOUT_GLAND_PX:
        scored = _score_held(old_model, new_model, held, tile, overlap, device, cancel, dict(whole_images), unedited)
        if scored is None:
            emit(Cancelled(steps_done=result.steps_done))
            return 0
        old, new, held_per, parts = scored
        better = new > old
        message = f"held-out Dice {old:.3f} -> {new:.3f} on {plural(len(held), 'region')} ({gland_px} px of gland)"
        if unedited:
            message += f", {len(unedited)} of them accepted unedited"
    else:
        for rec, _, _ in held:  # each image's held-out regions, unscored
            held_per[rec.image_hash] = (held_per.get(rec.image_hash, (0, None, None))[0] + 1, None, None)
        message = holdout_shortfall(len(held), gland_px) + "; promote it by hand if wanted"
    agree = _agreement(whole_images, store.regions(), old_model, new_model, device,
                       int(job.get("agreement_crops", AGREEMENT_MAX_CROPS)), cancel)
    del whole_images
    if agree is None:
        emit(Cancelled(steps_done=result.steps_done))
        return 0
    if agree["pooled"] is not None:
        # "crops" is the engine's word: the dock says samples of the images (walk 20); this is the version's note
        message += (f"; agreement with {parent} on uncorrected tissue {agree['pooled']:.3f} "
                    f"(in {plural(agree['crops'], 'sample')} of the images)")
    else:
        message += ("; no stored image has uncorrected tissue (outside the accepted regions) to compare with "
                    "the current model")
    # the held-out regions accepted unedited and the edited ones apart, for the rule (retrain_job.rule_decision) and
    # the verdict; sent in Done
    split = HoldoutSplit(
        edited=HeldPart(sum(1 for h in held if h[0].region_id not in unedited),
                        _gland_px([h for h in held if h[0].region_id not in unedited]), *parts[False]),
        unedited=HeldPart(len(unedited), _gland_px([h for h in held if h[0].region_id in unedited]), *parts[True]),
        unedited_from={v: sum(1 for h in held if h[0].region_id in unedited and h[0].model_version == v)
                       for v in sorted({h[0].model_version for h in held if h[0].region_id in unedited})},
        regions=tuple(sorted(f"{h[0].region_id}@{h[0].version}" for h in held if h[0].region_id in unedited)))
    done = Done(checkpoint=str(result.checkpoint), old_dice=old, new_dice=new, better=better,
                n_holdout=len(held), parent_model=parent, steps_done=result.steps_done, message=message,
                agreement=agree["pooled"], min_agreement=MIN_AGREEMENT, agreement_crops=agree["crops"],
                recipe=recipe.name, per_image=_per_image_rows(store.regions(), held_per, agree),
                holdout_split=split.to_json(), trained_on=trained_on)
    if register is not None:
        from .retrain_job import finish

        record = finish(store, done, promote={"auto": None, "yes": True, "no": False}[register])
        done = dataclasses.replace(done, version=record.version, promoted=record.promoted,
                                   decision=str(record.metrics.get("decision", "")))
    emit(done)
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
