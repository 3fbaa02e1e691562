"""The dock's prediction: the worker-thread job and, for large images, the layers it fills (Qt-free).

The job runs the engine's band loop (:func:`src_model.inference.predict_into`, the loop of every
prediction path).

Pixels of black frame padding (:func:`black_padding`) are never gland: their class labels are set to
background before anything is computed from them (:func:`clear_padding`). Nor is open glass (empty
glass around the tissue, not a lumen: :func:`src_model.tissue.image_open_glass`, found once on a coarse
copy of the image before the first tile), where gland labels and uncertainty are set to 0 as each band
of rows finishes, as ``cdma predict-slide`` does on a slide's glass; a whole image's other maps too (the
hidden disagreement, entropy and branch layers: :func:`glass_maps`).

* Images up to :data:`WHOLE_IMAGE_PIXELS` are collected whole, and everything the dock shows
  after a prediction (gland instances, review regions, gland table, display range) is computed
  from the whole maps (:func:`review_outputs`). Their layers are then added, or updated in place, one
  per event-loop turn by the same :class:`LiveLayers` steps (``whole``) before the dock takes them over:
  made in one turn they froze the viewer for about a second.
* Larger images stream: the labels and uncertainty layers are allocated before the job starts
  (:class:`LiveLayers`), the job yields every finished band of rows (:class:`Rows`) and then every
  block of final gland labels (:class:`Block`), and the dock copies each into the layers a bounded
  piece at a time, so the viewer fills in as tiles finish and its event loop never waits for a
  whole image. The maps are never held whole as floats: the worker keeps a uint8 gland mask, the
  float16 uncertainty map is the live layer's own data, and instances, gland table, display range
  and review regions are computed block by block (:class:`src_model.blockwise.BlockReview`).
"""
from __future__ import annotations

import sys
import threading
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Generator, Iterator, List, Optional, Tuple

import numpy as np

from ._exit import join_at_exit
from ._layers import (
    IMAGE_KEY,
    ROLE_KEY,
    UNCERTAINTY_OPACITY,
    gland_colormap,
    names_for,
    overlay_layer,
    side_suffix,
    style_prediction,
    tried_gland_colormap,
    uncertainty_colormap,
)

#: Largest image (pixels) whose post-processing runs on the whole maps (about 40 bytes a pixel of
#: temporaries: 170 MB here); larger images are post-processed block by block.
WHOLE_IMAGE_PIXELS = 2048 * 2048
#: Largest piece (pixels) of a layer update done in one go on the GUI thread (~20 ms on a quiet 2-core machine).
UPDATE_PIXELS = 128 * 1024
#: Brightest value (every channel below it) of a pixel that is black frame padding, not tissue: some
#: scanned images are padded with pure black, which the model can take for gland.
PADDING_LEVEL = 10
#: Suffix of the layers a running prediction fills; they are removed if it is cancelled or fails.
LIVE_SUFFIX = " (predicting...)"
LIVE_ROLE = "predicting"
#: Shortest time between two updates of the live uncertainty layer's thumbnail in the layer list.
THUMBNAIL_EVERY_S = 3.0
CANCELLED_SUFFIX = " (cancelled)"


@dataclass
class Rows:
    """Finished image rows ``r0 .. r0 + len(labels)``: class labels uint8 (r, W); the uncertainty
    of these rows is already in the live uncertainty array."""

    r0: int
    labels: np.ndarray


@dataclass
class Block:
    """Final gland labels (bh, bw) of the block at ``(y0, x0)`` (large images): uint16 when they fit
    (:func:`labels_dtype`), else int32."""

    y0: int
    x0: int
    labels: np.ndarray


@dataclass
class Stage:
    """Progress of the whole job: ``step`` of ``total`` (tiles, then the finishing steps)."""

    stage: str
    step: int
    total: int
    eta_s: Optional[float] = None


#: how a prediction's error starts when the model file could not be loaded (the Predict panel then takes the file
#: off its chooser; any other error leaves the model chosen)
MODEL_REFUSED = "Cannot use this model"

def black_padding(image: np.ndarray, level: int = PADDING_LEVEL) -> np.ndarray:
    """Pixels of black frame padding: every channel below ``level``; bool (H, W)."""
    img = np.asarray(image)
    if img.ndim == 2:
        return img < level
    out = img[..., 0] < level
    for c in range(1, min(3, img.shape[2])):  # elementwise over the planes: faster than a reduction
        out &= img[..., c] < level
    return out


def clear_padding(labels: np.ndarray, image: np.ndarray) -> np.ndarray:
    """``labels`` (class labels, (H, W), changed in place) with black frame padding of ``image`` set to
    background: the dock never shows a gland on it."""
    pad = black_padding(image)
    if pad.any():
        labels[pad] = 0
    return labels


def review_outputs(prediction: Any, image: np.ndarray) -> Dict[str, Any]:
    """Instances, uncertainty map, display range, review regions and gland table (worker thread).

    All from the engine (``src_model.uncertainty``, ``src_model.postprocess``): one label per gland
    with the post-processing chosen on validation, the robust display range over tissue, review
    regions of at least 128 px centred on uncertain glands, and the per-gland table.
    """
    from src_model.postprocess import instance_labels
    from src_model.tissue import tissue_mask
    from src_model.uncertainty import display_range, gland_table, review_regions

    tissue = tissue_mask(image)
    umap = np.asarray(prediction.uncertainty, dtype=np.float32)
    instances = instance_labels(prediction)
    lo, hi = display_range(umap, tissue)
    # the map, glands and tissue computed above, so the engine does not compute them again
    ranked = review_regions(prediction, image, uncertainty_map=umap, instances=instances, tissue=tissue)
    return dict(instances=instances, uncertainty=umap, display_range=(float(lo), float(hi)),
                ranked=[(float(s), tuple(int(v) for v in b)) for s, b in ranked],
                glands=gland_table(instances, umap))


