"""Streamed prediction of a whole slide into an OME-Zarr store, chunk by chunk (``cdma predict-slide``).

The slide's chosen level is cut into square chunks (the store's chunks, :mod:`src_model.slide_store`).
Each chunk is predicted from a window around it: the chunk plus a halo of context, read from the
slide (reflect-padded past the slide's bottom and right edges), predicted by
:func:`src_model.inference.predict` (tiles, overlap and blending inside the window), and only the
chunk is kept. Memory is therefore bounded by one window, whatever the slide's size.

Identical to the in-memory path: the slide is covered by one uniform tile grid, tile ``i`` at
``i * stride`` (``stride = round(tile * (1 - overlap))``, as :func:`~src_model.inference.tile_starts`
computes it), ``n = ceil((H - tile) / stride) + 1`` tiles along an axis. A chunk's window spans
exactly the grid tiles that touch the chunk, and :func:`~src_model.inference.tile_starts` on a
window of ``tile + m * stride`` pixels gives back those tiles, so every chunk pixel is blended from
the same tiles with the same weights as in a prediction of the whole level at once. Where
``(H - tile)`` is a multiple of the stride the whole-image tiling of :func:`predict` is that grid, and
the results agree to float rounding (tested); otherwise predict spreads its last tiles slightly
differently.

Strip mode (``mode="strip"``, the default of ``cdma predict-slide``): the chunks are grouped in
horizontal strips of ``strip_rows`` chunk rows, and a strip is predicted in one pass of the rolling
band loop (:func:`src_model.bands.predict_rows`) over a window of the same global tile grid: the
strip's rows plus the tiles touching them above and below, and the columns from the first to the
last chunk to compute (the whole width for a fresh strip). The window is read lazily from the slide,
in bands of a chunk's height, each pixel once (the store's copy of a chunk comes from those bands);
finished chunk rows are written and marked done as the band passes them, so memory is bounded by
the band (``K x C x band rows x window width`` floats), not by the strip or
the slide, and only the vertical halo of a strip is computed twice (chunk mode recomputes the halo
around every chunk). Every forward pass runs a full batch (a last, short batch is filled with
copies of its last tile and their outputs dropped): the network's outputs for a tile then do not
depend on which tiles share its batch, so a strip gives the same result whatever part of it is
computed, and a resumed or split run equals an uninterrupted one bit for bit. Chunk mode runs a
short last batch as it is, which one-thread CPU kernels compute with other rounding (about 1e-5
in the logits), so the two modes agree to float rounding.

Glass: a chunk whose tissue fraction (:func:`src_model.tissue.tissue_mask`) is below
``min_tissue`` is not predicted; its labels and uncertainty are 0. In a predicted chunk, gland pixels on
open glass (glass that reaches beyond the chunk's context or is too large for a lumen: the model takes
glass next to tissue for a pale lumen) are set to background, and the uncertainty on open glass to 0
(:func:`drop_open_glass`).

Workers: with ``workers`` > 0 a local Dask cluster (``dask.distributed.LocalCluster``, processes,
one thread each) runs the chunks (strips in strip mode: fixed by ``strip_rows``, not by the number of
workers), with ``scheduler`` an existing cluster (its workers must see the
slide, the store and the model at the same paths). Every chunk writes only its own zarr chunks,
and results do not depend on which worker computed what. Each worker process loads the model once.

Resuming: a store left by an interrupted run with the same slide, level and settings is
continued: chunks marked done are skipped (see :class:`~src_model.slide_store.SlideStore`); in strip
mode a strip whose chunks are all done is skipped, and a partly done one computes only the rows and
columns of tiles its remaining chunks need.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Generator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .progress import EtaClock, Progress
from .slide import Slide, open_slide
from .slide_store import SlideStore, StoreError, StoreInfo, create_store, open_store, pyramid_levels
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
DEFAULT_CHUNK = 1024
#: A chunk with less tissue than this fraction is glass: not predicted.
DEFAULT_MIN_TISSUE = 0.02
#: Chunk rows per strip in strip mode.
DEFAULT_STRIP_ROWS = 4
MODES = ("strip", "chunk")


@dataclass
class SlideSummary:
    """What :func:`predict_slide` did and found (over the whole store, this run and earlier ones)."""

    store: str
    height: int
    width: int
    chunks_total: int
    chunks_done: int
    chunks_computed: int  # by this run
    chunks_glass: int
    gland_fraction: float
    mean_uncertainty: float  # over tissue chunks
    seconds: float


def grid_stride(tile: int, overlap: float) -> int:
    """Stride of the tile grid, as :func:`src_model.inference.tile_starts` computes it."""
    return max(1, int(round(tile * (1.0 - overlap))))


def window_span(c0: int, c1: int, length: int, tile: int, overlap: float) -> Tuple[int, int]:
    """The window ``[w0, w1)`` along one axis for the chunk ``[c0, c1)``: the grid tiles touching it.

    ``w1`` may pass ``length`` (the last grid tile reaches past the edge; the read is padded).
    """
    s = grid_stride(tile, overlap)
    n = 1 if length <= tile else -(-(length - tile) // s) + 1
    first = min(n - 1, max(0, (c0 - tile) // s + 1))  # first tile with i*s + tile > c0
    last = min(n - 1, (c1 - 1) // s)  # last tile with i*s < c1
    return first * s, last * s + tile


def read_window(slide: Slide, level: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    """RGB (y1 - y0, x1 - x0, 3) of a box that may pass the level's bottom and right edges: the part
    inside is read, the rest mirrored as :func:`src_model.tiling.pad_to` pads."""
    h, w = slide.levels[level].shape[:2]
    inside = slide.read_region(level, y0, x0, min(y1, h), min(x1, w))
    ph, pw = y1 - y0 - inside.shape[0], x1 - x0 - inside.shape[1]
    if ph or pw:
        inside = np.pad(inside, [(0, ph), (0, pw), (0, 0)], mode="reflect" if min(inside.shape[:2]) > 1 else "edge")
    return inside


#: The tissue decision reads a coarser pyramid level, down to this factor, where the slide has one.
TISSUE_MAX_DOWNSAMPLE = 4


def _coarse_level(slide: Slide, level: int) -> Tuple[int, int]:
    """The coarsest level at most :data:`TISSUE_MAX_DOWNSAMPLE` times coarser than ``level`` by a whole
    factor, and that factor; ``(level, 1)`` where the slide has none."""
    base, coarse = slide.downsamples[level], (level, 1)
    for j in range(level + 1, len(slide.levels)):
        r = slide.downsamples[j] / base
        if r > TISSUE_MAX_DOWNSAMPLE + 0.01:
            break
        if round(r) >= 2 and abs(r - round(r)) < 0.01:
            coarse = (j, int(round(r)))
    return coarse


def _coarse_box(slide: Slide, j: int, f: int, y0: int, x0: int, y1: int, x1: int) -> Tuple[int, int, int, int]:
    h, w = slide.levels[j].shape[:2]
    cy0, cx0 = min(y0 // f, h - 1), min(x0 // f, w - 1)
    return cy0, cx0, min(h, max(cy0 + 1, -(-y1 // f))), min(w, max(cx0 + 1, -(-x1 // f)))


def chunk_tissue(slide: Slide, level: int, y0: int, x0: int, y1: int, x1: int) -> float:
    """Tissue fraction (:func:`src_model.tissue.tissue_mask`) of a box of a slide level.

    Read from the coarsest level of the slide at most :data:`TISSUE_MAX_DOWNSAMPLE` times coarser than
    ``level`` by a whole factor (a pyramid level: 1/16 of the pixels at factor 4), else from ``level``
    itself, so that the glass decision costs no full-resolution read of the chunks to predict (their
    pixels are read once, for the prediction, and stored from there). Strip and chunk mode use this one
    decision.
    """
    from .tissue import tissue_mask

    j, f = _coarse_level(slide, level)
    return float(tissue_mask(slide.read_region(j, *_coarse_box(slide, j, f, y0, x0, y1, x1))).mean())


#: Context (pixels of the predicted level) around a chunk in which open glass is told from lumens.
GLASS_CONTEXT = 512


def drop_open_glass(slide: Slide, level: int, y0: int, x0: int, rgb: np.ndarray, glands: np.ndarray,
                    uncertainty: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(glands, uncertainty)`` of the chunk at (y0, x0) (RGB ``rgb``) with 0 on open glass.

    Open glass (:func:`src_model.tissue.open_glass`) is found on the coarse level that
    :func:`chunk_tissue` reads, over the chunk and :data:`GLASS_CONTEXT` pixels around it; a pixel is
    set to 0 where that glass reaches (one coarse pixel of slack) and the chunk's own pixel is glass:
    no gland there, and no uncertainty to draw the eye or the review regions to empty glass (as in a
    glass chunk). Depends on the chunk alone, so both modes and any number of workers agree.
    """
    from .tissue import clear_open_glass, open_glass, tissue_mask

    if tissue_mask(rgb).all():
        return glands, uncertainty
    j, f = _coarse_level(slide, level)
    h, w = glands.shape
    H, W = slide.levels[level].shape[:2]
    m = GLASS_CONTEXT
    box = _coarse_box(slide, j, f, max(0, y0 - m), max(0, x0 - m), min(H, y0 + h + m), min(W, x0 + w + m))
    sides = (box[0] > 0, box[2] < slide.levels[j].shape[0], box[1] > 0, box[3] < slide.levels[j].shape[1])
    coarse = open_glass(slide.read_region(j, *box), sides=sides, pixel_area=f * f)
    if not coarse.any():
        return glands, uncertainty
    from scipy import ndimage as ndi

    coarse = ndi.binary_dilation(coarse, structure=np.ones((3, 3), bool))  # slack for the coarse grid
    glands, uncertainty = glands.copy(), uncertainty.copy()
    clear_open_glass(coarse, f, y0 - box[0] * f, rgb, glands, uncertainty, c0=x0 - box[1] * f)
    return glands, uncertainty


