"""Qt-free glue of the slide panel: the viewer's visible box, the store chunks under it, the Predict
view job (run in a worker thread), review regions over the predicted area, and the bounded edit
window read from the store and written back into it (its jobs, :func:`edit_window_job`,
:func:`accept_window_job`, :func:`withdraw_window_job` and :func:`undo_withdrawn_job`, run in a worker thread
too), and where the panel's outlines run.

Coordinates: napari's world coordinates of a slide are its level-0 pixels (the reader's layers are
scaled so). A prediction store (:mod:`src_model.slide_store`) holds the slide's level ``L`` at
``info.downsample`` level-0 pixels per store pixel; "store pixels" below are those.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Generator, List, Optional, Sequence, Tuple, Union

import numpy as np

from src_model.tiling import boxes_overlap  # torch-free

Box = Tuple[int, int, int, int]
SLIDE_KEY, STORE_KEY = "cdma_slide", "cdma_store"  # layer metadata of the reader's layers
#: Most chunks one "Predict view" computes (those nearest the view's centre first).
MAX_VIEW_CHUNKS = 16
#: Largest side of the editable window, store pixels.
MAX_EDIT_SIDE = 2048
#: Chunks, of those with the most uncertainty per pixel, in which review regions are searched.
MAX_REVIEW_CHUNKS = 32
#: Review regions listed.
N_REVIEW = 10
#: Smallest side of a slide's review region, store pixels (the whole slide side when the slide is smaller), as
#: :func:`src_model.uncertainty.review_regions` makes an image's (its ``min_size``).
REVIEW_MIN_SIDE = 128
#: The way :func:`review_over_store` ranks, part of a store's kept ranking's key (:func:`review_key`): a ranking kept
#: by an earlier way (version 1 listed slivers of thin edge chunks) is ranked again.
REVIEW_VERSION = 2
#: Most uncertainty pixels read to set the contrast of a slide's uncertainty layer: the predicted chunks at
#: the finest pyramid level (above level 0) that fits, else a spread-out subset of them at the coarsest.
RANGE_PIXELS = 1 << 21
#: Layer metadata of a slide uncertainty layer: its contrast as ``(lo, hi, level)``, uncertainty units.
RANGE_KEY = "cdma_display_range"
#: Steps of a Predict view run after its last chunk (ranking the review regions, identifying the slide
#: level): the progress bar counts them, so it reaches its end when the run does, not at the last chunk.
FINISH_STEPS = 2


def default_store_path(slide_path: str) -> Path:
    """``<folder>/<slide name>.cdma.zarr`` next to the slide (a store opened as a slide is itself)."""
    p = Path(slide_path)
    return p.parent / f"{p.name.split('.')[0] or p.name}.cdma.zarr"


def visible_world_box(center: Sequence[float], zoom: float, canvas_hw: Tuple[int, int]) -> Tuple[float, ...]:
    """World box ``(y0, x0, y1, x1)`` the canvas shows: the camera centre (last two axes) +- half the
    canvas size divided by the zoom (screen pixels per world unit)."""
    cy, cx = float(center[-2]), float(center[-1])
    hy, hx = canvas_hw[0] / (2.0 * zoom), canvas_hw[1] / (2.0 * zoom)
    return cy - hy, cx - hx, cy + hy, cx + hx


def to_store_box(world: Sequence[float], downsample: float, height: int, width: int) -> Optional[Box]:
    """The store pixels a world (level-0) box shows, clipped to the store; None when it misses the store.

    napari puts pixel centres on integer coordinates: store pixel ``i`` covers world
    ``[(i - 0.5) * downsample, (i + 0.5) * downsample]``.
    """
    y0 = max(0, int(math.floor(world[0] / downsample + 0.5)))
    x0 = max(0, int(math.floor(world[1] / downsample + 0.5)))
    y1 = min(height, int(math.ceil(world[2] / downsample + 0.5)))
    x1 = min(width, int(math.ceil(world[3] / downsample + 0.5)))
    return (y0, x0, y1, x1) if y1 > y0 and x1 > x0 else None


def view_chunks(store: Any, box: Box, limit: int = MAX_VIEW_CHUNKS) -> Tuple[List[Tuple[int, int]], int]:
    """The chunks of ``store`` under a store-pixel box, nearest the box's centre first, at most ``limit``.

    Returns:
        ``(chunks, n_visible)``: the chunks to show, and how many the box touches in all.
    """
    chunks = store.chunks_in(*box)
    c = store.info.chunk
    my, mx = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    chunks.sort(key=lambda k: ((k[0] + 0.5) * c - my) ** 2 + ((k[1] + 0.5) * c - mx) ** 2)
    return sorted(chunks[:limit]), len(chunks)


def edit_box(box: Box, max_side: int = MAX_EDIT_SIDE) -> Box:
    """The part of a store-pixel box an edit window covers: at most ``max_side`` a side, about its centre."""
    y0, x0, y1, x1 = box
    out = []
    for a0, a1 in ((y0, y1), (x0, x1)):
        if a1 - a0 > max_side:
            a0 = (a0 + a1 - max_side) // 2
            a1 = a0 + max_side
        out.append((a0, a1))
    return out[0][0], out[1][0], out[0][1], out[1][1]


def missing_chunks(store: Any, box: Box) -> List[Tuple[int, int]]:
    """Chunks under ``box`` not predicted yet."""
    done = store.done()
    return [k for k in store.chunks_in(*box) if not done[k]]


def write_window(store: Any, box: Box, labels: np.ndarray) -> List[Tuple[int, int]]:
    """Write an edited window (store pixels, 0 = background, > 0 = gland) into the store's gland labels
    and their pyramid, chunk by chunk; every chunk under ``box`` must be predicted. Returns the chunks
    (:func:`napari_cdma.project.slide_regions.write_labels`)."""
    from .project.slide_regions import write_labels

    return write_labels(store, box, labels)


def chunk_uncertainty(store: Any) -> np.ndarray:
    """Mean uncertainty per pixel of each finished tissue chunk (ny, nx); NaN elsewhere."""
    rec = store.chunk_stats()
    done = rec[:, :, 0] == 1
    glass = rec[:, :, 1] < float(store.info.settings.get("min_tissue", 0.0))
    ny, nx = store.grid
    area = np.array([[np.prod(np.subtract(store.chunk_box(cy, cx)[2:], store.chunk_box(cy, cx)[:2]))
                      for cx in range(nx)] for cy in range(ny)], np.float64)
    out = np.full((ny, nx), np.nan)
    ok = done & ~glass
    out[ok] = rec[:, :, 3][ok] / area[ok]
    return out


def store_display_range(store: Any, max_pixels: int = RANGE_PIXELS) -> Optional[Tuple[float, float, int]]:
    """Contrast limits of a store's uncertainty as the dock sets an image's: robust percentiles over tissue
    (:func:`src_model.uncertainty.display_range`, 2nd to 99.5th), read cheaply from a coarse pyramid level.

    Only predicted tissue chunks count (not-yet-predicted and glass chunks hold 0). Of the levels above 0
    (level 0 when the store has no other), the finest whose predicted chunks hold at most ``max_pixels``
    pixels is read, tissue being :func:`src_model.tissue.tissue_mask` of the store's own pixels at that
    level; when even the coarsest holds more, an evenly spread subset of its chunks is. Level 0 is never
    read whole, and the cost is bounded whatever the slide's size.

    Returns:
        ``(lo, hi, level)`` in uncertainty units (the map's values in [0, 1]; the store keeps
        ``round(255 x value)``), or None when no tissue chunk is predicted yet.
    """
    from src_model.tissue import tissue_mask
    from src_model.uncertainty import display_range

    rec = store.chunk_stats()
    ok = (rec[:, :, 0] == 1) & ~(rec[:, :, 1] < float(store.info.settings.get("min_tissue", 0.0)))
    chunks = [(int(cy), int(cx)) for cy, cx in zip(*np.nonzero(ok), strict=True)]
    if not chunks:
        return None
    n, c = store.info.n_levels, store.info.chunk
    levels = list(range(1, n)) or [0]
    level = next((k for k in levels if len(chunks) * (c >> k) ** 2 <= max_pixels), levels[-1])
    keep = max(1, max_pixels // max(1, (c >> level) ** 2))
    if len(chunks) > keep:
        chunks = [chunks[i] for i in np.unique(np.linspace(0, len(chunks) - 1, keep).round().astype(int))]
    f = 1 << level
    values, tissue = [], []
    for cy, cx in chunks:
        y0, x0, y1, x1 = store.chunk_box(cy, cx)
        ly0, lx0, ly1, lx1 = y0 // f, x0 // f, -(-y1 // f), -(-x1 // f)
        values.append(np.asarray(store.uncertainty[level][ly0:ly1, lx0:lx1]).ravel())
        rgb = np.moveaxis(np.asarray(store.image[level][:, ly0:ly1, lx0:lx1]), 0, 2)
        tissue.append(tissue_mask(rgb).ravel())
    lo, hi = display_range(np.concatenate(values).astype(np.float32) / 255.0, np.concatenate(tissue))
    return float(lo), float(hi), int(level)


def uncertainty_style(rng: Optional[Sequence[float]]) -> dict:
    """Layer keywords of a slide store's uncertainty, drawn as the dock draws an image's (visible, the same
    fading colormap, opacity and blending), with contrast limits from ``rng`` (:func:`store_display_range`,
    uncertainty units; the store keeps ``round(255 x value)``) when given."""
    from ._layers import UNCERTAINTY_OPACITY, uncertainty_colormap

    style = dict(colormap=uncertainty_colormap(), opacity=UNCERTAINTY_OPACITY, blending="translucent",
                 gamma=1.0, visible=True)
    if rng is not None:
        style["contrast_limits"] = [255.0 * rng[0], 255.0 * rng[1]]
    return style


def window_instances(binary: np.ndarray) -> np.ndarray:
    """One label per gland of an edit window's gland mask (int32, 0 = background): touching glands split
    as ``cdma export`` and the dock split them (:func:`src_model.postprocess.split_touching` with
    :data:`~src_model.postprocess.DEFAULT_INSTANCES`' settings, seeds at the export's resolution).
    Nothing is removed or filled: the labels' pixels are exactly the mask's (a gland that touches
    another only at a corner is a gland of its own), so a window
    accepted unchanged changes nothing in the store. Labels are 1..n with no gaps, so the largest is the
    count."""
    from skimage.segmentation import relabel_sequential

    from src_model.export import SPLIT_COARSE
    from src_model.postprocess import DEFAULT_INSTANCES, split_touching

    mask = np.asarray(binary) > 0
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    labels = split_touching(mask, DEFAULT_INSTANCES.split_h, DEFAULT_INSTANCES.split_sigma, coarse=SPLIT_COARSE)
    return relabel_sequential(labels)[0].astype(np.int32, copy=False)


def small_labels(instances: np.ndarray) -> int:
    """How many labels of an edit window are smaller than :data:`~src_model.postprocess.DEFAULT_INSTANCES`'
    ``min_size`` (store pixels): specks the window shows, as it shows the store's pixels exactly, which the slide's
    numbering and export leave out (walk 20: a window over a quarter of a slide said 153 glands, the whole slide was
    numbered 137)."""
    from src_model.postprocess import DEFAULT_INSTANCES

    areas = np.bincount(np.asarray(instances).ravel())[1:]
    return int(np.count_nonzero((areas > 0) & (areas < DEFAULT_INSTANCES.min_size)))


def has_edits(store_path: Any) -> bool:
    """Whether windows were ever accepted into the store at ``store_path`` (it lists them); cheap: the
    store's attributes only."""
    from src_model.slide_store import open_store

    from .project.slide_regions import EDITS_KEY

    return bool(open_store(store_path).root.attrs.get(EDITS_KEY))


