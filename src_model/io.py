"""Reading images and masks into the arrays the engine uses, and the model's input normalisation.

Every image entering the engine is an RGB ``uint8`` array ``(H, W, 3)``; :func:`to_rgb_uint8`
states the conversion rule for everything else. The model sees ``image / 255`` as a float
tensor ``(B, 3, H, W)`` in [0, 1] (:func:`to_model_input`), in training and in inference alike.

Images larger than :data:`MAX_PIXELS` are refused here: they belong to the whole-slide path,
which reads them lazily tile by tile instead of holding them in memory. It is the one in-memory
pixel limit of the project (the plugin applies it to layers too).

Importing this module does not import torch (the plugin reads :data:`MAX_PIXELS` on napari's
GUI thread); :func:`to_model_input` imports it when called.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional, Tuple, Union

import numpy as np

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Largest in-memory image, in pixels (H * W); 400 Mpx is 1.2 GB as RGB uint8.
MAX_PIXELS = 400_000_000

PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
NPY_SUFFIXES = (".npy",)
IMAGE_SUFFIXES = PILLOW_SUFFIXES + TIFF_SUFFIXES + NPY_SUFFIXES
MASK_SUFFIXES = (".png", ".bmp") + TIFF_SUFFIXES + NPY_SUFFIXES


class ImageReadError(ValueError):
    """An image or mask cannot be read or converted; the message names the file and the problem."""


# --------------------------------------------------------------------------- conversion rules

def _describe(arr: np.ndarray) -> str:
    return f"shape {tuple(arr.shape)}, dtype {arr.dtype}"


def _check_size(h: int, w: int, source: str) -> None:
    if h * w > MAX_PIXELS:
        raise ImageReadError(
            f"{source}: image of {h} x {w} = {h * w / 1e6:.0f} megapixels is larger than the "
            f"in-memory limit of {MAX_PIXELS / 1e6:.0f} megapixels; use the whole-slide path (cdma predict-slide, "
            f"or the dock's Whole slide panel)")


def _to_hwc(arr: np.ndarray, source: str) -> np.ndarray:
    """Bring a 2-D or 3-D array to (H, W, C) with C in {1, 3, 4}."""
    if arr.ndim == 2:
        return arr[:, :, None]
    if arr.ndim == 3:
        if arr.shape[2] in (1, 3, 4):
            return arr
        # channel-first (C, H, W): a small first axis next to two image-sized axes
        if arr.shape[0] in (1, 3, 4) and arr.shape[1] > 4 and arr.shape[2] > 4:
            return np.moveaxis(arr, 0, 2)
    raise ImageReadError(
        f"{source}: cannot interpret {_describe(arr)} as an image; expected (H, W), (H, W, 1|3|4) "
        f"or channel-first (1|3|4, H, W)")


_CONVERT_ROWS = 512  # rows converted at a time (bounds the temporaries of large images)


def uint16_bits(max_value: int) -> int:
    """Effective bit depth of uint16 image data whose largest colour value is ``max_value``: the smallest ``k`` in
    8..16 with ``max_value <= 2**k - 1``. 10-, 12- and 14-bit cameras store their values in uint16 with the top bits
    zero; H&E brightfield has a near-white background, so an image's maximum is near its camera's full scale."""
    return max(8, min(16, int(max_value).bit_length()))


def uint16_colour_max(arr: np.ndarray) -> int:
    """Largest colour value of uint16 image data: an (H, W, 4) image's alpha channel is left out (it keeps the
    full 16-bit scale, 65535 opaque)."""
    arr = np.asarray(arr)
    colour = arr[..., :3] if arr.ndim == 3 and arr.shape[2] == 4 else arr
    return int(colour.max()) if colour.size else 0


def uint16_note(max_value: int) -> str:
    """How :func:`to_rgb_uint8` converts uint16 data of largest colour value ``max_value``, in one sentence:
    "Converted from 16-bit (/ 257).", "Converted from 12-bit in 16-bit storage (max 4080; x 255/4095)." or
    "8-bit values in 16-bit storage (max 250; used as they are)."."""
    k = uint16_bits(max_value)
    if k == 16:
        return "Converted from 16-bit (/ 257)."
    if k == 8:
        return f"8-bit values in 16-bit storage (max {int(max_value)}; used as they are)."
    return f"Converted from {k}-bit in 16-bit storage (max {int(max_value)}; \u00d7 255/{2 ** k - 1})."


def _scale_uint16(arr: np.ndarray, full: int) -> np.ndarray:
    """round(x * 255 / full) of uint16 data as uint8, in integers, by row bands (``full`` = 2**k - 1 is odd, so
    x * 255 / full never ends in exactly .5; for full = 65535 this is round(x / 257))."""
    out = np.empty(arr.shape, dtype=np.uint8)
    for r0 in range(0, arr.shape[0], _CONVERT_ROWS):
        band = arr[r0:r0 + _CONVERT_ROWS].astype(np.uint32)
        band *= 255
        band += full // 2
        band //= full
        out[r0:r0 + _CONVERT_ROWS] = band
    return out


def _to_uint8_values(arr: np.ndarray, source: str) -> np.ndarray:
    """Map the values of any supported dtype to uint8 (shape unchanged; ``arr`` is (H, W, C))."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:  # by the effective bit depth of the colour channels (uint16_bits)
        peak = uint16_colour_max(arr)
        full = 2 ** uint16_bits(peak) - 1
        logger.info("%s: %s", source, uint16_note(peak))  # the CLI's stderr line (cdma predict, train)
        if arr.ndim == 3 and arr.shape[2] == 4 and full != 65535:  # alpha keeps the 16-bit scale
            return np.concatenate([_scale_uint16(arr[..., :3], full), _scale_uint16(arr[..., 3:], 65535)], axis=2)
        return _scale_uint16(arr, full)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageReadError(f"{source}: float image contains NaN or infinity ({_describe(arr)})")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise ImageReadError(
                f"{source}: float image values must lie in [0, 1], found [{lo:.4g}, {hi:.4g}] "
                f"({_describe(arr)}); scale it to [0, 1] or convert it to uint8 first")
        return np.rint(arr.astype(np.float32) * 255.0).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise ImageReadError(
                f"{source}: integer image values must lie in 0..255 for dtype {arr.dtype} "
                f"(found {lo}..{hi}); only uint16 is rescaled")
        return arr.astype(np.uint8)
    raise ImageReadError(f"{source}: unsupported image dtype ({_describe(arr)})")


