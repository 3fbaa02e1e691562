"""Export a predict-slide store's glands: GeoJSON polygons for QuPath, instance labels as OME-Zarr or TIFF.

``cdma export STORE.zarr --geojson FILE [--ome-zarr OUT] [--tiff OUT]``.

Glands are found chunk by chunk in the store's gland labels (:mod:`src_model.slide_store`): touching
glands are split as the dock splits them (:func:`src_model.postprocess.split_touching`, seeds found
at half resolution, on the chunk plus :data:`SPLIT_HALO` pixels of context, so both chunks around a
side see the glands near it whole), and a piece that touches a chunk side is joined to the piece
across that side it shares the most pixels with, when that piece chooses it too (union-find over
the shared rows and columns), so a gland crossing chunks is one object, and memory stays bounded by
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
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .fileio import atomic_write_bytes, fsync_dir, fsync_path
from .postprocess import DEFAULT_INSTANCES
from .slide_store import SlideStore

PathLike = Union[str, os.PathLike]
GLAND_CLASS = {"name": "Gland", "color": [0, 200, 80]}
#: Context around a chunk when touching glands are split (GlaS glands are < 400 px across at 20x).
SPLIT_HALO = 160
#: The split's seeds are found at half resolution: 3x faster, nearly the same glands (GlaS glands are
#: tens of pixels across or more).
SPLIT_COARSE = 2


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
        from scipy import ndimage as ndi
        from skimage.measure import label as label_regions

        from .postprocess import split_touching

        y0, x0, y1, x1 = self.store.chunk_box(cy, cx)
        if self.split_h <= 0:
            return ndi.label(self.store.glands[0][y0:y1, x0:x1] > 0)
        h, w = self.store.glands[0].shape
        m = self.halo
        wy0, wx0, wy1, wx1 = max(0, y0 - m), max(0, x0 - m), min(h, y1 + m), min(w, x1 + m)
        fg = self.store.glands[0][wy0:wy1, wx0:wx1] > 0
        core = (slice(y0 - wy0, y1 - wy0), slice(x0 - wx0, x1 - wx0))
        if not fg[core].any():
            return np.zeros((y1 - y0, x1 - x0), np.int32), 0
        glands = split_touching(fg, self.split_h, self.split_sigma, coarse=self.split_coarse)[core]
        # a gland cut by the chunk's sides can fall apart: each connected piece gets its own label
        pieces, n = label_regions(glands, background=0, connectivity=1, return_num=True)
        return pieces.astype(np.int32), int(n)

    def _join(self, uf: "_UnionFind", a: np.ndarray, b: np.ndarray) -> None:
        """Union the pieces that meet across a chunk side (``a``, ``b``: the global ids of the two rows or
        columns that face each other). Connected components are joined wherever they touch; split glands
        only with their mutual best partner (the most shared pixels), so that two glands the split
        separated are not joined again where the two chunks' splits differ by a pixel."""
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
            if best_b[gb][1] == ga:
                uf.union(ga, gb)

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
        done = self.store.done()
        ny, nx = self.store.grid
        for cy in range(ny):
            right_edge = None
            for cx in range(nx):
                y0, x0, y1, x1 = self.store.chunk_box(cy, cx)
                if not done[cy, cx]:
                    lab, n = np.zeros((y1 - y0, x1 - x0), np.int32), 0
                else:
                    lab, n = self._chunk_labels(cy, cx)
                self._offsets[(cy, cx)] = next_gid - 1
                glab = np.where(lab > 0, lab + (next_gid - 1), 0)
                next_gid += n
                for a, b in ((right_edge, glab[:, 0]), (bottom_edges.get(cx), glab[0, :])):
                    if a is not None:
                        self._join(uf, a, b)
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
                        pending[i + self._offsets[(cy, cx)]] = _Part(geom, int(areas[i]), float(usums[i]))
                    else:
                        feature = self._feature(geom, int(areas[i]), float(usums[i]), ds, mpp)
                        self._assign([i + self._offsets[(cy, cx)]], feature)
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
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(p.parent)


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


__all__ = ["GLAND_CLASS", "GlandExtractor", "mask_polygon", "rasterize", "write_geojson", "write_labels_ome_zarr",
           "write_labels_tiff"]