def undo_withdrawn(project: Any, store_path: Any) -> List[Tuple[str, int]]:
    """Undo, in the store at ``store_path``, the windows accepted into ``project`` and withdrawn since
    (:func:`~napari_cdma.project.slide_regions.restore_withdrawn`); nothing when no window was ever
    accepted into the store (``project`` is then not used and may be None). Returns ``[(region id,
    chunks rewritten)]``; errors raise."""
    from src_model.slide_store import open_store

    from .project.slide_regions import restore_withdrawn

    if not has_edits(store_path):
        return []  # nothing was ever accepted into this store
    return restore_withdrawn(project, open_store(store_path, mode="r+"))


def window_changed(store: Any, box: Box, predicted: np.ndarray) -> bool:
    """Whether the store's labels (gland / background) under ``box`` differ from ``predicted``, the labels an
    edit window was opened with (a withdrawn window undone there since)."""
    y0, x0, y1, x1 = box
    return not np.array_equal(np.asarray(store.read_glands(y0, x0, y1, x1)) > 0, np.asarray(predicted) > 0)


def edit_window_job(project: Any, store_path: str, world_box: Sequence[float], max_side: int = MAX_EDIT_SIDE,
                    open_window: Optional[Tuple[Box, np.ndarray]] = None) -> Tuple[str, Any]:
    """Read an edit window of the store at ``store_path`` under a world (level-0) box: withdrawn windows
    undone first (:func:`undo_withdrawn`), then the store's glands under the box (at most ``max_side``
    store pixels a side, about its centre, :func:`edit_box`), one label per gland
    (:func:`window_instances`). Run it in a worker thread: it reads up to ``max_side`` squared pixels
    and splits their glands (seconds for a 2048 px window).

    Args:
        project: the open project store (the windows accepted into it; may be None when the store lists
            none, :func:`has_edits`).
        open_window: ``(box, predicted)`` of the edit window open over this store, if any: the result says
            whether the withdrawn windows undone now changed the store's labels under it (``stale``).

    Returns:
        ``("ok", {"box", "predicted" (uint8 gland mask), "instances" (int32), "labels" (a copy of
        ``instances`` for the layer to paint on), "n_glands", "downsample", "undone", "stale"})``, or
        ``("error", message, {"undone", "stale"})`` when the store cannot be read or undone in, the view
        misses the store, or chunks under the window are not predicted yet.
    """
    from src_model.slide_store import StoreError, open_store

    try:
        undone = undo_withdrawn(project, store_path)
        store = open_store(store_path)
    except Exception as exc:
        msg = str(exc) if isinstance(exc, StoreError) else f"Cannot open an edit window: {exc}"
        return ("error", msg, {"undone": [], "stale": False})
    stale = bool(undone) and open_window is not None and window_changed(store, *open_window)
    done = {"undone": undone, "stale": stale}
    info = store.info
    box = to_store_box(world_box, info.downsample, info.height, info.width)
    if box is None:
        return ("error", "The view shows no part of the slide.", done)
    box = edit_box(box, max_side)
    todo = missing_chunks(store, box)
    if todo:
        return ("error", f"{len(todo)} chunk(s) under this view are not predicted yet: press Predict view first "
                         "(or zoom in).", done)
    y0, x0, y1, x1 = box
    predicted = np.array(store.read_glands(y0, x0, y1, x1))
    instances = window_instances(predicted)  # one label per gland, exactly the store's gland pixels
    return ("ok", {"box": box, "predicted": predicted, "instances": instances, "labels": instances.copy(),
                   "n_glands": int(instances.max()), "n_small": small_labels(instances),
                   "downsample": info.downsample, **done})


