"""Memory-bounded prediction of one image straight into files, band by band (``cdma predict``).

:func:`src_model.inference.predict_tiles` returns every map in memory, image-sized. Here the
finished row bands of the shared tile loop (:func:`src_model.bands.predict_rows`: a rolling
accumulator about a tile high) are written at once, to PNG and ``.npy`` files opened for
streaming, and forgotten. What is held is the RGB image, the rolling band, one batch of tiles and
one band of review squares; the results are those of :func:`~src_model.inference.predict_tiles`
(the same loop) to the float16 rounding of the files.

Files are written with plain ``write`` calls at computed offsets, not through memory maps: pages of
a written memory map stay resident (and count in the process's RSS) until the kernel evicts
them, while written file data goes to the page cache, which the kernel frees as needed.

:func:`estimate_predict_bytes` states the memory this path needs for an image, and
:func:`check_memory` refuses, before anything is read, an image that would not fit in the memory
the machine has available (``MemAvailable`` of /proc/meminfo).
"""
from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Generator, List, Optional, Tuple, Union

import numpy as np
import torch

from .bands import FINISH_ROWS, RowMaps
from .inference import Branch, _branches, predict_into
from .io import to_rgb_uint8
from .progress import Progress
from .runtime import available_memory
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE, REVIEW_SIZE
from .tissue import tissue_mask
from .uncertainty import tile_score

logger = logging.getLogger(__name__)

#: Pixels per forward batch (8 tiles of 320 px); larger tiles get smaller batches.
BATCH_PIXELS = 8 * 320 * 320
#: Process start-up and libraries (Python, torch, NumPy, Pillow, tifffile): measured 0.22 GB.
BASE_BYTES = 300 * 2**20
#: Network activations per input pixel of a batch for the lite preset (measured ~170 B at 8 tiles
#: of 320 px, fast model, inference mode; ~490 B for the paper preset): scaled by
#: :func:`width_factor` for other models.
ACTIVATION_BYTES_PER_PIXEL = 300
#: Review squares scored per band are at most this large (the option is range-checked to it).
MAX_REVIEW_SIZE = 2048


class MemoryBudgetError(ValueError):
    """An image needs more memory than the machine has available; the message gives both."""


def width_factor(config) -> float:
    """How much wider than the lite preset a model's encoder is (square root of the ratio of the
    summed stage widths times block expansion; 1 for lite, 3.6 for paper), at least 1."""
    try:
        ratio = sum(config.widths) * config.expansion / 296.0
    except (AttributeError, TypeError):
        return 4.0
    return max(1.0, ratio ** 0.5)