def to_rgb_uint8(array: np.ndarray, source: str = "array") -> np.ndarray:
    """Convert an image array to RGB uint8 (H, W, 3), the engine's one image format.

    The rule:

    * dtype: ``uint8`` passes through; ``uint16`` is scaled by ``255 / (2**k - 1)``, rounded, where ``k`` is its
      effective bit depth (:func:`uint16_bits`: the smallest k in 8..16 holding the largest colour value), so a
      true 16-bit image is divided by 257, a 12-bit camera's 0..4095 maps onto 0..255 and 8-bit values stored in
      uint16 are kept (an RGBA image's alpha keeps the 16-bit scale); floats must lie in [0, 1] and become
      ``round(x * 255)`` (values outside [0, 1], NaN or inf are an error, because their scale is
      unknown); other integer dtypes are accepted only when every value is in 0..255; ``bool`` is
      an error (a mask, not an image).
    * layout: (H, W, 3) passes through; (H, W) and (H, W, 1) grey images are replicated to three
      channels; (H, W, 4) RGBA is composited over white, ``rgb * a + 255 * (1 - a)`` with
      ``a = alpha / 255``, so transparent areas read as empty glass; channel-first (C, H, W) with
      C in {1, 3, 4} and both other axes larger than 4 is transposed first. Anything else (2 or
      more than 4 channels, 4-D stacks, empty images) is an error.

    Args:
        array: the image, any array-like.
        source: name used in error messages (a file path, a layer name).

    Returns:
        C-contiguous uint8 array (H, W, 3).

    Raises:
        ImageReadError: (a ``ValueError``) naming ``source``, the shape and the dtype.
    """
    arr = np.asarray(array)
    if arr.dtype == np.bool_:
        raise ImageReadError(f"{source}: boolean array is a mask, not an image ({_describe(arr)})")
    if arr.size == 0:
        raise ImageReadError(f"{source}: empty image ({_describe(arr)})")
    hwc = _to_hwc(arr, source)
    _check_size(hwc.shape[0], hwc.shape[1], source)
    img = _to_uint8_values(hwc, source)
    channels = img.shape[2]
    if channels == 1:
        img = np.repeat(img, 3, axis=2)
    elif channels == 4:
        rgb, alpha = img[..., :3], img[..., 3:]
        if (alpha < 255).any():
            a = alpha.astype(np.float32) / 255.0
            img = np.rint(rgb.astype(np.float32) * a + 255.0 * (1.0 - a)).astype(np.uint8)
        else:
            img = rgb
    return np.ascontiguousarray(img)