def accept_window_job(project: Any, slide_path: str, store_path: str, box: Box, edited: np.ndarray,
                      instances: np.ndarray, predicted: np.ndarray, *, model_version: str, level: int,
                      user: Optional[str], digest: Optional[str]) -> Tuple[str, Any]:
    """Accept an edited window into the store at ``store_path`` and the project store: glands the user split
    apart kept apart by a 1 px gap (:func:`carve_splits` against ``instances``, the labels the window was
    opened with), withdrawn windows undone first (:func:`undo_withdrawn`), then
    :func:`~napari_cdma.project.slide_regions.accept_slide_window` (``expected=predicted``: nothing is written
    when the store's labels under the window changed since it was opened). Run it in a worker thread.

    Returns:
        ``("ok", {"record", "written", "carved" (the labels the window now shows), "labels" (a copy of ``carved``
        for the window's layer to paint on when it differs from ``edited``, else None), "corrected" (its gland
        mask, uint8), "undone"})``, or ``("error", message,
        {"stale"})``, ``stale`` saying whether withdrawn windows undone now changed the labels under the
        window (it is then refused: :class:`~napari_cdma.project.slide_regions.WindowChanged`).
    """
    from src_model.slide import open_slide
    from src_model.slide_store import open_store

    from .project.slide_regions import accept_slide_window

    # the store keeps gland / background: glands the user split apart (touching, with different labels)
    # are kept apart by a 1 px gap; glands that touched when the window opened stay as they are
    carved = carve_splits(edited, instances)
    corrected = (carved > 0).astype(np.uint8)
    stale = False
    try:
        undone = undo_withdrawn(project, store_path)
        store = open_store(store_path, mode="r+")
        stale = bool(undone) and window_changed(store, box, predicted)
        with open_slide(slide_path) as slide:
            record, written = accept_slide_window(project, slide, store, box, corrected, expected=predicted,
                                                  model_version=model_version, level=level, user=user,
                                                  digest=digest)
    except Exception as exc:
        return ("error", f"Could not accept the window: {exc}", {"stale": stale})
    return ("ok", {"record": record, "written": written, "carved": carved,
                   "labels": None if np.array_equal(carved, edited) else carved.copy(), "corrected": corrected,
                   "undone": undone})


def reread_window(store: Any, box: Box, predicted: np.ndarray, shown: Optional[np.ndarray] = None) -> Optional[dict]:
    """The edit window over ``box`` read again from the store when the store's labels (gland / background)
    under it are no longer ``predicted``, the labels it was opened with (a withdrawn window was undone there);
    None when they are unchanged. Reads ``box`` and splits its glands (seconds for a 2048 px window): run it in
    a worker thread.

    The glands are those Edit window would open there now (:func:`window_instances`); a gland whose pixels are
    exactly those of a label of ``shown`` (the labels the window shows) keeps that label, the others take new
    ones above all of ``shown``'s, so only the pixels whose label changes need redrawing.

    Returns:
        ``{"predicted" (uint8 gland mask), "instances" (int32, one label per gland), "n_glands", "update"
        ((indices, labels): the pixels of ``shown`` to set, as napari's ``Labels.data_setitem`` takes them)}``.
    """
    y0, x0, y1, x1 = box
    now = np.array(store.read_glands(y0, x0, y1, x1))
    if np.array_equal(now > 0, np.asarray(predicted) > 0):
        return None
    fresh = window_instances(now)
    shown = np.zeros_like(fresh) if shown is None or np.shape(shown) != fresh.shape else np.asarray(shown)
    instances = _keep_labels(fresh, shown)
    idx = np.nonzero(instances != shown)
    return {"predicted": now, "instances": instances, "n_glands": int(fresh.max()), "update": (idx, instances[idx])}