def batch_size_for(tile: int) -> int:
    """Tiles per forward pass: 8 at the default tile, fewer for larger tiles (at least 1)."""
    return max(1, min(8, BATCH_PIXELS // (tile * tile)))




def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def estimate_predict_bytes(height: int, width: int, *, read_bytes: int = 0, tile: int = DEFAULT_TILE,
                           n_branches: int = 3, n_classes: int = 2, model_bytes: int = 4 * 10**6,
                           width_factor: float = 1.0, review_size: int = REVIEW_SIZE) -> Dict[str, int]:
    """Peak memory of :func:`predict_to_files` for an image of ``height`` x ``width`` pixels, by part.

    Args:
        read_bytes: peak extra bytes of decoding the file (beyond the RGB result), e.g. from
            :func:`src_model.io.image_header`.
        model_bytes: bytes of the model's weights (the checkpoint, the model and its fast copy are
            held together).
        width_factor: the model's widths relative to the lite preset (activations scale with it).

    Returns:
        ``{"image", "read", "accumulator", "batch", "finish", "review", "fixed", "total"}`` in bytes.
    """
    hp, wp = max(height, tile), max(width, tile)
    kc = n_branches * n_classes
    batch = batch_size_for(tile)
    parts = {
        "image": 3 * height * width + (3 * hp * wp if (hp, wp) != (height, width) else 0),
        "read": int(read_bytes),
        # the rolling band (src_model.bands.band_rows: at most a tile and a stride high on a wide image)
        # and its weight sum, float32
        "accumulator": (kc + 1) * min(hp, 2 * tile) * wp * 4,
        # input tiles (uint8 stack + float), outputs, softmax, activations
        "batch": batch * tile * tile * (3 + 12 + 3 * kc * 4) + int(batch * tile * tile * ACTIVATION_BYTES_PER_PIXEL
                                                                      * width_factor),
        # the maps of FINISH_ROWS rows: normalised branch probabilities and ~13 float maps
        "finish": FINISH_ROWS * width * (kc * 4 * 3 + 13 * 4),
        # a band of float32 uncertainty and the tissue mask of one review square
        "review": min(review_size, height) * width * 4 + min(review_size, height) * min(review_size, width) * 40,
        "fixed": BASE_BYTES + 3 * int(model_bytes),
    }
    parts["total"] = parts["fixed"] + max(parts["image"] + parts["read"],
                                          parts["image"] + parts["accumulator"] + parts["batch"] + parts["finish"]
                                          + parts["review"])
    return parts


def check_memory(source: str, parts: Dict[str, int], available: Optional[int] = None) -> None:
    """Raise :class:`MemoryBudgetError` naming ``source`` when ``parts["total"]`` exceeds the
    available memory (default: :func:`available_memory`; nothing is checked where it is unknown)."""
    available = available_memory() if available is None else available
    if available is not None and parts["total"] > available:
        raise MemoryBudgetError(
            f"{source}: predicting this image needs about {_gb(parts['total'])} of memory (image "
            f"{_gb(parts['image'])}, tiles and accumulators {_gb(parts['accumulator'] + parts['batch'])}, "
            f"libraries and model {_gb(parts['fixed'])}), but only {_gb(available)} is available; "
            f"free memory, use a smaller --tile, or crop the image")


# --------------------------------------------------------------------------- streaming writers

class NpyWriter:
    """A ``.npy`` file of a known shape and dtype, filled by rows (axis -2) at any position.

    The file is a regular ``.npy`` (format 1.0, C order), readable by ``np.load``; space is
    reserved up front (sparse where the file system allows) and rows are written with ``write``.
    """

    def __init__(self, path: Union[str, os.PathLike], shape: Tuple[int, ...], dtype) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        if len(self.shape) not in (2, 3):
            raise ValueError(f"NpyWriter takes (H, W) or (K, H, W), got {self.shape}")
        self._f = open(self.path, "wb")
        np.lib.format.write_array_header_1_0(
            self._f, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                      "shape": self.shape})
        self._offset = self._f.tell()
        self._f.truncate(self._offset + int(np.prod(self.shape)) * self.dtype.itemsize)

    def write_rows(self, r0: int, rows: np.ndarray) -> None:
        """Write ``rows`` ((r, W) or (K, r, W)) as rows ``r0 .. r0 + r`` of the array."""
        data = np.ascontiguousarray(rows, dtype=self.dtype)
        h, w = self.shape[-2:]
        if data.ndim != len(self.shape) or data.shape[-1] != w or r0 < 0 or r0 + data.shape[-2] > h:
            raise ValueError(f"{self.path}: rows {r0}+{data.shape} do not fit {self.shape}")
        planes = data[None] if data.ndim == 2 else data
        for k, plane in enumerate(planes):
            self._f.seek(self._offset + ((k * h) + r0) * w * self.dtype.itemsize)
            self._f.write(memoryview(plane).cast("B"))

    def close(self) -> None:
        self._f.close()


class PngWriter:
    """An 8-bit greyscale PNG written row band by row band (rows in order, top to bottom)."""

    def __init__(self, path: Union[str, os.PathLike], height: int, width: int, level: int = 6) -> None:
        self.path = Path(path)
        self.height, self.width = int(height), int(width)
        self._rows = 0
        self._z = zlib.compressobj(level)
        self._f = open(self.path, "wb")
        self._f.write(b"\x89PNG\r\n\x1a\n")
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", self.width, self.height, 8, 0, 0, 0, 0))

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self._f.write(struct.pack(">I", len(data)) + kind)
        self._f.write(data)
        self._f.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF))

    def write_rows(self, rows: np.ndarray) -> None:
        """Append uint8 rows (r, W)."""
        rows = np.asarray(rows, dtype=np.uint8)
        if rows.ndim != 2 or rows.shape[1] != self.width or self._rows + rows.shape[0] > self.height:
            raise ValueError(f"{self.path}: rows {rows.shape} do not fit {self.height} x {self.width}")
        raw = np.zeros((rows.shape[0], self.width + 1), dtype=np.uint8)  # filter byte 0 (None) per row
        raw[:, 1:] = rows
        data = self._z.compress(memoryview(raw).cast("B"))
        if data:
            self._chunk(b"IDAT", data)
        self._rows += rows.shape[0]

    def close(self) -> None:
        if self._rows != self.height:
            self._f.close()
            raise ValueError(f"{self.path}: {self._rows} of {self.height} rows written")
        self._chunk(b"IDAT", self._z.flush())
        self._chunk(b"IEND", b"")
        self._f.close()