def to_model_input(images, device: Optional[Union[str, "torch.device"]] = None) -> "torch.Tensor":
    """The model's input normalisation: ``image / 255`` as float (B, 3, H, W) in [0, 1].

    The same scaling is used to train and to predict in this project, so a model trained here
    expects exactly this tensor.

    Args:
        images: RGB uint8 (H, W, 3), e.g. from :func:`read_image` or :func:`to_rgb_uint8`, or a
            batch of them (B, H, W, 3); a NumPy array or a uint8 torch tensor.
        device: where the result goes (the uint8 data is moved first, then converted there);
            None keeps it on the CPU.

    Returns:
        float32 tensor (1, 3, H, W) for one image, (B, 3, H, W) for a batch, with channels-last
        strides (a view of the (…, H, W, 3) data, as the fast model wants).
    """
    import torch

    if not isinstance(images, torch.Tensor):
        images = np.asarray(images)
    if images.dtype not in (np.uint8, torch.uint8) or images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise ValueError(f"expected RGB uint8 (H, W, 3) or (B, H, W, 3), got shape {tuple(images.shape)}, "
                         f"dtype {images.dtype}; use to_rgb_uint8 first")
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if device is not None:
        x = x.to(device)
    return x.permute(0, 3, 1, 2).float().div_(255.0)


# --------------------------------------------------------------------------- file readers

@contextlib.contextmanager
def _strict_pillow() -> Iterator[None]:
    """Pillow settings for one read: truncated files are errors; our own size limit replaces
    Pillow's decompression-bomb check (it is applied from the header, before decoding).

    Both are module globals of Pillow (another library may have relaxed them), so they are set
    for the duration of the read and restored afterwards.
    """
    from PIL import Image, ImageFile

    old_truncated, old_max = ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = old_truncated, old_max


def _check_path(path: PathLike, suffixes: Tuple[str, ...], what: str) -> Path:
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in suffixes:
        raise ImageReadError(f"{p}: unsupported {what} file type {suffix or '(no suffix)'!r}; "
                             f"supported: {', '.join(suffixes)}")
    if not p.exists():
        raise ImageReadError(f"{p}: file does not exist")
    if not p.is_file():
        raise ImageReadError(f"{p}: not a file")
    return p


def _read_pillow(p: Path, mask: bool) -> np.ndarray:
    from PIL import Image

    with _strict_pillow():
        try:
            with Image.open(p) as im:
                w, h = im.size
                _check_size(h, w, str(p))
                im.load()  # decode now, so truncated data raises here, not later
                mode = im.mode
                if mask:
                    if mode in ("1", "RGBA", "LA"):
                        im = im.convert("L" if mode != "RGBA" else "RGB")
                    return np.array(im)
                if mode == "P":
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                elif mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
                    im = im.convert("L" if mode == "1" else "RGB")
                elif mode in ("LA", "PA", "La", "RGBa"):
                    im = im.convert("RGBA")
                arr = np.array(im)
        except ImageReadError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageReadError(f"{p}: cannot decode {p.suffix} file (corrupt or truncated?): {exc}") from exc
    if arr.dtype == np.int32 and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        arr = arr.astype(np.uint16)  # Pillow reads 16-bit grey as mode "I" (int32)
    return arr


def _tiff_hw(shape: Tuple[int, ...]) -> Tuple[int, int]:
    """Height and width of a TIFF image of ``shape`` ((H, W), (H, W, S) or planar (S, H, W))."""
    hw = shape[:2] if len(shape) == 2 or shape[-1] in (1, 3, 4) else shape[-2:]
    return int(hw[0]), int(hw[1])


