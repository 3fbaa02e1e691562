"""Accepted regions of whole slides in the project store.

A slide region is an image region whose image is one level of the slide, the level the model
predicted (level 0, full resolution, unless chosen otherwise): its box is in that level's pixels
(level-0 pixels for level 0) and its provenance is the slide's path, marked ``source_kind = "slide"``
(with the image record it adds; :meth:`ProjectStore.slide_images`), so it carries the same versions, held-out
share and checksums as a region of an ordinary image, and retraining reads it the same way
(:meth:`ProjectStore.load_region`: the crop and its corrected mask). The store keeps the crop and,
for a slide larger than :data:`~napari_cdma.project.store.MAX_FULL_IMAGE_PIXELS`, the tissue around it
as unlabelled data instead of the whole slide.

The identity of a slide level in the store (:func:`slide_hash`) is the store's own image hash when the
level is small enough to be kept whole (the same tissue opened as an image or as a slide is one
image); for a larger level it is a hash of the level number, the level shapes and the pixels of the
slide's smallest level, which reads a few megabytes instead of the whole slide.

Accepted windows in the slide's prediction store. An accepted window is written into the store's gland
labels and their pyramid (:func:`accept_slide_window`); what the store held there before is the
region version's ``predicted`` array in the project store (written atomically with the region and
checksummed, never overwritten: another acceptance of the box adds a version). The store lists the
windows written into it, in order, in its root attribute :data:`EDITS_KEY` (one entry per accepted
version: region id, version, box, project store). :func:`restore_withdrawn` undoes the windows of
withdrawn regions, as if they had never been accepted: every pixel of a withdrawn window goes back to
the correction of the live window accepted last over it, if any (a later or earlier correction that
overlaps it stays, as the pathologist left it), or else to what the store held before the first
window over it was accepted (the model's prediction). Windows of another project store are not undone
by this one.

Qt-free; imports neither napari nor torch.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .store import MAX_FULL_IMAGE_PIXELS, SLIDE_SOURCE, ProjectStore, RegionRecord, hash_image

#: Rows read at a time when hashing the smallest level of a large slide.
_ROWS = 1024
#: Root attribute of a slide's prediction store listing the accepted windows written into its labels.
EDITS_KEY = "cdma_edits"

Box = Tuple[int, int, int, int]


class WindowChanged(ValueError):
    """The store's labels under an edit window changed since the window was opened."""


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
                               image_hash=digest or slide_hash(slide, level), source_kind=SLIDE_SOURCE)


def slide_regions(store: ProjectStore, digest: str) -> List[RegionRecord]:
    """The live regions of the slide level whose :func:`slide_hash` is ``digest``, in order of acceptance."""
    return [r for r in store.regions() if r.image_hash == digest]


# --------------------------------------------------------------------------- the slide's prediction store

def write_labels(store: Any, box: Box, labels: np.ndarray) -> List[Tuple[int, int]]:
    """Write labels (store pixels, 0 = background, > 0 = gland) into a prediction store's gland labels
    and their pyramid, chunk by chunk (:meth:`~src_model.slide_store.SlideStore.write_glands`); chunks
    whose labels do not change are not written. Every chunk under ``box`` must be predicted.

    Returns:
        The chunks written.
    """
    y0, x0, y1, x1 = box
    if labels.shape != (y1 - y0, x1 - x0):
        raise ValueError(f"window labels are {labels.shape}, the box is {(y1 - y0, x1 - x0)}")
    done = store.done()
    todo = [k for k in store.chunks_in(*box) if not done[k]]
    if todo:
        raise ValueError(f"{len(todo)} chunk(s) under the window are not predicted; predict them first")
    written = []
    for cy, cx in store.chunks_in(*box):
        cy0, cx0, cy1, cx1 = store.chunk_box(cy, cx)
        current = np.array(store.read_glands(cy0, cx0, cy1, cx1))
        iy0, ix0, iy1, ix1 = max(y0, cy0), max(x0, cx0), min(y1, cy1), min(x1, cx1)
        part = labels[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] > 0
        if np.array_equal(current[iy0 - cy0:iy1 - cy0, ix0 - cx0:ix1 - cx0] > 0, part):
            continue
        current[iy0 - cy0:iy1 - cy0, ix0 - cx0:ix1 - cx0] = part
        store.write_glands(cy, cx, current)
        written.append((cy, cx))
    return written


def store_edits(store: Any) -> List[Dict[str, Any]]:
    """The accepted windows written into a prediction store, in order (see the module docstring)."""
    return [dict(e) for e in (store.root.attrs.get(EDITS_KEY) or [])]


def _set_edits(store: Any, edits: List[Dict[str, Any]]) -> None:
    store.root.attrs[EDITS_KEY] = edits  # zarr rewrites zarr.json atomically (temporary file, rename)


def _same_project(entry: Dict[str, Any], project: ProjectStore) -> bool:
    return Path(entry.get("project", "")).resolve() == Path(project.root).resolve()