# --------------------------------------------------------------------------- prediction

@dataclass
class StreamSummary:
    """What :func:`predict_to_files` found: the numbers of the CLI's summary JSON."""

    height: int
    width: int
    foreground_fraction: float
    mean_disagreement: float
    #: squares of a ``review_size`` grid ranked by the uncertainty map (``Prediction.uncertainty``)
    review_tiles: List[Tuple[float, Tuple[int, int, int, int]]]
    mean_uncertainty: float = 0.0


class _ReviewBands:
    """Scores the squares of a review grid band by band as uncertainty rows arrive (float32, as
    finished), as :func:`src_model.uncertainty.rank_tiles` scores them.

    :func:`src_model.uncertainty.review_regions` (boxes centred on uncertain glands) needs the
    whole map and the gland instances at once, which the streaming path never holds, so the
    grid is kept here.
    """

    def __init__(self, image: np.ndarray, review_size: int) -> None:
        self.image = image
        self.size = review_size
        self.h, self.w = image.shape[:2]
        self.band = np.empty((min(review_size, self.h), self.w), dtype=np.float32)
        self.band_start = 0
        self.filled = 0
        self.scores: List[Tuple[float, Tuple[int, int, int, int]]] = []

    def add(self, rows: np.ndarray) -> None:
        i = 0
        while i < rows.shape[0]:
            y1 = min(self.h, self.band_start + self.size)
            take = min(rows.shape[0] - i, y1 - self.band_start - self.filled)
            self.band[self.filled:self.filled + take] = rows[i:i + take]
            self.filled += take
            i += take
            if self.band_start + self.filled == y1:
                self._score(self.band_start, y1)
                self.band_start, self.filled = y1, 0

    def _score(self, y0: int, y1: int) -> None:
        for x0 in range(0, self.w, self.size):
            x1 = min(self.w, x0 + self.size)
            tissue = tissue_mask(self.image[y0:y1, x0:x1])
            self.scores.append((tile_score(self.band[:y1 - y0, x0:x1], tissue), (y0, x0, y1, x1)))

    def ranked(self) -> List[Tuple[float, Tuple[int, int, int, int]]]:
        return sorted(self.scores, key=lambda item: -item[0])


def output_names(stem: str, branches: bool = False) -> Dict[str, str]:
    """File names ``cdma predict`` writes for an input of ``stem`` (keys: the maps)."""
    names = {"mask": f"{stem}_mask.png", "disagreement_png": f"{stem}_disagreement.png",
             "disagreement": f"{stem}_disagreement.npy", "entropy": f"{stem}_entropy.npy",
             "uncertainty": f"{stem}_uncertainty.npy", "probability": f"{stem}_probability.npy"}
    if branches:
        names["branch_probs"] = f"{stem}_branch_probs.npy"
    return names


