"""Accepted regions of whole slides in the project store.

A slide region is an image region whose image is one level of the slide, the level the model
predicted (level 0, full resolution, unless chosen otherwise): its box is in that level's pixels
(level-0 pixels for level 0) and its provenance is the slide's path, so it carries the same versions, held-out
share and checksums as a region of an ordinary image, and retraining reads it the same way
(:meth:`ProjectStore.load_region`: the crop and its corrected mask). The store keeps the crop and,
for a slide larger than :data:`~napari_cdma.project.store.MAX_FULL_IMAGE_PIXELS`, the tissue around it
as unlabelled data instead of the whole slide.

The identity of a slide level in the store (:func:`slide_hash`) is the store's own image hash when the
level is small enough to be kept whole (the same tissue opened as an image or as a slide is one
image); for a larger level it is a hash of the level number, the level shapes and the pixels of the
slide's smallest level, which reads a few megabytes instead of the whole slide.

Qt-free; imports neither napari nor torch.
"""
from __future__ import annotations

import hashlib
from typing import Any, List, Optional, Sequence

import numpy as np

from .store import MAX_FULL_IMAGE_PIXELS, ProjectStore, RegionRecord, hash_image

#: Rows read at a time when hashing the smallest level of a large slide.
_ROWS = 1024


def slide_hash(slide: Any, level: int = 0) -> str:
    """The store's image hash of a slide level (64 hex digits); see the module docstring.

    Args:
        slide: a :class:`src_model.slide.Slide` (``levels``: lazy (H, W, 3) uint8 arrays, level 0 first).
        level: the level whose regions are stored.
    """
    image = slide.levels[level]
    h, w = int(image.shape[0]), int(image.shape[1])
    if h * w <= MAX_FULL_IMAGE_PIXELS:
        return hash_image(image)
    smallest = slide.levels[-1]
    digest = hashlib.sha256(f"napari-cdma slide|level {int(level)}|".encode())
    digest.update(repr([tuple(int(s) for s in lv.shape) for lv in slide.levels]).encode())
    for y in range(0, int(smallest.shape[0]), _ROWS):
        digest.update(np.ascontiguousarray(np.asarray(smallest[y:y + _ROWS]), dtype=np.uint8).tobytes())
    return digest.hexdigest()


def accept_slide_region(store: ProjectStore, slide: Any, box: Sequence[int], corrected: Any, predicted: Any, *,
                        model_version: str, level: int = 0, user: Optional[str] = None,
                        digest: Optional[str] = None) -> RegionRecord:
    """Store an accepted correction of a slide; the same box of the same slide again adds a version.

    Args:
        store: the project store.
        slide: the open slide.
        box: ``(y0, x0, y1, x1)`` in pixels of ``level`` (end exclusive).
        corrected: the corrected labels of the box, (y1 - y0, x1 - x0), 0 = background.
        predicted: the prediction that was corrected, same shape.
        model_version: the model version that made ``predicted``.
        level: the slide level the model predicted (0 = full resolution).
        user: who accepts it (default: the login name).
        digest: :func:`slide_hash` of ``slide`` and ``level`` if already known (skips computing it).

    Raises:
        ValueError: bad box, shapes or labels; StoreError: the store could not be written (nothing changed).
    """
    return store.accept_region(slide.levels[level], tuple(int(v) for v in box), corrected, predicted,
                               model_version=model_version, user=user, source_path=str(slide.path),
                               image_hash=digest or slide_hash(slide, level))


def slide_regions(store: ProjectStore, digest: str) -> List[RegionRecord]:
    """The live regions of the slide level whose :func:`slide_hash` is ``digest``, in order of acceptance."""
    return [r for r in store.regions() if r.image_hash == digest]


__all__ = ["accept_slide_region", "slide_hash", "slide_regions"]