def accept_slide_window(project: ProjectStore, slide: Any, store: Any, box: Sequence[int], corrected: Any, *,
                        expected: Optional[np.ndarray] = None, model_version: str, level: int = 0,
                        user: Optional[str] = None, digest: Optional[str] = None
                        ) -> Tuple[RegionRecord, List[Tuple[int, int]]]:
    """Accept an edited window of a slide: record it in the project store, then write it into the slide's
    prediction store (labels and pyramid), listed in the store's :data:`EDITS_KEY`.

    The region's ``predicted`` is what the store holds under the box now, so the project store keeps
    it (atomically, with the region) before the store is changed; withdrawing the region restores it
    (:func:`restore_withdrawn`).

    Args:
        store: the prediction store, opened for writing (``mode="r+"``).
        expected: the labels the edit window was opened with; if the store's labels under the box
            differ now, nothing is written (:class:`WindowChanged`).
        others: as :func:`accept_slide_region`.

    Returns:
        ``(record, chunks written)``.

    Raises:
        WindowChanged: the store's labels under the box changed since the window was opened.
        ValueError, StoreError: as :func:`accept_slide_region`; a failure writing the store puts the
        previous labels back (a new region is withdrawn) and is raised.
    """
    box = tuple(int(v) for v in box)
    y0, x0, y1, x1 = box
    corrected = (np.asarray(corrected) > 0).astype(np.uint8)
    before = (np.array(store.read_glands(y0, x0, y1, x1)) > 0).astype(np.uint8)
    if expected is not None and not np.array_equal(before, np.asarray(expected) > 0):
        raise WindowChanged("the slide's labels under this window changed since it was opened (a window accepted "
                            "or withdrawn over it); open the edit window again")
    done = store.done()
    if any(not done[k] for k in store.chunks_in(*box)):
        raise ValueError("chunk(s) under the window are not predicted; predict them first")
    record = accept_slide_region(project, slide, box, corrected, before, model_version=model_version, level=level,
                                 user=user, digest=digest)
    edits = store_edits(store)
    edits.append({"seq": 1 + max([int(e.get("seq", 0)) for e in edits] or [0]), "region_id": record.region_id,
                  "version": int(record.version), "bbox": list(box), "project": str(Path(project.root).resolve()),
                  "restored": False})
    _set_edits(store, edits)
    try:
        written = write_labels(store, box, corrected)
    except Exception:
        if record.version == 1:  # the region exists only for this write: withdrawn, the store restored
            project.withdraw(record.region_id)
            restore_withdrawn(project, store)
        else:
            write_labels(store, box, before)
        raise
    return record, written


def _window_labels(project: ProjectStore, mine: List[Dict[str, Any]], live: set, current: np.ndarray,
                   box: Box, cache: Dict[Tuple[str, int], Tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The labels of ``box`` as if only the live windows had been accepted (see the module docstring)."""
    y0, x0, y1, x1 = box
    out = current.copy()

    def pieces(order, which):
        for e in order:
            ey0, ex0, ey1, ex1 = (int(v) for v in e["bbox"])
            iy0, ix0, iy1, ix1 = max(y0, ey0), max(x0, ex0), min(y1, ey1), min(x1, ex1)
            if iy0 >= iy1 or ix0 >= ix1 or (which == 0 and e["region_id"] not in live):
                continue
            key = (e["region_id"], int(e["version"]))
            if key not in cache:
                _, corrected, predicted = project.load_region(*key)
                cache[key] = ((corrected > 0).astype(np.uint8), (predicted > 0).astype(np.uint8))
            out[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = cache[key][which][iy0 - ey0:iy1 - ey0, ix0 - ex0:ix1 - ex0]

    pieces(mine[::-1], 1)  # what the store held before the first window over each pixel
    pieces(mine, 0)        # then the live windows' corrections, the last accepted on top
    return out


def restore_withdrawn(project: ProjectStore, store: Any) -> List[Tuple[str, int]]:
    """Undo, in a prediction store's labels and pyramid, the accepted windows of this project whose
    regions were withdrawn since (see the module docstring); each is undone once.

    Args:
        project: the project store the windows were accepted into.
        store: the prediction store, opened for writing.

    Returns:
        ``[(region id, chunks rewritten)]`` of the windows undone now.

    Raises:
        StoreError: a region's arrays are missing or damaged (nothing of that window was undone).
    """
    edits = store_edits(store)
    mine = sorted((e for e in edits if _same_project(e, project)), key=lambda e: int(e.get("seq", 0)))
    live = {r.region_id for r in project.regions()}
    todo = sorted({e["region_id"] for e in mine if e["region_id"] not in live and not e.get("restored")})
    cache: Dict[Tuple[str, int], Tuple[np.ndarray, np.ndarray]] = {}
    undone = []
    for rid in todo:
        written: set = set()
        for box in sorted({tuple(int(v) for v in e["bbox"]) for e in mine if e["region_id"] == rid}):
            current = (np.array(store.read_glands(*box)) > 0).astype(np.uint8)
            written.update(write_labels(store, box, _window_labels(project, mine, live, current, box, cache)))
        edits = store_edits(store)
        for e in edits:
            if e["region_id"] == rid and _same_project(e, project):
                e["restored"] = True
        _set_edits(store, edits)
        undone.append((rid, len(written)))
    return undone


__all__ = ["EDITS_KEY", "WindowChanged", "accept_slide_region", "accept_slide_window", "restore_withdrawn",
           "slide_hash", "slide_regions", "store_edits", "write_labels"]