def predict_to_files(model: torch.nn.Module, image: np.ndarray, out_dir: Union[str, os.PathLike], stem: str, *,
                     tile: int = DEFAULT_TILE, overlap: float = DEFAULT_OVERLAP, branch: Branch = "mean",
                     return_branches: bool = False, review_size: int = REVIEW_SIZE,
                     batch_size: Optional[int] = None, device: Union[str, torch.device] = "cpu",
                     fast: bool = True) -> Generator[Progress, None, StreamSummary]:
    """Tiled, blended prediction of ``image`` written to ``out_dir`` as it is computed.

    Same tiles, blend window and maps as :func:`src_model.inference.predict_tiles`; the files
    (names: :func:`output_names`) are

    * ``<stem>_mask.png``: 255 where the predicted class is not background, else 0;
    * ``<stem>_disagreement.png``: ``round(disagreement * 255)``;
    * ``<stem>_disagreement.npy``, ``<stem>_entropy.npy``, ``<stem>_uncertainty.npy``
      (``Prediction.uncertainty``: the mean of the branch entropies,
      :func:`~src_model.uncertainty.expected_entropy`), ``<stem>_probability.npy`` (gland
      probability): float16 (H, W) in [0, 1];
    * with ``return_branches``, ``<stem>_branch_probs.npy``: float16 (K, H, W), each branch's gland
      probability.

    Files are written under temporary names and renamed when all are complete, so a failed or
    interrupted prediction leaves no half-written output under the final names.

    Yields:
        ``Progress(stage="predict", step=tiles_done, total=n_tiles, eta_s=...)`` after each batch.

    Returns:
        :class:`StreamSummary`; the squares of a ``review_size`` grid ranked by the uncertainty
        map as :func:`src_model.uncertainty.rank_tiles` ranks them (not
        :func:`~src_model.uncertainty.review_regions`, which needs the whole map at once).
    """
    if tile < 16:
        raise ValueError(f"tile must be >= 16 pixels, got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if not 1 <= review_size <= MAX_REVIEW_SIZE:
        raise ValueError(f"review_size must be in 1..{MAX_REVIEW_SIZE}, got {review_size}")
    batch_size = batch_size_for(tile) if batch_size is None else batch_size
    img = to_rgb_uint8(image, source=stem)
    h, w = img.shape[:2]
    n_branches = len(_branches(branch, len(model.config.branches) if hasattr(model, "config") else 3))

    out_dir = Path(out_dir)
    names = output_names(stem, return_branches)
    tmp = {k: out_dir / f".{v}.partial" for k, v in names.items()}
    writers: Dict[str, object] = {}
    ok = False
    try:
        writers["mask"] = PngWriter(tmp["mask"], h, w)
        writers["disagreement_png"] = PngWriter(tmp["disagreement_png"], h, w)
        for key in ("disagreement", "entropy", "uncertainty", "probability"):
            writers[key] = NpyWriter(tmp[key], (h, w), np.float16)
        if return_branches:
            writers["branch_probs"] = NpyWriter(tmp["branch_probs"], (n_branches, h, w), np.float16)
        review = _ReviewBands(img, review_size)
        totals = {"foreground": 0, "disagreement": 0.0, "uncertainty": 0.0}
        logger.debug("stream-predict %dx%d image: tiles of %d, overlap %.3g, batch %d", h, w, tile, overlap,
                     batch_size)
        yield from predict_into(lambda rows: _write_rows(rows, writers, review, totals), model, img, tile=tile,
                                overlap=overlap, batch_size=batch_size, branch=branch, device=device, fast=fast)
        for writer in writers.values():
            writer.close()
        for key, path in tmp.items():
            os.replace(path, out_dir / names[key])
        ok = True
    finally:
        if not ok:
            for writer in writers.values():
                try:
                    writer._f.close()
                except Exception:  # best effort while an error propagates
                    pass
            for path in tmp.values():
                path.unlink(missing_ok=True)
    return StreamSummary(height=h, width=w, foreground_fraction=totals["foreground"] / (h * w),
                         mean_disagreement=totals["disagreement"] / (h * w), review_tiles=review.ranked(),
                         mean_uncertainty=totals["uncertainty"] / (h * w))


def _write_rows(rows: RowMaps, writers: Dict, review: _ReviewBands, totals: Dict) -> None:
    """Write the maps of finished rows (:func:`src_model.bands.finish_rows`) and add them to the summary."""
    r0 = rows.r0
    unc_np = rows.uncertainty.numpy()  # Prediction.uncertainty (without TTA)
    fg = (rows.labels > 0).numpy()
    dis_np = rows.disagreement.numpy()
    totals["foreground"] += int(fg.sum())
    totals["disagreement"] += float(dis_np.sum(dtype=np.float64))
    totals["uncertainty"] += float(unc_np.sum(dtype=np.float64))
    writers["mask"].write_rows(fg.astype(np.uint8) * 255)
    writers["disagreement_png"].write_rows(np.round(dis_np * 255).astype(np.uint8))
    writers["disagreement"].write_rows(r0, dis_np)
    writers["entropy"].write_rows(r0, rows.entropy.numpy())
    writers["uncertainty"].write_rows(r0, unc_np)
    writers["probability"].write_rows(r0, rows.probability[1].numpy())
    if "branch_probs" in writers:
        writers["branch_probs"].write_rows(r0, rows.branch_probs[:, 1].numpy())
    review.add(unc_np)


__all__ = ["MemoryBudgetError", "NpyWriter", "PngWriter", "StreamSummary", "available_memory", "batch_size_for",
           "check_memory", "estimate_predict_bytes", "output_names", "predict_to_files", "width_factor"]