def streams(shape: Tuple[int, ...], limit: Optional[int] = None) -> bool:
    """True when an image of this shape is predicted into live layers (more than ``limit`` pixels,
    default :data:`WHOLE_IMAGE_PIXELS`)."""
    return int(shape[0]) * int(shape[1]) > (WHOLE_IMAGE_PIXELS if limit is None else int(limit))


def glass_maps(prediction: Any) -> List[np.ndarray]:
    """Every per-pixel map of a whole prediction that the dock can show, set to 0 on open glass: the gland
    labels, the uncertainty, the hidden branch disagreement, the entropy and vote maps, and the gland
    probability of the mean and of each branch (views of their gland classes)."""
    maps = [prediction.labels, prediction.uncertainty, prediction.disagreement, prediction.entropy, prediction.vote]
    maps += list(prediction.probability[1:])
    if getattr(prediction, "branch_probs", None) is not None:
        maps += [p for branch in prediction.branch_probs for p in branch[1:]]
    return [m for m in maps if m is not None]


def predict_job(model_path: str, image: np.ndarray, uncertainty_out: Optional[np.ndarray] = None,
                branches: bool = False, corrections_for: Optional[Callable[[str], List[Any]]] = None,
                batch_size: Optional[int] = None, start: Optional[threading.Event] = None
                ) -> Generator[Any, None, Any]:
    """Load the model and predict ``image``, in a worker thread.

    Args:
        model_path: checkpoint file.
        image: RGB uint8 (H, W, 3).
        uncertainty_out: None to collect the whole prediction; else the live uncertainty layer's
            data, float (H, W): the prediction streams (finished rows are written into it before
            their :class:`Rows` event is yielded) and is post-processed block by block.
        branches: keep the per-branch probabilities (whole prediction only).
        corrections_for: called with the image's store hash; its result (the store's accepted
            corrections of the image) is returned with the prediction, read here rather than
            on the GUI thread.
        batch_size: tiles per forward pass (default: 1 on a CPU, so that Cancel waits for one
            tile at most; 8 on a GPU).
        start: when given, nothing starts before it is set (a large image's live layers are added on
            the GUI thread meanwhile: :attr:`LiveLayers.started`); ``Stage("starting", 0, 0)`` is
            yielded every 20 ms until then.

    Yields:
        :class:`Stage` after each tile batch and each finishing step (``step == total`` is never
        yielded: the last step is the return), and when streaming :class:`Rows` and :class:`Block`.

    Returns:
        ``("ok", prediction or None (streamed), extra)`` where ``extra`` holds the fields of
        ``PredictResult`` (instances, uncertainty, display_range, ranked, glands, image_hash,
        corrections); or ``("error", message)`` for an unusable checkpoint.
    """
    if start is not None:  # the live layers are being added on the GUI thread: loading the model (Python code,
        # holding the GIL) and predicting would slow that work down, each turn of it a longer stall
        while not start.wait(0.02):
            yield Stage("starting", 0, 0)  # lets the worker see a Cancel meanwhile
    if uncertainty_out is not None:
        hold_switch(uncertainty_out)
    try:
        return (yield from _predict_job(model_path, image, uncertainty_out, branches, corrections_for, batch_size))
    finally:  # the end of the job; a cancelled job's generator is closed only when its worker is collected,
        if uncertainty_out is not None:  # so the live layers release it too (LiveLayers.hide, .adopt)
            release_switch(uncertainty_out)


#: The interpreter's thread switch interval while a large image's prediction runs (Python's default:
#: 5 ms). While the worker runs Python code (the block-by-block post-processing, the review regions),
#: the GUI thread waits up to the interval for the GIL after each call that released it, and a redraw
#: makes hundreds of them (OpenGL, Qt): 100 such calls took 339 ms at 5 ms and 115 ms at 1 ms on the
#: 2-core test machine.
SWITCH_INTERVAL_S = 0.001
_switch: Dict[str, Any] = {"before": None, "holders": set(), "released": weakref.WeakValueDictionary(),
                           "lock": threading.Lock()}


def hold_switch(owner: np.ndarray) -> None:
    """Lower the thread switch interval to :data:`SWITCH_INTERVAL_S` (never raise it) while ``owner``
    (a streamed prediction's live uncertainty array) holds it; ignored once ``owner`` released it."""
    with _switch["lock"]:
        if _switch["released"].get(id(owner)) is owner or id(owner) in _switch["holders"]:
            return
        if not _switch["holders"]:
            _switch["before"] = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch["before"], SWITCH_INTERVAL_S))
        _switch["holders"].add(id(owner))


def release_switch(owner: np.ndarray) -> None:
    """Release ``owner``'s hold (once is enough; its later holds are ignored); the interval is restored
    when no prediction holds it."""
    with _switch["lock"]:
        _switch["released"][id(owner)] = owner  # forgotten with the array: ids are reused
        if id(owner) in _switch["holders"]:
            _switch["holders"].discard(id(owner))
            if not _switch["holders"] and _switch["before"] is not None:
                sys.setswitchinterval(_switch["before"])


