"""The prediction store of one slide: an OME-Zarr (NGFF 0.5, zarr v3) directory filled chunk by chunk.

``cdma predict-slide SLIDE --out STORE.zarr`` (:mod:`src_model.slide_predict`) writes it; the plugin
and ``cdma export`` (:mod:`src_model.export`) read it. Layout (``H x W``: the slide's predicted
level; ``C``: the chunk side, a power of two; level ``k`` is ``ceil(H / 2^k) x ceil(W / 2^k)``
with chunks of ``C / 2^k``)::

    STORE.zarr/
      zarr.json            attributes "ome": the image's multiscales (axes c, y, x; written with the
                           ome-zarr library) and "cdma": :class:`StoreInfo` as a dict
      0 .. n-1             the slide's RGB pixels at the predicted level, uint8 (3, H_k, W_k);
                           level k: mean of 2^k x 2^k blocks. The pixels are written (not
                           referenced), so the store is a complete image that any NGFF viewer
                           opens and export needs no slide.
      labels/glands/0..n-1 uint8 (H_k, W_k): 1 = gland, 0 = background or not predicted yet
                           (the class labels, argmax of the mean branch probability); an NGFF
                           image-label; level k: every 2^k-th pixel (nearest, as labels must be)
      labels/instances/    (once numbered: ``cdma export STORE --in-store`` or the napari dock, when every
                           chunk is done; :func:`src_model.export.write_instances`) uint32 (H_k, W_k) 0..n-1:
                           the glands numbered 1..N as ``cdma export``'s GeoJSON numbers them (one label per
                           gland, a gland cut by chunk sides one label), an NGFF image-label with this pyramid
                           (every 2^k-th pixel); ``table`` float64 (N, 7): gland_id, area_px, mean_uncertainty,
                           y0, x0, y1, x1 (level-0 pixels of the slide); attribute ``cdma.source``: a digest of
                           ``labels/glands/0`` and the done chunks it was computed from (out of date once the
                           labels change: numbered again, replaced atomically by a rename)
      uncertainty/0..n-1   uint8 (H_k, W_k): round(255 x uncertainty), the map of
                           ``Prediction.uncertainty`` (mean branch entropy / ln C, in [0, 1]);
                           its own multiscales (axes y, x); level k: mean of 2^k x 2^k blocks
      chunks               float64 (ny, nx, 4), one zarr chunk per slide chunk: [done (1 or
                           NaN), tissue fraction, gland pixels, sum of uncertainty]; NaN = not
                           finished

Coordinates: every multiscales scale is in level-0 pixels of the *slide* (the predicted level's
downsample x 2^k), so layers from the store sit on the slide's own layers in napari.

Chunk (cy, cx) covers rows ``cy*C .. min(H, (cy+1)*C)`` and columns likewise at level 0, and
exactly one zarr chunk of every array at every level: writers of different chunks never touch
the same file, so chunks can be written by any number of processes at once. :meth:`SlideStore.
write_chunk` writes the pixels of a chunk, then its row of ``chunks``; zarr writes each chunk file
atomically (temporary file, rename), so a chunk marked done is complete, and an interrupted run
redoes only the unmarked chunks.

Importing this module loads neither torch nor zarr.
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

PathLike = Union[str, os.PathLike]

STORE_FORMAT = "cdma-slide-store"
STORE_VERSION = 1
#: Smallest zarr chunk of a pyramid level: levels stop before the chunk side would go below it.
MIN_LEVEL_CHUNK = 64
#: Columns of the ``chunks`` record.
CHUNK_FIELDS = ("done", "tissue_fraction", "gland_pixels", "uncertainty_sum")
GLANDS = "glands"


class StoreError(ValueError):
    """A path is not a usable slide store, or does not match the run asked for; one line."""


@dataclass
class StoreInfo:
    """What a store holds and how it was computed (the root's ``cdma`` attribute).

    ``settings`` are the prediction settings that must match for a run to resume into the
    store (model file hash, tile, overlap, branch, tissue threshold).
    """

    slide: str
    slide_level: int
    downsample: float
    height: int
    width: int
    chunk: int
    n_levels: int
    mpp: Optional[float] = None
    settings: Dict[str, Any] = field(default_factory=dict)
    format: str = STORE_FORMAT
    version: int = STORE_VERSION
    created: str = ""


def pyramid_levels(height: int, width: int, chunk: int) -> int:
    """Levels of the store's pyramids: halve while the chunk side and the longer image side both
    stay >= :data:`MIN_LEVEL_CHUNK` (a chunk of 1024 gives at most 5 levels, downsample 16)."""
    n = 1
    while chunk >> n >= MIN_LEVEL_CHUNK and max(height, width) >> n >= MIN_LEVEL_CHUNK:
        n += 1
    return n


def _sum_pairs(s: np.ndarray) -> np.ndarray:
    """Sums of 2 x 2 blocks over the first two axes (zero-padded to even sizes)."""
    h, w = s.shape[:2]
    if h % 2 or w % 2:
        s = np.pad(s, [(0, h % 2), (0, w % 2)] + [(0, 0)] * (s.ndim - 2))
    # four strided views added elementwise: ~4x faster than a reshape and a sum over axes (1, 3)
    return s[0::2, 0::2] + s[1::2, 0::2] + s[0::2, 1::2] + s[1::2, 1::2]


def _block_means(a: np.ndarray, levels: int) -> List[np.ndarray]:
    """``[_block_mean(a, 2 ** k) for k in range(levels)]`` (the same values), from integer block sums built
    level by level instead of from ``a`` at every level."""
    out, s = [a], a.astype(np.int32)
    n = np.ones(a.shape[:2], np.int32)
    for _ in range(1, levels):
        s, n = _sum_pairs(s), _sum_pairs(n)
        # exact sums in float32 (at most 255 x 4^k < 2^24), divided as _block_mean divides
        out.append(np.round(s.astype(np.float32) / n.reshape(n.shape + (1,) * (a.ndim - 2)).astype(np.float32))
                   .astype(a.dtype))
    return out


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Mean of f x f blocks over the first two axes (partial blocks at the edges: mean of what is there)."""
    if f == 1:
        return a
    h, w = a.shape[:2]
    hp, wp = -(-h // f) * f, -(-w // f) * f
    pad = [(0, hp - h), (0, wp - w)] + [(0, 0)] * (a.ndim - 2)
    s = np.pad(a.astype(np.float32), pad).reshape(hp // f, f, wp // f, f, *a.shape[2:]).sum(axis=(1, 3))
    n = np.pad(np.ones((h, w), np.float32), pad[:2]).reshape(hp // f, f, wp // f, f).sum(axis=(1, 3))
    n = n.reshape(n.shape + (1,) * (a.ndim - 2))
    return np.round(s / n).astype(a.dtype)


class SlideStore:
    """An open store (:func:`create_store` / :func:`open_store`).

    Attributes:
        path: the store directory.
        info: :class:`StoreInfo`.
        image: zarr arrays of the RGB pyramid, (3, H_k, W_k) uint8.
        glands: zarr arrays of the gland label pyramid, (H_k, W_k) uint8.
        uncertainty: zarr arrays of the uncertainty pyramid, (H_k, W_k) uint8 (x 255).
    """

    def __init__(self, path: Path, root, info: StoreInfo) -> None:
        self.path = path
        self.root = root
        self.info = info
        n = info.n_levels
        self.image = [root[str(k)] for k in range(n)]
        self.glands = [root["labels"][GLANDS][str(k)] for k in range(n)]
        self.uncertainty = [root["uncertainty"][str(k)] for k in range(n)]
        self.record = root["chunks"]

    # ------------------------------------------------------------------ geometry
    @property
    def grid(self) -> Tuple[int, int]:
        """Chunks along y and x."""
        c = self.info.chunk
        return -(-self.info.height // c), -(-self.info.width // c)

    def chunk_box(self, cy: int, cx: int) -> Tuple[int, int, int, int]:
        """Level-0 (store) pixel box ``(y0, x0, y1, x1)`` of chunk (cy, cx)."""
        c = self.info.chunk
        return cy * c, cx * c, min(self.info.height, (cy + 1) * c), min(self.info.width, (cx + 1) * c)

    def chunks_in(self, y0: int, x0: int, y1: int, x1: int) -> List[Tuple[int, int]]:
        """Chunks that intersect the store-pixel box ``(y0, x0, y1, x1)``, row by row."""
        c = self.info.chunk
        ny, nx = self.grid
        ys = range(max(0, y0 // c), min(ny, -(-y1 // c)))
        xs = range(max(0, x0 // c), min(nx, -(-x1 // c)))
        return [(cy, cx) for cy in ys for cx in xs]

    def all_chunks(self) -> List[Tuple[int, int]]:
        ny, nx = self.grid
        return [(cy, cx) for cy in range(ny) for cx in range(nx)]

    def done(self) -> np.ndarray:
        """bool (ny, nx): chunks finished."""
        return self.record[:, :, 0] == 1

    def chunk_files(self, *parts: str) -> Iterator[Tuple[str, Path]]:
        """``(name under STORE/<parts>, path)`` of every file of one array of the store (e.g. ``"labels", GLANDS,
        "0"``: its chunk files and metadata), in a fixed order (folders and files sorted): what the digests of an
        array's content read (:func:`src_model.export.glands_fingerprint`, the dock's review key)."""
        top = self.path.joinpath(*parts)
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                f = Path(dirpath) / name
                yield str(f.relative_to(top)), f

    def chunk_stats(self) -> np.ndarray:
        """float64 (ny, nx, 4): the ``chunks`` record (columns :data:`CHUNK_FIELDS`)."""
        return self.record[:]

    # ------------------------------------------------------------------ writing
    def write_chunk(self, cy: int, cx: int, rgb: np.ndarray, glands: np.ndarray, uncertainty: np.ndarray,
                    tissue_fraction: float) -> None:
        """Write one chunk at every pyramid level, then mark it done (see the module docstring).

        Args:
            rgb: uint8 (h, w, 3), the chunk's slide pixels.
            glands: uint8 (h, w), 1 = gland.
            uncertainty: uint8 (h, w), uncertainty x 255.
        """
        y0, x0, y1, x1 = self.chunk_box(cy, cx)
        if rgb.shape[:2] != (y1 - y0, x1 - x0) or glands.shape != rgb.shape[:2] or uncertainty.shape != glands.shape:
            raise ValueError(f"chunk {cy},{cx} is {y1 - y0} x {x1 - x0}; got {rgb.shape}, {glands.shape}, "
                             f"{uncertainty.shape}")
        self._write_levels(cy, cx, rgb=rgb, glands=glands, uncertainty=uncertainty)
        self.record[cy:cy + 1, cx:cx + 1] = np.array(
            [[[1.0, float(tissue_fraction), float(np.count_nonzero(glands)),
               float(uncertainty.sum(dtype=np.float64)) / 255.0]]])

    def write_glands(self, cy: int, cx: int, glands: np.ndarray) -> None:
        """Replace the gland labels of one finished chunk (a correction), at every level, and its
        gland count; the image, uncertainty and other fields stay."""
        self._write_levels(cy, cx, glands=np.asarray(glands, np.uint8))
        row = self.record[cy:cy + 1, cx:cx + 1]
        row[0, 0, 2] = float(np.count_nonzero(glands))
        self.record[cy:cy + 1, cx:cx + 1] = row

    def _write_levels(self, cy: int, cx: int, **arrays: np.ndarray) -> None:
        y0, x0, y1, x1 = self.chunk_box(cy, cx)
        means = {name: _block_means(arrays[name], self.info.n_levels) for name in ("rgb", "uncertainty")
                 if name in arrays}
        for k in range(self.info.n_levels):
            f = 1 << k
            ly0, lx0 = y0 // f, x0 // f
            if "rgb" in arrays:
                level = means["rgb"][k]
                self.image[k][:, ly0:ly0 + level.shape[0], lx0:lx0 + level.shape[1]] = np.moveaxis(level, 2, 0)
            if "glands" in arrays:
                level = arrays["glands"][::f, ::f]
                self.glands[k][ly0:ly0 + level.shape[0], lx0:lx0 + level.shape[1]] = level
            if "uncertainty" in arrays:
                level = means["uncertainty"][k]
                self.uncertainty[k][ly0:ly0 + level.shape[0], lx0:lx0 + level.shape[1]] = level

    def read_glands(self, y0: int, x0: int, y1: int, x1: int, level: int = 0) -> np.ndarray:
        """Gland labels uint8 of a box at a pyramid level."""
        return self.glands[level][y0:y1, x0:x1]


def _scales(info: StoreInfo, channel: bool) -> List[Dict[str, Any]]:
    out = []
    for k in range(info.n_levels):
        s = info.downsample * (1 << k)
        out.append({"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": ([1.0] if channel else []) + [s, s]}]})
    return out


def create_store(path: PathLike, info: StoreInfo) -> SlideStore:
    """Create an empty store (arrays and metadata, no chunks) at ``path``, which must not exist."""
    import zarr
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_label_metadata, write_multiscales_metadata

    p = Path(path)
    if p.exists():
        raise StoreError(f"{p}: exists; choose another --out or remove it")
    c, n = info.chunk, info.n_levels
    if c & (c - 1) or c < MIN_LEVEL_CHUNK:
        raise StoreError(f"chunk must be a power of two >= {MIN_LEVEL_CHUNK}, got {c}")
    info.created = info.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    fmt = FormatV05()
    root = zarr.open_group(str(p), mode="w-", zarr_format=3)
    labels = root.create_group("labels")
    glands = labels.create_group(GLANDS)
    unc = root.create_group("uncertainty")
    for k in range(n):
        h, w, ck = -(-info.height // (1 << k)), -(-info.width // (1 << k)), c >> k
        root.create_array(str(k), shape=(3, h, w), chunks=(3, ck, ck), dtype="uint8", fill_value=255)
        glands.create_array(str(k), shape=(h, w), chunks=(ck, ck), dtype="uint8", fill_value=0)
        unc.create_array(str(k), shape=(h, w), chunks=(ck, ck), dtype="uint8", fill_value=0)
    ny, nx = -(-info.height // c), -(-info.width // c)
    root.create_array("chunks", shape=(ny, nx, len(CHUNK_FIELDS)), chunks=(1, 1, len(CHUNK_FIELDS)),
                      dtype="float64", fill_value=float("nan"))
    yx = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    write_multiscales_metadata(root, _scales(info, True), fmt=fmt, axes=[{"name": "c", "type": "channel"}] + yx,
                               name=Path(info.slide).name)
    write_multiscales_metadata(glands, _scales(info, False), fmt=fmt, axes=yx, name=GLANDS)
    write_label_metadata(labels, GLANDS, fmt=fmt, colors=[{"label-value": 1, "rgba": [0, 200, 80, 255]}],
                         properties=[{"label-value": 1, "class": "Gland"}])
    write_multiscales_metadata(unc, _scales(info, False), fmt=fmt, axes=yx, name="uncertainty",
                               metadata={"description": "uint8 = round(255 x uncertainty), uncertainty in [0, 1]"})
    root.attrs["cdma"] = asdict(info)
    return SlideStore(p, root, info)


def open_store(path: PathLike, mode: str = "r") -> SlideStore:
    """Open an existing store (``mode`` "r" or "r+"); :class:`StoreError` if it is not one."""
    import zarr

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise StoreError(f"{p}: a file, not a store (a folder made by cdma predict-slide)")
    if not p.is_dir():
        raise StoreError(f"{p}: no such store directory")
    try:
        root = zarr.open_group(str(p), mode=mode)
        meta = dict(root.attrs.get("cdma") or {})
    except Exception as exc:  # missing or corrupt zarr.json
        raise StoreError(f"{p}: not a readable zarr store: {' '.join(str(exc).split())[:200]}") from exc
    if meta.get("format") != STORE_FORMAT:
        raise StoreError(f"{p}: not a cdma predict-slide store (no 'cdma' store attribute)")
    if meta.get("version") != STORE_VERSION:
        raise StoreError(f"{p}: store version {meta.get('version')}; this version reads {STORE_VERSION}")
    info = StoreInfo(**{k: v for k, v in meta.items() if k in StoreInfo.__dataclass_fields__})
    try:
        return SlideStore(p, root, info)
    except KeyError as exc:
        raise StoreError(f"{p}: incomplete store, missing array {exc}") from exc


def iter_done_chunks(store: SlideStore) -> Iterator[Tuple[int, int]]:
    """Finished chunks, row by row."""
    done = store.done()
    for cy, cx in zip(*np.nonzero(done), strict=True):
        yield int(cy), int(cx)


__all__ = ["CHUNK_FIELDS", "GLANDS", "STORE_FORMAT", "SlideStore", "StoreError", "StoreInfo", "create_store",
           "iter_done_chunks", "open_store", "pyramid_levels"]