def _tiff_choice(tif, p: Path, page: Optional[int], series: Optional[int]):
    """The one image of a TIFF file to read: a series, or one page of it (anything with ``shape``
    and ``asarray()``).

    A file with several series, or a series of several pages (a stack, a time series, planes of
    a grey image), is refused unless ``series`` / ``page`` picks one: reading the first silently,
    or several grey pages as the channels of one colour image, gives wrong results.
    """
    n = len(tif.series)
    if n == 0:
        raise ImageReadError(f"{p}: TIFF file holds no image")
    if series is None and n > 1:
        shapes = ", ".join(str(tuple(s.shape)) for s in tif.series[:6])
        raise ImageReadError(f"{p}: TIFF file holds {n} image series (shapes {shapes}); choose one with "
                             f"--series N (0..{n - 1})")
    k = 0 if series is None else series
    if not 0 <= k < n:
        raise ImageReadError(f"{p}: --series {k} is out of range; the TIFF file holds {n} series (0..{n - 1})")
    chosen = tif.series[k]
    pages = chosen.pages
    label = f"series {k}" if n > 1 else "TIFF file"
    if len(pages) > 1:
        if page is None:
            raise ImageReadError(f"{p}: {label} holds {len(pages)} pages (shape {tuple(chosen.shape)}, axes "
                                 f"{chosen.axes}); choose one with --page N (0..{len(pages) - 1})")
        if not 0 <= page < len(pages):
            raise ImageReadError(f"{p}: --page {page} is out of range; the {label} holds {len(pages)} pages "
                                 f"(0..{len(pages) - 1})")
        chosen = pages[page]
        if chosen is None:
            raise ImageReadError(f"{p}: page {page} of the {label} cannot be read")
    elif page not in (None, 0):
        raise ImageReadError(f"{p}: --page {page} is out of range; the {label} holds 1 page (0)")
    return chosen


def tiff_page_problem(page, size: int) -> Optional[str]:
    """What is missing from one TIFF page's image data, or None: its tile or strip data ends past the end of the
    file (of ``size`` bytes), or holds less than its header's image size needs (fewer strips or tiles than the size
    makes, fewer uncompressed bytes). The text follows a location, as in "<file>: truncated: level 0 <text>".

    tifffile finds such a header only when the missing part is read, and then logs it and reads zeros; both
    :func:`read_image` / :func:`image_header` and the whole-slide reader (:func:`src_model.slide.open_slide`) refuse
    the file by this check."""
    ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=False) if c]
    if ends and max(ends) > size:
        return f"image data ends at byte {max(ends)} but the file has {size} bytes"
    key = getattr(page, "keyframe", None) or page  # a TiffFrame's structure is its key page's; its data its own
    kind = "tile" if key.is_tiled else "strip"
    said = f"its header's {key.imagelength} x {key.imagewidth} size needs"
    need = int(np.prod(key.chunked))
    have = len(page.dataoffsets)  # a sparse file's empty tiles count: their byte count is 0
    if have < need:
        return f"holds {have} {kind}(s) of image data where {said} {need}"
    bits = int(key.bitspersample)
    if key.compression == 1 and bits % 8 == 0 and key.dtype is not None and key.dtype.itemsize * 8 == bits \
            and all(page.databytecounts):
        need = int(np.prod(key.shape)) * key.dtype.itemsize  # uncompressed: every byte is there
        have = int(sum(page.databytecounts))
        if have < need:
            return f"holds {have} bytes of uncompressed image data where {said} {need}"
    return None


def _check_tiff_pages(p: Path, chosen, page: Optional[int], series: Optional[int]) -> None:
    """Refuse the chosen TIFF image when a page of it lacks image data (:func:`tiff_page_problem`)."""
    where = "the TIFF file" if series is None else f"series {series}"
    if page is not None:
        where = f"page {page} of {where}"
    size = os.path.getsize(p)
    for one in getattr(chosen, "pages", None) or [chosen]:
        problem = None if one is None else tiff_page_problem(one, size)
        if problem:
            raise ImageReadError(f"{p}: truncated: {where} {problem}")


