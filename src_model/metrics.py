"""Pixel- and object-level segmentation metrics for GlaS (spec section 6).

Pure NumPy/SciPy. The object-level metrics follow the GlaS challenge (Sirinukunwattana et al.,
"Gland Segmentation in Colon Histology Images: The GlaS Challenge Contest", MedIA 2017) and its
evaluation page (https://glas.grand-challenge.org/Evaluation):

* **Objects.** Ground-truth objects are the instance ids of ``gt`` as given (some GlaS testB
  glands are one id made of several disconnected parts; the challenge keeps them as one object).
  Predicted objects are the 8-connected components of a binary ``pred`` (MATLAB ``bwlabel``'s
  default, which the challenge code used), or the ids of an already-labelled instance map.
* **F1.** The ground truth of a segmented object S is the GT object G* with maximal overlap.
  S is a true positive if it covers at least 50% *of G*'s area* (the challenge's wording; its
  MATLAB code tests ``> 0.5``, which differs only at exactly 50%). Each GT object is matched at
  most once. FP = segmented objects not TP, FN = GT objects not matched.
* **Object Dice / Hausdorff.** ``1/2 [sum_i w_i D(G_i, S*(G_i)) + sum_j w~_j D(G*(S_j), S_j)]``
  with area weights ``w_i = |G_i| / sum|G|``, ``w~_j = |S_j| / sum|S|`` and the partner of maximal
  overlap. Without an overlapping partner, Dice counts 0 and Hausdorff uses the partner at the
  smallest Hausdorff distance. Ties go to the smaller label (as MATLAB's ``mode``).

Conventions for empty sets (documented choices, not from the paper):

* pixel Dice/IoU of two empty masks: 1.0.
* no objects on either side: F1 = precision = recall = object Dice = 1, object Hausdorff = 0.
* objects on one side only: F1 = precision = recall = object Dice = 0 (0/0 ratios count 0), and
  object Hausdorff = the image diagonal ``sqrt(H**2 + W**2)``, an upper bound on any distance in
  the image, so such images are penalised but keep the mean finite.

Distances are Euclidean between pixel centres, in pixels.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

#: Per-image metrics averaged over images by :func:`aggregate`.
METRIC_KEYS: Tuple[str, ...] = ("dice", "iou", "f1", "precision", "recall", "object_dice", "object_hausdorff")
#: Per-image sums kept so :func:`aggregate` can pool over a whole set.
COUNT_KEYS: Tuple[str, ...] = (
    "tp_pixels", "pred_pixels", "gt_pixels", "tp_objects", "fp_objects", "fn_objects",
    "gt_dice_wsum", "pred_dice_wsum", "gt_hausdorff_wsum", "pred_hausdorff_wsum",
)


def _ratio(num: float, den: float, empty: float = 0.0) -> float:
    return float(num) / float(den) if den else empty


def pixel_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Foreground Dice ``2|P & G| / (|P| + |G|)`` of ``pred > 0`` and ``gt > 0``.

    Args:
        pred: prediction, shape (H, W); any pixel > 0 is foreground.
        gt: ground truth, shape (H, W).

    Returns:
        Dice in [0, 1]; 1.0 when both masks are empty.
    """
    p, g = _binary_pair(pred, gt)
    return _ratio(2 * np.count_nonzero(p & g), np.count_nonzero(p) + np.count_nonzero(g), 1.0)


