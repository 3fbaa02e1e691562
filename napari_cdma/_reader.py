"""napari reader contribution: drag and drop a whole slide to open it as a multiscale image layer.

Claims OME-Zarr image directories, TIFF files whose first series is a pyramid (reduced-resolution
levels) and the vendor formats OpenSlide reads (.svs, .ndpi, .mrxs, ...; when openslide-python is
installed).

Any other ``.tif`` / ``.tiff`` file is read too (:func:`read_plain_tiff`), since napari's "Choose
reader" dialog may offer this plugin first for it: a plain single-level TIFF opens as the layer
napari's own reader gives (the first series' pixels as one NumPy image, named by the file's stem,
RGB when its samples are RGB(A)), so the dock's Predict offers it; a file that is not a readable
TIFF (another file renamed, a truncated one) raises one line naming it ("fake.tif is not a TIFF
image (...): nothing opened"), which napari shows, in place of its bare "refused the file".
Other files (PNG, ...) are left to napari's reader (the reader function is None for them).

Layers: the slide as an RGB multiscale image (the lazy levels of :func:`src_model.slide.open_slide`;
pixels are read only where napari draws). A ``cdma predict-slide`` store
(:mod:`src_model.slide_store`) also gives its gland labels (multiscale labels) and uncertainty
(multiscale image), scaled to the slide's level-0 pixels so they lie on the slide when both are open.
The uncertainty is drawn as the dock draws an image's: visible, the same fading colormap and opacity,
over its own range over tissue (robust percentiles read from a coarse pyramid level of the store,
:func:`napari_cdma._slide_view.store_display_range`, kept in the layer's metadata ``cdma_display_range``
for the Whole slide panel's legend). Layer metadata ``cdma_slide`` holds the path (and ``cdma_store``
for a store).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

LayerData = Tuple[Any, Dict[str, Any], str]


def get_reader(path: Union[str, List[str]]) -> Optional[Callable[[Any], List[LayerData]]]:
    """The reader for ``path`` when it is a slide this plugin opens, else None."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    from src_model.slide import TIFF_SUFFIXES, is_pyramid

    if is_pyramid(path):
        return read_slide
    p = Path(path)
    return read_plain_tiff if p.suffix.lower() in TIFF_SUFFIXES and p.is_file() else None


def read_plain_tiff(path: Union[str, List[str]]) -> List[LayerData]:
    """The image of a single-level TIFF as napari's own reader gives it, or a ValueError naming the file."""
    import tifffile

    from src_model.io import tiff_page_problem

    p = Path(path[0] if isinstance(path, (list, tuple)) else path)
    problem, opened = None, False
    try:
        with tifffile.TiffFile(p) as tif:
            opened = True
            series = tif.series[0] if tif.series else None
            if series is not None:
                size = p.stat().st_size
                problem = next(filter(None, (tiff_page_problem(pg, size) for pg in series.pages if pg)), None)
            if series is not None and problem is None:
                data, axes = series.asarray(), series.axes
    except MemoryError:
        raise  # too large to read whole: not a damaged file
    except Exception as exc:  # tifffile raises many types for files that are not TIFF or are damaged
        reason = " ".join(str(exc).split()) or type(exc).__name__
        what = "a readable TIFF image" if opened else "a TIFF image"
        raise ValueError(f"{p.name} is not {what} ({reason}): nothing opened") from exc
    if series is None or problem:
        why = f"truncated: {problem}" if problem else "it holds no image"
        raise ValueError(f"{p.name} is not a readable TIFF image ({why}): nothing opened")
    name = os.path.splitext(p.name)[0]  # as napari names a layer it reads
    rgb = axes.endswith("S") and data.shape[-1] in (3, 4)  # a stack of RGB pages too, as napari guesses it
    return [(data, {"name": name, "rgb": rgb}, "image")]


def _is_store(path: Path) -> bool:
    from src_model.slide_store import StoreError, open_store

    try:
        open_store(path)
    except StoreError:
        return False
    return True


def read_slide(path: Union[str, List[str]]) -> List[LayerData]:
    """Layer data of a slide (and, for a prediction store, its glands and uncertainty)."""
    from src_model.slide import open_slide

    p = Path(path[0] if isinstance(path, (list, tuple)) else path)
    slide = open_slide(p)  # kept open: the lazy levels read from it while the layer lives
    name = p.name.split(".")[0] or p.name
    meta = {"cdma_slide": str(p), "downsamples": slide.downsamples, "mpp": slide.mpp}
    scale = (1.0, 1.0)
    layers: List[LayerData] = []
    if p.is_dir() and _is_store(p):
        layers, scale = _store_layers(p, name)
        meta["cdma_store"] = str(p)
    image = (slide.levels, {"name": name, "multiscale": True, "rgb": True, "contrast_limits": [0, 255],
                            "scale": scale, "metadata": meta}, "image")
    return [image] + layers


def _store_layers(p: Path, name: str) -> Tuple[List[LayerData], Tuple[float, float]]:
    import dask.array as da

    from src_model.slide_store import open_store

    from ._slide_view import RANGE_KEY, store_display_range, uncertainty_style

    store = open_store(p)
    ds = store.info.downsample
    meta = {"cdma_store": str(p), "cdma_slide": store.info.slide}
    glands = [da.from_zarr(a) for a in store.glands]
    unc = [da.from_zarr(a) for a in store.uncertainty]
    rng = store_display_range(store)  # None before any chunk is predicted: the whole uint8 range then
    unc_meta = dict(meta, **({RANGE_KEY: rng} if rng is not None else {}))
    return [
        (unc, {"contrast_limits": [0.0, 255.0], **uncertainty_style(rng), "name": f"{name} uncertainty",
               "multiscale": True, "scale": (ds, ds), "metadata": unc_meta}, "image"),
        (glands, {"name": f"{name} glands", "multiscale": True, "scale": (ds, ds), "opacity": 0.5,
                  "metadata": meta}, "labels"),
    ], (ds, ds)


__all__ = ["get_reader", "read_plain_tiff", "read_slide"]
