"""Turning a foreground map into gland objects: hole filling, small-object removal, splitting.

Object-level GlaS metrics count every connected component as a gland, so specks and touching
glands cost F1. These steps are optional and their parameters are chosen on validation images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class PostprocessConfig:
    """Attributes:
        min_size: drop objects (and fill holes) smaller than this many pixels (0 = keep all).
        fill_holes: fill holes smaller than ``min_size`` inside objects (or smaller than ``max_hole``).
        opening: radius of a morphological opening that cuts thin bridges between glands (0 = off).
        split_h: split touching glands: a watershed of the (smoothed) distance transform seeded at
            its h-maxima of height ``split_h`` pixels (0 = off: objects are connected components).
        split_sigma: Gaussian smoothing (pixels) of the distance transform before seeding.
        max_hole: with ``fill_holes``, fill holes smaller than this many pixels instead of
            ``min_size`` (None = ``min_size``, the old rule).
        lumen_holes: after splitting, also fill the holes that one gland encloses alone, whatever
            their size (:func:`fill_lumens`): a ring-shaped prediction (epithelium found, pale mucin or
            lumen inside missed) becomes a filled gland; background enclosed between several touching
            glands stays background.
    """

    min_size: int = 0
    fill_holes: bool = False
    opening: int = 0
    split_h: float = 0.0
    split_sigma: float = 2.0
    max_hole: Optional[int] = None
    lumen_holes: bool = False


def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def clean_mask(mask: np.ndarray, cfg: PostprocessConfig) -> np.ndarray:
    """Apply the configured clean-up to a binary mask (H, W); returns bool (H, W)."""
    out = np.asarray(mask) > 0
    if cfg.opening > 0:
        out = ndi.binary_opening(out, structure=_disk(cfg.opening))
    max_hole = cfg.min_size if cfg.max_hole is None else cfg.max_hole
    if cfg.fill_holes and max_hole > 0:
        holes = ndi.binary_fill_holes(out) & ~out
        lab, n = ndi.label(holes)
        if n:
            sizes = ndi.sum(holes, lab, index=np.arange(1, n + 1))
            small = np.concatenate([[False], sizes < max_hole])
            out = out | small[lab]
    if cfg.min_size > 0:
        lab, n = ndi.label(out, structure=np.ones((3, 3)))
        if n:
            sizes = ndi.sum(out, lab, index=np.arange(1, n + 1))
            keep = np.concatenate([[False], sizes >= cfg.min_size])
            out = keep[lab]
    return out


def split_touching(mask: np.ndarray, h: float, sigma: float = 2.0, coarse: int = 1) -> np.ndarray:
    """Instance labels (H, W) int32 of a binary mask, touching glands split by a watershed.

    Seeds are the h-maxima of the smoothed distance transform, so two glands joined by a neck
    narrower than their bodies by more than ``h`` pixels become two objects. Every connected
    component keeps at least one seed: no foreground pixel is dropped.

    ``coarse`` > 1 finds the seeds on every ``coarse``-th pixel (distances, ``h`` and ``sigma``
    scaled to match), about ``coarse ** 2`` times faster (the h-maxima are most of the cost), then
    floods at full resolution; for glands many times ``coarse`` pixels across the split is nearly
    the same (slide export uses 2).
    """
    from skimage.morphology import h_maxima

    fg = np.asarray(mask) > 0
    if not fg.any():
        return np.zeros(fg.shape, np.int32)
    dist = ndi.distance_transform_edt(fg)
    if sigma > 0:
        dist = ndi.gaussian_filter(dist, sigma)
    if coarse > 1:
        small = fg[::coarse, ::coarse]
        d = ndi.distance_transform_edt(small)
        if sigma > 0:
            d = ndi.gaussian_filter(d, sigma / coarse)
        peaks = h_maxima(d, h / coarse) & small
        peaks = np.repeat(np.repeat(peaks, coarse, 0), coarse, 1)[:fg.shape[0], :fg.shape[1]] & fg
    else:
        peaks = h_maxima(dist, h) & fg
    return flood_from_peaks(fg, dist, peaks)


def flood_from_peaks(fg: np.ndarray, dist: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """The watershed of :func:`split_touching`: int32 labels of ``fg`` (bool, not empty) flooded over
    ``-dist`` from the connected blobs of ``peaks`` (bool, inside ``fg``); an 8-connected component of
    ``fg`` without a peak is its own seed, and a piece that the flood (4-neighbour) cannot reach because it
    touches a seeded gland only at a corner is a gland of its own, so no foreground pixel is dropped."""
    from skimage.segmentation import watershed

    seeds, n_seeds = ndi.label(peaks)
    components, n = ndi.label(fg, structure=np.ones((3, 3)))  # labelled only now: less held meanwhile
    seeded = np.zeros(n + 1, bool)
    seeded[np.unique(components[seeds > 0])] = True
    unseeded = ~seeded[components] & fg
    seeds[unseeded] = components[unseeded] + n_seeds  # a whole component is its own seed
    del components, unseeded
    labels = watershed(-dist, seeds, mask=fg).astype(np.int32)
    left = fg & (labels == 0)
    if left.any():  # reached only through a corner
        pieces, _ = ndi.label(left)
        labels[left] = pieces[left] + int(labels.max())
    return labels


def fill_lumens(labels: np.ndarray) -> np.ndarray:
    """Fill the holes that one gland encloses alone with that gland's label; a copy of ``labels``.

    A hole (background not connected to the image border) whose bordering pixels (8-neighbours) all
    carry one label is that gland's lumen: a ring-shaped prediction (epithelium found, pale mucin or
    lumen inside missed) becomes a filled gland, as GlaS masks draw glands. Background enclosed
    between two or more glands borders several labels and stays background, as does a hole around an
    island of another gland.

    Args:
        labels: int instance labels (H, W), 0 = background (glands already split).
    """
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"expected labels (H, W), got shape {lab.shape}")
    out = lab.copy()
    fg = lab > 0
    holes, n = ndi.label(ndi.binary_fill_holes(fg) & ~fg)
    if n == 0:
        return out
    h, w = fg.shape
    for k, sl in enumerate(ndi.find_objects(holes), start=1):
        y0, y1 = max(0, sl[0].start - 1), min(h, sl[0].stop + 1)  # the hole's box and a 1-px border
        x0, x1 = max(0, sl[1].start - 1), min(w, sl[1].stop + 1)
        hole = holes[y0:y1, x0:x1] == k
        rim = ndi.binary_dilation(hole, structure=np.ones((3, 3), bool)) & fg[y0:y1, x0:x1]
        ids = lab[y0:y1, x0:x1][rim]
        if ids.size and ids.min() == ids.max():
            out[y0:y1, x0:x1][hole] = ids[0]
    return out


def to_instances(mask: np.ndarray, cfg: PostprocessConfig) -> np.ndarray:
    """Clean a binary mask and label its objects (split touching glands if configured); int32 (H, W).

    With ``cfg.lumen_holes`` the holes that one gland encloses alone are then filled with its label
    (:func:`fill_lumens`).
    """
    clean = clean_mask(mask, cfg)
    if cfg.split_h > 0:
        glands = split_touching(clean, cfg.split_h, cfg.split_sigma)
    else:
        glands = ndi.label(clean, structure=np.ones((3, 3)))[0].astype(np.int32)
    return fill_lumens(glands) if cfg.lumen_holes else glands


#: Post-processing chosen on the validation images for the bundled model
#: (``benchmarks/postprocess_choice.py``, ``benchmarks/results/postprocess.md``): objects under 1300 px
#: dropped, holes under 4000 px filled, touching glands split at h-maxima of height 24 px. Validation
#: object F1 0.900 (0.879 with the previous 1600 / 16 px rule), pixel Dice 0.919. ``cdma evaluate
#: --postprocess default`` applies it (as ``--min-object-size 1300 --max-hole 4000 --split-glands 24``).
#: The previous rule: ``PostprocessConfig(min_size=1600, fill_holes=True, split_h=16.0)``.
DEFAULT_INSTANCES = PostprocessConfig(min_size=1300, fill_holes=True, split_h=24.0, split_sigma=2.0, max_hole=4000)


def instance_labels(prediction, cfg: PostprocessConfig = DEFAULT_INSTANCES) -> np.ndarray:
    """One label per gland for a prediction: int32 (H, W), 0 = background, 1..N = glands.

    Args:
        prediction: a :class:`~src_model.inference.Prediction` (its ``labels`` are used), or a
            class-label / binary mask array (H, W) whose non-zero pixels are gland.
        cfg: post-processing; default :data:`DEFAULT_INSTANCES` (chosen on validation).

    The plugin shows the result as a labels layer; :func:`src_model.uncertainty.gland_table`
    summarises it per gland.
    """
    labels = getattr(prediction, "labels", prediction)
    mask = np.asarray(labels)
    if mask.ndim != 2:
        raise ValueError(f"expected a label mask (H, W), got shape {mask.shape}")
    return to_instances(mask > 0, cfg)


def separate_pieces(labels: np.ndarray, region: Optional[np.ndarray] = None,
                    next_id: Optional[int] = None) -> np.ndarray:
    """Give every disconnected piece of a label its own label: a gland split by a drawn line becomes two.

    Pieces are 8-connected, as in :func:`to_instances`, so glands that touch (one piece) keep one label:
    painting two glands and the tissue between them with one label merges them.

    Args:
        labels: int instance labels (H, W), 0 = background.
        region: bool (H, W): only labels that occur here are examined, and only their pieces that
            overlap it get a new label (default: everywhere). Of each label, the piece with the most
            pixels outside ``region`` (then the largest) keeps its id, so pixels outside change as
            little as possible.
        next_id: the first new label (default ``labels.max() + 1``): untouched glands keep their ids.

    Returns:
        A relabelled copy of ``labels`` (same dtype); new labels count up from ``next_id``.

    Raises:
        ValueError: ``labels`` is not 2-D, ``region`` has another shape, or the new labels do not fit
            the dtype.
    """
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"expected labels (H, W), got shape {lab.shape}")
    inside = np.ones(lab.shape, bool) if region is None else np.asarray(region, bool)
    if inside.shape != lab.shape:
        raise ValueError(f"region {inside.shape} and labels {lab.shape} differ in shape")
    out = lab.copy()
    if lab.size == 0:
        return out
    new = int(lab.max()) + 1 if next_id is None else int(next_id)
    top = np.iinfo(out.dtype).max if np.issubdtype(out.dtype, np.integer) else None
    ids = np.unique(lab[inside])
    ids = ids[ids != 0]
    if not len(ids):
        return out
    boxes = ndi.find_objects(np.where(np.isin(lab, ids), lab, 0).astype(np.intp, copy=False))
    for i in ids.tolist():
        sl = boxes[i - 1]
        pieces, n = ndi.label(lab[sl] == i, structure=np.ones((3, 3)))
        if n < 2:
            continue
        index = np.arange(1, n + 1)
        size = ndi.sum(np.ones(pieces.shape), pieces, index)
        overlap = ndi.sum(inside[sl], pieces, index)
        keeper = max(range(n), key=lambda k: (size[k] - overlap[k], size[k], -k))
        window = out[sl]
        for k in range(n):
            if k != keeper and overlap[k] > 0:
                if top is not None and new > top:
                    raise ValueError(f"label {new} does not fit {out.dtype}")
                window[pieces == k + 1] = new
                new += 1
    return out
