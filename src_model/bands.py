"""The tile loop of every prediction path: tiles in row-major order, blended into a rolling band, finished by rows.

The image is covered by overlapping square tiles (:func:`tile_starts`). Each tile's per-branch
softmax probabilities are weighted by a smooth separable window (:func:`blend_window`) that falls
towards the tile edges but never reaches 0, summed into an accumulator and divided by the summed
weight, so tile borders get almost no say wherever another tile covers them and the blend has no
seams.

The accumulator is a rolling band, not image-sized: tiles are run in row-major order, and after
each batch the image rows above the next tile to run can receive no more tiles, so they are
finished (normalised, maps derived: :func:`finish_rows`) and handed to a *sink*, then forgotten.
The band holds at most the rows one batch of tiles can reach (a tile height plus a few tile
strides). :func:`src_model.inference.predict_tiles` (maps in memory),
:func:`src_model.stream.predict_to_files` (maps to files) and the napari dock (maps to layers)
are sinks of this one loop; their results agree exactly, since every pixel receives the same
tile contributions in the same order.
"""
from __future__ import annotations

import math
from functools import cached_property
from typing import Callable, Generator, List, Optional

import numpy as np
import torch

from .io import to_model_input
from .progress import EtaClock, Progress
from .uncertainty import _entropy

WINDOW_FLOOR = 1e-3  # smallest blending weight (at a tile's outermost pixels); never 0
#: Rows finished at a time (bounds the temporaries of the map computations).
FINISH_ROWS = 64


def tile_starts(length: int, tile: int, overlap: float) -> List[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)``, evenly spread.

    Neighbouring tiles overlap by at least ``overlap * tile`` pixels; the last tile ends at
    ``length``. A ``length`` up to ``tile`` needs one tile at 0 (the image is padded to it).
    """
    if length <= tile:
        return [0]
    stride = max(1, int(round(tile * (1.0 - overlap))))
    n = math.ceil((length - tile) / stride) + 1
    return [int(round(i * (length - tile) / (n - 1))) for i in range(n)]


def blend_window(tile: int, floor: float = WINDOW_FLOOR) -> torch.Tensor:
    """Separable raised-cosine (Hann) weight (tile, tile): 1 at the centre, ``floor`` at edges."""
    i = torch.arange(tile, dtype=torch.float64)
    hann = 0.5 - 0.5 * torch.cos(2.0 * math.pi * (i + 0.5) / tile)
    w1 = floor + (1.0 - floor) * hann
    return torch.outer(w1, w1).float()


def argmax_classes(p: torch.Tensor, dim: int) -> torch.Tensor:
    """``p.argmax(dim)`` (first maximum wins) as uint8, by comparing classes one by one.

    Same result as ``torch.argmax`` for finite inputs; torch's CPU argmax over an axis that is
    not the innermost one is about 50x slower than these few elementwise passes.
    """
    best = p.select(dim, 0)
    idx = torch.zeros(best.shape, dtype=torch.uint8)
    for c in range(1, p.shape[dim]):
        pc = p.select(dim, c)
        better = pc > best
        idx.masked_fill_(better, c)
        best = torch.maximum(best, pc)
    return idx


def class_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the class axis (2) of logits (B, K, C, T, T); with two classes as the logistic
    function of the logit difference (equal to within 1.2e-7, and 1.7x faster than a softmax over an
    axis that is not the innermost one: this runs on every tile)."""
    if logits.shape[2] != 2:
        return torch.softmax(logits, dim=2)
    p1 = torch.sigmoid(logits[:, :, 1] - logits[:, :, 0])
    return torch.stack([1.0 - p1, p1], dim=2)


class RowMaps:
    """The maps of finished image rows ``r0 .. r0 + r`` (all torch tensors on the CPU).

    Each map is computed when it is first read and kept: a sink that needs only ``labels`` and
    ``uncertainty`` (a slide store) pays for nothing else, and the entropies behind ``entropy``,
    ``disagreement`` and ``uncertainty`` are computed once for all three (the values are those of
    :mod:`src_model.uncertainty`'s functions, bit for bit).

    Attributes:
        r0: first image row.
        branch_probs: float32 (K, C, r, W) blended per-branch probabilities.
        probability: float32 (C, r, W), their mean over branches.
        labels: uint8 (r, W), argmax of ``probability`` over classes.
        disagreement: float32 (r, W), :func:`~src_model.uncertainty.disagreement`.
        entropy: float32 (r, W) in [0, 1], entropy of ``probability``.
        uncertainty: float32 (r, W), ``Prediction.uncertainty``: the mean branch entropy, or
            (``tta``) the entropy of the mean.
    """

    def __init__(self, r0: int, branch_probs: torch.Tensor, tta: bool = False) -> None:
        self.r0, self.branch_probs, self.tta = r0, branch_probs, tta

    @property
    def rows(self) -> int:
        return int(self.branch_probs.shape[2])

    @cached_property
    def probability(self) -> torch.Tensor:
        return self.branch_probs.mean(0)

    @cached_property
    def labels(self) -> torch.Tensor:
        return argmax_classes(self.probability, 0)

    @cached_property
    def _ln_c(self) -> float:
        return math.log(self.branch_probs.shape[1])

    @cached_property
    def _entropy_of_mean(self) -> torch.Tensor:  # H(p_mean), nats
        return _entropy(self.probability, dim=0)

    @cached_property
    def _branch_entropy_mean(self) -> torch.Tensor:  # mean_k H(p_k), nats
        return _entropy(self.branch_probs, dim=1).mean(0)

    @cached_property
    def entropy(self) -> torch.Tensor:
        return (self._entropy_of_mean / self._ln_c).clamp_(0.0, 1.0)  # rounding can give 1 + 1e-7

    @cached_property
    def disagreement(self) -> torch.Tensor:
        return ((self._entropy_of_mean - self._branch_entropy_mean) / self._ln_c).clamp_(0.0, 1.0)

    @cached_property
    def uncertainty(self) -> torch.Tensor:
        if self.tta:
            return self.entropy
        return (self._branch_entropy_mean / self._ln_c).clamp_(0.0, 1.0)

    def vote(self) -> torch.Tensor:
        """:func:`src_model.uncertainty.vote`: fraction of branches whose argmax differs from ``labels``."""
        return (argmax_classes(self.branch_probs, 1) != self.labels).float().mean(0)


