"""Tiled inference over a whole in-memory image, with seamless blending and branch uncertainty.

The tile loop, blending and finishing are :mod:`src_model.bands` (shared with the streaming paths
of ``cdma predict`` and the napari dock); here its finished row bands are collected into
image-sized maps and returned as a :class:`Prediction`. Uncertainty maps (spec section 4) are
computed from the blended per-branch probabilities.

Speed: an MTNet is run through :func:`prepare_model`, which makes a
:class:`~src_model.model.fast.FastMTNet`: an eval-only copy with batch norms folded into the
preceding convolutions, channels-last memory layout and one upsampling call for all branches; it
gives the plain model's outputs to within float rounding (tested to 1e-4).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Generator, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .bands import FINISH_ROWS, WINDOW_FLOOR, RowMaps, blend_window, finish_rows, predict_rows, tile_starts
from .io import to_rgb_uint8
from .model import MTNet
from .model.fast import FastMTNet
from .progress import EtaClock, Progress, drain
from .runtime import resolve_device
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE, pad_to

logger = logging.getLogger(__name__)

Branch = Union[str, int]
PRECISIONS = ("fp32", "bf16")


@dataclass
class Prediction:
    """Result of :func:`predict` on one image of H x W pixels and C classes.

    Attributes:
        probability: float32 (C, H, W), mean of the branch softmaxes (or one branch's softmax).
        labels: uint8 (H, W), argmax of ``probability`` over classes.
        disagreement: float32 (H, W) in [0, 1], Jensen-Shannon divergence of the branches / ln C
            (0 everywhere when a single branch was run).
        entropy: float32 (H, W) in [0, 1], entropy of ``probability`` / ln C.
        vote: float32 (H, W) in [0, 1], fraction of branches whose argmax differs from
            ``labels`` (0 everywhere when a single branch was run).
        branch_probs: float32 (K, C, H, W) blended per-branch probabilities (K = 3, or 1 for a
            single branch) when asked for, else None.
        uncertainty: float32 (H, W) in [0, 1], the map that best finds the model's wrong pixels
            (chosen on validation images, ``benchmarks/results/uncertainty.md``): without TTA the
            mean of the branch entropies / ln C (:func:`~src_model.uncertainty.expected_entropy`);
            with ``tta`` the entropy of the mean over views and branches (= ``entropy``). None
            only for a Prediction built by hand.
    """

    probability: np.ndarray
    labels: np.ndarray
    disagreement: np.ndarray
    entropy: np.ndarray
    vote: np.ndarray
    branch_probs: Optional[np.ndarray] = None
    uncertainty: Optional[np.ndarray] = None

    @property
    def foreground(self) -> np.ndarray:
        """Gland probability, float32 (H, W): ``probability[1]``."""
        return self.probability[1]


# --------------------------------------------------------------------------- model runners

class _GenericRunner:
    """Any model returning a tuple of per-branch logits (B, C, H, W): stacked to (B, K, C, H, W)."""

    def __init__(self, model: nn.Module, branches: Sequence[int]) -> None:
        self.model = model
        self.index = [b - 1 for b in branches]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        outs = self.model(x)
        outs = (outs,) if isinstance(outs, torch.Tensor) else tuple(outs)
        return torch.stack([outs[i] for i in self.index], dim=1)


def _branches(branch: Branch, n_branches: int = 3) -> Tuple[int, ...]:
    valid = tuple(range(1, n_branches + 1))
    if branch == "mean":
        return valid
    if isinstance(branch, int) and not isinstance(branch, bool) and branch in valid:
        return (branch,)
    raise ValueError(f"branch must be 'mean' or one of {valid}, got {branch!r}")


def prepare_model(model: nn.Module, branch: Branch = "mean", device: Union[str, torch.device] = "cpu",
                  fast: bool = True):
    """A callable x (B, 3, H, W) in [0, 1] -> logits (B, K, C, H, W) for tiled inference.

    An :class:`MTNet` becomes a :class:`FastMTNet` (when ``fast``); an existing
    :class:`FastMTNet` is used as it is (its branches must match ``branch``); any other module
    is run as it is, in eval mode, and must return a tuple of per-branch logits.
    """
    branches = _branches(branch, len(model.config.branches) if isinstance(model, MTNet) else 3)
    dev = resolve_device(device)
    if isinstance(model, FastMTNet):
        if model.branches != branches:
            raise ValueError(f"prepared model runs branches {model.branches}, but branch={branch!r} was asked")
        return model.to(dev)
    if fast and isinstance(model, MTNet):
        return FastMTNet(model, branches).to(dev)
    model.eval()
    return _GenericRunner(model.to(dev), branches)


# --------------------------------------------------------------------------- prediction

def predict_tiles(model: nn.Module, image: np.ndarray, *, tile: int = DEFAULT_TILE,
                  overlap: float = DEFAULT_OVERLAP, batch_size: int = 8, branch: Branch = "mean",
                  return_branches: bool = False, device: Union[str, torch.device] = "cpu",
                  fast: bool = True, precision: str = "fp32",
                  tta: Union[bool, int] = False) -> Generator[Progress, None, Prediction]:
    """Tiled, blended prediction of one image; a generator of progress events.

    Args:
        model: an :class:`MTNet` (or a prepared :class:`FastMTNet`, or any module returning a
            tuple of per-branch logits (B, C, h, w) for input (B, 3, h, w) in [0, 1]).
        image: RGB uint8 (H, W, 3); other arrays go through :func:`~src_model.io.to_rgb_uint8`.
        tile: tile side in pixels (default :data:`~src_model.tiling.DEFAULT_TILE`, 320; evaluation
            uses :data:`~src_model.tiling.EVAL_TILE`, 256, with overlap 0.25).
        overlap: fraction of a tile shared with each neighbour, in [0, 1).
        batch_size: tiles per forward pass.
        branch: ``"mean"`` (all three branches, averaged) or 1, 2, 3 (that decoder alone, as
            the official release predicts with branch 1).
        return_branches: keep the blended per-branch probabilities in the result.
        device: "cpu", "cuda", "auto" or a torch.device.
        fast: run an MTNet through :class:`FastMTNet` (same outputs, faster).
        precision: ``"fp32"`` (default) or ``"bf16"``: bfloat16 autocast for the network (about 2x
            faster on CPUs with AMX or on GPUs; probabilities then differ by ~1e-2).
        tta: test-time augmentation: ``True`` or 8 = the 8 flip/rot90 views, 4 = the 4 flips,
            ``False`` / 0 / 1 = off (default). Probabilities, labels and all maps come from the
            mean over views; ``uncertainty`` is then the entropy of that mean. Costs 8x (4x) the
            time of a plain prediction; on validation it raises the error-finding AUROC of
            ``uncertainty`` only slightly (0.857 vs 0.849, benchmarks/results/uncertainty.md).

    Yields:
        ``Progress(stage="predict", step=tiles_done, total=n_tiles, eta_s=...)`` after each batch.

    Returns:
        :class:`Prediction` for the image (H, W).
    """
    if tile < 16:
        raise ValueError(f"tile must be >= 16 pixels, got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    img = to_rgb_uint8(image, source="image")
    views = _tta_views(tta)
    if len(views) > 1:
        return (yield from _predict_tta(model, img, views, return_branches, dict(
            tile=tile, overlap=overlap, batch_size=batch_size, branch=branch, device=device, fast=fast,
            precision=precision)))
    maps = MapCollector(*img.shape[:2], return_branches)
    yield from predict_into(maps, model, img, tile=tile, overlap=overlap, batch_size=batch_size, branch=branch,
                            device=device, fast=fast, precision=precision)
    return maps.prediction()


def predict_into(sink: Callable[[RowMaps], None], model: nn.Module, image: np.ndarray, *, tile: int = DEFAULT_TILE,
                 overlap: float = DEFAULT_OVERLAP, batch_size: int = 8, branch: Branch = "mean",
                 device: Union[str, torch.device] = "cpu", fast: bool = True,
                 precision: str = "fp32") -> Generator[Progress, None, int]:
    """The tiled prediction of :func:`predict_tiles` (no TTA), its finished row bands handed to ``sink``.

    Prepares the model and the padded image and runs :func:`src_model.bands.predict_rows`:
    ``sink`` receives the :class:`~src_model.bands.RowMaps` of every image row once, top to
    bottom, in bands of at most :data:`~src_model.bands.FINISH_ROWS` rows. Memory beyond the
    image is the rolling band (about two tiles high), whatever the image size. Arguments are
    those of :func:`predict_tiles` (``image``: RGB uint8 (H, W, 3)).

    Yields:
        ``Progress(stage="predict", step=tiles_done, total=n_tiles, eta_s=...)`` after each batch.

    Returns:
        The number of tiles run.
    """
    h, w = image.shape[:2]
    padded = pad_to(image, tile)
    dev = resolve_device(device)
    was_training = model.training
    runner = prepare_model(model, branch, dev, fast=fast)  # a generic model is put in eval mode
    was_training = was_training and isinstance(runner, _GenericRunner)
    logger.debug("predict %dx%d image: tiles of %d, overlap %.3g, branch %s", h, w, tile, overlap, branch)
    try:
        with torch.inference_mode():
            return (yield from predict_rows(runner, padded, h, w, sink, tile=tile, overlap=overlap,
                                            batch_size=batch_size, window=blend_window(tile), device=dev,
                                            precision=precision))
    finally:
        if was_training:
            model.train()


class MapCollector:
    """A sink of :func:`~src_model.bands.predict_rows`: finished rows copied into image-sized maps."""

    def __init__(self, height: int, width: int, return_branches: bool) -> None:
        self.h, self.w = height, width
        self.return_branches = return_branches
        self.maps: Optional[dict] = None

    def __call__(self, rows: RowMaps) -> None:
        if self.maps is None:
            k, c = rows.branch_probs.shape[:2]
            self.maps = {"probability": np.empty((c, self.h, self.w), np.float32),
                         "labels": np.empty((self.h, self.w), np.uint8),
                         **{name: np.empty((self.h, self.w), np.float32)
                            for name in ("disagreement", "entropy", "vote", "uncertainty")}}
            if self.return_branches:
                self.maps["branch_probs"] = np.empty((k, c, self.h, self.w), np.float32)
        r0, r1 = rows.r0, rows.r0 + rows.rows
        m = self.maps
        m["probability"][:, r0:r1] = rows.probability.numpy()
        m["labels"][r0:r1] = rows.labels.numpy()
        m["vote"][r0:r1] = rows.vote().numpy()
        for name in ("disagreement", "entropy", "uncertainty"):
            m[name][r0:r1] = getattr(rows, name).numpy()
        if self.return_branches:
            m["branch_probs"][:, :, r0:r1] = rows.branch_probs.numpy()

    def prediction(self) -> Prediction:
        m = self.maps
        return Prediction(probability=m["probability"], labels=m["labels"], disagreement=m["disagreement"],
                          entropy=m["entropy"], vote=m["vote"], branch_probs=m.get("branch_probs"),
                          uncertainty=m["uncertainty"])


_TTA_VIEWS = {4: (0, 4, 2, 6), 8: tuple(range(8))}  # view k: rot90 by k % 4, then a left-right flip if k >= 4


def _tta_views(tta: Union[bool, int]) -> Tuple[int, ...]:
    n = 8 if tta is True else int(tta or 1)
    if n == 1:
        return (0,)
    if n not in _TTA_VIEWS:
        raise ValueError(f"tta must be False, True, 4 or 8, got {tta!r}")
    return _TTA_VIEWS[n]


def _predict_tta(model: nn.Module, img: np.ndarray, views: Sequence[int], return_branches: bool,
                 kwargs: dict) -> Generator[Progress, None, Prediction]:
    """Mean of the blended branch probabilities over flip/rot90 views (each mapped back)."""
    h, w = img.shape[:2]
    acc: Optional[torch.Tensor] = None
    clock: Optional[EtaClock] = None
    for i, k in enumerate(views):
        rot = np.rot90(img, k % 4, axes=(0, 1))
        inner = predict_tiles(model, np.ascontiguousarray(rot[:, ::-1] if k >= 4 else rot),
                              return_branches=True, **kwargs)
        try:
            while True:
                ev = next(inner)
                total = ev.total * len(views)
                clock = clock or EtaClock(total)
                done = i * ev.total + ev.step
                yield Progress(stage="predict", step=done, total=total, eta_s=clock.eta(done))
        except StopIteration as stop:
            bp = torch.from_numpy(stop.value.branch_probs)
        bp = bp.flip(-1) if k >= 4 else bp
        bp = torch.rot90(bp, -(k % 4), dims=(-2, -1))
        acc = bp.clone() if acc is None else acc.add_(bp)
    maps = MapCollector(h, w, return_branches)
    wsum = torch.full((FINISH_ROWS, w), float(len(views)))
    with torch.inference_mode():
        for r0 in range(0, h, FINISH_ROWS):
            r1 = min(h, r0 + FINISH_ROWS)
            maps(finish_rows(acc[:, :, r0:r1], wsum[:r1 - r0], r0, tta=True))
    return maps.prediction()


def predict(model: nn.Module, image: np.ndarray, callback: Optional[Callable[[Progress], None]] = None,
            **kwargs) -> Prediction:
    """Run :func:`predict_tiles` to the end (``callback`` receives each :class:`Progress`)."""
    return drain(predict_tiles(model, image, **kwargs), callback)


__all__ = ["MapCollector", "Prediction", "prepare_model", "predict_into", "predict_tiles", "predict", "tile_starts",
           "blend_window", "WINDOW_FLOOR"]