def _predict_job(model_path: str, image: np.ndarray, uncertainty_out: Optional[np.ndarray], branches: bool,
                 corrections_for: Optional[Callable[[str], List[Any]]], batch_size: Optional[int]
                 ) -> Generator[Any, None, Any]:
    """:func:`predict_job`'s body."""
    import torch

    from src_model.bands import tile_starts
    from src_model.blockwise import BlockReview, block_origins
    from src_model.checkpoint import CheckpointError, load_model
    from src_model.inference import MapCollector, predict_into
    from src_model.runtime import resolve_device, torch_threads
    from src_model.tiling import DEFAULT_OVERLAP, DEFAULT_TILE
    from src_model.tissue import clear_open_glass, image_open_glass

    from .project.store import hash_image

    torch.set_num_threads(torch_threads("viewer"))
    try:
        model = load_model(model_path)
    except (CheckpointError, FileNotFoundError) as exc:
        return ("error", f"{MODEL_REFUSED}: {exc}")
    h, w = image.shape[:2]
    stream = uncertainty_out is not None
    if batch_size is None:
        batch_size = 8 if resolve_device("auto").type == "cuda" else 1
    n_tiles = len(tile_starts(max(h, DEFAULT_TILE), DEFAULT_TILE, DEFAULT_OVERLAP)) * len(
        tile_starts(max(w, DEFAULT_TILE), DEFAULT_TILE, DEFAULT_OVERLAP))
    # finishing steps: post-processing (whole, or one per block), then hashing and reading corrections
    total = n_tiles + (len(block_origins(h, w)) if stream else 1) + 2
    collector = None if stream else MapCollector(h, w, branches)
    mask = np.zeros((h, w), np.uint8) if stream else None
    ready: List[Rows] = []
    glass, factor = image_open_glass(image)

    def sink(rows) -> None:
        if collector is not None:
            collector(rows)
            return
        r0, r1 = rows.r0, rows.r0 + rows.rows
        uncertainty_out[r0:r1] = rows.uncertainty.numpy()
        mask[r0:r1] = rows.labels.numpy()
        clear_padding(mask[r0:r1], image[r0:r1])
        clear_open_glass(glass, factor, r0, image[r0:r1], mask[r0:r1], uncertainty_out[r0:r1])
        ready.append(Rows(r0, mask[r0:r1]))  # a view: the mask's rows are final, and queued rows cost nothing

    for event in predict_into(sink, model, image, batch_size=batch_size, device="auto"):
        yield Stage("predict", event.step, total, event.eta_s)
        while ready:
            yield ready.pop(0)
    while ready:
        yield ready.pop(0)
    step = n_tiles
    if collector is not None:
        yield Stage("glands", step, total)
        prediction = collector.prediction()
        clear_open_glass(glass, factor, 0, image, *glass_maps(prediction))
        prediction.labels = clear_padding(np.array(prediction.labels, copy=True), image)
        extra = review_outputs(prediction, image)
        step += 1
    else:
        prediction = None
        review = BlockReview(mask, uncertainty_out, image)
        small = labels_dtype((h, w))
        for y0, x0, labels in review.blocks():
            if labels.size and labels.dtype != small and int(labels.max()) <= np.iinfo(small).max:
                # in the live layer's dtype: half the memory while queued for the GUI thread, no cast there
                labels = labels.astype(small)
            yield Block(y0, x0, labels)
            step += 1
            yield Stage("glands", step, total)
        extra = dict(instances=None, uncertainty=uncertainty_out, display_range=review.display_range(),
                     ranked=review.regions(), glands=review.glands())
    yield Stage("finishing", step, total)
    extra["image_hash"] = hash_image(image)
    yield Stage("finishing", step + 1, total)
    extra["corrections"] = corrections_for(extra["image_hash"]) if corrections_for is not None else None
    return ("ok", prediction, extra)


# --------------------------------------------------------------------------- live layers

#: Modules napari imports on the GUI thread the first time it creates a labels layer (pandas for its
#: features table, scikit-image for its colours, vispy's line visuals for its overlays): 0.8 s of the
#: first labels layer's creation on a busy 2-core machine, imported beforehand in a thread of their own.
WARM_MODULES = ("pandas", "skimage.color", "skimage.exposure", "scipy.linalg", "vispy.visuals.line.dash_atlas",
                "napari._vispy.layers.labels", "napari._vispy.visuals.labels", "napari._vispy.overlays.labels_polygon",
                "napari._vispy.overlays.brush_circle")
_warming: List[Any] = []
#: Modules the prediction itself needs, on the worker thread or at the hand-over: torch (1.5 s to import on a
#: quiet 2-core machine), the engine's modules, and zarr for the project store (0.3 s, imported on the GUI
#: thread when the first prediction is saved). Imported in a thread of their own when the dock opens
#: (:func:`warm_engine`): an import holds the GIL for long stretches (loading torch's libraries), which stalled
#: the event loop for 0.2-0.8 s at a time during the first seconds after the Predict click.
ENGINE_MODULES = ("torch", "src_model.checkpoint", "src_model.inference", "src_model.blockwise", "src_model.runtime",
                  "src_model.postprocess", "src_model.uncertainty", "src_model.tissue", "zarr",
                  "napari_cdma.project.store")
_warming_engine: List[Any] = []


def _import_all(names: Tuple[str, ...]) -> None:
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # a module a version lacks, or a broken optional one: imported (or not) on first use
            pass


def _warm_engine() -> None:
    _import_all(ENGINE_MODULES)
    try:  # building a model (on torch's meta device) imports torch's compiler stack the first time: 800 modules,
        # 2 s on a quiet 2-core machine, in the worker after the click unless done here once
        from src_model.checkpoint import bundled_model_path, load_model

        load_model(bundled_model_path())
    except Exception:  # no bundled model, or torch missing: the worker reports it when it predicts
        pass


def warm_engine() -> Any:
    """Import :data:`ENGINE_MODULES` and load the bundled model once (then dropped) in a daemon thread (once
    per process); the thread."""
    return _start_once(_warming_engine, _warm_engine, "napari-cdma-warm-engine")


#: When each warm-up thread ended (thread name -> ``time.perf_counter()``).
warm_ended: Dict[str, float] = {}