def _read_tiff(p: Path, page: Optional[int] = None, series: Optional[int] = None,
               header_only: bool = False):
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            chosen = _tiff_choice(tif, p, page, series)
            shape = tuple(int(d) for d in chosen.shape)
            if len(shape) >= 2:
                _check_size(*_tiff_hw(shape), str(p))
            _check_tiff_pages(p, chosen, page, series)
            if header_only:
                return shape, np.dtype(chosen.dtype)
            return chosen.asarray()
    except ImageReadError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise ImageReadError(f"{p}: cannot decode TIFF file (corrupt or truncated?): {exc}") from exc


def _read_npy(p: Path) -> np.ndarray:
    try:
        head = np.load(p, mmap_mode="r", allow_pickle=False)
        if head.ndim >= 2:
            _check_size(int(head.shape[0]), int(head.shape[1]), str(p))
        del head
        return np.load(p, allow_pickle=False)
    except ImageReadError:
        raise
    except Exception as exc:  # ValueError for object arrays / bad headers, EOFError, OSError
        raise ImageReadError(f"{p}: cannot load .npy file: {exc}") from exc


def _not_tiff_choice(p: Path, page: Optional[int], series: Optional[int]) -> None:
    for name, value in (("--page", page), ("--series", series)):
        if value not in (None, 0):
            raise ImageReadError(f"{p}: {name} {value} applies to TIFF files only; {p.suffix} files hold one image")


def _read_any(p: Path, mask: bool, page: Optional[int] = None, series: Optional[int] = None) -> np.ndarray:
    suffix = p.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return _read_tiff(p, page, series)
    _not_tiff_choice(p, page, series)
    if suffix in NPY_SUFFIXES:
        return _read_npy(p)
    return _read_pillow(p, mask)


def image_header(path: PathLike, page: Optional[int] = None, series: Optional[int] = None) -> Dict[str, Any]:
    """What :func:`read_image` would read, from the file's header only (no pixels decoded).

    Applies the same checks as :func:`read_image` that need no decoding (suffix, existence, pixel
    limit, the choice of TIFF series and page, an array shape that can be an image), so a batch of
    files can be checked before any of them is processed.

    Returns:
        ``{"height", "width", "shape" (as stored), "dtype" (as stored), "read_bytes"}``, where
        ``read_bytes`` estimates the memory that decoding and converting the file needs beyond the
        RGB uint8 result (0 for an RGB uint8 TIFF or ``.npy``).

    Raises:
        ImageReadError: naming the file.
    """
    p = _check_path(path, IMAGE_SUFFIXES, "image")
    suffix = p.suffix.lower()
    pillow_bytes = 0
    if suffix in TIFF_SUFFIXES:
        shape, dtype = _read_tiff(p, page, series, header_only=True)
    else:
        _not_tiff_choice(p, page, series)
        if suffix in NPY_SUFFIXES:
            try:
                head = np.load(p, mmap_mode="r", allow_pickle=False)
                shape, dtype = tuple(head.shape), head.dtype
                del head
            except Exception as exc:
                raise ImageReadError(f"{p}: cannot load .npy file: {exc}") from exc
        else:
            from PIL import Image

            with _strict_pillow():
                try:
                    with Image.open(p) as im:
                        w, h = im.size
                        bands = len(im.getbands())
                        dtype = np.dtype(np.int32 if im.mode.startswith("I") else
                                         np.float32 if im.mode == "F" else np.uint8)
                except (OSError, SyntaxError, ValueError) as exc:
                    raise ImageReadError(f"{p}: cannot decode {p.suffix} file (corrupt or truncated?): {exc}") from exc
            shape = (h, w) if bands == 1 else (h, w, bands)
            pillow_bytes = 4 * h * w  # Pillow's own buffer: at most 4 bytes a pixel for these modes
    dtype = np.dtype(dtype)  # the dtype rule of to_rgb_uint8, first: a mask or a complex array is not a grey image
    if dtype == np.bool_:
        raise ImageReadError(f"{p}: boolean array is a mask, not an image (shape {tuple(shape)}, dtype {dtype})")
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise ImageReadError(f"{p}: unsupported image dtype (shape {tuple(shape)}, dtype {dtype})")
    # the layout rule of _to_hwc, applied to a zero-strided stand-in of the shape (no pixels)
    hwc = _to_hwc(np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape, (0,) * len(shape)), str(p))
    if hwc.size == 0:
        raise ImageReadError(f"{p}: empty image (shape {tuple(shape)})")
    h, w = int(hwc.shape[0]), int(hwc.shape[1])
    _check_size(h, w, str(p))
    n = int(np.prod(shape))
    if np.dtype(dtype) == np.uint8 and hwc.shape[2] == 3 and len(shape) == 3 and shape[2] == 3:
        extra = 0  # read straight into the result
    else:  # the stored array, conversion temporaries, the result
        extra = n * np.dtype(dtype).itemsize + 4 * n + 3 * h * w
    return {"height": h, "width": w, "shape": tuple(int(d) for d in shape), "dtype": str(np.dtype(dtype)),
            "read_bytes": int(extra + pillow_bytes)}