def _keep_labels(fresh: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """``fresh`` (labels 1..n) with each label whose pixels are exactly those of a label of ``shown`` renamed to
    it, and the others to labels above all of ``shown``'s (int32)."""
    n, top = int(fresh.max()), int(max(0, shown.max()))
    inside = fresh > 0
    f, o = fresh[inside].astype(np.int64), shown[inside].astype(np.int64)
    pairs, counts = np.unique(f * (top + 1) + np.maximum(o, 0), return_counts=True)
    pf, po = pairs // (top + 1), pairs % (top + 1)
    n_pairs = np.bincount(pf, minlength=n + 1)  # labels of shown under each fresh label
    size_f = np.bincount(f, minlength=n + 1)
    size_o = np.bincount(shown[shown > 0].ravel(), minlength=top + 1)
    same = (po > 0) & (n_pairs[pf] == 1) & (counts == size_f[pf]) & (counts == size_o[po])
    name = np.zeros(n + 1, np.int64)
    name[pf[same]] = po[same]
    new = np.nonzero(name[1:] == 0)[0] + 1
    name[new] = top + 1 + np.arange(len(new))
    return name[fresh].astype(np.int32)


def undo_withdrawn_job(project: Any, store_path: str, open_window: Optional[Sequence[Any]] = None) -> Tuple[str, Any]:
    """Undo, in the store at ``store_path``, the windows withdrawn from ``project`` since they were accepted
    (:func:`undo_withdrawn`: its labels and pyramid), and read the open edit window again if that changed the
    labels under it (:func:`reread_window`). Run it in a worker thread: it rewrites every chunk under the
    windows at each pyramid level.

    Args:
        open_window: ``(box, predicted, shown)`` of the edit window open over this store, if any
            (:func:`reread_window`'s arguments).

    Returns:
        ``("ok", {"undone": [(region id, chunks rewritten)], "stale" (the labels under the open window
        changed), "window" (:func:`reread_window`'s result, or None)})``, or ``("error", message, {})``.
    """
    try:
        return ("ok", _undo_and_reread(project, store_path, open_window))
    except Exception as exc:
        return ("error", f"Could not undo withdrawn windows in the slide's labels: {exc}", {})


def _undo_and_reread(project: Any, store_path: str, open_window: Optional[Sequence[Any]]) -> dict:
    """:func:`undo_withdrawn_job`'s work (errors raise)."""
    from src_model.slide_store import open_store

    undone = undo_withdrawn(project, store_path)
    fresh = reread_window(open_store(store_path), *open_window) if undone and open_window is not None else None
    return {"undone": undone, "stale": fresh is not None, "window": fresh}


def pending_withdrawn(project: Any, store_path: Any) -> List[str]:
    """Region ids of the windows accepted into ``project`` and the store at ``store_path`` and withdrawn from
    ``project`` since, not yet undone in the store (:func:`undo_withdrawn` would undo them); cheap: the
    store's attributes and the project's index, nothing of the labels (the GUI thread asks before starting
    :func:`undo_withdrawn_job`)."""
    from src_model.slide_store import open_store

    from .project.slide_regions import store_edits

    if project is None or not has_edits(store_path):
        return []
    root = Path(project.root).resolve()
    live = {r.region_id for r in project.regions()}
    return sorted({e["region_id"] for e in store_edits(open_store(store_path))
                   if not e.get("restored") and e["region_id"] not in live
                   and Path(e.get("project", "")).resolve() == root})


def withdraw_window_job(project: Any, region_id: str, store_path: str,
                        open_window: Optional[Sequence[Any]] = None) -> Tuple[str, Any]:
    """Withdraw region ``region_id`` (an accepted window) from ``project`` and undo it, with any other window
    withdrawn since, in the store at ``store_path`` (:func:`undo_withdrawn_job`: its labels and pyramid, and
    the open edit window read again if that changed the labels under it). Run it in a worker thread: it
    rewrites every chunk under the window at each pyramid level.

    Args:
        open_window: ``(box, predicted, shown)`` of the edit window open over this store, if any.

    Returns:
        ``("ok", {"undone": [(region id, chunks rewritten)], "stale", "window"})`` (:func:`undo_withdrawn_job`),
        or ``("error", message, {})`` when the project store refuses the withdrawal, or the slide's labels
        cannot be undone (the message says which).
    """
    try:
        project.withdraw(region_id)
    except Exception as exc:
        return ("error", f"Could not withdraw {region_id}: {exc}", {})
    try:
        return ("ok", _undo_and_reread(project, store_path, open_window))
    except Exception as exc:
        return ("error", f"Withdrew region {region_id} from the project, but could not undo it in the slide's "
                         f"labels: {exc}", {})


def pixel_edges(world_box: Sequence[float], downsample: float) -> Tuple[float, ...]:
    """World edges ``(y0, x0, y1, x1)`` of the store pixels of a world box (store box x ``downsample``): napari
    puts store pixel ``i`` over world ``[(i - 0.5) * downsample, (i + 0.5) * downsample]``."""
    half = 0.5 * float(downsample)
    return tuple(float(v) - half for v in world_box)


def outline_rect(edges: Sequence[float], width: float, outside: bool) -> Tuple[float, ...]:
    """Where a line ``width`` wide (world units) runs to outline a box whose pixels span ``edges``: just
    outside them (``outside``: none of the box's pixels is covered), or just inside them (at most to the
    middle: touching boxes' outlines neither overlap nor cross)."""
    y0, x0, y1, x1 = (float(v) for v in edges)
    if outside:
        d = width / 2.0
        return y0 - d, x0 - d, y1 + d, x1 + d
    dy, dx = min(width / 2.0, (y1 - y0) / 2.0), min(width / 2.0, (x1 - x0) / 2.0)
    return y0 + dy, x0 + dx, y1 - dy, x1 - dx


#: Neighbours (8-connectivity, each pair once) between which a split is carved.
_NEIGHBOURS = ((0, 1), (1, 0), (1, 1), (1, -1))


def _touching(labels: np.ndarray, base: Optional[int] = None) -> Tuple[List[np.ndarray], int]:
    """For each of :data:`_NEIGHBOURS`: the pair keys ``min * base + max`` of 8-neighbour pixels of two
    different glands (-1 elsewhere); and ``base`` (default: the largest label + 1)."""
    lab = np.asarray(labels).astype(np.int64)
    if base is None:
        base = int(lab.max()) + 1 if lab.size else 1
    h, w = lab.shape
    keys = []
    for dy, dx in _NEIGHBOURS:
        a = lab[0:h - dy, max(0, -dx):w - max(0, dx)]
        b = lab[dy:h, max(0, dx):w - max(0, -dx)]
        diff = (a > 0) & (b > 0) & (a != b)
        keys.append(np.where(diff, np.minimum(a, b) * base + np.maximum(a, b), -1))
    return keys, base


def carve_splits(edited: np.ndarray, before: np.ndarray) -> np.ndarray:
    """An edited window's labels with a background line where two glands touch that did not touch in
    ``before`` (the labels the window was opened with): the slide's store keeps gland / background only,
    so a gland split by painting part of it with a new label stays two glands there (and when the window
    is opened again). Of each such pair of 8-neighbour pixels the one with the larger label becomes
    background, so the two are no longer 8-connected. Glands that touched before (split by the
    watershed) are left as they are: a window accepted unchanged writes nothing.

    Returns:
        A copy of ``edited`` with the carved pixels set to 0.
    """
    out = np.array(edited, copy=True)
    before = np.asarray(before)
    changed = out != before if before.shape == out.shape else np.ones(out.shape, bool)
    if not changed.any():
        return out
    # a pair that touches now and did not before has a changed pixel: only the box of the changes, +1 px
    rows, cols = np.nonzero(changed.any(axis=1))[0], np.nonzero(changed.any(axis=0))[0]
    y0, y1 = max(0, rows[0] - 1), min(out.shape[0], rows[-1] + 2)
    x0, x1 = max(0, cols[0] - 1), min(out.shape[1], cols[-1] + 2)
    out[y0:y1, x0:x1] = _carve(out[y0:y1, x0:x1], before, int(out.max()) + 1)
    return out


def _carve(edited: np.ndarray, before: np.ndarray, base: int) -> np.ndarray:
    """:func:`carve_splits` of a box of the window (``before``: the whole window as opened)."""
    out = np.array(edited, copy=True)
    keys, _ = _touching(out, base)
    if all((k < 0).all() for k in keys):
        return out
    old_keys, old_base = _touching(before)
    old = set()
    for k in old_keys:  # the pairs that touched anywhere before, in the new key base
        k = np.unique(k[k >= 0])
        old.update((k // old_base * base + k % old_base).tolist())
    old_arr = np.fromiter(old, np.int64, len(old))
    lab = np.asarray(edited)
    for (dy, dx), k in zip(_NEIGHBOURS, keys, strict=True):
        new = (k >= 0) & ~np.isin(k, old_arr)
        if not new.any():
            continue
        ys, xs = np.nonzero(new)
        ya, xa = ys, xs + max(0, -dx)          # pixel a (the upper / left one)
        yb, xb = ys + dy, xs + max(0, dx)      # pixel b
        a_larger = lab[ya, xa] > lab[yb, xb]
        out[ya[a_larger], xa[a_larger]] = 0
        out[yb[~a_larger], xb[~a_larger]] = 0
    return out


def review_window(chunk: Box, height: int, width: int, side: int = REVIEW_MIN_SIDE) -> Box:
    """The box a chunk's review regions are searched in: the chunk ``(y0, x0, y1, x1)``, grown inward (into the
    slide, over its neighbour) along a side thinner than ``side`` px to ``side`` px, or to the slide's whole side
    when the slide is thinner. A chunk at the slide's edge can be a few pixels thick (a 40 px bottom row): its
    regions, searched in it alone, were 40 x 128 px slivers, and one ranked first (pathologist walk)."""
    y0, x0, y1, x1 = (int(v) for v in chunk)
    sy, sx = min(int(side), int(height)), min(int(side), int(width))
    if y1 - y0 < sy:
        y1 = min(int(height), y0 + sy)
        y0 = y1 - sy
    if x1 - x0 < sx:
        x1 = min(int(width), x0 + sx)
        x0 = x1 - sx
    return y0, x0, y1, x1


def review_over_store(store: Any, n: int = 10, max_chunks: int = MAX_REVIEW_CHUNKS) -> List[Tuple[float, Box]]:
    """Review regions over a slide's predicted area, most uncertain first, in store pixels.

    The ``max_chunks`` finished tissue chunks with the most uncertainty per pixel are reviewed, each
    with :class:`src_model.blockwise.BlockReview` on its glands, uncertainty (``uint8 / 255``) and
    pixels, over the chunk grown to at least :data:`REVIEW_MIN_SIDE` px a side (:func:`review_window`;
    the whole slide side when the slide is thinner), so that every region is that large, never a sliver of a
    thin chunk at the slide's edge. Each chunk's regions do not overlap; those of a grown chunk may overlap
    its neighbour's, so the regions are taken by score, one that overlaps a region taken already skipped: the
    best ``n`` that do not overlap are the answer.
    """
    from src_model.blockwise import BlockReview

    height, width = int(store.info.height), int(store.info.width)
    per_chunk = chunk_uncertainty(store)
    order = [k for k in zip(*np.unravel_index(np.argsort(-np.nan_to_num(per_chunk, nan=-1.0), axis=None),
                                              per_chunk.shape), strict=True) if not np.isnan(per_chunk[k])]
    found: List[Tuple[float, Box]] = []
    for cy, cx in order[:max_chunks]:
        y0, x0, y1, x1 = review_window(store.chunk_box(int(cy), int(cx)), height, width)
        glands = np.asarray(store.glands[0][y0:y1, x0:x1])
        unc = np.asarray(store.uncertainty[0][y0:y1, x0:x1], np.float32) / 255.0
        rgb = np.moveaxis(np.asarray(store.image[0][:, y0:y1, x0:x1]), 0, 2)
        review = BlockReview(glands, unc, rgb, n_regions=n, block=max(y1 - y0, x1 - x0))
        for _ in review.blocks():
            pass
        found += [(s, (b[0] + y0, b[1] + x0, b[2] + y0, b[3] + x0)) for s, b in review.regions()]
    found.sort(key=lambda item: (-item[0], item[1]))
    taken: List[Tuple[float, Box]] = []
    for score, box in found:
        if len(taken) == n:
            break
        if not any(boxes_overlap(box, other) for _, other in taken):
            taken.append((score, box))
    return taken


#: The review regions a store was last ranked with (:func:`cached_review`), beside its arrays.
REVIEW_FILE = "cdma_review.json"


def review_key(store: Any, n: int, max_chunks: int) -> str:
    """What the review regions of a store are ranked from, cheaply (no chunk is read): which chunks are done, the
    name, size and modification time of every chunk file of the full-resolution gland labels and uncertainty, and
    the ranking's settings. A prediction, an edit, an undo changes it."""
    import hashlib

    from src_model.slide_store import GLANDS

    h = hashlib.blake2b(digest_size=16)
    h.update(f"{REVIEW_VERSION}|{int(n)}|{int(max_chunks)}|".encode())
    h.update(np.ascontiguousarray(store.done()).tobytes())
    for parts in (("labels", GLANDS, "0"), ("uncertainty", "0")):
        for name, f in store.chunk_files(*parts):
            st = f.stat()
            h.update(f"{name}|{st.st_size}|{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def cached_review(store: Any, n: int = N_REVIEW, max_chunks: int = MAX_REVIEW_CHUNKS) -> List[Tuple[float, Box]]:
    """:func:`review_over_store`, kept in the store (:data:`REVIEW_FILE`, with its :func:`review_key`): ranked again
    only when the store's labels or uncertainty changed (ranking a 3072 x 3072 store's 9 chunks takes 6-12 s; a
    Predict view that predicts nothing new, or a slide opened again, takes the kept regions). A store that cannot
    be written is ranked each time."""
    import json

    from src_model.fileio import atomic_write_json

    key = review_key(store, n, max_chunks)
    path = Path(store.path) / REVIEW_FILE
    try:
        kept = json.loads(path.read_text("utf-8"))
        if kept.get("key") == key:
            return [(float(s), tuple(int(v) for v in b)) for s, b in kept["regions"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    ranked = review_over_store(store, n, max_chunks)
    try:
        atomic_write_json(path, {"key": key, "regions": [[s, list(b)] for s, b in ranked]})
    except OSError:
        pass
    return ranked


def reopen_job(store_path: str, slide_path: str, digest: Union[None, str, Dict[int, str]] = None,
               n_review: int = N_REVIEW) -> Generator[Any, None, Tuple[str, Any]]:
    """What a slide opened again shows of its prediction store, read in a worker thread, each part yielded as soon
    as read: first what the store's layers need (its downsample, and the uncertainty's display range, read from a
    coarse level: :func:`store_display_range`, 0.1-0.2 s, seconds with its first imports; the GUI thread read it
    inside napari's open of the slide before); then the review regions, kept in the store (:func:`cached_review`); then
    (returned) the digest of the slide level it predicts, for its accepted windows (computed unless given: reading
    the slide level can take seconds; ``digest`` may also map slide levels to the digests known, the store's level
    being read here).

    Yields:
        ``("store", {"downsample", "display_range", "level", "store", "held"})`` (``store``: the store opened, for
        its layers; ``held``: the uncertainty's and glands' levels, kind ("image", "labels") -> :func:`held_levels`,
        or None), then ``("regions", {"ranked" (store pixels), "downsample", "display_range", "level"})``, if the
        store holds predicted chunks.
    Returns:
        ``("ok", {"digest", "slide", "level"})`` (``digest`` None when the slide file cannot be read), ``("none",
        reason)`` when the store holds no predicted chunk, or ``("error", message)`` when it cannot be read.
    """
    from src_model.slide import open_slide
    from src_model.slide_store import open_store

    from .project.slide_regions import slide_hash

    try:
        store = open_store(store_path)
        level = int(store.info.slide_level)
        if not store.done().any():
            return ("none", "no chunk of the slide is predicted yet")
        display = store_display_range(store)
    except Exception as exc:  # an unreadable store: nothing more is shown (a Predict view says why)
        return ("error", str(exc))
    if isinstance(digest, dict):
        digest = digest.get(level)
    facts = {"downsample": store.info.downsample, "display_range": display, "level": level}
    try:  # the levels the overlays are first drawn in, read here rather than by their first slice on the GUI thread
        held = {"image": held_levels(store.uncertainty), "labels": held_levels(store.glands)}
    except Exception:  # unreadable now: the layers read the store as they are drawn
        held = None
    yield ("store", {**facts, "store": store, "held": held})
    try:
        ranked = cached_review(store, n_review)
    except Exception as exc:
        return ("error", str(exc))
    yield ("regions", {"ranked": ranked, **facts})
    if digest is None:
        try:
            with open_slide(slide_path) as slide:
                digest = slide_hash(slide, level)
        except Exception:  # the slide file cannot be read (moved): no accepted windows are outlined
            digest = None
    return ("ok", {"digest": digest, "slide": slide_path, "level": level})


def slide_of(layer: Any) -> Tuple[str, int]:
    """(slide file, level) behind a slide layer: a prediction store opened as a slide stands for the
    level of the slide it was predicted from."""
    meta = layer.metadata
    store = meta.get(STORE_KEY)
    if store:
        from src_model.slide_store import open_store

        info = open_store(store).info
        return info.slide, info.slide_level
    return str(meta[SLIDE_KEY]), 0


def undo_first(project: Any, store_path: Any, open_window: Optional[Sequence[Any]] = None) -> dict:
    """What a job that uses the store at ``store_path`` (Predict view, Export) does first, in its worker thread:
    the windows withdrawn from ``project`` since they were accepted undone in the store (:func:`undo_withdrawn_job`'s
    work: its labels and pyramid, and the open edit window read again if that changed the labels under it).
    Nothing when ``project`` is None (no window was ever accepted into the store, or the store does not exist yet).

    Returns:
        ``{"undone", "stale", "window"}`` (as :func:`undo_withdrawn_job`'s result); errors raise.
    """
    if project is None or not Path(store_path).exists():
        return {"undone": [], "stale": False, "window": None}
    return _undo_and_reread(project, str(store_path), open_window)


def predict_view_job(slide_path: str, store_path: str, model_path: str, level: int, chunk: int,
                     world_box: Tuple[float, ...], limit: int, digest: Optional[str],
                     n_review: int = N_REVIEW, project: Any = None,
                     open_window: Optional[Sequence[Any]] = None) -> Generator[Any, None, Any]:
    """Predict the store chunks under ``world_box`` (level-0 pixels), at most ``limit`` of them, into
    the store at ``store_path`` (created with chunks of ``chunk`` px, or resumed with its own), then rank
    review regions over the store. Yields the engine's progress events (stage "predict-slide", one per
    chunk) with :data:`FINISH_STEPS` more steps in their total, then one event for each of those steps
    ("review", "identify"): the last event comes at the end of the work (run it in a worker thread).

    Windows withdrawn from ``project`` (None: the store lists no accepted window) are undone in the store
    first (:func:`undo_first`, with ``open_window``, ``(box, predicted, shown)`` of the edit window open over the
    store), in this thread too, so the review regions and the layers see the store without them.

    Returns:
        ``("ok", {"summary", "chunks", "n_visible", "ranked" (store pixels), "downsample", "digest",
        "display_range", "undo"})``, ``display_range`` being :func:`store_display_range` of the store after the
        run, ``undo`` :func:`undo_first`'s result (with ``"error"``, a message, when the undoing failed: the view
        is predicted all the same), or ``("error", message, undo)`` for expected failures (a store of another
        model or settings, an unreadable slide or checkpoint). ``digest`` is the project store's hash of the slide
        level (:func:`~napari_cdma.project.slide_regions.slide_hash`; computed unless given).
    """
    import torch

    from src_model.checkpoint import CheckpointError
    from src_model.progress import Progress
    from src_model.runtime import resolve_device, torch_threads
    from src_model.slide import SlideError, open_slide
    from src_model.slide_predict import DEFAULT_MIN_TISSUE, predict_slide, prepare_store, run_settings
    from src_model.slide_store import StoreError, open_store
    from src_model.tiling import DEFAULT_OVERLAP, DEFAULT_TILE

    from .project.slide_regions import slide_hash

    try:
        undo = undo_first(project, store_path, open_window)
    except Exception as exc:  # the view is predicted all the same; the panel says the undoing failed
        undo = {"undone": [], "stale": False, "window": None,
                "error": f"Could not undo withdrawn windows in the slide's labels: {exc}"}
    torch.set_num_threads(torch_threads("viewer"))
    # the settings of cdma predict-slide's defaults, so a store it made is used (and resumed) here
    opts = dict(tile=DEFAULT_TILE, overlap=DEFAULT_OVERLAP, branch="mean", min_tissue=DEFAULT_MIN_TISSUE, batch_size=8)
    try:
        settings = run_settings(model_path, **opts)
        if Path(store_path).exists():  # an existing store keeps its chunks (cdma predict-slide --chunk)
            chunk = open_store(store_path).info.chunk
        store = prepare_store(slide_path, store_path, level=level, chunk=chunk, settings=settings)
        box = to_store_box(world_box, store.info.downsample, store.info.height, store.info.width)
        if box is None:
            return ("error", "The view shows no part of the slide; pan to the tissue.", undo)
        chunks, n_visible = view_chunks(store, box, limit)
        run = predict_slide(slide_path, store_path, model_path=model_path, level=level, chunk=chunk,
                            chunks=chunks, device=str(resolve_device("auto")), **opts)
        n = 0
        while True:
            try:
                event = next(run)
            except StopIteration as stop:
                summary = stop.value
                break
            n = event.total
            yield replace(event, total=n + FINISH_STEPS)
        done_store = open_store(store_path)
        ranked = cached_review(done_store, n_review)
        display = store_display_range(done_store)
        yield Progress(stage="review", step=n + 1, total=n + FINISH_STEPS)
        if digest is None:
            with open_slide(slide_path) as slide:
                digest = slide_hash(slide, level)
        yield Progress(stage="identify", step=n + 2, total=n + FINISH_STEPS)
    except (StoreError, SlideError, CheckpointError, OSError) as exc:
        return ("error", str(exc), undo)
    return ("ok", {"summary": summary, "chunks": chunks, "n_visible": n_visible, "ranked": ranked,
                   "downsample": store.info.downsample, "digest": digest, "display_range": display, "undo": undo})


def export_geojson_job(store_path: str, path: str, project: Any = None,
                       open_window: Optional[Sequence[Any]] = None) -> Tuple[str, Any, dict]:
    """Write a prediction store's glands to a QuPath GeoJSON file (:mod:`src_model.export`, as ``cdma export
    STORE --geojson PATH``), the windows withdrawn from ``project`` (None: the store lists no accepted window)
    undone in the store first (:func:`undo_first`, with ``open_window`` as :func:`predict_view_job`'s), so none is
    exported; run it in a worker thread.

    Returns:
        ``("ok", (glands written, chunks predicted, chunks in all), undo)``, ``undo`` :func:`undo_first`'s result,
        or ``("error", message, undo)`` for an unreadable store, an unwritable file, or withdrawn windows that
        could not be undone (nothing is written then).
    """
    from src_model.export import GlandExtractor, write_geojson
    from src_model.slide_store import StoreError, open_store

    try:
        undo = undo_first(project, store_path, open_window)
    except Exception as exc:
        return ("error", f"Not exported: withdrawn windows could not be undone in the slide's labels: {exc}",
                {"undone": [], "stale": False, "window": None})
    try:
        store = open_store(store_path)
        done = store.done()
        n = write_geojson(GlandExtractor(store), path)
    except (StoreError, OSError) as exc:
        return ("error", str(exc), undo)
    return ("ok", (int(n), int(done.sum()), int(done.size)), undo)



#: The layer of a slide's numbered glands is named "<slide> glands (numbered)".
NUMBERED = "glands (numbered)"


def number_glands_job(store_path: str, procs: Optional[List[Any]] = None) -> Generator[Any, None, Tuple[str, Any, Any]]:
    """Number the glands of a completely predicted store (``STORE/labels/instances``,
    :func:`src_model.export.write_instances`: the dock's post-processing, numbered as ``cdma export``'s GeoJSON, a
    gland cut by chunk sides one number), or find the numbers it holds still current; run it in a worker thread.

    The numbering runs in a process of its own (``cdma export STORE --in-store --progress json``): split and
    polygon tracing hold Python's lock for tens of ms at a time, which a thread of the viewer's process would take
    from the event loop, and a large slide's numbering memory is freed with the process. Its progress events are
    yielded (one per chunk, two passes; none when the numbers are reused); stopping the generator (the worker
    quit) kills the process, which leaves the store's numbered glands as they were (the write is atomic). The
    process is appended to ``procs`` (if given), so that its owner can kill it at once: a worker's quit takes
    effect only at its next progress line, and none comes while the numbers are checked (reused).

    Returns:
        ``("ok", {"n_glands", "reused", "seconds", "layer"}, rows)`` (``rows``: the per-gland table,
        :func:`src_model.export.instance_table`; ``layer``: what the layer of numbered glands reads, ``{"levels"
        (:func:`src_model.export.instance_levels`), "downsample", "slide"}``), ``("incomplete", (chunks done,
        chunks), None)`` when chunks are still to predict (nothing is numbered), ``("stale", summary, None)`` when
        the gland labels changed while they were numbered (nothing is replaced: number again), or ``("error",
        message, None)``.
    """
    import json
    import os
    import subprocess
    import sys
    import tempfile

    from src_model.export import instance_levels, instance_table
    from src_model.progress import Progress
    from src_model.slide_store import StoreError, open_store

    try:
        done = open_store(store_path).done()
    except (StoreError, OSError) as exc:
        return ("error", str(exc), None)
    if not done.all():
        return ("incomplete", (int(done.sum()), int(done.size)), None)
    cmd = [sys.executable, "-m", "src_model.cli", "export", str(store_path), "--in-store", "--progress", "json"]
    summary = None
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        if procs is not None:
            procs.append(proc)
        try:
            for line in proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == "progress":
                    yield Progress(str(event["stage"]), int(event["step"]), int(event["total"]))
                elif event.get("event") == "done":
                    summary = event
            proc.wait()
        finally:
            if proc.poll() is None:  # stopped: the partial numbering is never seen
                proc.kill()
                proc.wait()
            proc.stdout.close()
        if summary is None:
            err.seek(0)
            lines = [ln.strip() for ln in err.read().splitlines() if ln.strip()]
            return ("error", lines[-1] if lines else f"the numbering process ended with code {proc.returncode}",
                    None)
    out = {"n_glands": int(summary["glands"]), "reused": bool(summary["reused"]),
           "seconds": float(summary["seconds"])}
    if summary.get("stale"):
        return ("stale", out, None)
    try:
        store = open_store(store_path)
        rows = instance_table(store)
        # opened here, not on the GUI thread (0.1 s quiet, 1.3 s at load 9 there): what the layer shows
        out["layer"] = {"levels": held_levels(instance_levels(store)), "downsample": store.info.downsample,
                        "slide": store.info.slide}
    except Exception as exc:  # replaced meanwhile (a later numbering): read at the next
        return ("error", f"could not read the numbered glands' table: {exc}", None)
    return ("ok", out, rows)


# --------------------------------------------------------------------------- levels read ahead

#: The store levels read whole in a worker before their layer is drawn (:func:`held_levels`): those of at most this
#: many pixels (2048 x 2048: 4 MB of uint8, 16 MB of numbered uint32), the levels napari draws a whole slide in on a
#: canvas up to 2048 px wide. The first slice of each store overlay read its zarr chunks on the GUI thread when it
#: was drawn: 0.1-0.3 s of each overlay's 0.2-0.4 s stall opening an 8192 px slide (bench_slide_open, cProfile).
HOLD_PIXELS = 2048 * 2048


class HeldLevel:
    """One level of a live store layer (a zarr array, read where napari draws it) whose values were read whole in a
    worker thread (:func:`held_levels`): napari's first slice of the layer is cut from them, not read from the store
    on the GUI thread. :meth:`release` (:func:`release_held`, once the layer is drawn) drops them: from then on each
    read goes to the store, so that the layer shows chunks written since, as the zarr array itself does."""

    def __init__(self, array: Any, values: Optional[np.ndarray] = None) -> None:
        self.array = array
        self.values = values
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))

    def __getitem__(self, key: Any) -> Any:
        values = self.values
        return values[key] if values is not None else self.array[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self.values if self.values is not None else np.asarray(self.array)
        return values if dtype is None else values.astype(dtype, copy=False)

    def __len__(self) -> int:
        return self.shape[0]

    def __getattr__(self, name: str) -> Any:  # the zarr array's other attributes (chunks, ...)
        if name in ("array", "values"):
            raise AttributeError(name)
        return getattr(self.array, name)

    @property
    def held(self) -> bool:
        return self.values is not None

    def release(self) -> None:
        self.values = None


def held_levels(levels: Sequence[Any], max_pixels: int = HOLD_PIXELS) -> List[HeldLevel]:
    """``levels`` (a store layer's zarr arrays) as :class:`HeldLevel`, those of at most ``max_pixels`` read whole (in
    the calling thread: a worker's)."""
    out = []
    for level in levels:
        n = int(np.prod(level.shape))
        out.append(HeldLevel(level, np.asarray(level[...]) if n <= max_pixels else None))
    return out


def release_held(levels: Any) -> None:
    """Drop the values :func:`held_levels` read of a layer's levels (``layer.data``; anything else: nothing)."""
    multiscale = isinstance(levels, (list, tuple)) or getattr(levels, "shapes", None) is not None  # MultiScaleData
    for level in (list(levels) if multiscale else [levels]):
        if isinstance(level, HeldLevel):
            level.release()


# --------------------------------------------------------------------------- the slide reader's imports

#: Modules napari's open of the first slide (and the panel's first overlays of its store) imported on the GUI
#: thread: the plugin's reader and the slide formats (tifffile, openslide, PIL), the store and export modules, dask's
#: arrays and distributed (dask looks for a client at its first compute), napari's reader plumbing, and the
#: scikit-image modules the first glands' labels layer imports. 321 modules inside napari's open, 2.3-2.5 s of a
#: 2.5 s freeze, and 0.4 s more in the first glands' layer, at load 4-6 on 2 cores (bench_slide_open).
SLIDE_WARM_MODULES = ("napari_cdma._reader", "src_model.slide", "tifffile", "tifffile.zarr", "PIL.Image", "openslide",
                      "src_model.slide_store", "src_model.export", "napari_cdma.project.slide_regions",
                      "dask.array", "distributed", "napari.plugins.io", "napari.components.histogram",
                      "multiprocessing.synchronize", "scipy.sparse", "scipy.fft", "scipy.fftpack", "skimage.util",
                      "skimage.measure", "skimage.filters", "skimage.morphology", "skimage.segmentation",
                      "skimage.segmentation._watershed", "skimage.color.colorconv", "OpenGL.arrays.ctypesarrays",
                      "OpenGL.arrays.ctypespointers", "OpenGL.arrays.nones", "OpenGL.arrays.strings")
#: The name of the thread :func:`warm_slide_reader` imports them in (a key of ``_predict_stream.warm_ended``).
SLIDE_WARM_THREAD = "napari-cdma-warm-slide"
_warming_slide: List[Any] = []


def warm_slide_reader() -> Any:
    """Import :data:`SLIDE_WARM_MODULES` in a daemon thread (once per process; a module missing is skipped); the
    thread. Its end time goes to ``napari_cdma._predict_stream.warm_ended[SLIDE_WARM_THREAD]``."""
    from ._predict_stream import _import_all, _start_once

    return _start_once(_warming_slide, lambda: _import_all(SLIDE_WARM_MODULES), SLIDE_WARM_THREAD)


__all__ = ["FINISH_STEPS", "HOLD_PIXELS", "HeldLevel", "MAX_EDIT_SIDE", "MAX_VIEW_CHUNKS", "NUMBERED", "RANGE_KEY",
           "RANGE_PIXELS", "REVIEW_MIN_SIDE", "SLIDE_KEY", "SLIDE_WARM_MODULES", "SLIDE_WARM_THREAD", "STORE_KEY",
           "accept_window_job", "carve_splits", "chunk_uncertainty", "default_store_path", "edit_box",
           "edit_window_job", "export_geojson_job", "has_edits", "held_levels", "missing_chunks",
           "number_glands_job", "outline_rect", "pixel_edges", "pending_withdrawn", "predict_view_job",
           "release_held", "reread_window", "review_over_store", "review_window", "slide_of", "store_display_range",
           "to_store_box", "uncertainty_style", "undo_first", "undo_withdrawn", "undo_withdrawn_job", "view_chunks",
           "visible_world_box", "warm_slide_reader", "window_changed", "window_instances", "withdraw_window_job",
           "write_window"]
