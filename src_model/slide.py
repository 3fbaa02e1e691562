"""Whole-slide images as lazy multiscale arrays: OME-Zarr, pyramidal TIFF, OpenSlide formats.

:func:`open_slide` opens a slide without decoding pixels. The result, a :class:`Slide`, holds one
array per resolution level, full resolution first, each shaped (Y, X, 3) uint8 RGB whatever the
stored layout (OME-Zarr's (c, y, x), a TIFF's grey or RGBA samples, OpenSlide's RGBA). Pixels are
decoded only when a region is indexed: ``slide.levels[k]`` are dask arrays (what napari shows as a
multiscale layer), :meth:`Slide.read_region` returns one NumPy region.

Formats (chosen from the path):

* a directory (``.zarr``, ``.ome.zarr``): an OME-Zarr image (NGFF 0.4 or 0.5), read with the
  ``ome-zarr`` library; the first multiscale image; axes ``t`` / ``z`` take index 0, ``c`` holds
  1 (grey), 3 (RGB) or 4 (RGBA) channels.
* ``.tif`` / ``.tiff`` (also ``.svs``, ``.scn``, ``.bif`` when OpenSlide is not installed): the
  first series of the file through tifffile's zarr store (``TiffFile.series[0].aszarr()``), its
  reduced-resolution levels (SubIFDs or pages) as the pyramid. A plain single-level TIFF opens
  as a one-level slide.
* vendor formats (``.svs``, ``.ndpi``, ``.mrxs``, ``.scn``, ``.vms``, ``.vmu``, ``.bif``,
  ``.svslide``, ``.tif`` files OpenSlide recognises are still read with tifffile) through
  ``openslide-python`` with the ``openslide-bin`` wheel, an optional dependency (extra
  ``slides``): :func:`have_openslide` says whether it imports.

Damaged files are reported as :class:`SlideError`, one line naming the file: unreadable headers
or metadata when the slide is opened, a TIFF whose tile data runs past the end of the file
(truncated) when it is opened, and undecodable chunks or tiles when a region is read.

Example::

    with open_slide("case.ome.zarr") as slide:
        print(slide.shape, slide.downsamples, slide.mpp)
        rgb = slide.read_region(0, 1000, 2000, 1512, 2512)   # (512, 512, 3) uint8

Importing this module loads neither torch nor dask (dask is imported when a slide is opened).
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .io import _scale_uint16, tiff_page_problem, uint16_bits, uint16_colour_max, uint16_note

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

TIFF_SUFFIXES = (".tif", ".tiff")
#: Suffixes of the vendor formats that OpenSlide reads (tifffile reads the TIFF-based ones too).
OPENSLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide", ".tif", ".tiff")
_TIFF_BASED = (".svs", ".scn", ".bif", ".svslide")
ZARR_SUFFIXES = (".zarr",)
#: Every suffix :func:`open_slide` accepts (directories are OME-Zarr whatever their name).
SLIDE_SUFFIXES = tuple(sorted(set(ZARR_SUFFIXES + TIFF_SUFFIXES + OPENSLIDE_SUFFIXES)))
#: Chunk side of the dask arrays of formats without native tiles (OpenSlide regions).
READ_CHUNK = 1024



@functools.lru_cache(maxsize=1)
def have_openslide() -> bool:
    """Whether openslide-python and its C library (the openslide-bin wheel) import (probed once)."""
    try:
        import openslide  # noqa: F401
    except (ImportError, OSError):  # not installed, or its C library cannot be loaded
        return False
    return True


class SlideError(ValueError):
    """A slide cannot be opened or read; the message is one line naming the file and the reason."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


# --------------------------------------------------------------------------- levels