def image_shape(path: PathLike, page: Optional[int] = None, series: Optional[int] = None) -> Tuple[int, int]:
    """Height and width of the image :func:`read_image` would return, from the header only
    (:func:`image_header`)."""
    head = image_header(path, page, series)
    return head["height"], head["width"]


def read_image(path: PathLike, page: Optional[int] = None, series: Optional[int] = None) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3).

    PNG, JPEG and BMP are decoded by Pillow, TIFF by tifffile, ``.npy`` by
    ``np.load(allow_pickle=False)``; the result goes through :func:`to_rgb_uint8`.

    A TIFF file must hold one image: a file of several series, or a series of several pages, is
    refused unless ``series`` / ``page`` (0-based) picks one.

    Args:
        path: the file.
        page: the page of a multi-page TIFF series to read.
        series: the series of a multi-series TIFF file to read.

    Returns:
        uint8 array (H, W, 3).

    Raises:
        ImageReadError: unsupported suffix, missing file, corrupt or truncated data, an array
            that is not an image, a TIFF holding several images and none chosen, or more than
            :data:`MAX_PIXELS` pixels; the message names the file.
    """
    p = _check_path(path, IMAGE_SUFFIXES, "image")
    arr = _read_any(p, mask=False, page=page, series=series)
    img = to_rgb_uint8(arr, source=str(p))
    logger.debug("read image %s: %s -> %s", p, _describe(arr), img.shape)
    return img


def read_mask(path: PathLike) -> np.ndarray:
    """Read a label mask as an integer array (H, W), values as stored (instance or class ids).

    GlaS masks are mode "L" PNGs: 0 background, 1..N gland instances. Palette PNGs give their
    palette indices; an RGB mask is accepted only when its three channels are equal.

    Args:
        path: PNG, BMP, TIFF or ``.npy`` file.

    Returns:
        integer array (H, W) (uint8, uint16 or int32/int64 as stored; bool becomes uint8).

    Raises:
        ImageReadError: naming the file, for unreadable files or non-integer / non-2-D data.
    """
    p = _check_path(path, MASK_SUFFIXES, "mask")
    arr = np.asarray(_read_any(p, mask=True))
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        chans = arr[..., :3] if arr.shape[2] >= 3 else arr
        if not (chans == chans[..., :1]).all():
            raise ImageReadError(f"{p}: colour mask with differing channels ({_describe(arr)}); "
                                 f"expected a single-channel label image")
        arr = chans[..., 0]
    if arr.ndim != 2 or arr.size == 0:
        raise ImageReadError(f"{p}: a mask must be a non-empty 2-D label image, got {_describe(arr)}")
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or (arr != np.round(arr)).any() or arr.min() < 0:
            raise ImageReadError(f"{p}: mask values must be non-negative integers ({_describe(arr)})")
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ImageReadError(f"{p}: unsupported mask dtype ({_describe(arr)})")
    return np.ascontiguousarray(arr)


__all__ = ["ImageReadError", "MAX_PIXELS", "IMAGE_SUFFIXES", "MASK_SUFFIXES", "read_image", "read_mask",
           "image_header", "image_shape",
           "to_rgb_uint8", "to_model_input", "uint16_bits", "uint16_colour_max", "uint16_note"]
