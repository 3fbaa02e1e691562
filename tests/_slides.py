"""Small whole-slide files built from the GlaS test images, for the slide, predict-slide and export tests.

Level k of every pyramid written here is ``level0[::2**k, ::2**k]``, so a reader's levels can be
checked pixel for pixel against the source.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def glas_mosaic(glas_dir: Path, height: int, width: int, glass: int = 0) -> np.ndarray:
    """RGB uint8 (height, width, 3) tiled from the GlaS test images (mirrored in turn, so that
    neighbouring tiles differ); the last ``glass`` columns are white glass."""
    from src_model.io import read_image

    images = [read_image(p) for p in sorted((glas_dir / "images").glob("*.png"))]
    out = np.full((height, width, 3), 255, np.uint8)  # where rows of unequal heights leave a gap: white glass
    y = i = 0
    while y < height:
        x, row_h = 0, 0
        while x < width:
            img = images[i % len(images)]
            img = img[:, ::-1] if (i // len(images)) % 2 else img
            h, w = min(img.shape[0], height - y), min(img.shape[1], width - x)
            out[y:y + h, x:x + w] = img[:h, :w]
            x, row_h, i = x + w, max(row_h, h), i + 1
        y += row_h
    if glass:
        out[:, width - glass:] = 245
    return out


def pyramid(image: np.ndarray, levels: int) -> list:
    return [np.ascontiguousarray(image[::2 ** k, ::2 ** k]) for k in range(levels)]


def write_pyramidal_tiff(path: Path, image: np.ndarray, levels: int = 3, tile: int = 128, subifds: bool = True,
                         mpp: float = 0.5) -> Path:
    """A tiled, zlib-compressed pyramidal TIFF (reduced levels as SubIFDs, or as pages for OpenSlide's
    generic-TIFF reader), with the pixel size in the resolution tags."""
    import tifffile

    res = (1e4 / mpp, 1e4 / mpp)
    with tifffile.TiffWriter(path) as tw:
        for k, level in enumerate(pyramid(image, levels)):
            extra = ({"subifds": levels - 1} if subifds else {}) if k == 0 else {"subfiletype": 1}
            tw.write(level, tile=(tile, tile), photometric="rgb", compression="zlib",
                     resolution=(res[0] / 2 ** k, res[1] / 2 ** k), resolutionunit="CENTIMETER", **extra)
    return path


def write_ome_zarr(path: Path, image: np.ndarray, levels: int = 3, chunk: int = 128, mpp: float = 0.5) -> Path:
    """An NGFF 0.5 image (axes c, y, x; micrometre scales) written with the ome-zarr library."""
    import zarr
    from ome_zarr.writer import write_multiscale

    root = zarr.open_group(str(path), mode="w")
    data = [np.moveaxis(level, 2, 0) for level in pyramid(image, levels)]
    transforms = [[{"type": "scale", "scale": [1.0, mpp * 2 ** k, mpp * 2 ** k]}] for k in range(levels)]
    write_multiscale(data, root, axes=[{"name": "c", "type": "channel"},
                                       {"name": "y", "type": "space", "unit": "micrometer"},
                                       {"name": "x", "type": "space", "unit": "micrometer"}],
                     coordinate_transformations=transforms, storage_options={"chunks": (3, chunk, chunk)})
    return path


def chunk_files(store: Path, arrays: Sequence[str] = ("labels/glands/0",)) -> dict:
    """{relative path: mtime_ns} of the chunk files of the given arrays of a zarr v3 store."""
    out = {}
    for name in arrays:
        for f in (store / name / "c").rglob("*"):
            if f.is_file():
                out[str(f.relative_to(store))] = f.stat().st_mtime_ns
    return out


def predicted_mosaic(glas_dir: Path, folder: Path, side: int = 768, chunk: int = 256) -> Path:
    """The bundled model's prediction (``predict_slide``) of a ``side`` x ``side`` GlaS mosaic written as
    ``folder/mosaic.tif`` (2 levels), in chunks of ``chunk`` px: the store ``folder/pred.zarr``."""
    from src_model.progress import drain
    from src_model.slide_predict import predict_slide

    slide = write_pyramidal_tiff(folder / "mosaic.tif", glas_mosaic(glas_dir, side, side), levels=2)
    drain(predict_slide(slide, folder / "pred.zarr", chunk=chunk))
    return folder / "pred.zarr"


def written_store(slide: Path, store_path: Path, image: np.ndarray, glands: np.ndarray, chunk: int):
    """A complete prediction store of ``slide`` whose every chunk is written from ``image`` / ``glands`` (not a
    model's output: fast) with the settings of the Whole slide panel's Predict view of the bundled model, so that
    Predict view takes it as it is; the uncertainty is a left-to-right ramp (10..120 of 255). Returns the store."""
    from src_model.checkpoint import bundled_model_path
    from src_model.slide_predict import DEFAULT_MIN_TISSUE, prepare_store, run_settings
    from src_model.tiling import DEFAULT_OVERLAP, DEFAULT_TILE

    settings = run_settings(bundled_model_path(), tile=DEFAULT_TILE, overlap=DEFAULT_OVERLAP, branch="mean",
                            min_tissue=DEFAULT_MIN_TISSUE, batch_size=8)
    store = prepare_store(slide, store_path, level=0, chunk=chunk, settings=settings)
    h, w = glands.shape
    unc = np.broadcast_to(np.linspace(10, 120, w).astype(np.uint8), (h, w))
    for cy, cx in store.all_chunks():
        y0, x0, y1, x1 = store.chunk_box(cy, cx)
        store.write_chunk(cy, cx, image[y0:y1, x0:x1], glands[y0:y1, x0:x1], np.ascontiguousarray(unc[y0:y1, x0:x1]),
                          1.0)
    return store
