"""Tile sizes and padding, shared by inference, evaluation, training patches and the review ranking.

Three different squares are cut from images, each with its own constant:

* inference tiles (:func:`src_model.inference.predict_tiles`): :data:`DEFAULT_TILE` /
  :data:`DEFAULT_OVERLAP` interactively, :data:`EVAL_TILE` / :data:`EVAL_OVERLAP` (the released
  protocol) wherever a model is scored (:mod:`src_model.evaluate`);
* review squares (:func:`src_model.uncertainty.rank_tiles`): :data:`REVIEW_SIZE`, the regions
  ranked by disagreement for a person to look at, unrelated to how prediction is tiled;
* training patches: ``TrainConfig.patch``.

Torch-free, so the command line can show these defaults in ``--help`` without loading torch.
"""
from __future__ import annotations

import numpy as np

# Interactive default tiling. On a 775x522 GlaS field, 320-px tiles with 0.2 overlap need 6 tiles
# instead of 12 for 256/0.25 (pixels computed: 1.5x the image instead of 1.95x): measured 2.7 vs
# 2.1 Mpx/s for the bundled lite model on the 2-core dev CPU, with the same validation Dice.
DEFAULT_TILE = 320
DEFAULT_OVERLAP = 0.2
#: Tile side and overlap of every evaluation (test metrics, held-out scoring of retrained models):
#: the released protocol, 256-px tiles with overlap 0.25.
EVAL_TILE, EVAL_OVERLAP = 256, 0.25
#: Side in pixels of the squares that :func:`src_model.uncertainty.rank_tiles` scores for review.
REVIEW_SIZE = 256


def pad_to(array: np.ndarray, size: int) -> np.ndarray:
    """Pad an image (H, W, C) or a mask (H, W) at the bottom and right to at least ``size`` x ``size``.

    The rule, for training patches and inference tiles alike: mirror the array about its last row
    and column (NumPy's ``"reflect"``, which does not repeat the edge pixel). When the array is
    smaller than the pad along an axis the mirroring repeats (back and forth), so any size works;
    a 1-pixel axis has nothing to mirror and its pixel is repeated. Axes already at least
    ``size`` long are not padded, and an array needing no padding is returned as it is.

    Args:
        array: (H, W) or (H, W, C), any dtype.
        size: the smallest height and width of the result.

    Returns:
        (max(H, size), max(W, size)[, C]) array whose top-left (H, W) part is ``array``.
    """
    h, w = array.shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    if not ph and not pw:
        return array
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, mode="reflect")


def boxes_overlap(a, b) -> bool:
    """Whether two boxes ``(y0, x0, y1, x1)`` (end exclusive) share any pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


__all__ = ["DEFAULT_TILE", "DEFAULT_OVERLAP", "EVAL_TILE", "EVAL_OVERLAP", "REVIEW_SIZE", "pad_to", "boxes_overlap"]