def file_sha256(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_settings(model_path: Optional[PathLike], *, tile: int, overlap: float, branch: Any, min_tissue: float,
                 batch_size: int) -> Dict[str, Any]:
    """The settings a resumed run must share with the store's first run (model by content hash)."""
    from .checkpoint import bundled_model_path

    path = Path(model_path) if model_path is not None else bundled_model_path()
    return {"model": str(path.resolve()), "model_sha256": file_sha256(path), "tile": int(tile),
            "overlap": float(overlap), "branch": branch, "min_tissue": float(min_tissue), "batch_size": int(batch_size)}


# --------------------------------------------------------------------------- one chunk

def predict_chunk(store: SlideStore, slide: Slide, runner, cy: int, cx: int, device: Any = "cpu") -> float:
    """Predict chunk (cy, cx) of ``store`` from ``slide`` with a prepared model and write it.

    Args:
        runner: the model, ideally prepared once with :func:`src_model.inference.prepare_model`.

    Returns:
        the chunk's tissue fraction.
    """
    from .inference import predict

    info, st = store.info, store.info.settings
    level, tile, overlap = info.slide_level, st["tile"], st["overlap"]
    y0, x0, y1, x1 = store.chunk_box(cy, cx)
    tissue = chunk_tissue(slide, level, y0, x0, y1, x1)
    h, w = y1 - y0, x1 - x0
    if tissue < st["min_tissue"]:
        rgb = slide.read_region(level, y0, x0, y1, x1)
        store.write_chunk(cy, cx, rgb, np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8), tissue)
        return tissue
    wy0, wy1 = window_span(y0, y1, info.height, tile, overlap)
    wx0, wx1 = window_span(x0, x1, info.width, tile, overlap)
    window = read_window(slide, level, wy0, wx0, wy1, wx1)
    pred = predict(runner, window, tile=tile, overlap=overlap, batch_size=st["batch_size"],
                   branch=st["branch"], device=device)
    core = (slice(y0 - wy0, y1 - wy0), slice(x0 - wx0, x1 - wx0))
    rgb = np.ascontiguousarray(window[core])
    glands, unc = drop_open_glass(slide, level, y0, x0, rgb, (pred.labels[core] > 0).astype(np.uint8),
                                  np.round(np.clip(pred.uncertainty[core], 0.0, 1.0) * 255.0).astype(np.uint8))
    store.write_chunk(cy, cx, rgb, glands, unc, tissue)
    return tissue