def _start_once(threads: List[Any], target: Callable[[], None], name: str) -> Any:
    """The daemon thread running ``target``, started the first time (kept in ``threads``, one per process); its
    end time goes to :data:`warm_ended`."""
    if not threads:
        def run() -> None:
            import time

            try:
                target()
            finally:
                warm_ended[name] = time.perf_counter()

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        join_at_exit(thread)  # a process exiting while it loads the model aborted (napari_cdma._exit)
        threads.append(thread)
    return threads[0]


def warmed() -> bool:
    """True once every warm-up thread started so far (:func:`warm_up`, :func:`warm_engine`) has finished."""
    return not any(t.is_alive() for t in (*_warming, *_warming_engine))


#: The characters vispy's text visual renders to measure a font (ascent and descent) the first time a Shapes
#: layer is drawn in a canvas: 40 ms of GUI time on a quiet 2-core machine (SDF of each glyph, on the CPU),
#: inside the first draw of the first review-region layer a prediction adds.
MEASURE_GLYPHS = "\u00c5\u00c9\u00d1\u0150jgpqy "


def canvas_of(viewer: Any) -> Any:
    """napari's vispy canvas of ``viewer`` (None for a viewer without a window, or a napari that no longer has
    it there: it has no public accessor, and the private one warns inside a plugin's dock)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return getattr(getattr(getattr(viewer, "window", None), "_qt_viewer", None), "canvas", None)


def warm_glyphs(viewer: Any) -> None:
    """Load :data:`MEASURE_GLYPHS` into the font cache of ``viewer``'s canvas (40 ms, once per canvas), so that
    no Shapes layer's first draw does it. napari's canvas font cache is not public: where this napari version
    lacks it, nothing is done."""
    try:
        info = canvas_of(viewer).font_info()
        font = info.font_manager.get_font(info.face)
        for char in MEASURE_GLYPHS:
            font[char]
    except Exception:
        return


def warm_finished() -> bool:
    """True once both warm-up threads (:func:`warm_up`, :func:`warm_engine`) have been started and have finished."""
    return bool(_warming) and bool(_warming_engine) and warmed()


def warm_up() -> Any:
    """Import :data:`WARM_MODULES` in a daemon thread (once per process), and fill vispy's cache of
    dash patterns there (computed in pure Python the first time a line visual is made: 0.18 s of
    the first labels layer's creation, for its polygon overlay, on a busy 2-core machine); the thread."""
    def run() -> None:
        _import_all(WARM_MODULES)  # a module a napari or vispy version lacks is created on first use instead
        try:  # vispy keeps the patterns in an lru_cache: made here once, they are not made again
            from vispy.visuals.line.dash_atlas import DashAtlas

            DashAtlas()
        except Exception:
            pass

    return _start_once(_warming, run, "napari-cdma-warm-up")


@contextmanager
def quiet_insert(viewer: Any) -> Iterator[None]:
    """A context in which layers added to ``viewer`` do not become its selected layer: selecting one
    rebuilds napari's layer-controls panel (~150 ms of GUI time each on a busy 2-core machine), and a
    running prediction should not take the user's selection anyway. Without effect on a napari whose
    layer list has no such switch (napari has no public one)."""

    def switch(value: bool) -> Optional[bool]:
        with warnings.catch_warnings():  # napari warns of private access from a plugin
            warnings.simplefilter("ignore", FutureWarning)
            try:
                before = getattr(viewer.layers, "_activate_on_insert", None)
                if not isinstance(before, bool):
                    return None
                viewer.layers._activate_on_insert = value
                return before
            except Exception:
                return None

    before = switch(False)
    try:
        yield
    finally:
        if before is not None:
            switch(before)


#: GL shader programs of removed live layers, kept for the life of the process (see :meth:`LiveLayers.remove`).
KEPT_PROGRAMS: List[Any] = []


def gl_programs(viewer: Any, layers: List[Any]) -> List[Any]:
    """The vispy shader programs that draw ``layers`` on the viewer's canvas (none for a viewer
    without a window, or a napari that no longer exposes its canvas)."""
    table = getattr(canvas_of(viewer), "layer_to_visual", None) or {}
    nodes = [getattr(table[ly], "node", None) for ly in layers if ly in table]
    programs = []
    while nodes:
        node = nodes.pop()
        if node is None:
            continue
        nodes.extend(getattr(node, "children", ()))
        nodes.extend(getattr(node, "_subvisuals", ()))
        if getattr(node, "_program", None) is not None:
            programs.append(node._program)
    return programs


def _meta(image_name: str) -> Dict[str, str]:
    return {ROLE_KEY: LIVE_ROLE, IMAGE_KEY: image_name}


#: Smallest area (pixels) of a gland the dock's post-processing keeps (about its minimum object size,
#: src_model.postprocess.DEFAULT_INSTANCES.min_size, halved for glands split at a neck; a number, not an import:
#: tests/test_postprocess.py checks it): bounds the number of glands an image can hold.
MIN_GLAND_PIXELS = 650


def labels_dtype(shape: Tuple[int, ...]) -> np.dtype:
    """uint16 for the live labels when the image cannot hold more glands than uint16 counts (napari
    shows uint16 labels without converting them: a 6000 x 6000 layer appears in a fraction of the
    time of an int32 one), else int32."""
    fits = int(shape[0]) * int(shape[1]) // MIN_GLAND_PIXELS < np.iinfo(np.uint16).max
    return np.dtype(np.uint16 if fits else np.int32)


def pyramid(data: np.ndarray, smallest: int = 512) -> List[np.ndarray]:
    """Strided views of ``data`` (no copies), each half the size of the one before, down to
    ``smallest`` px a side: a multiscale layer over them slices only what the canvas shows."""
    levels = [data]
    while max(levels[-1].shape) > smallest:
        k = 2 ** len(levels)
        levels.append(data[::k, ::k])
    return levels


class LiveLayers:
    """The labels and uncertainty layers a large image's prediction fills while it runs (GUI
    thread); or, with ``whole`` (a small image's finished prediction: ``labels``, ``uncertainty``,
    ``display_range``, ``prediction``, ``image``, ``entropy``, ``branches``, ``fill``), the layers
    that show it, added in the same steps (:meth:`_build_whole`).

    Both arrays are allocated at the image's shape before the worker starts: labels uint16 or
    int32 (:func:`labels_dtype`; one label per gland once finished) and uncertainty float16 shown
    through a pyramid of strided views, so that refreshing it costs what the canvas shows, not
    the image size. The layers are added one per event-loop turn (:meth:`build_step`: the
    uncertainty layer, the labels layer hidden and styled, then shown; then, when the image has
    none, its empty review-region and accepted-region Shapes layers, which the hand-over fills), so
    that napari's work for each, and the redraw after it, are separate short stalls rather than one
    long one.
    Labels are written with ``Labels.data_setitem``, which redraws only the changed extent; its
    undo history is cleared after each write (a prediction is not an edit).
    """

    def __init__(self, viewer: Any, image_name: str, shape: Tuple[int, int],
                 whole: Optional[Dict[str, Any]] = None, tried: bool = False) -> None:
        self.viewer = viewer
        self.image_name = image_name
        #: the labels layer is drawn as a side prediction (a "(version)" layer: the tried colour, fainter) from the
        #: start: ``tried`` (a model that is not the store's current one) on an image that has a prediction layer
        #: already, which the dock then writes beside it (its ``_target_layer``). A guess made at the start: the
        #: dock decides at the hand-over (it also writes aside a prediction that would overwrite unaccepted edits,
        #: and writes a model's prediction over the layer that model made), and :meth:`adopt` restyles the layer
        #: when the guess was wrong (review 18: the live layer had the current model's four colours until then)
        self.side = bool(tried) and names_for(image_name)["prediction"] in viewer.layers
        #: None for a large image's prediction (filled as it runs); for a small image's finished prediction,
        #: what its layers show (:meth:`for_result`): they are added from it one per event-loop turn as well
        self.whole = whole
        if whole is None:
            self.uncertainty = np.zeros(shape, np.float16)
            self.labels = np.zeros(shape, labels_dtype(shape))
            #: the model's own labels: while a large image streams they are the layer's (nothing else writes to
            #: it), copied from it at the hand-off (:meth:`paste`), not kept beside it: 72 MB of the process's
            #: peak, which comes in the block-by-block post-processing
            self.model_labels: Optional[np.ndarray] = None
        else:
            self.uncertainty = np.asarray(whole["uncertainty"], dtype=np.float32)
            self.labels = np.array(whole["labels"], dtype=np.int32, copy=True)  # the layer's (corrections go there)
            self.model_labels = np.array(whole["labels"], dtype=np.int32, copy=True)
        self.largest = int(self.model_labels.max(initial=0)) if whole is not None else 0  # largest label written
        #: a small image's other layers (role -> layer: "disagreement", "entropy", "branch1".."branch3")
        self.extras: Dict[str, Any] = {}
        #: a small image's layers of an earlier prediction updated in place rather than added (a layer removed
        #: at the hand-over cost napari a garbage collection: 0.7 s of GUI time each on a busy 2-core machine)
        self.updated: List[Any] = []
        #: ``(role, layer, data, contrast limits, visible)`` of each layer in :attr:`updated` before it was
        #: updated: put back when the prediction turns out to go to a side layer (:meth:`adopt`)
        self.previous: List[Tuple[str, Any, Any, Tuple[float, float], bool]] = []
        self.unc_layer: Any = None
        self.labels_layer: Any = None
        #: the empty review-region and accepted-region Shapes layers this prediction added (the image had none)
        self.overlays: List[Any] = []
        self.ready = False  # both layers in the viewer and shown: pieces can be written
        self.built = False  # every step done
        #: set once every step is done (or the layers are dropped or handed over): the worker starts then
        self.started = threading.Event()
        self._thumbnail_at = 0.0
        #: the thread copying the layer's labels to :attr:`model_labels` at the hand-off, and whether the layer is
        #: editable once it is done (:meth:`finish_copy`)
        self._copying: Optional[threading.Thread] = None
        self._editable_after_copy = True
        self._steps = self._build()
        self.build_step()  # the uncertainty layer's model at once (cheap)

    def _build(self) -> Generator[None, None, None]:
        """The layers, one short piece of GUI work per event-loop turn: each layer is made (napari's
        model: cheap), added hidden (its controls and visuals), then shown (its first slice and
        texture upload, drawn at the next redraw), so that no turn does two of them."""
        from napari.layers import Image

        names = names_for(self.image_name)
        warm = warm_up()
        whole = self.whole
        if whole is not None:  # a small image's finished prediction
            yield from self._build_whole(names)
            return
        unc = Image(pyramid(self.uncertainty), multiscale=True, name=names["uncertainty"] + LIVE_SUFFIX,
                    colormap=uncertainty_colormap(),  # the same as a finished prediction's layer
                    contrast_limits=(0.0, 1.0), opacity=UNCERTAINTY_OPACITY, blending="translucent",
                    visible=False, metadata=_meta(self.image_name))
        yield
        with quiet_insert(self.viewer):
            self.viewer.layers.append(unc)
        self.unc_layer = unc
        yield
        unc.visible = True
        yield
        yield from self._build_labels(names, warm, fill=True)
        yield from self._build_overlays(names)

    def _build_labels(self, names: Dict[str, str], warm: Any, fill: bool) -> Generator[None, None, None]:
        """The labels layer's steps (see :meth:`_build`)."""
        from napari.layers import Labels

        while warm.is_alive():  # napari's labels modules are still being imported, off this thread
            yield
        # styled before it is added and shown: napari slices a big labels layer once, not three times.
        # Filled, not outlined: napari computes outlines over the whole layer whenever it slices it
        # (3.9 s of the 6 s it took to show an empty 6000 x 6000 layer with outlines on a busy 2-core
        # machine); "Fill glands" off draws them later, at that cost.
        labels = Labels(self.labels, name=names["prediction"] + LIVE_SUFFIX,
                        colormap=tried_gland_colormap() if self.side else gland_colormap(),
                        visible=False, metadata=_meta(self.image_name))
        style_prediction(labels, fill=fill, secondary=self.side)
        labels.editable = False
        yield
        with quiet_insert(self.viewer):
            self.viewer.layers.append(labels)
        self.labels_layer = labels
        yield
        labels.visible = True
        self.ready = True  # the pieces are written from the next turn on, while the steps below go on
        yield

    def _build_overlays(self, names: Dict[str, str]) -> Generator[None, None, None]:
        """The empty review-region and accepted-region layers' steps (see :meth:`_build`), then done."""
        # the image's review-region and accepted-region layers, empty: made at the hand-over, each Shapes layer
        # took 0.4 s of GUI time to add and 0.3-0.7 s to draw the first time (building its shaders) on a busy
        # 2-core machine, in one event-loop turn; here they are added, and drawn once, in turns of their own
        # while the worker predicts, then hidden (every redraw of the canvas would draw them too) until the
        # hand-over, which shows and fills them (adopt)
        if any(names[role] not in self.viewer.layers for role in ("tiles", "accepted")):
            # the glyphs the first Shapes draw measures its font with, in a turn of their own (loaded already when
            # the dock's warm-up was over before the click: then nothing is done)
            warm_glyphs(self.viewer)
            yield
        for role in ("tiles", "accepted"):
            if names[role] in self.viewer.layers:  # an earlier prediction's: filled at the hand-over
                continue
            overlay = overlay_layer(self.image_name, role, visible=False)
            yield
            with quiet_insert(self.viewer):
                self.viewer.layers.append(overlay)
            self.overlays.append(overlay)
            yield
            overlay.visible = True
            yield
            yield  # a redraw in between, whatever the timing of the event loop
            overlay.visible = False
            yield
        self.built = True
        self.started.set()

    def _build_whole(self, names: Dict[str, str]) -> Generator[None, None, None]:
        """A small image's layers from its finished prediction (:attr:`whole`), one step per event-loop turn as
        :meth:`_build` adds a large image's: each image layer
        (:func:`~napari_cdma._layers.prediction_image_layers`) is made and added hidden, then shown, or, when the
        image already has a layer of that name and kind (an earlier prediction's), updated in place in one step;
        the labels layer is added the same way when the image has no prediction layer yet, else written at the
        hand-over (:meth:`adopt`: the dock chooses the layer it goes to); then the review-region layers as for
        a large image."""
        from napari.layers import Image

        from ._layers import _role, prediction_image_layers, upsert_layer

        warm = warm_up()
        whole = self.whole
        for role, data, props in prediction_image_layers(
                whole["uncertainty"], whole["display_range"], whole.get("prediction"), whole.get("image"),
                entropy=bool(whole.get("entropy")), branches=bool(whole.get("branches"))):
            final = names[role]
            existing = self.viewer.layers[final] if final in self.viewer.layers else None
            if isinstance(existing, Image) and not existing.multiscale and not existing.rgb:
                self.previous.append((role, existing, existing.data, tuple(existing.contrast_limits), existing.visible))
                upsert_layer(self.viewer, final, data(), "image", metadata=_role(role, self.image_name), **props)
                self.updated.append(existing)
                self._keep(role, existing)
                yield
            else:
                visible = props.pop("visible", True)
                layer = Image(data(), name=final + LIVE_SUFFIX, visible=False, metadata=_meta(self.image_name),
                              **props)
                yield
                with quiet_insert(self.viewer):
                    self.viewer.layers.append(layer)
                self._keep(role, layer)  # from now on hidden or removed with the others if it is dropped
                yield
                if visible:
                    layer.visible = True
                    yield
        if names["prediction"] not in self.viewer.layers:
            yield from self._build_labels(names, warm, fill=bool(self.whole.get("fill", False)))
        self.ready = True
        yield from self._build_overlays(names)

    def _keep(self, role: str, layer: Any) -> None:
        if role == "uncertainty":
            self.unc_layer = layer
        else:
            self.extras[role] = layer

    def build_step(self) -> bool:
        """Take the next step of adding the layers (GUI thread), if any is left; True once the labels and
        uncertainty layers are in the viewer and shown (the review-region layers come in later steps)."""
        if not self.built:
            next(self._steps, None)
        return self.ready

    def alive(self) -> bool:
        """False when the user removed a layer this prediction fills."""
        return all(ly is None or ly in self.viewer.layers for ly in (self.labels_layer, self.unc_layer))

    def room_for(self, largest: int) -> None:
        """Widen the labels to int32 if ``largest`` does not fit their dtype (napari then slices the
        whole layer once)."""
        layer = self.labels_layer
        if largest > np.iinfo(layer.data.dtype).max:
            layer.data = layer.data.astype(np.int32)
        if self.model_labels is not None and largest > np.iinfo(self.model_labels.dtype).max:
            self.model_labels = self.model_labels.astype(np.int32)

    def write_labels(self, y0: int, x0: int, values: np.ndarray, model: bool = True) -> None:
        """Set the labels of a block (changed pixels only), redrawing just that extent; ``model``:
        they are the model's own labels (not a pasted correction), kept in :attr:`model_labels` too when it is
        kept apart from the layer."""
        layer = self.labels_layer
        if values.size:
            top = int(values.max())
            self.room_for(top)
            self.largest = max(self.largest, top)
        bh, bw = values.shape
        if model and self.model_labels is not None:
            self.model_labels[y0:y0 + bh, x0:x0 + bw] = values
        changed = layer.data[y0:y0 + bh, x0:x0 + bw] != values
        yy, xx = np.nonzero(changed)
        if yy.size:
            layer.data_setitem((yy + y0, xx + x0), values[yy, xx].astype(layer.data.dtype, copy=False))
            # a prediction is not an edit to undo: napari clears the undo history when editing is switched off
            layer.editable = True
            layer.editable = False

    def refresh_uncertainty(self) -> None:
        """Redraw the uncertainty layer's view (the level and extent the canvas shows: its cost is the
        canvas size, not the image's); its layer-list thumbnail at most every :data:`THUMBNAIL_EVERY_S`,
        and its extent (unchanged while it fills) not at all."""
        import time

        now = time.perf_counter()
        thumbnail = now - self._thumbnail_at >= THUMBNAIL_EVERY_S
        try:
            self.unc_layer.refresh(thumbnail=thumbnail, extent=False, highlight=False)
        except TypeError:  # a napari without these switches
            self.unc_layer.refresh()
        if thumbnail:
            self._thumbnail_at = now

    def _added(self) -> List[Any]:
        """The layers this prediction added (not those of an earlier prediction it updated in place)."""
        return [ly for ly in (self.labels_layer, self.unc_layer, *self.extras.values(), *self.overlays)
                if ly is not None and not any(ly is u for u in self.updated)]

    def hide(self) -> None:
        """Hide both layers and mark them cancelled (cheap: nothing is sliced or collected); stop
        adding them."""
        release_switch(self.uncertainty)
        self._steps.close()
        self.started.set()  # a worker still waiting to start runs to its end at once (it is being cancelled)
        for layer in self._added():
            if layer in self.viewer.layers:
                layer.visible = False
                layer.name = (layer.name.replace(LIVE_SUFFIX, CANCELLED_SUFFIX) if layer.name.endswith(LIVE_SUFFIX)
                              else layer.name + CANCELLED_SUFFIX)

    def remove(self) -> None:
        """Remove its layers (a cancelled or failed prediction must not look finished). napari
        runs the garbage collector for every layer removed (a few hundred ms in a busy process).

        Their GL shader programs are kept (:data:`KEPT_PROGRAMS`: a few kB each, and the layers'
        textures), never deleted: with Mesa's software renderer (Xvfb, remote desktops), deleting
        the programs of these two layers crashed the process (a segfault in ``glDrawArrays``) at
        the second redraw after the removal, whichever layers were left.
        """
        self._steps.close()
        self.started.set()
        layers = [ly for ly in self._added() if ly in self.viewer.layers]
        KEPT_PROGRAMS.extend(gl_programs(self.viewer, layers))
        for layer in layers:
            self.viewer.layers.remove(layer)

    def adopt(self, labels_name: str, display_range: Tuple[float, float], secondary: bool) -> Dict[str, Any]:
        """Make the live layers the image's prediction layers (large images: no copy, no full redraw).

        The glands stay filled whatever the dock's "Fill glands" says: outlining a large layer costs
        seconds of GUI time (see :class:`LiveLayers`); ticking and unticking "Fill glands" draws them.

        The labels layer takes the name ``labels_name`` and the uncertainty layer the image's
        uncertainty name (layers of those names, and the image's stale disagreement, entropy and
        branch layers from an earlier prediction, are removed). The review-region and accepted-region
        layers it added (:attr:`overlays`, hidden since their first draw) are shown, still empty: the dock
        fills them in the next event-loop turns.

        A side prediction (``labels_name`` is the image's prediction name plus a suffix: a version being
        tried, or a prediction written aside to keep unaccepted edits) leaves the image's own maps as they
        were: those updated in place get their data back, and the side prediction's uncertainty,
        disagreement, entropy and branch maps go to hidden layers named with the same suffix
        (``"<image> uncertainty (v0002)"``).
        """
        release_switch(self.uncertainty)
        self._steps.close()  # a review-region layer not added yet is made by the dock, as for a small image
        self.started.set()
        names = names_for(self.image_name)
        suffix = side_suffix(self.image_name, labels_name)
        if suffix:
            self._to_side_layers(suffix)
        roles = ("uncertainty", "disagreement", "entropy", "branch1", "branch2", "branch3")
        map_names = {role: names[role] + suffix for role in roles}
        stale = [labels_name, *map_names.values()]
        if self.labels_layer is None:  # a small image that had a prediction layer: written where the dock says
            self._write_whole_labels(labels_name)
        own = (self.labels_layer, self.unc_layer, *self.extras.values())
        for name in stale:
            if name in self.viewer.layers and self.viewer.layers[name] not in own:
                self.viewer.layers.remove(name)
        for role, layer in {**self.extras, "uncertainty": self.unc_layer}.items():
            layer.name = map_names[role]
            layer.metadata = {ROLE_KEY: role, IMAGE_KEY: self.image_name}
            if suffix:
                layer.visible = False
        self.labels_layer.name = labels_name
        self.labels_layer.metadata = {ROLE_KEY: "prediction", IMAGE_KEY: self.image_name}
        self.unc_layer.contrast_limits = display_range
        for overlay in self.overlays:  # drawn once while predicting, hidden until now; the dock fills them
            if overlay in self.viewer.layers:
                overlay.visible = True
        if self.whole is not None:  # a small image: the dock's "Fill glands" (outlining it is cheap)
            style_prediction(self.labels_layer, fill=bool(self.whole.get("fill", False)), secondary=secondary)
        elif secondary or self.side:  # drawn as the dock decided, whatever the live layer guessed (:attr:`side`)
            style_prediction(self.labels_layer, fill=True, secondary=secondary)
        self.labels_layer.editable = True
        return {**self.extras, "prediction": self.labels_layer, "uncertainty": self.unc_layer}

    def _copy_in_thread(self) -> None:
        """Copy the layer's labels to :attr:`model_labels` in a thread (numpy copies without the GIL): on the
        GUI thread, copying 6000 x 6000 uint16 labels into new memory took up to 100 ms at load 3-4. The layer
        is not editable until :meth:`finish_copy`, so no stroke gets into the copy."""
        layer = self.labels_layer
        out = np.empty_like(layer.data)
        self._editable_after_copy = bool(layer.editable)
        layer.editable = False
        self._copying = threading.Thread(target=np.copyto, args=(out, layer.data), daemon=True,
                                         name="napari-cdma copy model labels")
        self._copying.start()
        self.model_labels = out

    def finish_copy(self) -> None:
        """Wait for the copy of the model's labels (if one runs) and make the layer editable again (GUI thread,
        a turn after the hand-off)."""
        copying, self._copying = self._copying, None
        if copying is None:
            return
        copying.join()
        if self.labels_layer is not None:
            self.labels_layer.editable = self._editable_after_copy

    def _to_side_layers(self, suffix: str) -> None:
        """The image's own map layers that this prediction updated in place get their data back; this
        prediction's maps of those roles go to (hidden) layers named with ``suffix``."""
        from ._layers import _role, upsert_layer

        names = names_for(self.image_name)
        for role, layer, data, limits, visible in self.previous:
            mine, my_limits = layer.data, tuple(layer.contrast_limits)
            layer.data, layer.contrast_limits, layer.visible = data, limits, visible
            side = upsert_layer(self.viewer, names[role] + suffix, mine, "image", metadata=_role(role, self.image_name),
                                contrast_limits=my_limits, colormap=layer.colormap, opacity=layer.opacity,
                                blending=layer.blending, gamma=layer.gamma, visible=False)
            self._keep(role, side)
        self.previous = []

    def _write_whole_labels(self, labels_name: str) -> None:
        """A small image's labels into the layer ``labels_name``: updated in place if it is a Labels layer (as
        ``show_prediction`` does), else added without taking the selection."""
        from napari.layers import Labels

        from ._layers import _role, upsert_layer

        existing = self.viewer.layers[labels_name] if labels_name in self.viewer.layers else None
        if isinstance(existing, Labels) and existing.data.shape == self.labels.shape and \
                (existing.metadata or {}).get(ROLE_KEY) == "prediction":
            # a prediction layer of the dock's (gland colours): only the pixels that changed are written, and
            # redrawn (napari slices a labels layer again for each of data, colormap and refresh: 0.1-0.2 s)
            self.labels_layer = existing
            if np.count_nonzero(existing.data != self.labels) * 2 < self.labels.size:
                self.write_labels(0, 0, self.labels, model=False)
            else:
                existing.data = self.labels
            existing.metadata.update(_role("prediction", self.image_name))
            return
        with quiet_insert(self.viewer):
            self.labels_layer = upsert_layer(self.viewer, labels_name, self.labels, "labels",
                                             metadata=_role("prediction", self.image_name))
        self.labels_layer.colormap = gland_colormap()

    def paste(self, corrections: List[Tuple[Tuple[int, int, int, int], np.ndarray]]) -> Tuple[np.ndarray, int]:
        """Paste accepted corrections into the adopted labels layer, redrawing only their boxes.

        Returns:
            The model's own labels (:attr:`model_labels`: a large image's are copied from the layer here,
            before any correction is pasted; for the dock's state) and the number of corrections pasted.
        """
        from ._layers import paste_corrections

        layer = self.labels_layer
        if self.model_labels is None:  # streamed: the layer holds the model's labels until now
            if corrections:  # copied before they are pasted
                self.model_labels = np.array(layer.data, copy=True)
            else:
                self._copy_in_thread()
        if not corrections:
            return self.model_labels, 0
        # pasted glands that join no gland across their box's edge get ids above every id in the layer (room_for
        # may widen model_labels too)
        self.room_for(self.largest + sum(int(np.asarray(m).max(initial=0)) for _, m in corrections))
        original = self.model_labels
        h, w = layer.data.shape
        boxes = [(slice(y0, min(y1, h)), slice(x0, min(x1, w))) for (y0, x0, y1, x1), _ in corrections]
        before = [np.array(layer.data[box]) for box in boxes]
        n = paste_corrections(layer.data, corrections)  # in place: joined or new ids (above every id in the layer)
        editable = layer.editable
        for box, old in zip(boxes, before, strict=True):  # skipped ones are unchanged: nothing to redraw
            pasted = layer.data[box].copy()
            layer.data[box] = old
            self.write_labels(box[0].start, box[1].start, pasted, model=False)
        layer.editable = editable
        return original, n


def pieces(event: Any) -> List[Any]:
    """Split a :class:`Rows` or :class:`Block` into row ranges of at most :data:`UPDATE_PIXELS` pixels."""
    labels = event.labels
    rows = max(1, UPDATE_PIXELS // max(1, labels.shape[1]))
    if labels.shape[0] <= rows:
        return [event]
    if isinstance(event, Rows):
        return [Rows(event.r0 + i, labels[i:i + rows]) for i in range(0, labels.shape[0], rows)]
    return [Block(event.y0 + i, event.x0, labels[i:i + rows]) for i in range(0, labels.shape[0], rows)]


__all__ = ["Block", "CANCELLED_SUFFIX", "LIVE_SUFFIX", "LiveLayers", "Rows", "Stage", "WHOLE_IMAGE_PIXELS",
           "black_padding", "clear_padding", "labels_dtype", "pieces", "predict_job", "pyramid",
           "quiet_insert", "hold_switch", "release_switch", "review_outputs", "streams", "warm_engine",
           "warm_finished", "warm_glyphs", "warm_up", "warmed"]
