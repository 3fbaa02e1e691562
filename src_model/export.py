"""Export a predict-slide store's glands: GeoJSON polygons for QuPath, instance labels as OME-Zarr or TIFF.

``cdma export STORE.zarr --geojson FILE [--ome-zarr OUT] [--tiff OUT]``.

Glands are found chunk by chunk in the store's gland labels (:mod:`src_model.slide_store`): touching
glands are split as the dock splits them (:func:`src_model.postprocess.split_touching`, seeds found
at half resolution, on the chunk plus :data:`SPLIT_HALO` pixels of context, so both chunks around a
side see the glands near it whole), and a piece that touches a chunk side is joined to the piece
across that side it shares the most pixels with, when that piece chooses it too, or when the piece's
gland lies mostly beyond that side in its own chunk's window (a sliver along the side that the
window's split gave to the neighbour's gland: the two chunks' seeds differ, and without this the
sliver was a gland of its own, cut from its gland exactly on the chunk side); union-find over the
shared rows and columns, so a gland crossing chunks is one object, and memory stays bounded by
a chunk plus the glands that cross chunk sides. With ``split_h=0`` glands are the 4-connected
components, joined wherever they touch. Where the two chunks' splits of a gland pair differ at their
common side the pair can come out split differently than a whole-image split would (the context
makes this rare).

GeoJSON (what QuPath's File > Import objects reads as annotations): a ``FeatureCollection``; each
gland a ``Feature`` whose geometry is a ``Polygon`` (holes as interior rings) or ``MultiPolygon``,
and whose properties are ``objectType: "annotation"``, ``classification: {"name": "Gland",
"color": [r, g, b]}`` and ``measurements``: ``gland_id``, ``area_px`` (level-0 pixels of the slide),
``area_um2`` (when the slide's pixel size is known) and ``mean_uncertainty`` (mean over the
gland's pixels of the uncertainty map, in [0, 1]).

Coordinates are level-0 pixels of the slide, x then y, with QuPath's pixel convention: pixel
(row r, column c) is the square ``[c, c + 1) x [r, r + 1)``. Outlines are traced through pixel
edges' midpoints (scikit-image ``find_contours`` at 0.5, so a polygon's vertices sit on half
pixels and corners are cut diagonally), then written without collinear vertices (shapely). Filling
a polygon's pixel centres gives the gland's pixels back (:func:`rasterize`), the round trip the
tests check.

Instance labels (``--ome-zarr``, ``--tiff``): uint32, 0 = background, glands numbered 1..N in the
order of the GeoJSON features; the store's chunking and pyramid (every 2^k-th pixel) at the
predicted level. OME-Zarr: an NGFF 0.5 image of axes y, x with the store's scales; TIFF: a tiled
BigTIFF, zlib-compressed, reduced levels as SubIFDs.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Generator, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .fileio import atomic_write_bytes, fsync_dir, fsync_path
from .postprocess import DEFAULT_INSTANCES
from .slide_store import GLANDS, SlideStore

PathLike = Union[str, os.PathLike]
GLAND_CLASS = {"name": "Gland", "color": [0, 200, 80]}
#: Context around a chunk when touching glands are split (GlaS glands are < 400 px across at 20x).
SPLIT_HALO = 160
#: The split's seeds are found at half resolution: 3x faster, nearly the same glands (GlaS glands are
#: tens of pixels across or more).
SPLIT_COARSE = 2
#: Sides of a chunk (bits), for the pieces whose gland lies mostly across one (:meth:`GlandExtractor._chunk_pieces`).
_TOP, _BOTTOM, _LEFT, _RIGHT = 1, 2, 4, 8
_SIDES = (_TOP, _BOTTOM, _LEFT, _RIGHT)
#: Version of the rule that joins pieces across chunk sides (part of :func:`glands_fingerprint`: numbered glands of
#: an older rule are numbered again). 2: a piece whose gland lies mostly across a side joins its best partner there;
#: 3: pieces still apart are joined when a split centred on the side makes them one gland.
JOIN_RULE = 3
#: Depth of the band on each side of a chunk side over which :meth:`GlandExtractor._one_gland_across` judges a piece.
_BAND = 8


class _UnionFind:
    def __init__(self) -> None:
        self.parent: Dict[int, int] = {}

    def find(self, a: int) -> int:
        root = a
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while a != root:  # path compression
            self.parent[a], a = root, self.parent.get(a, a)
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def mask_polygon(mask: np.ndarray, row0: float = 0.0, col0: float = 0.0):
    """The outline of one 4-connected component (bool (h, w)) as a shapely polygon in pixel-centre
    coordinates (x = column, y = row), shifted by (col0, row0); holes as interior rings."""
    import shapely
    from shapely.geometry import Polygon
    from skimage.measure import find_contours

    padded = np.pad(np.asarray(mask, np.uint8), 1)
    rings = [c[:, ::-1] + (col0 - 1.0, row0 - 1.0) for c in find_contours(padded, 0.5) if len(c) >= 4]
    if not rings:
        return None
    polys = [Polygon(r) for r in rings]
    outer = int(np.argmax([p.area for p in polys]))
    geom = Polygon(rings[outer], [r for i, r in enumerate(rings) if i != outer])
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    return geom


def _to_qupath(geom, scale: float):
    """Pixel-centre coordinates of the store -> QuPath level-0 coordinates (pixel edges at integers)."""
    import shapely

    return shapely.transform(geom, lambda xy: (xy + 0.5) * scale)


def _polygonal(geom):
    from shapely.geometry import MultiPolygon, Polygon

    if isinstance(geom, (Polygon, MultiPolygon)):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon)]
    return MultiPolygon(parts) if parts else None


@dataclass
class _Part:
    geom: Any
    area: int
    usum: float


@dataclass
class GlandExtractor:
    """Finds the glands of a store chunk by chunk (see the module docstring).

    Iterate :meth:`features` once; afterwards :attr:`final_ids` maps every component (a global
    id per chunk and component) to its gland number (0 = dropped: smaller than :attr:`min_area_px`),
    which :meth:`label_chunks` uses to write instance labels.
    """

    store: SlideStore
    #: Glands smaller than this many level-0 pixels of the slide are dropped (0 = keep all). ``None``: the
    #: dock's clean-up, :data:`~src_model.postprocess.DEFAULT_INSTANCES`' ``min_size`` (1300 px) in pixels of
    #: the predicted level, i.e. ``min_size * downsample**2`` level-0 pixels, so a slide's export drops the
    #: same specks as an image's prediction in the dock.
    min_area: Optional[float] = None
    #: Touching glands are split as the dock splits them (:func:`src_model.postprocess.split_touching`,
    #: the bundled model's :data:`~src_model.postprocess.DEFAULT_INSTANCES`); 0 = connected components.
    split_h: float = DEFAULT_INSTANCES.split_h
    split_sigma: float = DEFAULT_INSTANCES.split_sigma
    halo: int = SPLIT_HALO  # context around a chunk for the split (store pixels)
    split_coarse: int = SPLIT_COARSE  # seeds found on every n-th pixel (see split_touching)
    final_ids: Dict[int, int] = field(default_factory=dict)
    #: Called by :meth:`features` with ``(cy, cx, pieces, offset)`` for every chunk once its pieces are found
    #: (int32 labels 1..n, global ids ``offset + i``; all zero for a chunk not predicted): what
    #: :func:`write_instances` keeps so that the split is not computed twice.
    chunk_sink: Optional[Callable[[int, int, np.ndarray, int], None]] = field(default=None, repr=False)
    _offsets: Dict[Tuple[int, int], int] = field(default_factory=dict)
    n_glands: int = 0

    @property
    def min_area_px(self) -> float:
        """The smallest gland kept, in level-0 pixels (see :attr:`min_area`)."""
        if self.min_area is not None:
            return float(self.min_area)
        return float(DEFAULT_INSTANCES.min_size) * self.store.info.downsample ** 2

    def _chunk_labels(self, cy: int, cx: int) -> Tuple[np.ndarray, int]:
        """Gland pieces of a chunk: int32 labels 1..n, each a 4-connected piece of one gland."""
        pieces, n, _ = self._chunk_pieces(cy, cx)
        return pieces, n

    def _chunk_pieces(self, cy: int, cx: int) -> Tuple[np.ndarray, int, np.ndarray]:
        """:meth:`_chunk_labels`, and for each piece (uint8, index = label) the chunk sides across which the
        gland it is part of lies mostly (bits :data:`_SIDES`): the split of the chunk's window gives that gland more
        pixels in the context beyond that side than in the chunk. Such a piece (typically a sliver along the side:
        the neighbour's gland, whose seed this window placed beyond the side) belongs to the neighbour's piece it
        touches most across that side, however the neighbour split its own side."""
        from scipy import ndimage as ndi
        from skimage.measure import label as label_regions

        from .postprocess import split_touching

        y0, x0, y1, x1 = self.store.chunk_box(cy, cx)
        if self.split_h <= 0:
            lab, n = ndi.label(self.store.glands[0][y0:y1, x0:x1] > 0)
            return lab, int(n), np.zeros(n + 1, np.uint8)
        h, w = self.store.glands[0].shape
        m = self.halo
        wy0, wx0, wy1, wx1 = max(0, y0 - m), max(0, x0 - m), min(h, y1 + m), min(w, x1 + m)
        fg = self.store.glands[0][wy0:wy1, wx0:wx1] > 0
        cy0, cx0, cy1, cx1 = y0 - wy0, x0 - wx0, y1 - wy0, x1 - wx0
        core = (slice(cy0, cy1), slice(cx0, cx1))
        if not fg[core].any():
            return np.zeros((y1 - y0, x1 - x0), np.int32), 0, np.zeros(1, np.uint8)
        full = split_touching(fg, self.split_h, self.split_sigma, coarse=self.split_coarse)
        glands = full[core]
        # a gland cut by the chunk's sides can fall apart: each connected piece gets its own label
        pieces, n = label_regions(glands, background=0, connectivity=1, return_num=True)
        pieces = pieces.astype(np.int32)
        owned = np.zeros(n + 1, np.uint8)
        if n:
            k = int(full.max()) + 1
            inside = np.bincount(glands.ravel(), minlength=k)
            beyond = {_TOP: full[:cy0, cx0:cx1], _BOTTOM: full[cy1:, cx0:cx1],
                      _LEFT: full[cy0:cy1, :cx0], _RIGHT: full[cy0:cy1, cx1:]}
            # the window's gland of each piece (any of its pixels; a piece is inside one gland)
            first = np.asarray(ndi.maximum(glands, pieces, np.arange(1, n + 1)), np.int64)
            edge = np.zeros(n + 1, bool)
            edge[np.unique(np.concatenate([pieces[0], pieces[-1], pieces[:, 0], pieces[:, -1]]))] = True
            for bit, strip in beyond.items():
                if not strip.size:
                    continue
                out = np.bincount(strip.ravel(), minlength=k)
                mostly = out > inside
                owned[1:] |= np.where(mostly[first] & edge[1:], bit, 0).astype(np.uint8)
        return pieces, int(n), owned

    def _join(self, uf: "_UnionFind", a: np.ndarray, b: np.ndarray, a_owned: set, b_owned: set,
              line: Tuple[int, int, int]) -> None:
        """Union the pieces that meet across a chunk side (``a``, ``b``: the global ids of the two rows or
        columns that face each other). Connected components are joined wherever they touch; split glands
        only with their mutual best partner (the most shared pixels), so that two glands the split
        separated are not joined again where the two chunks' splits differ by a pixel, and a piece whose gland
        lies mostly across the side (``a_owned``, ``b_owned``: such ids of ``a``, ``b``; see
        :meth:`_chunk_pieces`) with its best partner, whether or not that one chooses it too. Pieces still apart
        that touch are joined when a split centred on the side makes them one gland (:meth:`_one_gland_across`;
        ``line`` says where the side is)."""
        both = (a > 0) & (b > 0)
        if not both.any():
            return
        pairs, counts = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
        if self.split_h <= 0:
            for ga, gb in pairs.T.tolist():
                uf.union(ga, gb)
            return
        best_a: Dict[int, Tuple[int, int]] = {}
        best_b: Dict[int, Tuple[int, int]] = {}
        for (ga, gb), c in zip(pairs.T.tolist(), counts.tolist(), strict=True):
            if c > best_a.get(ga, (0, 0))[0]:
                best_a[ga] = (c, gb)
            if c > best_b.get(gb, (0, 0))[0]:
                best_b[gb] = (c, ga)
        for ga, (_, gb) in best_a.items():
            if best_b[gb][1] == ga or ga in a_owned:
                uf.union(ga, gb)
        for gb, (_, ga) in best_b.items():
            if gb in b_owned:
                uf.union(ga, gb)
        for ga, gb in pairs.T.tolist():
            if uf.find(ga) != uf.find(gb) and self._one_gland_across(a == ga, b == gb, line):
                uf.union(ga, gb)

    def _one_gland_across(self, on_a: np.ndarray, on_b: np.ndarray, line: Tuple[int, int, int]) -> bool:
        """Whether two pieces that touch across a chunk side, not joined by the rules above (the two chunks split
        them differently: each chunk's window saw the other side only as context), are one gland in a window
        centred on the side: the split of the glands within :attr:`halo` of the side around both pieces' pixels on
        it (``on_a``, ``on_b``: bool along the side), each piece judged by the gland most of the gland pixels lie in
        of the :data:`_BAND` rows (columns) on its side of the side at those positions.
        ``line``: ``(axis, position, start)``, the side at row (axis 0) or column (axis 1) ``position``, its
        pixels from ``start``."""
        from .postprocess import split_touching

        axis, pos, start = line
        idx = np.nonzero(on_a | on_b)[0] + start
        h, w = self.store.glands[0].shape
        m = self.halo
        lo, hi = max(0, pos - m), min(h if axis == 0 else w, pos + m)
        c0, c1 = max(0, int(idx.min()) - m), min(w if axis == 0 else h, int(idx.max()) + 1 + m)
        box = (slice(lo, hi), slice(c0, c1)) if axis == 0 else (slice(c0, c1), slice(lo, hi))
        fg = self.store.glands[0][box] > 0
        lab = split_touching(fg, self.split_h, self.split_sigma, coarse=self.split_coarse)
        if axis == 1:
            lab = lab.T
        d = min(_BAND, pos - lo, hi - pos)  # each piece judged over a band of its side, not only its pixels on the
        before, after = lab[pos - d - lo:pos - lo], lab[pos - lo:pos + d - lo]  # side: a split line a pixel off
        ia, ib = np.nonzero(on_a)[0] + start - c0, np.nonzero(on_b)[0] + start - c0  # the side is still a split
        ga, gb = np.bincount(before[:, ia].ravel()), np.bincount(after[:, ib].ravel())
        ga[0] = gb[0] = 0  # background does not count
        return bool(ga.any() and gb.any() and ga.argmax() == gb.argmax())

    def features(self) -> Iterator[Dict[str, Any]]:
        """GeoJSON features, one per gland (glands inside one chunk first, then joined ones)."""
        from scipy import ndimage as ndi

        info = self.store.info
        ds, mpp = info.downsample, info.mpp
        uf = _UnionFind()
        pending: Dict[int, _Part] = {}
        next_gid = 1
        right_edge: Optional[np.ndarray] = None
        bottom_edges: Dict[int, np.ndarray] = {}
        owned_by: Dict[int, set] = {}  # side bit -> global ids of pieces whose gland lies mostly across it
        done = self.store.done()
        ny, nx = self.store.grid
        for cy in range(ny):
            right_edge = None
            for cx in range(nx):
                y0, x0, y1, x1 = self.store.chunk_box(cy, cx)
                if not done[cy, cx]:
                    lab, n, owned = np.zeros((y1 - y0, x1 - x0), np.int32), 0, np.zeros(1, np.uint8)
                else:
                    lab, n, owned = self._chunk_pieces(cy, cx)
                off = next_gid - 1
                for bit in _SIDES:  # the global ids of the pieces owned across each side
                    ids = np.nonzero(owned & bit)[0]
                    if len(ids):
                        owned_by.setdefault(bit, set()).update((ids + off).tolist())
                self._offsets[(cy, cx)] = off
                if self.chunk_sink is not None:
                    self.chunk_sink(cy, cx, lab, off)
                glab = np.where(lab > 0, lab + off, 0)
                next_gid += n
                for a, b, sa, sb, line in ((right_edge, glab[:, 0], _RIGHT, _LEFT, (1, x0, y0)),
                                           (bottom_edges.get(cx), glab[0, :], _BOTTOM, _TOP, (0, y0, x0))):
                    if a is not None:
                        self._join(uf, a, b, owned_by.get(sa, set()), owned_by.get(sb, set()), line)
                right_edge, bottom_edges[cx] = glab[:, -1].copy(), glab[-1, :].copy()
                if not n:
                    continue
                unc = self.store.uncertainty[0][y0:y1, x0:x1].astype(np.float64) / 255.0
                areas = np.bincount(lab.ravel(), minlength=n + 1)
                usums = np.bincount(lab.ravel(), weights=unc.ravel(), minlength=n + 1)
                touching = set(np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])).tolist())
                for i, sl in enumerate(ndi.find_objects(lab), start=1):
                    geom = mask_polygon(lab[sl] == i, y0 + sl[0].start, x0 + sl[1].start)
                    if geom is None:
                        continue
                    if i in touching:
                        pending[i + off] = _Part(geom, int(areas[i]), float(usums[i]))
                    else:
                        feature = self._feature(geom, int(areas[i]), float(usums[i]), ds, mpp)
                        self._assign([i + off], feature)
                        if feature is not None:
                            yield feature
        groups: Dict[int, List[int]] = {}
        for gid in pending:
            groups.setdefault(uf.find(gid), []).append(gid)
        import shapely

        for root in sorted(groups):
            gids = groups[root]
            parts = [pending[g] for g in gids]
            geom = shapely.unary_union([p.geom for p in parts]) if len(parts) > 1 else parts[0].geom
            feature = self._feature(geom, sum(p.area for p in parts), sum(p.usum for p in parts), ds, mpp)
            self._assign(gids, feature)
            if feature is not None:
                yield feature

    def _assign(self, gids: Sequence[int], feature: Optional[Dict[str, Any]]) -> None:
        number = feature["properties"]["measurements"]["gland_id"] if feature is not None else 0
        for g in gids:
            self.final_ids[g] = number

    def _feature(self, geom, area: int, usum: float, ds: float, mpp: Optional[float]) -> Optional[Dict[str, Any]]:
        import shapely

        area_px = area * ds * ds
        if area_px < self.min_area_px:
            return None
        geom = _polygonal(shapely.simplify(_to_qupath(geom, ds), 0.0))
        if geom is None or geom.is_empty:
            return None
        self.n_glands += 1
        measurements = {"gland_id": self.n_glands, "area_px": float(area_px), "mean_uncertainty": usum / area}
        if mpp:
            measurements["area_um2"] = float(area_px * mpp * mpp)
        return {"type": "Feature", "geometry": shapely.geometry.mapping(geom),
                "properties": {"objectType": "annotation", "name": f"Gland {self.n_glands}",
                               "classification": dict(GLAND_CLASS), "measurements": measurements}}

    def label_chunks(self, factor: int = 1) -> Iterator[Tuple[int, int, np.ndarray]]:
        """(cy, cx, uint32 instance labels of the chunk, every ``factor``-th pixel) after :meth:`features`."""
        for cy, cx in self.store.all_chunks():
            lab, n = self._chunk_labels(cy, cx)  # the same components as in features() (deterministic)
            off = self._offsets.get((cy, cx), 0)
            lut = np.array([0] + [self.final_ids.get(off + i, 0) for i in range(1, n + 1)], np.uint32)
            yield cy, cx, lut[lab[::factor, ::factor]]


def write_geojson(extractor: GlandExtractor, path: PathLike) -> int:
    """Stream the features into a GeoJSON FeatureCollection at ``path`` (atomically); returns the count."""
    def write(f) -> None:
        f.write(b'{"type": "FeatureCollection", "features": [\n')
        for i, feature in enumerate(extractor.features()):
            f.write((",\n" if i else "").encode() + json.dumps(feature, separators=(",", ":")).encode())
        f.write(b"\n]}\n")

    atomic_write_bytes(path, write)
    return extractor.n_glands


def write_labels_ome_zarr(extractor: GlandExtractor, path: PathLike) -> None:
    """Instance labels as an NGFF 0.5 image (axes y, x) with the store's chunks, pyramid and scales."""
    import zarr
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_multiscales_metadata

    store, info = extractor.store, extractor.store.info
    p = Path(path)
    if p.exists():
        raise FileExistsError(f"{p}: exists; choose another path or remove it")
    root = zarr.open_group(str(p), mode="w-", zarr_format=3)
    arrays = [root.create_array(str(k), shape=a.shape, chunks=a.chunks, dtype="uint32", fill_value=0)
              for k, a in enumerate(store.glands)]
    for cy, cx, lab in extractor.label_chunks():
        y0, x0, _, _ = store.chunk_box(cy, cx)
        for k, arr in enumerate(arrays):
            f = 1 << k
            level = lab[::f, ::f]
            arr[y0 // f:y0 // f + level.shape[0], x0 // f:x0 // f + level.shape[1]] = level
    datasets = [{"path": str(k), "coordinateTransformations": [
        {"type": "scale", "scale": [info.downsample * (1 << k)] * 2}]} for k in range(len(arrays))]
    write_multiscales_metadata(root, datasets, fmt=FormatV05(), axes=[{"name": "y", "type": "space"},
                                                                         {"name": "x", "type": "space"}],
                               name="glands")
    root.attrs["cdma"] = {"source_store": str(store.path), "labels": "uint32 gland instances, 0 = background"}


def write_labels_tiff(extractor: GlandExtractor, path: PathLike) -> None:
    """Instance labels as a tiled pyramidal BigTIFF (tiles = the store's chunks), written atomically."""
    import tifffile

    store = extractor.store
    c = store.info.chunk
    levels = store.glands

    def tiles(k: int):
        ck = c >> k
        for _, _, lab in extractor.label_chunks(1 << k):
            tile = np.zeros((ck, ck), np.uint32)
            tile[:lab.shape[0], :lab.shape[1]] = lab
            yield tile

    # tifffile needs a named file: a temporary name next to the target, renamed when complete
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.partial")
    try:
        with tifffile.TiffWriter(tmp, bigtiff=True) as tw:
            for k, arr in enumerate(levels):
                extra = {"subifds": len(levels) - 1} if k == 0 else {"subfiletype": 1}
                tw.write(tiles(k), shape=arr.shape, dtype=np.uint32, tile=(c >> k, c >> k), compression="zlib",
                         photometric="minisblack", **extra)
        fsync_path(tmp)
        os.replace(tmp, p)
    except OSError as exc:
        if exc.filename:
            raise
        raise OSError(exc.errno, exc.strerror, str(p)) from exc  # a failed write (a full disk) names no file
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(p.parent)


#: The store's numbered glands (:func:`write_instances`): ``STORE/labels/instances``.
INSTANCES = "instances"
INSTANCES_FORMAT = "cdma-gland-instances"
#: Columns of ``STORE/labels/instances/table``, one row per gland in gland-number order; the box in level-0 pixels
#: of the slide (y1, x1 exclusive), the area in level-0 pixels, the mean uncertainty in [0, 1].
TABLE_FIELDS = ("gland_id", "area_px", "mean_uncertainty", "y0", "x0", "y1", "x1")


def glands_fingerprint(store: SlideStore, extractor: Optional[GlandExtractor] = None) -> str:
    """A digest of what the numbered glands are computed from: the bytes of the store's full-resolution gland
    label files (every chunk file of ``labels/glands/0``), which chunks are done, and the extractor's settings.
    Any edit, undo or new prediction of the gland labels changes it; reading the pyramid or the uncertainty
    does not."""
    import hashlib

    ex = extractor or GlandExtractor(store)
    h = hashlib.blake2b(digest_size=16)
    settings = {"split_h": ex.split_h, "split_sigma": ex.split_sigma, "halo": ex.halo,
                "split_coarse": ex.split_coarse, "min_area_px": ex.min_area_px, "join_rule": JOIN_RULE}
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(np.ascontiguousarray(store.done()).tobytes())
    for name, f in store.chunk_files("labels", GLANDS, "0"):
        h.update(name.encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def instances_info(store: SlideStore) -> Optional[Dict[str, Any]]:
    """The ``cdma`` attributes of the store's numbered glands (``source``: :func:`glands_fingerprint` when they
    were computed, ``n_glands``, the settings), or None when the store holds none."""
    import zarr

    p = store.path / "labels" / INSTANCES
    if not (p / "zarr.json").is_file():
        return None
    try:
        meta = dict(zarr.open_group(str(p), mode="r").attrs.get("cdma") or {})
    except Exception:  # a damaged group: as if none
        return None
    return meta if meta.get("format") == INSTANCES_FORMAT else None


def instances_current(store: SlideStore, extractor: Optional[GlandExtractor] = None) -> bool:
    """Whether the store's numbered glands were computed from its gland labels as they are now."""
    meta = instances_info(store)
    return meta is not None and meta.get("source") == glands_fingerprint(store, extractor)


def instance_levels(store: SlideStore) -> List[Any]:
    """The zarr arrays of the store's numbered glands, full resolution first (the pyramid of ``labels/glands``)."""
    import zarr

    g = zarr.open_group(str(store.path / "labels" / INSTANCES), mode="r")
    return [g[str(k)] for k in range(store.info.n_levels)]


def instance_table(store: SlideStore) -> List[Dict[str, Any]]:
    """The per-gland table of the store's numbered glands, as :func:`src_model.gland_table.gland_table` gives an
    image's: ``{"id", "area" (level-0 pixels of the slide), "mean_uncertainty", "bbox" (y0, x0, y1, x1), level-0
    pixels, i.e. napari world coordinates of the slide)}``, by gland number."""
    import zarr

    t = zarr.open_group(str(store.path / "labels" / INSTANCES), mode="r")["table"][:]
    return [{"id": int(r[0]), "area": int(round(r[1])), "mean_uncertainty": float(r[2]),
             "bbox": (int(r[3]), int(r[4]), int(r[5]), int(r[6]))} for r in t]


def write_instances(store: SlideStore,
                    extractor: Optional[GlandExtractor] = None) -> Generator[Any, None, Dict[str, Any]]:
    """Number the store's glands into ``STORE/labels/instances``; a generator of :class:`~src_model.progress.
    Progress` (one step per chunk, two passes) that returns ``{"n_glands", "reused", "stale", "seconds"}``.

    The glands are those of :class:`GlandExtractor` (by default the dock's post-processing, as ``cdma export``):
    numbered 1..N in the order of the GeoJSON features, a gland cut by chunk sides one number. Layout: an NGFF
    image-label (uint32, 0 = background) with the pyramid of ``labels/glands`` (level k: every 2^k-th pixel, the
    same chunks and scales), listed in ``labels``' ``labels``; ``table`` (float64, N x 7,
    :data:`TABLE_FIELDS`); attribute ``cdma``: ``source`` (:func:`glands_fingerprint` of the labels it was
    computed from), ``n_glands``, the settings. Nothing is recomputed when ``source`` matches (``reused``).

    Atomic: everything is written into ``labels/instances.partial-<pid>-<token>`` and renamed into place only when
    complete, and only if the gland labels did not change meanwhile (``stale``: nothing is replaced then); a reader
    sees the old numbered glands or the new ones. A run stopped (the generator closed) removes its folder; one
    killed leaves it, removed by the next run once its process is gone. Runs at once on one store put their numbers
    in place in turn (the last to finish stands; one that finds another's put in place between its two renames drops
    its own: ``stale``). Memory: a chunk's labels plus the glands that cross chunk sides (the pieces' labels are
    written on the first pass and renumbered on the second, so the split is computed once)."""
    import shutil
    import time

    import zarr

    t0 = time.perf_counter()
    ex = extractor or GlandExtractor(store)
    key = glands_fingerprint(store, ex)
    meta = instances_info(store)
    if meta is not None and meta.get("source") == key:
        return {"n_glands": int(meta.get("n_glands", 0)), "reused": True, "stale": False,
                "seconds": time.perf_counter() - t0}
    labels_dir = store.path / "labels"
    _remove_dead_runs(labels_dir)
    token = f"{os.getpid()}-{os.urandom(4).hex()}"
    partial, final, old = (labels_dir / f"{INSTANCES}{s}" for s in (f".partial-{token}", "", f".old-{token}"))
    try:
        out = yield from _number_into(store, ex, key, partial)
    except BaseException:  # stopped (GeneratorExit), or failed: nothing of this run is left
        shutil.rmtree(partial, ignore_errors=True)
        raise
    out["seconds"] = time.perf_counter() - t0
    if glands_fingerprint(store, ex) != key:  # the gland labels changed while they were numbered
        shutil.rmtree(partial, ignore_errors=True)
        return {**out, "stale": True}
    if final.exists():
        try:
            os.rename(final, old)
        except FileNotFoundError:  # another run moved it meanwhile
            pass
    try:
        os.rename(partial, final)
    except OSError:  # another run put its numbers in place meanwhile: they stand, these are dropped
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        return {**out, "stale": True}
    fsync_dir(labels_dir)
    shutil.rmtree(old, ignore_errors=True)
    group = zarr.open_group(str(labels_dir), mode="r+")
    ome = dict(group.attrs.get("ome") or {})
    if INSTANCES not in (ome.get("labels") or []):
        ome["labels"] = list(ome.get("labels") or []) + [INSTANCES]
        group.attrs["ome"] = ome
    return out


def _remove_dead_runs(labels_dir: Path) -> None:
    """Remove the folders that runs of :func:`write_instances` whose process is gone left in ``labels_dir``."""
    import shutil

    for d in list(labels_dir.glob(f"{INSTANCES}.partial-*")) + list(labels_dir.glob(f"{INSTANCES}.old-*")):
        try:
            pid = int(d.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid():
            continue  # this process's runs clean up after themselves
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except OSError:  # alive (another user's)
            pass


def _number_into(store: SlideStore, ex: GlandExtractor, key: str,
                 partial: Path) -> Generator[Any, None, Dict[str, Any]]:
    """Write the numbered glands, their table and metadata into the group at ``partial`` (see :func:`write_instances`);
    returns ``{"n_glands", "reused": False, "stale": False}``."""
    import zarr
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_multiscales_metadata
    from shapely.geometry import shape as as_shape

    from .progress import Progress

    stage = "number-glands"  # of the Progress events
    root = zarr.open_group(str(partial), mode="w-", zarr_format=3)
    arrays = [root.create_array(str(k), shape=a.shape, chunks=a.chunks, dtype="uint32", fill_value=0)
              for k, a in enumerate(store.glands)]
    chunks = store.all_chunks()
    total = 2 * len(chunks)
    seen = [0, 0]  # chunks passed, largest piece id

    def sink(cy: int, cx: int, pieces: np.ndarray, offset: int) -> None:
        seen[0] += 1
        if pieces.any():  # the pieces' global ids, renumbered on the second pass
            y0, x0, y1, x1 = store.chunk_box(cy, cx)
            arrays[0][y0:y1, x0:x1] = np.where(pieces > 0, pieces.astype(np.uint32) + np.uint32(offset), 0)
            seen[1] = max(seen[1], offset + int(pieces.max()))

    ex.chunk_sink = sink
    rows: List[Tuple[float, ...]] = []
    reported = 0
    try:
        for feature in ex.features():
            m = feature["properties"]["measurements"]
            x0, y0, x1, y1 = as_shape(feature["geometry"]).bounds  # QuPath level-0 coordinates
            rows.append((m["gland_id"], m["area_px"], m["mean_uncertainty"], np.floor(y0), np.floor(x0),
                         np.ceil(y1), np.ceil(x1)))
            if seen[0] > reported:
                reported = seen[0]
                yield Progress(stage, reported, total)
    finally:
        ex.chunk_sink = None
    lut = np.zeros(seen[1] + 1, np.uint32)
    for gid, number in ex.final_ids.items():
        if gid <= seen[1]:
            lut[gid] = number
    for i, (cy, cx) in enumerate(chunks, start=1):
        y0, x0, y1, x1 = store.chunk_box(cy, cx)
        lab = lut[arrays[0][y0:y1, x0:x1]]
        for k, arr in enumerate(arrays):
            f = 1 << k
            level = lab[::f, ::f]
            if k == 0 or level.any():
                arr[y0 // f:y0 // f + level.shape[0], x0 // f:x0 // f + level.shape[1]] = level
        yield Progress(stage, len(chunks) + i, total)
    table = np.asarray(rows, np.float64).reshape(-1, len(TABLE_FIELDS))
    arr = root.create_array("table", shape=table.shape, chunks=(max(1, min(len(table), 1 << 16)), len(TABLE_FIELDS)),
                            dtype="float64", fill_value=0.0)
    if len(table):
        arr[:] = table
    fmt = FormatV05()
    datasets = [{"path": str(k), "coordinateTransformations": [
        {"type": "scale", "scale": [store.info.downsample * (1 << k)] * 2}]} for k in range(len(arrays))]
    write_multiscales_metadata(root, datasets, fmt=fmt, axes=[{"name": "y", "type": "space"},
                                                             {"name": "x", "type": "space"}], name=INSTANCES)
    ome = dict(root.attrs.get("ome") or {})
    ome["image-label"] = {"version": fmt.version, "properties": [{"label-value": 0, "class": "background"}]}
    root.attrs["ome"] = ome
    root.attrs["cdma"] = {"format": INSTANCES_FORMAT, "version": 1, "source": key, "n_glands": int(ex.n_glands),
                          "labels": "uint32 gland instances numbered as cdma export's GeoJSON, 0 = background",
                          "table_fields": list(TABLE_FIELDS), "split_h": ex.split_h, "split_sigma": ex.split_sigma,
                          "min_area_px": ex.min_area_px}
    return {"n_glands": int(ex.n_glands), "reused": False, "stale": False}


def rasterize(features: Sequence[Dict[str, Any]], shape: Tuple[int, int], downsample: float = 1.0) -> np.ndarray:
    """Label image (int32, ``shape`` at the store's level) of GeoJSON features: feature i gets i + 1;
    pixels whose centres lie inside a polygon (and outside its holes)."""
    from skimage.draw import polygon as fill

    out = np.zeros(shape, np.int32)
    for i, feature in enumerate(features, start=1):
        geom = feature["geometry"]
        polys = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
        for rings in polys:
            inside = np.zeros(shape, bool)
            for j, ring in enumerate(rings):
                xy = np.asarray(ring, np.float64) / downsample - 0.5
                rr, cc = fill(xy[:, 1], xy[:, 0], shape)
                inside[rr, cc] = j == 0
            out[inside] = i
    return out


__all__ = ["GLAND_CLASS", "INSTANCES", "TABLE_FIELDS", "GlandExtractor", "glands_fingerprint", "instance_levels",
           "instance_table", "instances_current", "instances_info", "mask_polygon", "rasterize", "write_geojson",
           "write_instances", "write_labels_ome_zarr", "write_labels_tiff"]