# --------------------------------------------------------------------------- one strip

def strips_of(todo: Sequence[Tuple[int, int]], strip_rows: int = DEFAULT_STRIP_ROWS) -> List[List[Tuple[int, int]]]:
    """The chunks of ``todo`` grouped by strip (chunk rows ``k * strip_rows .. (k + 1) * strip_rows``), top to
    bottom, each strip's chunks in ``todo``'s order."""
    groups: Dict[int, List[Tuple[int, int]]] = {}
    for cy, cx in todo:
        groups.setdefault(cy // strip_rows, []).append((cy, cx))
    return [groups[k] for k in sorted(groups)]


class LazyWindow:
    """A box ``(y0, x0, y1, x1)`` of a slide level as :func:`src_model.bands.predict_rows` reads it:
    ``shape`` and ``[rows, columns]`` slices, read from the slide on demand (:func:`read_window`, the box
    may pass the bottom and right edges) in bands of at least ``rows`` rows.

    Bands are kept until :meth:`release` gives their rows up, so the pixels of a finished chunk row can
    be stored from here (:meth:`take`) instead of being read from the slide a second time.

    A band padded past an edge is read with up to ``rows`` more rows above (columns to the left), so the
    mirrored padding is the one of the whole level, whatever band it falls in.
    """

    def __init__(self, slide: Slide, level: int, y0: int, x0: int, y1: int, x1: int, rows: int) -> None:
        self.slide, self.level, self.y0, self.x0, self.y1, self.x1, self.rows = slide, level, y0, x0, y1, x1, rows
        self.shape = (y1 - y0, x1 - x0, 3)
        self._bands: Dict[int, np.ndarray] = {}  # first window row -> pixels (rows, x1 - x0, 3)

    def _band_of(self, r0: int, r1: int) -> Optional[int]:
        return next((b for b in self._bands if b <= r0 and r1 <= b + self._bands[b].shape[0]), None)

    def __getitem__(self, key: Tuple[slice, slice]) -> np.ndarray:
        ys, xs = key
        r0, r1 = ys.start or 0, min(self.shape[0], ys.stop)
        band = self._band_of(r0, r1)
        if band is None:
            band, end = r0, min(self.shape[0], max(r1, r0 + self.rows))
            gy0, gx0 = self.y0 + band, self.x0
            h, w = self.slide.levels[self.level].shape[:2]
            # extra rows above, columns to the left, where the band is padded past an edge
            ey = min(gy0, self.rows) if self.y0 + end > h else 0
            ex = min(gx0, self.rows) if self.x1 > w else 0
            data = read_window(self.slide, self.level, gy0 - ey, gx0 - ex, self.y0 + end, self.x1)
            self._bands[band] = data[ey:, ex:]
        return self._bands[band][r0 - band:r1 - band, xs]

    def take(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """A copy of window rows ``r0:r1``, columns ``c0:c1``: from the kept bands where they hold the
        rows, read from the slide otherwise."""
        out = np.empty((r1 - r0, c1 - c0, 3), np.uint8)
        r = r0
        while r < r1:
            band = self._band_of(r, r + 1)
            if band is None:
                out[r - r0:] = self[r:r1, c0:c1]
                self._bands.pop(r, None)  # a band read only for this copy is not kept
                break
            n = min(r1, band + self._bands[band].shape[0]) - r
            out[r - r0:r - r0 + n] = self._bands[band][r - band:r - band + n, c0:c1]
            r += n
        return out

    def release(self, row: int) -> None:
        """Forget the bands that lie wholly above window row ``row`` (no later read or take needs them)."""
        self._bands = {b: v for b, v in self._bands.items() if b + v.shape[0] > row}


class FullBatches:
    """A runner that always runs ``batch_size`` tiles: a shorter batch is filled with copies of its last tile,
    whose outputs are dropped (so a tile's output does not depend on its batch; see the module docstring)."""

    def __init__(self, runner, batch_size: int) -> None:
        self.runner, self.batch_size = runner, batch_size

    def __call__(self, x):
        import torch

        n = x.shape[0]
        if n < self.batch_size:
            x = torch.cat([x, x[-1:].expand(self.batch_size - n, *x.shape[1:])])
        return self.runner(x)[:n]


def predict_strip(store: SlideStore, slide: Slide, runner, chunks: Sequence[Tuple[int, int]],
                  device: Any = "cpu") -> Generator[Tuple[int, int], None, None]:
    """Predict the chunks ``chunks`` of one strip of ``store`` in one pass of the rolling band loop and write
    them; yields each chunk (cy, cx) once it is written (glass chunks first, then row by row).

    Args:
        runner: the model prepared with :func:`src_model.inference.prepare_model`.
        chunks: chunks of one strip (or any chunks: the window spans their rows and columns).
    """
    import torch

    from .bands import blend_window, predict_rows
    from .runtime import resolve_device

    info, st = store.info, store.info.settings
    level, tile, overlap = info.slide_level, st["tile"], st["overlap"]
    todo: Dict[int, List[Tuple[int, float]]] = {}  # chunk row -> [(cx, tissue)] of the tissue chunks
    for cy, cx in chunks:  # the tissue decision of chunk mode, per chunk
        y0, x0, y1, x1 = store.chunk_box(cy, cx)
        tissue = chunk_tissue(slide, level, y0, x0, y1, x1)
        if tissue < st["min_tissue"]:
            store.write_chunk(cy, cx, slide.read_region(level, y0, x0, y1, x1), np.zeros((y1 - y0, x1 - x0), np.uint8),
                              np.zeros((y1 - y0, x1 - x0), np.uint8), tissue)
            yield cy, cx
        else:
            todo.setdefault(cy, []).append((cx, tissue))
    if not todo:
        return
    (y0, x0, _, _), (_, _, y1, x1) = (store.chunk_box(min(todo), min(c for r in todo.values() for c, _ in r)),
                                      store.chunk_box(max(todo), max(c for r in todo.values() for c, _ in r)))
    wy0, wy1 = window_span(y0, y1, info.height, tile, overlap)
    wx0, wx1 = window_span(x0, x1, info.width, tile, overlap)
    rows: Dict[int, List[np.ndarray]] = {}  # chunk row -> [glands, uncertainty, rows filled]
    pending = set(todo)  # chunk rows not written yet
    written: List[Tuple[int, int]] = []

    def sink(maps) -> None:
        g0, g1 = wy0 + maps.r0, wy0 + maps.r0 + maps.rows  # slide rows of these maps
        labels = maps.labels[:, x0 - wx0:x1 - wx0].numpy()
        unc = maps.uncertainty[:, x0 - wx0:x1 - wx0].numpy()
        for cy in todo:
            cy0, _, cy1, _ = store.chunk_box(cy, 0)
            a, b = max(g0, cy0), min(g1, cy1)
            if a >= b:
                continue
            buf = rows.setdefault(cy, [np.zeros((cy1 - cy0, x1 - x0), np.uint8),
                                       np.zeros((cy1 - cy0, x1 - x0), np.uint8), np.zeros(1, np.int64)])
            buf[0][a - cy0:b - cy0] = labels[a - g0:b - g0] > 0
            buf[1][a - cy0:b - cy0] = np.round(np.clip(unc[a - g0:b - g0], 0.0, 1.0) * 255.0)
            buf[2] += b - a
            if buf[2][0] == cy1 - cy0:  # the chunk row is finished: write its chunks (pixels from the window)
                for cx, tissue in todo[cy]:
                    _, cx0, _, cx1 = store.chunk_box(cy, cx)
                    rgb = window.take(cy0 - wy0, cy1 - wy0, cx0 - wx0, cx1 - wx0)
                    glands, unc_chunk = drop_open_glass(slide, level, cy0, cx0, rgb, buf[0][:, cx0 - x0:cx1 - x0],
                                                        buf[1][:, cx0 - x0:cx1 - x0])
                    store.write_chunk(cy, cx, rgb, glands, unc_chunk, tissue)
                    written.append((cy, cx))
                del rows[cy]
                pending.discard(cy)
        # window rows above the first chunk row still to write are needed neither by the tiles to come
        # (they are finished) nor by a write
        window.release(min([store.chunk_box(c, 0)[0] - wy0 for c in pending] + [g1 - wy0]))

    dev = resolve_device(device)
    window = LazyWindow(slide, level, wy0, wx0, wy1, wx1, max(tile, store.info.chunk))
    with torch.inference_mode():
        for _ in predict_rows(FullBatches(runner, st["batch_size"]), window, wy1 - wy0, wx1 - wx0, sink, tile=tile,
                              overlap=overlap, batch_size=st["batch_size"], window=blend_window(tile), device=dev):
            yield from written
            written.clear()
    yield from written


_WORKER_STATE: Dict[str, Any] = {}


def _worker_state(store_path: str, device: str) -> Dict[str, Any]:
    """The store, slide and prepared model of a worker process, opened once per process."""
    import torch

    from .checkpoint import load_model
    from .inference import prepare_model

    state = _WORKER_STATE.get(store_path)
    if state is None:
        torch.set_num_threads(1)  # one thread per worker process (threads_per_worker=1)
        store = open_store(store_path, mode="r+")
        st = store.info.settings
        model = load_model(st["model"])
        state = {"store": store, "slide": open_slide(store.info.slide),
                 "runner": prepare_model(model, st["branch"], device)}
        _WORKER_STATE.clear()
        _WORKER_STATE[store_path] = state
    return state


def _worker_chunk(store_path: str, cy: int, cx: int, device: str = "cpu") -> List[Tuple[int, int]]:
    """A Dask task: predict one chunk in a worker process."""
    state = _worker_state(store_path, device)
    predict_chunk(state["store"], state["slide"], state["runner"], cy, cx, device)
    return [(cy, cx)]


def _worker_strip(store_path: str, chunks: List[Tuple[int, int]], device: str = "cpu") -> List[Tuple[int, int]]:
    """A Dask task: predict one strip's chunks in a worker process."""
    state = _worker_state(store_path, device)
    return list(predict_strip(state["store"], state["slide"], state["runner"], chunks, device))


# --------------------------------------------------------------------------- the whole slide

def prepare_store(slide_path: PathLike, store_path: PathLike, *, level: int = 0, chunk: int = DEFAULT_CHUNK,
                  settings: Dict[str, Any]) -> SlideStore:
    """Open the store of a run to resume, or create it. A store made for another slide, level,
    chunk or settings is a :class:`~src_model.slide_store.StoreError`."""
    slide_path = Path(slide_path).resolve()
    with open_slide(slide_path) as slide:
        if not 0 <= level < len(slide.levels):
            raise StoreError(f"{slide_path}: level {level} does not exist; the slide has levels "
                             f"0..{len(slide.levels) - 1}")
        h, w = slide.levels[level].shape[:2]
        info = StoreInfo(slide=str(slide_path), slide_level=level, downsample=slide.downsamples[level],
                         height=h, width=w, chunk=chunk, n_levels=pyramid_levels(h, w, chunk), mpp=slide.mpp,
                         settings=settings)
    p = Path(store_path)
    if not p.exists():
        return create_store(p, info)
    store = open_store(p, mode="r+")
    old = store.info
    mine = {"slide": info.slide, "slide_level": level, "chunk": chunk, "height": h, "width": w, **settings}
    theirs = {"slide": old.slide, "slide_level": old.slide_level, "chunk": old.chunk, "height": old.height,
              "width": old.width, **old.settings}
    diff = sorted(k for k in mine if mine[k] != theirs.get(k))
    if diff:
        k = diff[0]
        raise StoreError(f"{p}: exists from a run with other settings ({k}: {theirs.get(k)!r}, now {mine[k]!r}); "
                         f"use another --out or remove it")
    return store


def predict_slide(slide_path: PathLike, store_path: PathLike, *, model_path: Optional[PathLike] = None,
                  level: int = 0, chunk: int = DEFAULT_CHUNK, tile: int = DEFAULT_TILE,
                  overlap: float = DEFAULT_OVERLAP, branch: Any = "mean", batch_size: int = 8,
                  min_tissue: float = DEFAULT_MIN_TISSUE, device: str = "cpu", workers: int = 0,
                  scheduler: Optional[str] = None, max_chunks: Optional[int] = None,
                  chunks: Optional[Sequence[Tuple[int, int]]] = None, mode: str = "chunk",
                  strip_rows: int = DEFAULT_STRIP_ROWS) -> Generator[Progress, None, SlideSummary]:
    """Predict a slide's level into an OME-Zarr store, chunk by chunk; a generator of progress events.

    Args:
        slide_path: any slide :func:`src_model.slide.open_slide` reads.
        store_path: the store (created, or resumed when it holds an earlier run's chunks).
        model_path: checkpoint (None: the bundled model).
        level: the slide level to predict (0 = full resolution).
        chunk: chunk side, a power of two (the store's chunks; one unit of work).
        tile, overlap, branch, batch_size: as :func:`src_model.inference.predict_tiles`.
        min_tissue: chunks with a smaller tissue fraction are glass and not predicted.
        workers: 0 = this process; N = a local Dask cluster of N processes (one thread each).
        scheduler: address of an existing Dask scheduler (instead of ``workers``).
        max_chunks: stop after computing this many chunks (the rest stays for a later run).
        chunks: only these chunks (cy, cx) (e.g. the visible ones), default all.
        mode: ``"chunk"`` (each chunk from its own window) or ``"strip"`` (strips of ``strip_rows`` chunk
            rows, each in one pass; see the module docstring). The store does not depend on it: a run
            may resume another mode's store.
        strip_rows: chunk rows per strip (strip mode).

    Yields:
        ``Progress(stage="predict-slide", step=chunks_done_this_run, total=chunks_to_do)``.

    Returns:
        :class:`SlideSummary`.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if strip_rows < 1:
        raise ValueError(f"strip_rows must be >= 1, got {strip_rows}")
    start = time.monotonic()
    settings = run_settings(model_path, tile=tile, overlap=overlap, branch=branch, min_tissue=min_tissue,
                            batch_size=batch_size)
    made = not os.path.lexists(store_path)  # a store this run makes is removed again if it fails before any chunk
    try:
        store = prepare_store(slide_path, store_path, level=level, chunk=chunk, settings=settings)
        done = store.done()
        wanted = store.all_chunks() if chunks is None else [tuple(c) for c in chunks]
        todo = [(cy, cx) for cy, cx in wanted if not done[cy, cx]]
        if max_chunks is not None:
            todo = todo[:max_chunks]
        logger.info("%s: %d x %d pixels, %d chunks, %d done, %d to predict", store.path, store.info.height,
                    store.info.width, len(store.all_chunks()), int(done.sum()), len(todo))
        clock = EtaClock(len(todo))
        tasks = strips_of(todo, strip_rows) if mode == "strip" else [[c] for c in todo]
        if todo and (workers or scheduler):
            runs = _run_dask(store, tasks, workers, scheduler, device, mode)
        elif todo:
            runs = _run_local(store, tasks, device, mode)
        else:
            runs = iter(())
        for i, _ in enumerate(runs, start=1):
            yield Progress(stage="predict-slide", step=i, total=len(todo), eta_s=clock.eta(i))
    except Exception:
        if made and scheduler is None:  # an outside scheduler's workers may still be writing into it
            _remove_empty_store(Path(store_path))
        raise
    return summarize(store, computed=len(todo), seconds=time.monotonic() - start)


def _remove_empty_store(path: Path) -> None:
    """Remove a store this run made when no chunk was predicted into it (a slide whose data fails to read at the
    first chunk, a full disk while it was made): a skeleton that would only stand in the way of the next --out."""
    import shutil

    try:
        if open_store(path).done().any():
            return  # predicted chunks: kept, so that a run after the cause is fixed resumes them
    except StoreError:
        pass  # half made
    except OSError:
        return
    shutil.rmtree(path, ignore_errors=True)
    logger.info("%s: removed the store this run made; nothing was predicted into it", path)


def _run_local(store: SlideStore, tasks: List[List[Tuple[int, int]]], device: str, mode: str):
    """Run the tasks (chunks, or strips' chunks) in this process; yields each chunk once written."""
    from .checkpoint import load_model
    from .inference import prepare_model

    st = store.info.settings
    runner = prepare_model(load_model(st["model"]), st["branch"], device)
    with open_slide(store.info.slide) as slide:
        for task in tasks:
            if mode == "strip":
                yield from predict_strip(store, slide, runner, task, device)
            else:
                for cy, cx in task:
                    predict_chunk(store, slide, runner, cy, cx, device)
                    yield cy, cx


def _run_dask(store: SlideStore, tasks: List[List[Tuple[int, int]]], workers: int, scheduler: Optional[str],
              device: str, mode: str):
    from dask.distributed import Client, LocalCluster, as_completed

    logging.getLogger("distributed").setLevel(max(logging.WARNING, logging.getLogger().level))  # no start/stop chatter
    environ = dict(os.environ)  # the nannies set OMP_NUM_THREADS etc. here for their workers: restored below
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    try:
        tag = f"{os.getpid()}-{time.monotonic_ns()}"
        if mode == "strip":
            futures = [client.submit(_worker_strip, str(store.path), task, device, pure=False,
                                     key=f"strip-{task[0][0]}-{i}-{tag}") for i, task in enumerate(tasks)]
        else:
            futures = [client.submit(_worker_chunk, str(store.path), cy, cx, device, pure=False,
                                     key=f"chunk-{cy}-{cx}-{tag}") for (cy, cx), in tasks]
        for fut in as_completed(futures):
            yield from fut.result()  # a failed task raises here, in the caller
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        os.environ.clear()
        os.environ.update(environ)


def summarize(store: SlideStore, computed: int = 0, seconds: float = 0.0) -> SlideSummary:
    """:class:`SlideSummary` from the store's chunk record."""
    rec = store.chunk_stats()
    done = rec[:, :, 0] == 1
    glass = done & (rec[:, :, 1] < store.info.settings.get("min_tissue", 0.0))
    tissue_px = 0.0
    for cy, cx in zip(*np.nonzero(done & ~glass), strict=True):
        y0, x0, y1, x1 = store.chunk_box(int(cy), int(cx))
        tissue_px += (y1 - y0) * (x1 - x0)
    area = store.info.height * store.info.width
    return SlideSummary(store=str(store.path), height=store.info.height, width=store.info.width,
                        chunks_total=int(done.size), chunks_done=int(done.sum()), chunks_computed=int(computed),
                        chunks_glass=int(glass.sum()), gland_fraction=float(np.nansum(rec[:, :, 2][done]) / area),
                        mean_uncertainty=float(np.nansum(rec[:, :, 3][done & ~glass]) / tissue_px) if tissue_px
                        else 0.0, seconds=float(seconds))


__all__ = ["DEFAULT_CHUNK", "DEFAULT_MIN_TISSUE", "DEFAULT_STRIP_ROWS", "FullBatches", "LazyWindow", "MODES",
           "SlideSummary", "grid_stride", "predict_chunk", "predict_slide", "predict_strip", "prepare_store",
           "read_window", "strips_of", "summarize", "window_span"]
