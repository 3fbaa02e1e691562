"""Gland instances, gland table, display range and review regions of a large prediction, block by block.

:func:`src_model.postprocess.instance_labels`, :func:`src_model.uncertainty.review_regions`,
:func:`~src_model.uncertainty.gland_table` and :func:`~src_model.uncertainty.display_range` take
whole maps and make several image-sized float64 temporaries: about 40 bytes a pixel, 1.4 GB for a
6000 x 6000 image. Here the same functions run on square blocks of the semantic mask and the
uncertainty map, so memory and the time of one step are bounded whatever the image size:

* instances: each block is post-processed with a margin (``halo``) of context on every side; its
  objects that overlap glands already labelled in the blocks above or to the left take their
  label (the one they overlap most), the others get new labels. Glands are the same as the
  whole-image result except where a block edge changes a splitting decision;
* gland table: areas, uncertainty sums and boxes accumulated over the blocks;
* display range: the percentiles of a 4096-bin histogram of the map over tissue (to 1/4096);
* review regions: :func:`~src_model.uncertainty.review_regions` of each block's window (the block
  and its margin), those centred in the block kept, then the best non-overlapping ones over all
  blocks.
"""
from __future__ import annotations

from typing import Any, Dict, Generator, List, Optional, Tuple

import numpy as np
from scipy import ndimage as ndi

from .postprocess import DEFAULT_INSTANCES, PostprocessConfig, clean_mask, fill_lumens, flood_from_peaks, to_instances
from .tissue import tissue_mask
from .uncertainty import review_regions

Box = Tuple[int, int, int, int]
#: Side of a post-processing block and the context around it (GlaS glands are < 400 px across
#: at 20x, so a gland crossing a block edge is seen whole from at least one side).
BLOCK, HALO = 768, 160
HIST_BINS = 4096


def release_freed_memory() -> None:
    """Hand memory freed by Python and numpy back to the system (glibc's ``malloc_trim``; nothing
    elsewhere). glibc keeps freed blocks of up to 32 MB in its heaps for reuse, and a worker thread's
    heap holds on to the prediction's and each block's temporaries: on the 6000 x 6000 bench mosaic
    ~170 MB of resident memory between blocks, and a block's peak 30 MB higher. Costs ~0.12 s a
    block (its pages are faulted in again): 44 vs 36 s for the 64 blocks on the busy 2-core machine."""
    trim = _MALLOC_TRIM.get("fn", False)
    if trim is False:
        trim = None
        try:
            import ctypes
            import ctypes.util
            import sys

            if sys.platform.startswith("linux"):
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                trim = getattr(libc, "malloc_trim", None)
                if trim is not None:
                    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
        except OSError:
            trim = None
        _MALLOC_TRIM["fn"] = trim
    if trim is not None:
        trim(0)


_MALLOC_TRIM: Dict[str, Any] = {}


#: Share of the image above which one object's box is reconstructed with the rest (skimage's call).
WHOLE_SHARE = 0.5