class _Level:
    """One resolution level as an array-like (H, W, 3) uint8: slicing reads and converts pixels.

    ``read(y0, x0, y1, x1)`` returns the stored values of the region in their own layout; the
    conversion to RGB uint8 is :func:`_to_rgb`.
    """

    def __init__(self, path: Path, index: int, shape_hw: Tuple[int, int],
                 read: Callable[[int, int, int, int], np.ndarray], chunks: Tuple[int, int],
                 raw_dtype: Any = None) -> None:
        self.path = path
        self.raw_dtype = None if raw_dtype is None else np.dtype(raw_dtype)  # the stored dtype, when known unread
        self.full = None  # uint16 data: its full scale 2**k - 1 for the whole slide (_uint16_full), else None
        self.index = index
        self.shape = (int(shape_hw[0]), int(shape_hw[1]), 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self.chunks = (int(chunks[0]), int(chunks[1]), 3)
        self._read = read

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        ys, xs, cs = key[:3]
        if not (isinstance(ys, slice) and isinstance(xs, slice)) or (ys.step or 1) != 1 or (xs.step or 1) != 1:
            return self[:, :, :][key]  # fancy indexing: rare (small levels); read all, then index
        y0, y1, _ = ys.indices(self.shape[0])
        x0, x1, _ = xs.indices(self.shape[1])
        y1, x1 = max(y0, y1), max(x0, x1)
        if y1 == y0 or x1 == x0:
            return np.zeros((y1 - y0, x1 - x0, 3), np.uint8)[:, :, cs]
        return _to_rgb(self.read_raw(y0, x0, y1, x1), self.path, self.full)[:, :, cs]

    def read_raw(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """The stored values of a region, unconverted; damaged data is a :class:`SlideError` naming the region."""
        try:
            return np.asarray(self._read(y0, x0, y1, x1))
        except SlideError:
            raise
        except Exception as exc:  # codecs, zarr and tifffile raise many types for damaged data
            raise SlideError(f"{self.path}: cannot read level {self.index} region y {y0}:{y1}, x {x0}:{x1} "
                             f"(corrupt or truncated?): {_one_line(exc)}") from exc


def _to_rgb(raw: np.ndarray, path: Path, full: Optional[int] = None) -> np.ndarray:
    """A region (h, w), (h, w, 1 | 3 | 4) in any integer or float dtype -> RGB uint8 (h, w, 3).

    RGBA: fully transparent pixels (OpenSlide's outside-the-scan areas) become white glass, other
    pixels keep their RGB. uint16 is scaled by ``full``, the slide's full scale (:func:`_uint16_full`, the rule of
    :func:`src_model.io.to_rgb_uint8`), when given; other integer types wider than 8 bits by their maximum value.
    """
    arr = np.asarray(raw)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.dtype == np.uint16 and full:
        alpha = arr[:, :, 3] if arr.shape[2] == 4 else None
        colour = np.minimum(arr[:, :, :3] if alpha is not None else arr, full)  # above the sampled scale: full
        arr = _scale_uint16(colour, full)
        if alpha is not None:  # transparency is decided on the stored alpha (0 = outside the scan)
            arr = np.concatenate([arr, np.where(alpha == 0, 0, 255).astype(np.uint8)[:, :, None]], axis=2)
    elif arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.integer):
            arr = (arr.astype(np.float64) * (255.0 / np.iinfo(arr.dtype).max)).round().astype(np.uint8)
        elif arr.dtype == np.bool_:
            arr = arr.astype(np.uint8) * 255
        else:
            arr = (np.clip(arr.astype(np.float64), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    c = arr.shape[2]
    if c == 1:
        return np.repeat(arr, 3, axis=2)
    if c == 3:
        return np.ascontiguousarray(arr)
    if c == 4:
        rgb = np.array(arr[:, :, :3])
        rgb[arr[:, :, 3] == 0] = 255
        return rgb
    raise SlideError(f"{path}: {c} samples per pixel; expected 1 (grey), 3 (RGB) or 4 (RGBA)")


# --------------------------------------------------------------------------- the slide

@dataclass
class Slide:
    """An open slide. Use :func:`open_slide`; close it (or use ``with``) to release the file.

    Attributes:
        path: the file or directory.
        format: ``"ome-zarr"``, ``"tiff"`` or ``"openslide"``.
        levels: one lazy array per level, full resolution first: dask arrays (H_k, W_k, 3) uint8.
        downsamples: level-0 pixels per level-k pixel (1.0 first), the mean over y and x.
        mpp: micrometres per level-0 pixel (x), or None when the file does not say.
    """

    path: Path
    format: str
    levels: List[Any]
    downsamples: List[float]
    mpp: Optional[float] = None
    _raw: List[_Level] = field(default_factory=list, repr=False)
    _close: Optional[Callable[[], None]] = field(default=None, repr=False)

    @property
    def shape(self) -> Tuple[int, int, int]:
        """(H, W, 3) of level 0."""
        return tuple(self.levels[0].shape)

    def read_region(self, level: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """RGB uint8 (y1 - y0, x1 - x0, 3) of ``level``, rows ``y0:y1``, columns ``x0:x1``.

        The box must lie inside the level (ValueError otherwise); damaged data raises
        :class:`SlideError`.
        """
        if not 0 <= level < len(self._raw):
            raise ValueError(f"{self.path}: level {level} out of range 0..{len(self._raw) - 1}")
        h, w = self._raw[level].shape[:2]
        if not (0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w):
            raise ValueError(f"{self.path}: region y {y0}:{y1}, x {x0}:{x1} is outside level {level} ({h} x {w})")
        return self._raw[level][y0:y1, x0:x1]

    def close(self) -> None:
        """Release the file handles (the lazy arrays cannot be read afterwards)."""
        if self._close is not None:
            self._close()
            self._close = None

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _make_slide(path: Path, fmt: str, raw: Sequence[_Level], mpp: Optional[float],
                close: Optional[Callable[[], None]], downsamples: Optional[Sequence[float]] = None) -> Slide:
    import dask.array as da

    if not raw:
        raise SlideError(f"{path}: no image levels found")
    h0, w0 = raw[0].shape[:2]
    if h0 < 1 or w0 < 1:
        raise SlideError(f"{path}: empty image (level 0 is {h0} x {w0})")
    if downsamples is None:
        downsamples = [0.5 * (h0 / lv.shape[0] + w0 / lv.shape[1]) for lv in raw]
    if any(lv.raw_dtype == np.uint16 for lv in raw):
        full = _uint16_full(path, raw)
        for lv in raw:
            lv.full = full
    token = hashlib.sha1(f"{path.resolve()}:{os.stat(path).st_mtime_ns}".encode()).hexdigest()[:16]
    arrays = [da.from_array(lv, chunks=lv.chunks, asarray=False, lock=False, fancy=False,
                            name=f"cdma-slide-{token}-{lv.index}") for lv in raw]
    return Slide(path=path, format=fmt, levels=arrays, downsamples=[float(d) for d in downsamples], mpp=mpp,
                 _raw=list(raw), _close=close)


_SAMPLE_STRIDE = 16  # a level too large to read whole is sampled every 16th row and column ...
_SAMPLE_CHUNKS = 16  # ... in at most 16 x 16 of its chunks, spread evenly over it
_SAMPLE_PIXELS = 4_000_000  # a level up to this size is read whole (by chunk rows)
_NOTED: set = set()  # (path, mtime) of the uint16 slides whose conversion was logged in this process


def _uint16_full(path: Path, raw: Sequence[_Level]) -> int:
    """The full scale (2**k - 1, :func:`src_model.io.uint16_bits`) of a uint16 slide, decided once for the slide from
    the largest colour value of its smallest level (the near-white background survives downsampling), read whole
    when it has at most 4 Mpx, else sampled every 16th row and column in at most 16 x 16 chunks spread over it. The
    same file gives the same scale in every process (Dask workers open the slide themselves)."""
    lv = min(raw, key=lambda r: r.shape[0] * r.shape[1])
    h, w = lv.shape[:2]
    ch, cw = max(1, lv.chunks[0]), max(1, lv.chunks[1])
    ny, nx = -(-h // ch), -(-w // cw)
    if h * w <= _SAMPLE_PIXELS:
        boxes = [(y0, 0, min(h, y0 + ch), w) for y0 in range(0, h, ch)]
        step = 1
    else:
        ys = sorted({int(v) for v in np.linspace(0, ny - 1, min(ny, _SAMPLE_CHUNKS))})
        xs = sorted({int(v) for v in np.linspace(0, nx - 1, min(nx, _SAMPLE_CHUNKS))})
        boxes = [(cy * ch, cx * cw, min(h, cy * ch + ch), min(w, cx * cw + cw)) for cy in ys for cx in xs]
        step = _SAMPLE_STRIDE
    peak = 0
    for y0, x0, y1, x1 in boxes:
        part = lv.read_raw(y0, x0, y1, x1)
        if part.dtype != np.uint16:
            return 65535
        peak = max(peak, uint16_colour_max(part[::step, ::step]))
    try:
        key = (str(path.resolve()), os.stat(path).st_mtime_ns)
    except OSError:
        key = (str(path), 0)
    if key not in _NOTED:
        _NOTED.add(key)
        logger.info("%s: %s", path, uint16_note(peak))
    return 2 ** uint16_bits(peak) - 1


def open_slide(path: PathLike) -> Slide:
    """Open a slide lazily (no pixels decoded); see the module docstring for the formats.

    Raises:
        SlideError: missing file, unsupported suffix, unreadable or truncated file, or an image
            that is not 2-D grey / RGB / RGBA; one line naming the file.
    """
    p = Path(path)
    if not p.exists():
        raise SlideError(f"{p}: no such file or directory")
    suffix = p.suffix.lower()
    if p.is_dir():
        return _open_ome_zarr(p)
    if suffix in ZARR_SUFFIXES:
        raise SlideError(f"{p}: an OME-Zarr slide must be a directory")
    if have_openslide() and suffix in OPENSLIDE_SUFFIXES and suffix not in TIFF_SUFFIXES:
        return _open_openslide(p)
    if suffix in TIFF_SUFFIXES + _TIFF_BASED:
        return _open_tiff(p)
    hint = "" if have_openslide() or suffix not in OPENSLIDE_SUFFIXES else \
        " (install openslide-python and openslide-bin to read it)"
    raise SlideError(f"{p}: unsupported slide type {suffix or '(no suffix)'!r}{hint}; "
                     f"supported: OME-Zarr directories, {', '.join(SLIDE_SUFFIXES)}")


# --------------------------------------------------------------------------- OME-Zarr

def _open_ome_zarr(p: Path) -> Slide:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    try:
        location = parse_url(str(p), mode="r")
        nodes = list(Reader(location)()) if location is not None else []
    except Exception as exc:  # bad JSON, unknown versions, missing arrays
        raise SlideError(f"{p}: cannot read OME-Zarr metadata (corrupt?): {_one_line(exc)}") from exc
    image = next((n for n in nodes if any(isinstance(s, Multiscales) for s in n.specs)), None)
    if image is None:
        raise SlideError(f"{p}: not an OME-Zarr image (no multiscales metadata found)")
    axes = [a["name"] if isinstance(a, dict) else a for a in image.metadata.get("axes", [])]
    data = image.data
    if not axes:  # NGFF 0.1/0.2: always t, c, z, y, x
        axes = ["t", "c", "z", "y", "x"][-data[0].ndim:]
    if "y" not in axes or "x" not in axes or len(axes) != data[0].ndim:
        raise SlideError(f"{p}: OME-Zarr axes {axes} do not include y and x")
    raw = []
    for k, arr in enumerate(data):
        index = tuple(slice(None) if a in ("y", "x", "c") else 0 for a in axes)
        kept = [a for a in axes if a in ("y", "x", "c")]
        order = [kept.index(a) for a in ("y", "x", "c") if a in kept]
        raw.append(_zarr_level(p, k, arr, index, order))
    scales = [next((t.get("scale") for t in (ts or []) if t.get("type") == "scale"), None)
              for ts in image.metadata.get("coordinateTransformations") or [None] * len(raw)]
    downsamples = None
    if all(scales) and len(scales) == len(raw):  # the metadata's scales, relative to level 0
        ix, iy = axes.index("x"), axes.index("y")
        downsamples = [0.5 * (s[ix] / scales[0][ix] + s[iy] / scales[0][iy]) for s in scales]
    units = {a.get("name"): a.get("unit") for a in image.metadata.get("axes", []) if isinstance(a, dict)}
    mpp = float(scales[0][axes.index("x")]) if scales and scales[0] and units.get("x") == "micrometer" else None
    return _make_slide(p, "ome-zarr", raw, mpp, None, downsamples=downsamples)


def _zarr_level(p: Path, k: int, arr, index: tuple, order: List[int]) -> _Level:
    """A :class:`_Level` over a dask array from ome-zarr (computed region by region)."""
    sub = arr[index]
    if sub.ndim == 3:
        sub = sub.transpose(order)
    elif sub.ndim != 2:
        raise SlideError(f"{p}: level {k} has shape {arr.shape}; expected a 2-D grey or colour image")
    chunks = (sub.chunks[0][0], sub.chunks[1][0])

    def read(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        return np.asarray(sub[y0:y1, x0:x1].compute(scheduler="synchronous"))

    return _Level(p, k, sub.shape[:2], read, chunks, raw_dtype=sub.dtype)


# --------------------------------------------------------------------------- TIFF

def _tiff_mpp(tif, page) -> Optional[float]:
    """Micrometres per pixel from an Aperio description (``MPP = 0.25``) or the resolution tags."""
    match = re.search(r"MPP\s*=\s*([0-9.]+)", page.description or "")
    if match:
        return float(match.group(1))
    try:
        unit = int(page.tags["ResolutionUnit"].value)
        num, den = page.tags["XResolution"].value
    except (KeyError, TypeError, ValueError):
        return None
    per_um = {2: 25400.0, 3: 10000.0}.get(unit)  # inch, centimetre
    if not per_um or not num or not den:
        return None
    return per_um / (num / den)


def _check_tiff_data(p: Path, series, size: int) -> None:
    """Refuse a TIFF whose tile or strip data of any level ends past the end of the file, or holds less than its
    header's image size needs, before any store is made for it (the check :func:`src_model.io.read_image` makes
    too: :func:`src_model.io.tiff_page_problem`)."""
    for k, level in enumerate(series.levels):
        for page in level.pages:
            if page is None:
                raise SlideError(f"{p}: level {k} has an unreadable page (corrupt?)")
            problem = tiff_page_problem(page, size)
            if problem:
                raise SlideError(f"{p}: truncated: level {k} {problem}")


def _open_tiff(p: Path) -> Slide:
    import tifffile
    import zarr

    try:
        tif = tifffile.TiffFile(p)
    except Exception as exc:  # tifffile raises many types for damaged files
        raise SlideError(f"{p}: cannot read TIFF header (corrupt or truncated?): {_one_line(exc)}") from exc
    try:
        if not tif.series:
            raise SlideError(f"{p}: TIFF file holds no image")
        series = tif.series[0]
        _check_tiff_data(p, series, os.path.getsize(p))
        axes = series.axes
        if axes not in ("YX", "YXS", "SYX", "CYX") or (axes[0] in "SC" and series.shape[0] not in (1, 3, 4)):
            raise SlideError(f"{p}: TIFF image axes {axes} (shape {tuple(series.shape)}); expected a 2-D grey or "
                             f"colour image (YX, YXS)")
        store = series.aszarr()
        node = zarr.open(store, mode="r")
        arrays = [node] if isinstance(node, zarr.Array) else [node[str(k)] for k in range(len(series.levels))]
        raw = []
        for k, arr in enumerate(arrays):
            raw.append(_tiff_level(p, k, arr, planar=axes in ("SYX", "CYX")))
        mpp = _tiff_mpp(tif, series.pages[0])
    except SlideError:
        tif.close()
        raise
    except Exception as exc:
        tif.close()
        raise SlideError(f"{p}: cannot read TIFF structure (corrupt or truncated?): {_one_line(exc)}") from exc

    def close() -> None:
        store.close()
        tif.close()

    return _make_slide(p, "tiff", raw, mpp, close)


def _tiff_level(p: Path, k: int, arr, planar: bool) -> _Level:
    hw = arr.shape[1:3] if planar else arr.shape[:2]
    chunks = arr.chunks[1:3] if planar else arr.chunks[:2]

    def read(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        if planar:
            return np.moveaxis(arr[:, y0:y1, x0:x1], 0, 2)
        return arr[y0:y1, x0:x1]

    return _Level(p, k, hw, read, chunks, raw_dtype=arr.dtype)


# --------------------------------------------------------------------------- OpenSlide

def _open_openslide(p: Path) -> Slide:
    import openslide

    try:
        osr = openslide.OpenSlide(str(p))
    except Exception as exc:  # OpenSlideUnsupportedFormatError, OpenSlideError
        raise SlideError(f"{p}: OpenSlide cannot open it (corrupt, truncated or unsupported?): "
                         f"{_one_line(exc)}") from exc
    raw = []
    for k, (w, h) in enumerate(osr.level_dimensions):
        raw.append(_openslide_level(p, osr, k, (h, w), float(osr.level_downsamples[k])))
    mpp = osr.properties.get(openslide.PROPERTY_NAME_MPP_X)
    return _make_slide(p, "openslide", raw, float(mpp) if mpp else None, osr.close,
                       downsamples=list(osr.level_downsamples))


def _openslide_level(p: Path, osr, k: int, hw: Tuple[int, int], downsample: float) -> _Level:
    def read(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        region = osr.read_region((int(round(x0 * downsample)), int(round(y0 * downsample))), k, (x1 - x0, y1 - y0))
        return np.asarray(region)  # RGBA, alpha 0 outside the scanned area

    return _Level(p, k, hw, read, (READ_CHUNK, READ_CHUNK))


def _has_multiscales(p: Path) -> bool:
    """Whether a directory's zarr group attributes hold NGFF multiscales (v3 ``zarr.json`` under
    ``ome``, or v2 ``.zattrs``)."""
    import json

    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        try:
            meta = json.loads((p / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        attrs = meta.get(key, {}) if key else meta
        attrs = attrs.get("ome", attrs) if isinstance(attrs, dict) else {}
        if isinstance(attrs, dict) and "multiscales" in attrs:
            return True
    return False


def is_pyramid(path: PathLike) -> bool:
    """Whether ``path`` looks like a multiscale slide: an OME-Zarr directory, a TIFF whose first
    series has reduced-resolution levels, or a vendor file (OpenSlide). Reads headers only; never
    raises (False for unreadable files)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if p.is_dir():
        return _has_multiscales(p)
    if suffix in TIFF_SUFFIXES + _TIFF_BASED:
        import tifffile

        try:
            with tifffile.TiffFile(p) as tif:
                return bool(tif.series) and len(tif.series[0].levels) > 1
        except Exception:  # not a TIFF we can read: leave it to other readers
            return False
    return have_openslide() and suffix in OPENSLIDE_SUFFIXES


__all__ = ["have_openslide", "SLIDE_SUFFIXES", "Slide", "SlideError", "is_pyramid", "open_slide"]