def finish_rows(acc: torch.Tensor, wsum: torch.Tensor, r0: int, tta: bool = False) -> RowMaps:
    """Normalise accumulated rows (K, C, r, W) by their weight sum (r, W); the maps follow on demand."""
    return RowMaps(r0, acc / wsum, tta)


def predict_rows(runner: Callable[[torch.Tensor], torch.Tensor], padded: np.ndarray, height: int, width: int,
                 sink: Callable[[RowMaps], None], *, tile: int, overlap: float, batch_size: int,
                 window: torch.Tensor, device: torch.device, precision: str = "fp32",
                 finish_rows_at_once: int = FINISH_ROWS) -> Generator[Progress, None, int]:
    """Run the tiles of ``padded`` in row-major batches; hand every finished row band to ``sink``.

    Args:
        runner: x (B, 3, T, T) in [0, 1] -> logits (B, K, C, T, T)
            (:func:`src_model.inference.prepare_model`).
        padded: RGB uint8 (Hp, Wp, 3), the image padded to at least one tile
            (:func:`src_model.tiling.pad_to`).
        height, width: the image's own size; rows and columns beyond it are never finished.
        sink: called with the :class:`RowMaps` of rows ``r0 .. r0 + r`` (at most
            ``finish_rows_at_once`` rows), top to bottom, each row exactly once.
        window: blend weights (tile, tile) (:func:`blend_window`).
        precision: ``"fp32"`` or ``"bf16"`` (autocast of the network).

    Yields:
        ``Progress(stage="predict", step=tiles_done, total=n_tiles, eta_s=...)`` after each batch,
        before its finished rows go to ``sink``; the generator may be closed between batches
        (cancel).

    Returns:
        The number of tiles run.
    """
    hp, wp = padded.shape[:2]
    ys, xs = tile_starts(hp, tile, overlap), tile_starts(wp, tile, overlap)
    boxes = [(y, x) for y in ys for x in xs]
    capacity = band_rows(tile, overlap, batch_size, hp, wp)
    window_dev = window.to(device)
    acc: Optional[torch.Tensor] = None  # (K, C, capacity, wp): image rows base .. base + capacity
    wsum = torch.zeros(capacity, wp)
    base = 0  # first image row not finished yet
    clock = EtaClock(len(boxes))
    for start in range(0, len(boxes), batch_size):
        batch = boxes[start:start + batch_size]
        x_in = to_model_input(np.stack([padded[y:y + tile, x0:x0 + tile] for y, x0 in batch]), device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = runner(x_in)  # (B, K, C, T, T)
        probs = class_softmax(logits.float()).mul_(window_dev).cpu()
        if acc is None:
            acc = torch.zeros((probs.shape[1], probs.shape[2], capacity, wp))
        for p, (y, x0) in zip(probs, batch, strict=True):
            acc[:, :, y - base:y - base + tile, x0:x0 + tile] += p
            wsum[y - base:y - base + tile, x0:x0 + tile] += window
        done = start + len(batch)
        yield Progress(stage="predict", step=done, total=len(boxes), eta_s=clock.eta(done))
        # rows above the next tile to run receive no more tiles: they are final
        final = boxes[done][0] if done < len(boxes) else hp
        end = min(final, height)
        for r0 in range(base, end, finish_rows_at_once):
            r1 = min(end, r0 + finish_rows_at_once)
            sink(finish_rows(acc[:, :, r0 - base:r1 - base, :width], wsum[r0 - base:r1 - base, :width], r0))
        if base < final < hp:
            _shift_up(acc, wsum, final - base)
        base = final
    return len(boxes)


def _shift_up(acc: torch.Tensor, wsum: torch.Tensor, shift: int) -> None:
    """Move the band's rows ``shift ..`` to the top and zero the rows freed at the bottom, in place.

    Copied top-down in blocks of at most ``shift`` rows, so no block overlaps its own source and
    no source row is overwritten before it is read: no copy of the band is needed.
    """
    rows = wsum.shape[0]
    for d0 in range(0, max(0, rows - shift), shift):
        d1 = min(rows - shift, d0 + shift)
        acc[:, :, d0:d1] = acc[:, :, d0 + shift:d1 + shift]
        wsum[d0:d1] = wsum[d0 + shift:d1 + shift]
    acc[:, :, max(0, rows - shift):] = 0
    wsum[max(0, rows - shift):] = 0


def band_rows(tile: int, overlap: float, batch_size: int, padded_height: int, padded_width: int) -> int:
    """Rows of the rolling band of :func:`predict_rows`: a tile, plus a tile stride for every tile row
    one batch can reach beyond its first."""
    ys, xs = tile_starts(padded_height, tile, overlap), tile_starts(padded_width, tile, overlap)
    stride = max((b - a for a, b in zip(ys, ys[1:], strict=False)), default=0)
    return min(padded_height, tile + stride * math.ceil(batch_size / len(xs)))


__all__ = ["FINISH_ROWS", "band_rows", "class_softmax", "RowMaps", "WINDOW_FLOOR", "argmax_classes", "blend_window",
           "finish_rows", "predict_rows", "tile_starts"]