def h_maxima_by_object(image: np.ndarray, h: float) -> np.ndarray:
    """``skimage.morphology.h_maxima(image, h) > 0`` where ``image > 0``, for a float64 ``image >= 0`` (a
    smoothed distance transform) and a float ``h > 0``; False where ``image == 0``.

    The same values, with a fraction of the memory: skimage reconstructs the whole image at once
    (~100 bytes a pixel: 120 MB for a 1088 x 1088 block window, most of a block's memory). Here each
    8-connected object of ``image > 0`` is reconstructed in its own box (1 px margin), with every pixel
    of the box outside the object as background carrying ``O = min(max(marker), 0)``: the marker is
    ``image - h - resolution`` as in skimage, and since the mask is >= 0 everywhere, every pixel's
    reconstruction is at least ``O``, while anything reaching an object from outside passes a
    background pixel (mask 0) and is at most ``O``. The reconstruction only selects values (no
    arithmetic), so each object's pixels get exactly the whole-image values, and so the same residue.
    An object whose box covers more than :data:`WHOLE_SHARE` of the image gains nothing from this:
    then skimage's own function runs.
    """
    from skimage.morphology import reconstruction

    img = np.asarray(image)
    if img.dtype != np.float64 or not h > 0:
        raise ValueError(f"expected a float64 image and h > 0, got {img.dtype} and {h}")
    out = np.zeros(img.shape, bool)
    if h > np.ptp(img):  # as skimage: no h-maxima at all
        return out
    scale = 2 * np.finfo(img.dtype).resolution

    def marker(values: np.ndarray) -> np.ndarray:
        m = values - h
        r = np.abs(values)
        r *= scale
        m -= r
        return m

    # skimage's marker ``image - h - resolution``, the same floats, made box by box; its maximum row band
    # by row band: no image-sized temporaries
    step = max(1, (1 << 20) // max(1, img.shape[1]))
    top = max(float(marker(img[y:y + step]).max()) for y in range(0, img.shape[0], step))
    floor = min(top, 0.0)
    objects = ndi.label(img > 0, structure=np.ones((3, 3)))[0]
    boxes = ndi.find_objects(objects)
    if max((sl[0].stop - sl[0].start) * (sl[1].stop - sl[1].start) for sl in boxes) > WHOLE_SHARE * img.size:
        del objects  # one object fills most of the image: skimage's own, at its cost, and nothing held beside
        from skimage.morphology import h_maxima

        return (h_maxima(img, h) > 0) & (img > 0)
    hh, ww = img.shape
    for k, sl in enumerate(boxes, start=1):
        box = (slice(max(0, sl[0].start - 1), min(hh, sl[0].stop + 1)),
               slice(max(0, sl[1].start - 1), min(ww, sl[1].stop + 1)))
        outside = objects[box] != k
        seed = marker(img[box])
        seed[outside] = floor
        mask = img[box].copy()
        mask[outside] = 0.0
        rec = reconstruction(seed, mask, method="dilation")
        del seed, mask
        rec -= img[box]  # -(image - rec): the same float as skimage's residue, negated
        out[box] |= ~outside & (-rec >= h)
    return out


def window_instances(mask: np.ndarray, cfg: PostprocessConfig = DEFAULT_INSTANCES) -> np.ndarray:
    """:func:`src_model.postprocess.to_instances` of a block window, the same labels with less memory:
    its touching-gland split (``split_touching`` without ``coarse``) here finds the h-maxima object by
    object (:func:`h_maxima_by_object`); everything else is the engine's."""
    if cfg.split_h <= 0:
        return to_instances(mask, cfg)
    fg = clean_mask(mask, cfg)
    if not fg.any():
        glands = np.zeros(fg.shape, np.int32)
    else:  # postprocess.split_touching, h_maxima(dist, h) & fg replaced by the same pixels
        dist = ndi.distance_transform_edt(fg)
        if cfg.split_sigma > 0:
            dist = ndi.gaussian_filter(dist, cfg.split_sigma)
        glands = flood_from_peaks(fg, dist, h_maxima_by_object(dist, cfg.split_h) & fg)
    return fill_lumens(glands) if cfg.lumen_holes else glands


def block_origins(height: int, width: int, block: int = BLOCK) -> List[Tuple[int, int]]:
    """Top-left corners of the blocks covering an image, in raster order."""
    return [(y, x) for y in range(0, height, block) for x in range(0, width, block)]


class BlockReview:
    """Post-processes a large prediction block by block (see the module doc).

    Args:
        mask: uint8/bool (H, W), non-zero where a gland is predicted.
        uncertainty: float (H, W), ``Prediction.uncertainty``.
        image: RGB uint8 (H, W, 3), for the tissue mask.
        cfg: post-processing (default :data:`~src_model.postprocess.DEFAULT_INSTANCES`).
        n_regions: review regions kept.
    """

    def __init__(self, mask: np.ndarray, uncertainty: np.ndarray, image: np.ndarray,
                 cfg: PostprocessConfig = DEFAULT_INSTANCES, n_regions: int = 10,
                 block: int = BLOCK, halo: int = HALO) -> None:
        self.mask, self.u, self.image = mask, uncertainty, image
        self.h, self.w = mask.shape
        self.cfg, self.n_regions, self.block, self.halo = cfg, n_regions, block, halo
        self.n_labels = 0
        self._area = np.zeros(1, np.int64)
        self._usum = np.zeros(1, np.float64)
        self._boxes = np.zeros((1, 4), np.int64)  # y0, x0, y1, x1 per label
        self._hist = np.zeros(HIST_BINS, np.int64)
        self._candidates: List[Tuple[float, Box]] = []

    def blocks(self) -> Generator[Tuple[int, int, np.ndarray], None, None]:
        """Final instance labels, block by block: yields ``(y0, x0, labels int32 (bh, bw))``."""
        b, halo, h, w = self.block, self.halo, self.h, self.w
        above: Optional[np.ndarray] = None  # final labels of up to `halo` rows above the block row
        release_freed_memory()  # e.g. what the prediction before freed
        for y0 in range(0, h, b):
            y1 = min(h, y0 + b)
            row = np.zeros((y1 - y0, w), np.int32)  # final labels of this block row so far
            ey0, ey1 = max(0, y0 - halo), min(h, y1 + halo)
            for x0 in range(0, w, b):
                x1 = min(w, x0 + b)
                ex0, ex1 = max(0, x0 - halo), min(w, x1 + halo)
                local = window_instances(np.asarray(self.mask[ey0:ey1, ex0:ex1]) > 0, self.cfg)
                known = np.zeros_like(local)  # labels already final inside the window
                if above is not None and y0 > ey0:
                    known[:y0 - ey0] = above[above.shape[0] - (y0 - ey0):, ex0:ex1]
                known[y0 - ey0:y1 - ey0, :x0 - ex0] = row[:, ex0:x0]
                core = local[y0 - ey0:y1 - ey0, x0 - ex0:x1 - ex0]
                final = self._relabel(local, known, core)[core]
                row[:, x0:x1] = final
                self._add(y0, x0, final)
                self._review((ey0, ex0, ey1, ex1), (y0, x0, y1, x1), local)
                del local, known, core
                release_freed_memory()
                yield y0, x0, final
            above = row[-halo:] if above is None or row.shape[0] >= halo else np.concatenate([above, row])[-halo:]
        release_freed_memory()  # the last block's, before the results are handed over

    def _relabel(self, local: np.ndarray, known: np.ndarray, core: np.ndarray) -> np.ndarray:
        """Lookup table local id -> final id: the known label it overlaps most, else (if it is in the
        block's core) a new one."""
        lut = np.zeros(int(local.max()) + 1, np.int32)
        both = (local > 0) & (known > 0)
        if both.any():
            # (local, known) pairs packed in one int64 key: the same sorted pairs as np.unique(..., axis=1),
            # ~100x faster (that one holds the GIL for a second on a large block: a stall in the viewer)
            keys, counts = np.unique((local[both].astype(np.int64) << 32) | known[both].astype(np.int64),
                                     return_counts=True)
            pairs = np.stack([keys >> 32, keys & 0xFFFFFFFF])
            # largest overlaps first; each local object takes one final label, and each final label
            # goes to one local object (two objects here that were one gland there are not merged)
            taken = set()
            for i in np.argsort(-counts, kind="stable"):
                loc, fin = int(pairs[0, i]), int(pairs[1, i])
                if lut[loc] == 0 and fin not in taken:
                    lut[loc] = fin
                    taken.add(fin)
        present = np.zeros(lut.size, bool)
        present[np.unique(core)] = True
        present[0] = False
        fresh = np.flatnonzero(present & (lut == 0))  # objects of the core touching nothing final
        lut[fresh] = np.arange(self.n_labels + 1, self.n_labels + 1 + fresh.size, dtype=np.int32)
        self.n_labels += int(fresh.size)
        return lut

    def _add(self, y0: int, x0: int, labels: np.ndarray) -> None:
        """Accumulate a final block: gland rows, histogram over tissue, review candidates."""
        bh, bw = labels.shape
        u = np.asarray(self.u[y0:y0 + bh, x0:x0 + bw], dtype=np.float64)
        tissue = tissue_mask(self.image[y0:y0 + bh, x0:x0 + bw])
        n = self.n_labels + 1
        if n > self._area.size:
            grow = n - self._area.size
            self._area = np.concatenate([self._area, np.zeros(grow, np.int64)])
            self._usum = np.concatenate([self._usum, np.zeros(grow)])
            self._boxes = np.concatenate([self._boxes, np.tile([[2**62, 2**62, -1, -1]], (grow, 1))])
        flat = labels.ravel()
        self._area += np.bincount(flat, minlength=n)[:n]
        self._usum += np.bincount(flat, weights=u.ravel(), minlength=n)[:n]
        for i, sl in enumerate(ndi.find_objects(labels), start=1):
            if sl is not None:
                box = self._boxes[i]
                box[:] = (min(box[0], y0 + sl[0].start), min(box[1], x0 + sl[1].start),
                          max(box[2], y0 + sl[0].stop), max(box[3], x0 + sl[1].stop))
        vals = u[tissue]
        self._hist += np.histogram(np.clip(vals, 0.0, 1.0), bins=HIST_BINS, range=(0.0, 1.0))[0]

    def _review(self, window: Box, core: Box, local: np.ndarray) -> None:
        """Review regions of a block's window (its glands as labelled there), kept when centred in the
        block: boxes are never cut down to a thin block at the image's edge."""
        ey0, ex0, ey1, ex1 = window
        y0, x0, y1, x1 = core
        u = np.asarray(self.u[ey0:ey1, ex0:ex1], dtype=np.float64)
        tissue = tissue_mask(self.image[ey0:ey1, ex0:ex1])
        for score, (by0, bx0, by1, bx1) in review_regions(None, n=self.n_regions, uncertainty_map=u,
                                                          instances=local, tissue=tissue):
            if y0 <= ey0 + (by0 + by1) // 2 < y1 and x0 <= ex0 + (bx0 + bx1) // 2 < x1:
                self._candidates.append((score, (by0 + ey0, bx0 + ex0, by1 + ey0, bx1 + ex0)))

    def glands(self) -> List[Dict[str, Any]]:
        """Rows as :func:`src_model.uncertainty.gland_table` gives them, ordered by id."""
        return [{"id": i, "area": int(self._area[i]), "mean_uncertainty": float(self._usum[i] / self._area[i]),
                 "bbox": tuple(int(v) for v in self._boxes[i])}
                for i in range(1, self._area.size) if self._area[i] > 0]

    def display_range(self, percentiles: Tuple[float, float] = (2.0, 99.5)) -> Tuple[float, float]:
        """As :func:`src_model.uncertainty.display_range` over tissue, to 1/4096 of [0, 1]."""
        total = int(self._hist.sum())
        if total == 0:
            return 0.0, 1.0
        cum = np.cumsum(self._hist)
        lo, hi = (float(np.searchsorted(cum, p / 100.0 * total) / HIST_BINS) for p in percentiles)
        return (lo, hi) if hi > lo else (lo, lo + 1.0 / HIST_BINS)

    def regions(self) -> List[Tuple[float, Box]]:
        """The best non-overlapping review regions over all blocks, most uncertain first."""
        chosen: List[Tuple[float, Box]] = []
        for score, box in sorted(self._candidates, key=lambda item: (-item[0], item[1])):
            if not any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3] for _, o in chosen):
                chosen.append((float(score), box))
                if len(chosen) >= self.n_regions:
                    break
        return chosen


__all__ = ["BLOCK", "HALO", "BlockReview", "block_origins", "h_maxima_by_object", "window_instances"]