def pixel_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Foreground IoU (Jaccard) ``|P & G| / |P | G|``; 1.0 when both masks are empty."""
    p, g = _binary_pair(pred, gt)
    return _ratio(np.count_nonzero(p & g), np.count_nonzero(p | g), 1.0)


def pooled_dice(pairs: Sequence[Tuple[np.ndarray, np.ndarray]]) -> float:
    """Foreground Dice pooled over all pixels of all ``(pred, gt)`` pairs (> 0 = foreground).

    ``2 sum|P & G| / (sum|P| + sum|G|)``: large regions weigh by their pixels, and a region with
    no foreground on either side adds nothing (instead of counting as a perfect 1.0).

    Args:
        pairs: (prediction, truth) arrays, each pair of one shape (pairs may differ in shape).

    Returns:
        Dice in [0, 1]; 1.0 when every mask is empty.
    """
    inter = total = 0
    for pred, gt in pairs:
        p, g = _binary_pair(pred, gt)
        inter += int(np.count_nonzero(p & g))
        total += int(np.count_nonzero(p)) + int(np.count_nonzero(g))
    return _ratio(2 * inter, total, 1.0)


def _binary_pair(pred: np.ndarray, gt: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {pred.shape} vs {gt.shape}")
    return pred > 0, gt > 0


def label_objects(mask: np.ndarray, min_size: int = 0, *, instances: Optional[bool] = None,
                  connectivity: int = 2) -> np.ndarray:
    """Objects of a segmentation as a sequential label image (0 = background, 1..N).

    Args:
        mask: shape (H, W). Binary (bool, or one positive value such as 0/1 or 0/255) or an
            instance map (integer ids). Float input must hold only 0 and 1 (threshold first).
        min_size: objects with fewer pixels are removed (0 keeps all, as the challenge does).
        instances: True keeps the ids of ``mask`` as objects; False labels connected components
            of ``mask > 0``; None (default) decides: components if ``mask`` has at most one
            positive value, ids otherwise.
        connectivity: 2 = 8-connectivity (default, MATLAB ``bwlabel``'s), 1 = 4-connectivity.

    Returns:
        int32 label image of shape (H, W) with ids 1..N in order of first appearance in the
        ids (instances) or in raster order (components).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 (4-neighbours) or 2 (8-neighbours), got {connectivity}")
    if np.issubdtype(mask.dtype, np.floating):
        if not np.isin(mask, (0.0, 1.0)).all():
            raise ValueError("float mask must be binary (0/1); threshold probabilities first")
        mask = mask.astype(np.uint8)
    if instances is None:
        positive = mask[mask > 0]
        instances = mask.dtype != bool and positive.size > 0 and positive.min() != positive.max()
    if instances:
        labels = _sequential(mask)
    else:
        labels, _ = ndi.label(mask > 0, structure=ndi.generate_binary_structure(2, connectivity))
        labels = labels.astype(np.int32)
    if min_size > 0 and labels.max() > 0:
        sizes = np.bincount(labels.ravel())
        keep = sizes >= min_size
        keep[0] = False
        remap = np.zeros(sizes.size, np.int32)
        remap[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        labels = remap[labels]
    return labels


def _sequential(ids: np.ndarray) -> np.ndarray:
    """Renumber the positive ids of an instance map to 1..N, keeping their order."""
    if ids.dtype == bool:
        return ids.astype(np.int32)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"instance map must be integer, got {ids.dtype}")
    if ids.size and ids.min() < 0:
        raise ValueError("instance ids must be non-negative")
    if ids.size and ids.max() >= 1 << 20:  # sparse large ids: sort instead of a lookup table
        uniq, inverse = np.unique(ids, return_inverse=True)
        return (inverse.reshape(ids.shape) + (uniq[0] != 0)).astype(np.int32)
    present = np.bincount(ids.ravel().astype(np.intp), minlength=1) > 0  # small ids: a LUT is fastest
    present[0] = False
    lut = np.zeros(present.size, np.int32)
    lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    return lut[ids]


class _Objects:
    """Bounding boxes and boundary pixels of the objects of one label image (cached)."""

    def __init__(self, labels: np.ndarray, n: int) -> None:
        self.labels = labels
        self.slices = ndi.find_objects(labels, max_label=n)
        self._edges: Dict[int, np.ndarray] = {}
        self._trees: Dict[int, cKDTree] = {}

    def box(self, k: int) -> Tuple[int, int, int, int]:
        """(row0, row1, col0, col1), end-exclusive, of object index k (label k + 1)."""
        rs, cs = self.slices[k]
        return rs.start, rs.stop, cs.start, cs.stop

    def edge(self, k: int) -> np.ndarray:
        """(N, 2) coordinates of the pixels of object k with a pixel outside it among their 8
        neighbours. They hold the nearest object pixel of any pixel outside the object and the
        extreme points of its convex hull."""
        if k not in self._edges:
            r0, _, c0, _ = self.box(k)
            obj = self.labels[self.slices[k]] == k + 1
            inner = ndi.binary_erosion(obj, np.ones((3, 3), bool), border_value=0)
            rr, cc = np.nonzero(obj & ~inner)
            self._edges[k] = np.stack([rr + r0, cc + c0], axis=1)
        return self._edges[k]

    def tree(self, k: int) -> cKDTree:
        """KD-tree of :meth:`edge`."""
        if k not in self._trees:
            self._trees[k] = cKDTree(self.edge(k))
        return self._trees[k]


def _directed(yo: _Objects, j: int, win: Tuple[slice, slice], x: np.ndarray, y: np.ndarray) -> float:
    """Directed Hausdorff distance max_{p in X} min_{q in Y} |p - q| (exact).

    ``x``/``y`` are the two objects cropped to ``win``, which holds both; Y is object j of
    ``yo``. A small X queries Y's edge in a KD-tree (the nearest Y pixel of a pixel outside Y
    is on that edge; pixels of X inside Y are at 0); otherwise one Euclidean distance transform
    of the crop gives the distance of every pixel to Y.
    """
    outside = x & ~y
    n_out = int(np.count_nonzero(outside))
    if n_out == 0:
        return 0.0
    if n_out * 32 < x.size:  # a KD query costs ~30x one pixel of the distance transform
        rr, cc = np.nonzero(outside)
        pts = np.stack([rr + win[0].start, cc + win[1].start], axis=1)
        return float(yo.tree(j).query(pts)[0].max())
    return float(ndi.distance_transform_edt(~y)[outside].max())


def _hausdorff(ga: _Objects, i: int, sb: _Objects, j: int) -> float:
    """Exact symmetric Hausdorff distance between object i of ``ga`` and object j of ``sb``.

    Both objects lie inside the union of their boxes, so the work stays on that crop instead of
    the O(|A| |B|) of all pairwise distances.
    """
    a0, a1, a2, a3 = ga.box(i)
    b0, b1, b2, b3 = sb.box(j)
    win = (slice(min(a0, b0), max(a1, b1)), slice(min(a2, b2), max(a3, b3)))
    a = ga.labels[win] == i + 1
    b = sb.labels[win] == j + 1
    return max(_directed(sb, j, win, a, b), _directed(ga, i, win, b, a))


def _box_bound(points: np.ndarray, box: Tuple[int, int, int, int]) -> float:
    """Largest distance from ``points`` to a box: a lower bound on the Hausdorff distance to
    any set inside that box (each point is at least that far from every pixel of the set).
    The distance to a box is convex, so an object's hull points (in its edge) attain the max."""
    dr = np.maximum(np.maximum(box[0] - points[:, 0], points[:, 0] - (box[1] - 1)), 0)
    dc = np.maximum(np.maximum(box[2] - points[:, 1], points[:, 1] - (box[3] - 1)), 0)
    return float(np.sqrt((dr * dr + dc * dc).max()))


def _closest(src: _Objects, k: int, dst: _Objects, n_dst: int, dist) -> Tuple[int, float]:
    """Object of ``dst`` at the smallest Hausdorff distance from object k of ``src``.

    Candidates are tried in order of a cheap lower bound and the search stops once the bound
    exceeds the best distance found, so usually only one or two exact distances are computed.
    """
    bounds = np.array([max(_box_bound(src.edge(k), dst.box(m)), _box_bound(dst.edge(m), src.box(k)))
                       for m in range(n_dst)])
    best, best_m = math.inf, -1
    for m in np.lexsort((np.arange(n_dst), bounds)):
        if bounds[m] > best:
            break
        d = dist(int(m))
        if d < best or (d == best and m < best_m):
            best, best_m = d, int(m)
    return best_m, best


def object_scores(pred_labels: np.ndarray, gt_labels: np.ndarray,
                  empty_hausdorff: Optional[float] = None) -> Dict[str, Any]:
    """GlaS object-level F1, object Dice and object Hausdorff of two label images.

    Args:
        pred_labels: segmented objects, shape (H, W), ids 1..N (see :func:`label_objects`).
        gt_labels: ground-truth objects, shape (H, W), ids 1..M.
        empty_hausdorff: object Hausdorff when only one side has objects; default the image
            diagonal.

    Returns:
        ``f1``, ``precision``, ``recall``, ``object_dice``, ``object_hausdorff`` (floats), the
        counts ``tp_objects``/``fp_objects``/``fn_objects`` (ints) and the area-weighted sums
        ``gt_dice_wsum``, ``pred_dice_wsum``, ``gt_hausdorff_wsum``, ``pred_hausdorff_wsum``
        (e.g. ``sum_i |G_i| Dice(G_i, S*(G_i))``) that :func:`aggregate` pools.
    """
    s = label_objects(pred_labels, instances=True)
    g = label_objects(gt_labels, instances=True)
    if s.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {s.shape} vs {g.shape}")
    return _object_scores(s, g, empty_hausdorff)


def _object_scores(s: np.ndarray, g: np.ndarray, empty_hausdorff: Optional[float]) -> Dict[str, Any]:
    """:func:`object_scores` on label images already numbered 1..N."""
    ns, ng = int(s.max()), int(g.max())
    if empty_hausdorff is None:
        empty_hausdorff = math.hypot(*g.shape)
    table = np.bincount((g.astype(np.int64) * (ns + 1) + s).ravel(), minlength=(ng + 1) * (ns + 1))
    table = table.reshape(ng + 1, ns + 1)
    overlap = table[1:, 1:]  # (ng, ns) pixel counts
    g_area, s_area = table[1:, :].sum(1), table[:, 1:].sum(0)
    out: Dict[str, Any] = {"gt_dice_wsum": 0.0, "pred_dice_wsum": 0.0,
                           "gt_hausdorff_wsum": 0.0, "pred_hausdorff_wsum": 0.0}
    if ns == 0 or ng == 0:
        both_empty = ns == 0 and ng == 0
        h = 0.0 if both_empty else float(empty_hausdorff)
        out.update(f1=float(both_empty), precision=float(both_empty), recall=float(both_empty),
                   object_dice=float(both_empty), object_hausdorff=h,
                   tp_objects=0, fp_objects=ns, fn_objects=ng,
                   gt_hausdorff_wsum=h * float(g_area.sum()), pred_hausdorff_wsum=h * float(s_area.sum()))
        return out

    # Detection: each segmented object against its maximal-overlap GT object.
    matched = np.zeros(ng, bool)
    tp = 0
    for j in range(ns):
        i = int(np.argmax(overlap[:, j]))
        if overlap[i, j] > 0 and 2 * overlap[i, j] >= g_area[i] and not matched[i]:
            matched[i] = True
            tp += 1
    fp, fn = ns - tp, ng - tp
    out.update(tp_objects=tp, fp_objects=fp, fn_objects=fn, f1=_ratio(2 * tp, 2 * tp + fp + fn),
               precision=_ratio(tp, tp + fp), recall=_ratio(tp, tp + fn))

    go, so = _Objects(g, ng), _Objects(s, ns)
    cache: Dict[Tuple[int, int], float] = {}

    def dist(i: int, j: int) -> float:
        if (i, j) not in cache:
            cache[(i, j)] = _hausdorff(go, i, so, j)
        return cache[(i, j)]

    for i in range(ng):  # GT side: partner S*(G_i)
        j = int(np.argmax(overlap[i]))
        if overlap[i, j] > 0:
            out["gt_dice_wsum"] += g_area[i] * 2.0 * overlap[i, j] / (g_area[i] + s_area[j])
            out["gt_hausdorff_wsum"] += g_area[i] * dist(i, j)
        else:
            out["gt_hausdorff_wsum"] += g_area[i] * _closest(go, i, so, ns, lambda m, i=i: dist(i, m))[1]
    for j in range(ns):  # segmented side: partner G*(S_j)
        i = int(np.argmax(overlap[:, j]))
        if overlap[i, j] > 0:
            out["pred_dice_wsum"] += s_area[j] * 2.0 * overlap[i, j] / (g_area[i] + s_area[j])
            out["pred_hausdorff_wsum"] += s_area[j] * dist(i, j)
        else:
            out["pred_hausdorff_wsum"] += s_area[j] * _closest(so, j, go, ng, lambda m, j=j: dist(m, j))[1]
    g_tot, s_tot = float(g_area.sum()), float(s_area.sum())
    out["object_dice"] = 0.5 * (out["gt_dice_wsum"] / g_tot + out["pred_dice_wsum"] / s_tot)
    out["object_hausdorff"] = 0.5 * (out["gt_hausdorff_wsum"] / g_tot + out["pred_hausdorff_wsum"] / s_tot)
    return {k: (int(v) if k.endswith("_objects") else float(v)) for k, v in out.items()}


def evaluate_image(pred: np.ndarray, gt: np.ndarray, *, min_object_size: int = 0,
                   pred_instances: Optional[bool] = None,
                   empty_hausdorff: Optional[float] = None) -> Dict[str, Any]:
    """All metrics of one image.

    Args:
        pred: binary prediction or instance map, shape (H, W) (see :func:`label_objects`).
        gt: ground-truth instance map, shape (H, W), 0 = background; ids are kept as objects.
        min_object_size: drop predicted objects smaller than this before every metric (0 keeps
            all, as the challenge does).
        pred_instances: passed to :func:`label_objects` as ``instances`` for ``pred``.
        empty_hausdorff: see :func:`object_scores`.

    Returns:
        Floats ``dice``, ``iou``, ``f1``, ``precision``, ``recall``, ``object_dice``,
        ``object_hausdorff``, plus the sums in :data:`COUNT_KEYS` for pooling.
    """
    s = label_objects(pred, min_object_size, instances=pred_instances)
    g = label_objects(gt, instances=True)
    if s.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {s.shape} vs {g.shape}")
    p, t = s > 0, g > 0
    inter = int(np.count_nonzero(p & t))
    n_p, n_t = int(np.count_nonzero(p)), int(np.count_nonzero(t))
    out: Dict[str, Any] = {
        "dice": _ratio(2 * inter, n_p + n_t, 1.0), "iou": _ratio(inter, n_p + n_t - inter, 1.0),
        "tp_pixels": inter, "pred_pixels": n_p, "gt_pixels": n_t,
    }
    out.update(_object_scores(s, g, empty_hausdorff))
    return out


def aggregate(per_image: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    """Summarise per-image results of :func:`evaluate_image`.

    Two readings are given:

    * the plain keys (``dice``, ..., ``object_hausdorff``) are means over images, each image
      weighing the same (how per-image tables and most GlaS papers report);
    * ``*_pooled`` keys pool the whole set: ``dice_pooled``/``iou_pooled`` from summed pixel
      counts, ``f1_pooled``/``precision_pooled``/``recall_pooled`` from summed TP/FP/FN, and
      ``object_dice_pooled``/``object_hausdorff_pooled`` with the area weights taken over all
      objects of the set (the challenge formulas applied to the set as one sample).

    Args:
        per_image: non-empty list of dicts from :func:`evaluate_image`.

    Returns:
        The means, the pooled values and ``n_images``.
    """
    if not per_image:
        raise ValueError("aggregate() needs at least one image")
    out: Dict[str, float] = {k: float(np.mean([r[k] for r in per_image])) for k in METRIC_KEYS}
    tot = {k: float(sum(r[k] for r in per_image)) for k in COUNT_KEYS}
    tp, fp, fn = tot["tp_objects"], tot["fp_objects"], tot["fn_objects"]
    nothing = tp + fp + fn == 0
    out["n_images"] = float(len(per_image))
    out["dice_pooled"] = _ratio(2 * tot["tp_pixels"], tot["pred_pixels"] + tot["gt_pixels"], 1.0)
    union = tot["pred_pixels"] + tot["gt_pixels"] - tot["tp_pixels"]
    out["iou_pooled"] = _ratio(tot["tp_pixels"], union, 1.0)
    out["f1_pooled"] = _ratio(2 * tp, 2 * tp + fp + fn, 1.0)
    out["precision_pooled"] = _ratio(tp, tp + fp, float(nothing))
    out["recall_pooled"] = _ratio(tp, tp + fn, float(nothing))
    if tot["gt_pixels"] and tot["pred_pixels"]:
        out["object_dice_pooled"] = 0.5 * (tot["gt_dice_wsum"] / tot["gt_pixels"]
                                           + tot["pred_dice_wsum"] / tot["pred_pixels"])
        out["object_hausdorff_pooled"] = 0.5 * (tot["gt_hausdorff_wsum"] / tot["gt_pixels"]
                                                + tot["pred_hausdorff_wsum"] / tot["pred_pixels"])
    else:  # one side has no object in the whole set: the per-image conventions, pooled
        out["object_dice_pooled"] = float(nothing)
        area = tot["gt_pixels"] + tot["pred_pixels"]
        out["object_hausdorff_pooled"] = _ratio(tot["gt_hausdorff_wsum"] + tot["pred_hausdorff_wsum"], area)
    return out
