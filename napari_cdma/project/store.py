"""The project store: accepted corrections and model versions, on disk, with provenance.

Layout of a store directory (a zarr v3 hierarchy plus a JSON index)::

    store/
      zarr.json                  root group; attributes: format, format_version, holdout_fraction
      index.json                 the metadata index (regions, versions, models, current model)
      regions/<rid>/v0001/       one group per accepted version: arrays crop, corrected, predicted
      images/<key>               source images kept as unlabelled tissue for retraining
      models/v0001.pt            model checkpoints (models/v0001.json: their record, for repair)
      predictions/<hash>_p0001/  the latest prediction of each image: arrays labels, uncertainty
                                 (and edited: the prediction layer with edits not accepted, when kept;
                                 disagreement: the branches' disagreement, float16, when the dock has it)
      .staging/                  temporary names; renamed into place when complete
      intent.json                only while a write is in progress (see below)
      quarantine/                data that recovery could neither finish nor adopt, kept for a human

``index.json`` is the source of truth for metadata: it is small, and written to a temporary file,
fsynced and renamed over the old one, so a crash or a full disk leaves the previous index whole.

Crash safety (a kill -9 or power loss at any instant): every write stages its data under
``.staging/`` (fsynced), then writes ``intent.json`` naming each staged path, the place it goes and
the complete new index, then renames the staged data into place, commits the index and removes
the intent. Before every write and when the store is opened, under the lock, recovery finishes an
interrupted write whose staged data is all there (roll forward) or moves what it had placed to
``quarantine/`` (roll back); then any folder the index does not name (a crash of an older version,
or an older ``index.json`` restored from a backup) is adopted when its own records verify (each
region version folder carries its region id, box, image hash, version, model version, user, time
and checksums; each image and model carries its entry) or else moved to ``quarantine/``. Data the
index does not name never blocks a later write. A missing ``index.json`` is rebuilt the same way
(from an empty index; the current model is then the shipped one), and a folder holding only the
skeleton of an interrupted store creation is created again. What recovery did is logged and kept
in :attr:`ProjectStore.repairs`.

Integrity: the index keeps a sha256 checksum (of shape, dtype and decoded bytes) of every array and
of every model file; reads verify it, so a missing or damaged chunk raises :class:`StoreError`
naming the region, image or model and the file (never background pixels). Ids and paths read from
the index are checked against their patterns and must resolve inside the store.

Latest predictions: each image keeps at most one prediction (the model's gland labels, one id per
gland, and its uncertainty map as float16, with the model version, the model file's checksum, the
time, the review regions and the display range), so that a reopened store shows it without
predicting again; optionally with the prediction layer as the user edited it (``edited``: edits not
accepted, kept on request, never used for training) and the branches' disagreement map
(``disagreement``, float16: the dock's hidden disagreement layer). It is a cache of model output, not a
correction: saving a new one replaces the old (a new ``_p<number>`` folder, committed like any
write, then the old folder is removed), it never touches accepted regions, and a prediction folder
the index does not name is simply removed by recovery. The index key ``predictions`` is optional
(stores written before it have none).

Withdrawn regions: :meth:`ProjectStore.withdraw` marks a region withdrawn (kept on disk with all its
versions, left out of training and validation) and :meth:`ProjectStore.reinstate` makes it count again;
each appends an event (what, when, who) to the region's ``history`` in the index and in the region
folder's attributes (the folder first, so that recovery merges a change whose index write was cut
off), and nothing of the region is ever deleted.

Held-out regions: the n-th region accepted in the store (n = 0, 1, 2, ...) is held out when
``floor((n + 1) * f) > floor(n * f)``, with ``f`` the holdout fraction fixed at creation. For the
default ``f = 0.2`` that is every 5th region (n % 5 == 4), so any 10 regions hold out 2. The
decision is recorded at first acceptance and stays with the region across its versions.

Large sources: a source image of more than :data:`MAX_FULL_IMAGE_PIXELS` pixels (a whole slide)
is not copied whole; each accepted region stores instead the full-resolution crop of the source
around its box, widened by :data:`CONTEXT_MARGIN` pixels on each side, as unlabelled tissue.

Slide windows: a region accepted in a window of a whole slide records ``source_kind: "slide"``
with its version, and with the image entry it adds (the whole level when it is small enough, else
its context crop); :meth:`ProjectStore.slide_images` lists those images, which a reopened dock does
not show as image layers (the slide panel shows slides). The key is optional (older stores have
none; their slide regions are told by their source file and the missing layer name).

Several processes may use one store (napari and the retraining worker): every mutation takes an
exclusive lock file (POSIX) and re-reads the index first. A read-only store opens for reading;
writes raise :class:`StoreReadOnlyError` ("read-only").
"""
from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import fractions
import getpass
import hashlib
import json
import logging
import math
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from src_model.checkpoint import BUNDLED_NAME as BUNDLED  # torch-free; the store's name for the shipped model
from src_model.slide import SLIDE_SUFFIXES  # torch-free (numpy only at import)

from . import store_io as _io

# Re-exported: the store's public names. The underscore aliases are the module globals that the
# store's write paths call (tests replace them to simulate a full disk).
from .store_io import (
    INDEX_NAME,
    INTENT_NAME,
    QUARANTINE,
    STAGING,
    STORE_FORMAT,
    STORE_FORMAT_VERSION,
    StoreError,
    StoreReadOnlyError,
)
from .store_io import (
    StoreVersionError as StoreVersionError,
)
from .store_io import atomic_write_json as _atomic_write_json
from .store_io import disk_error as _disk_error
from .store_io import write_array as _write_array
from .store_io import write_group as _write_group

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
BBox = Tuple[int, int, int, int]

MAX_FULL_IMAGE_PIXELS = 50_000_000
CONTEXT_MARGIN = 256
#: ``source_kind`` of a region (and of the image it added) accepted in a window of a whole slide.
SLIDE_SOURCE = "slide"
# A region of a store written before :data:`SLIDE_SOURCE` marked them is a slide's when it names no
# layer and its source is a file that :func:`src_model.slide.open_slide` reads (:data:`SLIDE_SUFFIXES`).
DEFAULT_HOLDOUT_FRACTION = 0.2


def _is_slide_file(path: Optional[str]) -> bool:
    return bool(path) and str(path).rstrip("/\\").lower().endswith(SLIDE_SUFFIXES)


@dataclass
class RegionRecord:
    """One version of an accepted region.

    Attributes:
        region_id: e.g. ``"r0003"``.
        version: 1, 2, ... (accepting the same box of the same image again adds a version).
        image_hash: sha256 of the full source image (bytes, shape and dtype).
        source_path: the file the image came from, when known.
        bbox: ``(y0, x0, y1, x1)`` in source image pixels (end exclusive).
        model_version: the model whose prediction was corrected.
        user: who accepted it.
        created: ISO-8601 UTC time of acceptance.
        holdout: held out for validation (fixed at first acceptance).
        withdrawn: withdrawn by the user (kept on disk; not used for training or validation).
        n_versions: how many versions the region has.
        image_name: the name the image had on screen when the region was accepted (its napari
            layer), when known; reopening a store shows the image under this name again.
        withdrawn_at / withdrawn_by: ISO-8601 UTC time and user of the region's latest withdrawal (also
            of a region reinstated since: :meth:`ProjectStore.region_history` has every event); None if it
            was never withdrawn.
        source_kind: :data:`SLIDE_SOURCE` for a window of a whole slide (also told, in a store written before
            that mark, by a slide file as source and no layer name), else None.
    """

    region_id: str
    version: int
    image_hash: str
    source_path: Optional[str]
    bbox: BBox
    model_version: str
    user: str
    created: str
    holdout: bool
    withdrawn: bool
    n_versions: int
    image_name: Optional[str] = None
    withdrawn_at: Optional[str] = None
    withdrawn_by: Optional[str] = None
    source_kind: Optional[str] = None


#: What a region's ``history`` entries record: ``{"event": "withdrawn" | "reinstated", "at": ISO time, "by": user}``.
HISTORY_EVENTS = ("withdrawn", "reinstated")
#: The index / folder keys of a region's withdrawal state (copied from a region folder by recovery).
_WITHDRAWAL_KEYS = ("withdrawn_at", "withdrawn_by", "reinstated_at", "reinstated_by")


def _history(region: Dict[str, Any]) -> List[Dict[str, str]]:
    """A region's withdraw / reinstate events, oldest first (well-formed entries only). A region withdrawn
    by a store written before the history was kept has only ``withdrawn_at`` / ``withdrawn_by``: that
    withdrawal is its one event."""
    raw = region.get("history")
    events = [dict(e) for e in raw if isinstance(e, dict) and e.get("event") in HISTORY_EVENTS
              and isinstance(e.get("at"), str) and isinstance(e.get("by"), str)] if isinstance(raw, list) else []
    if not events and region.get("withdrawn_at"):
        events = [{"event": "withdrawn", "at": str(region["withdrawn_at"]),
                   "by": str(region.get("withdrawn_by") or "")}]
    return events


@dataclass
class PredictionRecord:
    """The latest prediction of one image (a cache of model output, see the module docstring).

    Attributes:
        image_hash: the image's :func:`hash_image`.
        path: its folder relative to the store root (``predictions/<hash>_p0001``).
        number: 1, 2, ... (each save of the image's latest prediction takes the next number).
        shape: ``(H, W)`` of the image.
        model_version: the store version that made it (``"bundled"``, ``"v0002"``); "" for a
            checkpoint file outside the store.
        model_label: how the dock named that model ("bundled", "v0002", a file name).
        model_sha256: ``"sha256:<hex>"`` of that checkpoint file when known ("" otherwise), so that
            a model file that changed since (a new bundled model) shows the prediction is stale.
        created: ISO-8601 UTC time the model made it (a later save of the same prediction with edits keeps it).
        image_name: the image's layer name when it was predicted.
        source_path: the file the image came from, when known.
        ranked: the review regions of the prediction, ``[(score, (y0, x0, y1, x1))]``, most uncertain first.
        display_range: contrast limits of the uncertainty map.
        pasted: whether the prediction layer showed the store's accepted corrections over it.
        edited: whether the prediction layer as edited (edits not accepted) is kept with it.
        disagreement: whether the branches' disagreement map is kept with it.
        covered: with kept edits, the accepted regions ``(region_id, version)`` the edited layer already held
            when they were kept (a region accepted later is not in them).
    """

    image_hash: str
    path: str
    number: int
    shape: Tuple[int, int]
    model_version: str
    model_sha256: str
    created: str
    model_label: str = ""
    image_name: Optional[str] = None
    source_path: Optional[str] = None
    ranked: List[Tuple[float, BBox]] = field(default_factory=list)
    display_range: Tuple[float, float] = (0.0, 1.0)
    pasted: bool = True
    edited: bool = False
    disagreement: bool = False
    covered: Tuple[Tuple[str, int], ...] = ()


@dataclass(frozen=True)
class StoredImage:
    """A stored whole source image as its files describe it (:meth:`ProjectStore.list_whole_images`).

    Attributes:
        key: its key in the store (:meth:`ProjectStore.load_image` reads it).
        image_hash: its :func:`hash_image`, the hash its regions record.
        shape: ``(H, W, 3)`` from its array metadata; ``()`` when ``damaged``.
        damaged: why it cannot be read back ("" when its metadata and chunk files are all there;
            its pixels are checked against their checksum only when read).
    """

    key: str
    image_hash: str
    shape: Tuple[int, ...]
    damaged: str = ""


@dataclass
class ModelRecord:
    """One model version in the store.

    Attributes:
        version: ``"v0001"``, ``"v0002"``, ...
        path: checkpoint path relative to the store root.
        parent: the version it was fine-tuned from (``"bundled"`` for the shipped model).
        created: ISO-8601 UTC time it was added.
        metrics: e.g. ``{"old_dice": .., "new_dice": .., "n_holdout": ..}``.
        promoted: whether it became the current model when it was added.
        note: free text.
        sha256: ``"sha256:<hex>"`` of the checkpoint file, verified when its path is asked for.
    """

    version: str
    path: str
    parent: Optional[str]
    created: str
    metrics: Dict[str, Any] = field(default_factory=dict)
    promoted: bool = False
    note: str = ""
    sha256: str = ""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _default_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in this environment
        return "unknown"


def hash_image(image: Any, rows_per_block: int = 1024) -> str:
    """sha256 hex of an image's shape, dtype and bytes (C order), read in row blocks.

    Works on NumPy arrays and on lazy arrays (zarr, dask) without loading them whole.
    """
    h = hashlib.sha256()
    h.update(f"{tuple(int(s) for s in image.shape)}|{np.dtype(image.dtype).str}|".encode())
    for y in range(0, int(image.shape[0]), rows_per_block):
        h.update(np.ascontiguousarray(np.asarray(image[y:y + rows_per_block])).tobytes())
    return h.hexdigest()


def _is_holdout(n: int, fraction: float) -> bool:
    f = fractions.Fraction(fraction).limit_denominator(10_000)
    return math.floor((n + 1) * f) > math.floor(n * f)


LABEL_MAX = int(np.iinfo(np.uint32).max)


def _label_array(mask: Any, shape: Tuple[int, int], name: str) -> np.ndarray:
    """Labels as stored (uint8, or uint32 above 255); refuses values the store cannot keep exactly."""
    mask, dtype = _label_dtype(mask, shape, name)
    return mask.astype(dtype)


def _label_dtype(mask: Any, shape: Tuple[int, int], name: str) -> Tuple[np.ndarray, np.dtype]:
    """``mask`` as an array and the dtype the store keeps it as (uint8, or uint32 above 255), not
    cast (a whole 6000 x 6000 cast to uint32 is 144 MB); refuses values the store cannot keep exactly."""
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"{name} mask has shape {mask.shape}, the region is {shape}")
    if mask.dtype == bool:
        return mask, np.dtype(np.uint8)
    if np.issubdtype(mask.dtype, np.floating):
        if mask.size and not np.all(np.isfinite(mask)):
            raise ValueError(f"{name} mask has NaN or infinite values; labels must be whole numbers "
                             f"0..{LABEL_MAX}")
        if mask.size and not np.all(mask == np.floor(mask)):
            odd = mask[mask != np.floor(mask)].flat[0]
            raise ValueError(f"{name} mask has non-integer values (e.g. {odd}); labels must be whole "
                             f"numbers (0 = background)")
    elif not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"{name} mask must hold integer labels (0 = background), got dtype {mask.dtype}")
    top = 0
    if mask.size:
        low, top = mask.min(), mask.max()
        if low < 0:
            raise ValueError(f"{name} mask has negative labels (min {low}); the store keeps labels "
                             f"0..{LABEL_MAX} (uint32)")
        if top > LABEL_MAX:
            raise ValueError(f"{name} mask has label {top}, which does not fit the store's uint32 labels "
                             f"(max {LABEL_MAX})")
    out_dtype = np.uint8 if top <= np.iinfo(np.uint8).max else np.uint32
    return mask, np.dtype(out_dtype)


_HEX64_LEN = 64


def _validate_index(root: Path, index: Dict[str, Any]) -> Dict[str, Any]:
    """Refuse an index whose ids or paths could name anything outside the store's layout."""
    where = root / INDEX_NAME

    def bad(msg: str) -> StoreError:
        return StoreError(f"{where}: {msg}; the index was edited or damaged, refusing to use it")

    regions, images, models = index.get("regions"), index.get("images"), index.get("models")
    if not isinstance(regions, dict) or not isinstance(images, dict) or not isinstance(models, list):
        raise bad("regions, images or models has the wrong type")
    if not isinstance(index.get("n_regions"), int):
        raise bad("n_regions is not an integer")
    for rid, reg in regions.items():
        if not _io.REGION_ID.fullmatch(str(rid)):
            raise bad(f"region id {rid!r} is not of the form r0001")
        if not isinstance(reg, dict) or not isinstance(reg.get("versions"), list) or not reg["versions"]:
            raise bad(f"region {rid} has no versions")
        bbox = reg.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int) for v in bbox)):
            raise bad(f"region {rid} has no valid box")
        for number, entry in enumerate(reg["versions"], 1):
            path = entry.get("path") if isinstance(entry, dict) else None
            if path != f"regions/{rid}/v{number:04d}" or entry.get("version") != number:
                raise bad(f"region {rid} version {number} has path {path!r}")
    for key, entry in images.items():
        if not _io.IMAGE_KEY.fullmatch(str(key)) or not isinstance(entry, dict) or entry.get("path") != f"images/{key}":
            raise bad(f"image entry {key!r} has an invalid key or path")
    versions = set()
    for m in models:
        version = m.get("version") if isinstance(m, dict) else None
        if not _io.MODEL_VERSION.fullmatch(str(version)) or m.get("path") != f"models/{version}.pt":
            raise bad(f"model entry {version!r} has an invalid version or path")
        versions.add(version)
    if index.get("current_model") != BUNDLED and index.get("current_model") not in versions:
        raise bad(f"the current model {index.get('current_model')!r} is not in the store")
    predictions = index.get("predictions", {})
    if not isinstance(predictions, dict):
        raise bad("predictions has the wrong type")
    for key, entry in predictions.items():
        number = entry.get("number") if isinstance(entry, dict) else None
        if not _io.IMAGE_HASH.fullmatch(str(key)) or not isinstance(number, int) \
                or entry.get("path") != f"predictions/{key}_p{number:04d}":
            raise bad(f"prediction entry {key!r} has an invalid key or path")
    return index


def _read_index(root: Path) -> Dict[str, Any]:
    return _validate_index(root, _io.read_index(root))


def _empty_index(holdout_fraction: float) -> Dict[str, Any]:
    return {
        "format": STORE_FORMAT,
        "format_version": STORE_FORMAT_VERSION,
        "created": _now(),
        "holdout_fraction": float(holdout_fraction),
        "holdout_rule": "region n (0-based, in order of first acceptance) is held out when "
                        "floor((n+1)*f) > floor(n*f)",
        "n_regions": 0,
        "regions": {},
        "images": {},
        "models": [],
        "current_model": BUNDLED,
        "current_history": [],
    }


_SKELETON = {"zarr.json", "regions", "images", "models", STAGING, _io.LOCK_NAME}


def _unfinished_creation(root: Path, fallback: float) -> Optional[float]:
    """The holdout fraction to use when ``root`` holds only the skeleton of a store whose creation
    was interrupted (no index, no data; its zarr.json possibly half-written); else None."""
    if (root / INDEX_NAME).exists():
        return None
    names = {p.name for p in root.iterdir() if not p.name.startswith(INDEX_NAME + ".")}
    if not names <= _SKELETON or "zarr.json" not in names:
        return None
    for sub, allowed in (("regions", {"zarr.json"}), ("images", {"zarr.json"}), ("models", set())):
        if (root / sub).is_dir() and not {p.name for p in (root / sub).iterdir()} <= allowed:
            return None
    try:
        attrs = _io.read_attributes(root)
    except (OSError, ValueError):  # half-written by the interrupted creation
        return float(fallback)
    fraction = attrs.get("holdout_fraction")
    if attrs.get("format") != STORE_FORMAT or not isinstance(fraction, (int, float)):
        return None
    return float(fraction)


def _rebuild_missing_index(root: Path) -> bool:
    """A napari-cdma store whose index.json is missing (a kill while it was being created, or a
    deleted file) gets an empty index, which recovery then fills from the folders' own records.
    Returns True when it did so."""
    if (root / INDEX_NAME).exists() or not (root / "zarr.json").is_file():
        return False
    try:
        attrs = _io.read_attributes(root)
    except (OSError, ValueError):
        return False
    fraction = attrs.get("holdout_fraction")
    if attrs.get("format") != STORE_FORMAT or not isinstance(fraction, (int, float)):
        return False
    _io.check_version(root, attrs.get("format_version"))
    try:
        with _io.process_lock(root):
            if (root / INDEX_NAME).exists():
                return False
            for sub in ("regions", "images"):
                if not (root / sub / "zarr.json").exists():
                    _write_group(root / sub)
            for sub in ("models", STAGING):
                (root / sub).mkdir(exist_ok=True)
            _atomic_write_json(root / INDEX_NAME, _empty_index(float(fraction)))
    except OSError as exc:
        raise _disk_error(exc, "rebuilding the missing store index") from exc
    return True


def _remove_path(path: Path) -> None:
    """Remove a file, link or folder (best effort: what cannot be removed is logged)."""
    import shutil

    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError as exc:
        logger.warning("could not remove %s: %s", path, exc)


_FILE_SHA_CACHE: Dict[Tuple[str, int, int], str] = {}


def _cached_file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) in this process."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _FILE_SHA_CACHE:
        _FILE_SHA_CACHE[key] = _io.file_sha256(path)
    return _FILE_SHA_CACHE[key]


def _check_checkpoint(path: Path, shown: Path) -> None:
    """Load a checkpoint the way the plugin will (weights only, model built from its config, strict)."""
    from src_model.checkpoint import model_from_checkpoint_dict, read_checkpoint  # lazy: imports torch

    try:
        model_from_checkpoint_dict(read_checkpoint(path), str(shown))
    except Exception as exc:  # CheckpointError, and anything else a foreign file makes torch raise
        reason = _io.one_line(exc).replace(str(path), str(shown))
        raise StoreError(f"{shown} cannot become a model version: {reason}") from exc


class ProjectStore:
    """Accepted corrections and model versions of one project, on disk.

    Open with :meth:`ProjectStore.open`. Reads use the index loaded at open (or at the last
    mutation or :meth:`refresh`); every mutation re-reads the index under a lock first.
    """

    def __init__(self, root: Path, index: Dict[str, Any]) -> None:
        self.root = root
        self._index = index
        self._lock = threading.RLock()
        #: What recovery repaired since this store was opened (one line each; also logged).
        self.repairs: List[str] = []
        #: True when the store could only be opened for reading.
        self.read_only = False
        self._verified_models: set = set()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: PathLike, create: bool = True,
             holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION) -> "ProjectStore":
        """Open the store at ``path``, creating it if ``create`` and the path is absent or empty.

        Args:
            path: store directory.
            create: create a new store when there is none.
            holdout_fraction: share of regions held out for validation; used only when creating
                (an existing store keeps the fraction it was created with).

        Opening a writable store runs recovery (see the module docstring): an interrupted write is
        finished or undone, data the index does not name is adopted or quarantined; what was done
        is logged and listed in :attr:`repairs`. A read-only store opens for reading
        (:attr:`read_only`).

        Raises:
            StoreVersionError: the store was written by a newer napari-cdma.
            StoreError: the path is not a napari-cdma store, it is absent and ``create`` is False,
                or its index is unreadable or names ids or paths outside the store layout.
        """
        root = Path(path).expanduser().resolve()
        if root.exists() and not root.is_dir():
            raise StoreError(f"{root} is a file, not a napari-cdma store directory")
        is_empty = not root.exists() or not any(root.iterdir())
        if is_empty:
            if not create:
                raise StoreError(f"{root}: no napari-cdma store here")
            return cls._create(root, holdout_fraction)
        fraction = _unfinished_creation(root, holdout_fraction)
        if fraction is not None:
            store = cls._create(root, fraction)
            store._note("the store's creation had been interrupted: created it again (it held no data)")
            return store
        rebuilt = _rebuild_missing_index(root)
        store = cls(root, _read_index(root))
        if rebuilt:
            store._note(f"{INDEX_NAME} was missing (a crash while the store was created, or a deleted file): "
                        f"rebuilt from the records in the region, image and model folders; the current model "
                        f"is the shipped one")
        try:
            try:
                with store._lock, _io.process_lock(root):
                    store._index = _read_index(root)
                    store._recover(deep=True)
                    _io.clean_staging(root)
            except OSError as exc:
                raise _disk_error(exc, "repairing the store after an interrupted write") from exc
        except StoreReadOnlyError as exc:
            store.read_only = True
            pending = " (an interrupted write is pending: it is finished when the store is writable)" \
                if (root / INTENT_NAME).exists() else ""
            logger.warning("opened %s for reading only: %s%s", root, exc, pending)
        return store

    @classmethod
    def _create(cls, root: Path, holdout_fraction: float) -> "ProjectStore":
        if not 0.0 <= float(holdout_fraction) < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
        index = _empty_index(holdout_fraction)
        try:
            root.mkdir(parents=True, exist_ok=True)
            _write_group(root, {"format": STORE_FORMAT, "format_version": STORE_FORMAT_VERSION,
                                "holdout_fraction": float(holdout_fraction)})
            for sub in ("regions", "images"):
                _write_group(root / sub)
            (root / "models").mkdir(exist_ok=True)
            (root / STAGING).mkdir(exist_ok=True)
            _atomic_write_json(root / INDEX_NAME, index)  # last: its presence makes it a store
        except OSError as exc:
            raise _disk_error(exc, f"creating the store at {root}") from exc
        logger.info("created project store %s (holdout fraction %.2f)", root, holdout_fraction)
        return cls(root, index)

    def refresh(self) -> None:
        """Re-read the index from disk (another process may have written to the store)."""
        with self._lock:
            self._index = _read_index(self.root)

    @contextlib.contextmanager
    def _mutation(self) -> Iterator[Dict[str, Any]]:
        """Lock, re-read the index, recover, yield a copy to change; the caller commits with _apply/_commit."""
        with self._lock, _io.process_lock(self.root):
            self._index = _read_index(self.root)
            try:
                self._recover(deep=False)
            except OSError as exc:
                raise _disk_error(exc, "repairing the store before a write") from exc
            yield copy.deepcopy(self._index)

    def _commit(self, index: Dict[str, Any]) -> None:
        _atomic_write_json(self.root / INDEX_NAME, index)
        self._index = index

    def _apply(self, index: Dict[str, Any], moves: List[Tuple[Path, str]], placed: List[Path],
               what: str) -> None:
        """Commit a mutation: intent (moves + new index), the moves, the index, then drop the intent.

        Runs inside :func:`store_io.all_or_nothing` (``placed`` is its list): a failure before the
        index is committed drops the intent and the block undoes the moves.
        """
        for src, _ in moves:
            _io.fsync_tree(src)
        _io.write_intent(self.root, {"what": what, "created": _now(), "index": index,
                                     "moves": [[src.relative_to(self.root).as_posix(), dst] for src, dst in moves]})
        try:
            for src, dst in moves:
                placed.append(_io.place(self.root, src, _io.inside(self.root, dst, what)))
            self._commit(index)
        except BaseException:
            with contextlib.suppress(OSError):
                _io.drop_intent(self.root)
            raise
        placed.clear()  # committed: nothing to undo any more
        try:
            _io.drop_intent(self.root)
        except OSError as exc:  # harmless: replaying a committed intent rewrites the same index
            logger.warning("could not remove %s after %s: %s", INTENT_NAME, what, exc)

    # ------------------------------------------------------------------ recovery
    def _note(self, text: str) -> None:
        self.repairs.append(text)
        logger.warning("store %s: %s", self.root, text)

    def _recover(self, deep: bool) -> None:
        """Under the lock, on a freshly read index: finish or undo an interrupted write, then adopt or
        quarantine data the index does not name; commits a repaired index. ``deep`` (at open) also
        merges withdrawals recorded in the region folders (an older index restored from a backup)."""
        root = self.root
        index = copy.deepcopy(self._index)
        changed = False
        intent = _io.read_intent(root)
        if intent is not None:
            replayed = self._replay_intent(intent)
            if replayed is not None:
                index, changed = replayed, True
        for name in _io.remove_temp_files(root):
            logger.info("removed %s left by an interrupted write", name)
        changed |= self._adopt_orphans(index, deep)
        if changed:
            self._commit(index)
        if intent is not None:
            _io.drop_intent(root)

    def _replay_intent(self, intent: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """Roll an interrupted write forward (returns its index) or back (returns None)."""
        root = self.root
        what = str(intent.get("what", "a write"))[:200]
        moves, index = intent.get("moves"), intent.get("index")
        ok = isinstance(moves, list) and isinstance(index, dict) and all(
            isinstance(m, list) and len(m) == 2 and isinstance(m[0], str) and m[0].startswith(STAGING + "/")
            and isinstance(m[1], str) and _io.PLACEABLE.fullmatch(m[1]) for m in moves)
        if ok:
            try:
                _validate_index(root, index)
                pairs = [(_io.inside(root, s, INTENT_NAME), _io.inside(root, d, INTENT_NAME)) for s, d in moves]
            except StoreError:
                ok = False
        if not ok:
            _io.quarantine(root, root / INTENT_NAME, "an intent this store did not write")
            self._note(f"moved an {INTENT_NAME} that is not understood to {QUARANTINE}/")
            return None
        states = ["staged" if os.path.lexists(s) else "placed" if os.path.lexists(d) else "lost" for s, d in pairs]
        if "lost" not in states:
            for (src, dst), state in zip(pairs, states, strict=True):
                if state == "staged":
                    _io.place(root, src, dst)
            self._note(f"finished an interrupted write ({what})")
            return index
        for (_, dst), state in zip(pairs, states, strict=True):
            if state == "placed":
                _io.quarantine(root, dst, f"placed by an interrupted write that cannot be finished ({what})")
        self._note(f"undid an interrupted write whose staged data is gone ({what}); "
                   f"what it had placed is in {QUARANTINE}/")
        return None

    def _adopt_orphans(self, index: Dict[str, Any], deep: bool) -> bool:
        """Adopt verifiable data the index does not name, quarantine the rest; True if index changed."""
        root = self.root
        changed = False
        regions_dir = root / "regions"
        for entry in sorted(regions_dir.iterdir()) if regions_dir.is_dir() else []:
            name = entry.name
            if name == "zarr.json":
                continue
            if not _io.REGION_ID.fullmatch(name) or entry.is_symlink() or not entry.is_dir():
                _io.quarantine(root, entry, "not a region folder (the store makes no links)")
                self._note(f"moved regions/{name} (not a region folder) to {QUARANTINE}/")
                continue
            region = index["regions"].get(name)
            if region is None:
                changed |= self._adopt_region(index, entry)
                continue
            changed |= self._adopt_versions(region, entry)
            if deep:
                changed |= self._merge_withdrawal(name, region, entry)
        images_dir = root / "images"
        for entry in sorted(images_dir.iterdir()) if images_dir.is_dir() else []:
            if entry.name != "zarr.json" and (entry.name not in index["images"] or entry.is_symlink()):
                changed |= self._adopt_image(index, entry)
        models_dir = root / "models"
        known = {m["version"] for m in index["models"]}
        for entry in sorted(models_dir.iterdir()) if models_dir.is_dir() else []:
            stem, suffix = entry.stem, entry.suffix
            if _io.MODEL_VERSION.fullmatch(stem) and suffix in (".pt", ".json") and stem in known \
                    and not entry.is_symlink():
                continue
            if suffix == ".json" and _io.MODEL_VERSION.fullmatch(stem) and (models_dir / f"{stem}.pt").exists():
                continue  # handled with its .pt
            if not os.path.lexists(entry):  # quarantined with its .pt
                continue
            changed |= self._adopt_model(index, entry)
        self._drop_stale_predictions(index)
        top = max((int(r[1:]) for r in index["regions"]), default=0)
        if index["n_regions"] < top:
            index["n_regions"] = top
            changed = True
        return changed

    def _merge_withdrawal(self, rid: str, region: Dict[str, Any], rdir: Path) -> bool:
        """Take a region folder's withdraw / reinstate record when it is newer than the index's (an older
        index restored from a backup, or a write cut off between the folder and the index); True if taken."""
        try:
            gattrs = _io.read_attributes(rdir)
        except (OSError, ValueError):
            return False
        folder, known = _history(gattrs), _history(region)
        withdrawn = gattrs.get("withdrawn") is True
        if len(folder) > len(known) and folder[:len(known)] == known \
                and withdrawn == (folder[-1]["event"] == "withdrawn"):
            pass  # the folder holds every event the index has, and later ones
        elif not folder and withdrawn and not region["withdrawn"]:
            pass  # a store written before the history was kept: its withdrawal marks alone
        else:
            return False
        if withdrawn == bool(region["withdrawn"]) and folder == known:
            return False
        region["withdrawn"] = withdrawn
        region.update({k: gattrs[k] for k in _WITHDRAWAL_KEYS if k in gattrs})
        if folder:
            region["history"] = folder
        state = "withdrawn" if withdrawn else "reinstated"
        self._note(f"region {rid} is {state} in its folder but not in the index: {state}")
        return True

    def _drop_stale_predictions(self, index: Dict[str, Any]) -> None:
        """Remove prediction folders the index does not name: a replaced latest prediction whose
        removal was interrupted, or one staged by a write that did not commit (a cache, never a
        correction: nothing is quarantined)."""
        folder = self.root / "predictions"
        if not folder.is_dir() or folder.is_symlink():
            return
        named = {str(e.get("path")) for e in index.get("predictions", {}).values()}
        for entry in sorted(folder.iterdir()):
            if f"predictions/{entry.name}" in named and entry.is_dir() and not entry.is_symlink():
                continue
            _remove_path(entry)
            logger.info("removed predictions/%s: not the latest prediction of any image", entry.name)

    def _check_version(self, vdir: Path, rid: str, number: int, region: Optional[Dict[str, Any]]
                       ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """The index entry of a region version folder, from its own attributes, after verifying its arrays."""
        what = f"region {rid} v{number}"
        try:
            attrs = _io.read_attributes(vdir)
        except (OSError, ValueError) as exc:
            raise StoreError(f"{what}: unreadable attributes ({_io.one_line(exc)})") from exc
        bbox = attrs.get("bbox")
        if attrs.get("region_id") != rid or attrs.get("version") != number or not (
                isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int) for v in bbox)):
            raise StoreError(f"{what}: its attributes name another region, version or no box")
        if region is not None and (attrs.get("image_hash") != region["image_hash"] or bbox != region["bbox"]):
            raise StoreError(f"{what}: its image or box differs from the region's")
        sums = attrs.get("checksums") if isinstance(attrs.get("checksums"), dict) else {}
        arrays = {n: _io.read_array_verified(vdir / n, sums.get(n), what) for n in ("crop", "corrected", "predicted")}
        h, w = bbox[2] - bbox[0], bbox[3] - bbox[1]
        if arrays["crop"].shape != (h, w, 3) or arrays["corrected"].shape != (h, w) \
                or arrays["predicted"].shape != (h, w):
            raise StoreError(f"{what}: array shapes do not match its box")
        entry = {"version": number, "path": f"regions/{rid}/v{number:04d}",
                 "model_version": str(attrs.get("model_version", "unknown")),
                 "user": str(attrs.get("user", "unknown")), "created": str(attrs.get("created", "")),
                 "source_path": attrs.get("source_path"),
                 **({"image_name": str(attrs["image_name"])} if attrs.get("image_name") else {}),
                 "checksums": {n: sums.get(n) or _io.checksum(a) for n, a in arrays.items()}}
        return entry, attrs

    def _adopt_versions(self, region: Dict[str, Any], rdir: Path) -> bool:
        """Adopt version folders after the region's last indexed version; quarantine the rest."""
        rid = rdir.name
        n = len(region["versions"])
        for tmp in rdir.glob("zarr.json.*.tmp"):  # an interrupted withdrawal's attribute write
            with contextlib.suppress(OSError):
                tmp.unlink()
                logger.info("removed %s left by an interrupted write", tmp.relative_to(self.root))
        extra = sorted(p for p in rdir.iterdir() if p.name != "zarr.json"
                       and not (_io.VERSION_DIR.fullmatch(p.name) and int(p.name[1:]) <= n))
        changed = False
        for path in extra:
            number = len(region["versions"]) + 1
            if path.name == f"v{number:04d}" and path.is_dir():
                try:
                    entry, _ = self._check_version(path, rid, number, region)
                except StoreError as exc:
                    reason = str(exc)
                else:
                    region["versions"].append(entry)
                    self._note(f"adopted region {rid} v{number} found on disk but missing from the index")
                    changed = True
                    continue
            else:
                reason = "not the next version of the region"
            _io.quarantine(root=self.root, path=path, reason=reason)
            self._note(f"moved regions/{rid}/{path.name} to {QUARANTINE}/ ({reason})")
        return changed

    def _adopt_region(self, index: Dict[str, Any], rdir: Path) -> bool:
        """Adopt a whole region folder the index does not name, or quarantine it."""
        rid = rdir.name
        region: Dict[str, Any] = {"versions": []}
        first_attrs: Dict[str, Any] = {}
        try:
            entry, first_attrs = self._check_version(rdir / "v0001", rid, 1, None)
        except StoreError as exc:
            _io.quarantine(self.root, rdir, str(exc))
            self._note(f"moved regions/{rid} to {QUARANTINE}/: not in the index and not verifiable ({exc})")
            return False
        try:
            gattrs = _io.read_attributes(rdir)
        except (OSError, ValueError):
            gattrs = {}
        n = gattrs.get("index") if isinstance(gattrs.get("index"), int) else int(rid[1:]) - 1
        holdout = gattrs.get("holdout")
        if not isinstance(holdout, bool):
            holdout = _is_holdout(n, float(index["holdout_fraction"]))
        region = {"image_hash": first_attrs["image_hash"], "bbox": first_attrs["bbox"], "index": n,
                  "holdout": holdout, "withdrawn": gattrs.get("withdrawn") is True, "versions": [entry]}
        region.update({k: gattrs[k] for k in _WITHDRAWAL_KEYS if k in gattrs})
        history = _history(gattrs)
        if history:
            region["history"] = history
        self._adopt_versions(region, rdir)
        index["regions"][rid] = region
        index["n_regions"] = max(int(index["n_regions"]), n + 1, int(rid[1:]))
        self._note(f"adopted region {rid} ({len(region['versions'])} version(s)) found on disk but "
                   f"missing from the index")
        return True

    def _adopt_image(self, index: Dict[str, Any], path: Path) -> bool:
        key = path.name
        reason = "not a stored image"
        if _io.IMAGE_KEY.fullmatch(key) and path.is_dir() and not path.is_symlink() and key not in index["images"]:
            try:
                meta = _io.read_attributes(path).get("napari_cdma_image")
                if isinstance(meta, dict) and isinstance(meta.get("checksum"), str):
                    _io.read_array_verified(path, meta["checksum"], f"stored image {key[:12]}")
                    entry = dict(meta, path=f"images/{key}")
                elif "_" not in key:  # written before checksums: verify it against its own hash
                    data = _io.read_array_verified(path, None, f"stored image {key[:12]}")
                    if hash_image(data) != key:
                        raise StoreError("its pixels do not match its name (the image hash)")
                    entry = {"hash": key, "full": True, "offset": [0, 0], "source_shape": list(data.shape),
                             "shape": list(data.shape), "path": f"images/{key}", "source_path": None,
                             "added": _now(), "checksum": _io.checksum(data)}
                else:
                    raise StoreError("it carries no record")
            except (StoreError, OSError, ValueError) as exc:
                reason = _io.one_line(exc)
            else:
                index["images"][key] = entry
                self._note(f"adopted stored image {key[:12]} found on disk but missing from the index")
                return True
        _io.quarantine(self.root, path, reason)
        self._note(f"moved images/{key} to {QUARANTINE}/ ({reason})")
        return False

    def _adopt_model(self, index: Dict[str, Any], path: Path) -> bool:
        stem = path.stem
        side = path.with_suffix(".json")
        reason = "not a model file of this store"
        if _io.MODEL_VERSION.fullmatch(stem) and path.suffix == ".pt" and path.is_file() and not path.is_symlink() \
                and not any(m["version"] == stem for m in index["models"]):
            try:
                record = json.loads(side.read_text(encoding="utf-8")).get("napari_cdma_model")
                if not isinstance(record, dict) or record.get("version") != stem \
                        or record.get("path") != f"models/{stem}.pt":
                    raise ValueError("its record names another version")
                if _io.file_sha256(path) != record.get("sha256"):
                    raise ValueError("the file does not match its recorded checksum")
                ModelRecord(**record)
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                reason = f"no verifiable record ({_io.one_line(exc)})"
            else:
                index["models"].append(record)
                index["models"].sort(key=lambda m: int(m["version"][1:]))
                self._note(f"adopted model {stem} found on disk but missing from the index "
                           f"(the current model is still {index['current_model']})")
                return True
        for p in (path, side) if path.suffix == ".pt" else (path,):
            if os.path.lexists(p):
                _io.quarantine(self.root, p, reason)
        self._note(f"moved models/{path.name} to {QUARANTINE}/ ({reason})")
        return False

    def _staging_dir(self, staged: List[Path]) -> Path:
        """A fresh temporary name under .staging/, remembered in ``staged`` for clean-up."""
        return _io.staging_path(self.root, staged)

    # ------------------------------------------------------------------ properties
    @property
    def holdout_fraction(self) -> float:
        """Share of regions held out for validation, fixed when the store was created."""
        return float(self._index["holdout_fraction"])

    @property
    def format_version(self) -> int:
        return int(self._index["format_version"])

    # ------------------------------------------------------------------ regions
    def accept_region(self, image: Any, bbox: Sequence[int], corrected: Any, predicted: Any, *,
                      model_version: str, user: Optional[str] = None,
                      source_path: Optional[PathLike] = None,
                      image_hash: Optional[str] = None, image_name: Optional[str] = None,
                      source_kind: Optional[str] = None) -> RegionRecord:
        """Store an accepted correction; the same box of the same image again adds a version.

        Args:
            image: the full source image, uint8 (H, W, 3); NumPy or a lazy array (zarr, dask).
            bbox: ``(y0, x0, y1, x1)`` of the region in ``image`` (end exclusive).
            corrected: corrected labels (h, w), 0 = background, >0 = gland (0/1 or instance ids).
            predicted: the prediction that was corrected, (h, w), same convention.
            model_version: the model version that made ``predicted``.
            user: who accepts it (default: the login name).
            source_path: the file the image was read from, if any.
            image_hash: precomputed :func:`hash_image` of ``image`` (skips hashing a large image).
            image_name: the image's name on screen (its napari layer), if any.
            source_kind: what the image was shown as, when not an ordinary image layer: ``"slide"``
                for a window of a whole slide (:data:`SLIDE_SOURCE`); recorded with the version and
                the image it adds, so that reopening the store does not show a slide as an image.

        Returns:
            The record of the stored version.

        Raises:
            ValueError: bad shapes, dtypes, box, or labels that do not fit the store (negative,
                non-integer, above 2**32 - 1).
            StoreError: the store could not be written (e.g. disk full, read-only); nothing was changed.
        """
        shape = tuple(int(s) for s in image.shape)
        if len(shape) != 3 or shape[2] != 3 or np.dtype(image.dtype) != np.uint8:
            raise ValueError(f"image must be uint8 RGB (H, W, 3), got shape {shape} dtype {image.dtype}")
        if len(bbox) != 4:
            raise ValueError(f"bbox must be (y0, x0, y1, x1), got {bbox!r}")
        y0, x0, y1, x1 = (int(v) for v in bbox)
        if not (0 <= y0 < y1 <= shape[0] and 0 <= x0 < x1 <= shape[1]):
            raise ValueError(f"bbox {(y0, x0, y1, x1)} is empty or outside the image of {shape[0]}x{shape[1]}")
        hw = (y1 - y0, x1 - x0)
        corrected_arr = _label_array(corrected, hw, "corrected")
        predicted_arr = _label_array(predicted, hw, "predicted")
        crop = np.ascontiguousarray(np.asarray(image[y0:y1, x0:x1]))
        digest = image_hash or hash_image(image)
        user = user or _default_user()
        created = _now()
        src = None if source_path is None else str(source_path)
        big = shape[0] * shape[1] > MAX_FULL_IMAGE_PIXELS

        with self._mutation() as index:
            # The region: a new version of a live region with the same image and box, or a new one.
            rid = next((r for r, reg in sorted(index["regions"].items())
                        if reg["image_hash"] == digest and tuple(reg["bbox"]) == (y0, x0, y1, x1)
                        and not reg["withdrawn"]), None)
            if rid is None:
                n = int(index["n_regions"])
                rid = f"r{n + 1:04d}"
                while rid in index["regions"]:  # defensive: never reuse an id
                    n += 1
                    rid = f"r{n + 1:04d}"
                region = {"image_hash": digest, "bbox": [y0, x0, y1, x1], "index": n,
                          "holdout": _is_holdout(n, float(index["holdout_fraction"])),
                          "withdrawn": False, "versions": []}
                index["regions"][rid] = region
                index["n_regions"] = n + 1
                new_region = True
            else:
                region = index["regions"][rid]
                new_region = False
            version = len(region["versions"]) + 1
            rel = f"regions/{rid}/v{version:04d}"
            entry = {"version": version, "path": rel, "model_version": str(model_version), "user": user,
                     "created": created, "source_path": src, **({"image_name": str(image_name)} if image_name else {}),
                     **({"source_kind": str(source_kind)} if source_kind else {}),
                     "checksums": {"crop": _io.checksum(crop), "corrected": _io.checksum(corrected_arr),
                                   "predicted": _io.checksum(predicted_arr)}}
            region["versions"].append(entry)

            # The unlabelled tissue: the whole image once per hash, or a context crop for a big one.
            image_key, image_entry, image_data = None, None, None
            if big:
                cy0, cx0 = max(0, y0 - CONTEXT_MARGIN), max(0, x0 - CONTEXT_MARGIN)
                cy1, cx1 = min(shape[0], y1 + CONTEXT_MARGIN), min(shape[1], x1 + CONTEXT_MARGIN)
                image_key = f"{digest}_{cy0}_{cx0}_{cy1}_{cx1}"
                if image_key not in index["images"]:
                    image_data = np.ascontiguousarray(np.asarray(image[cy0:cy1, cx0:cx1]))
                    image_entry = {"hash": digest, "full": False, "offset": [cy0, cx0],
                                   "source_shape": list(shape)}
            elif digest not in index["images"]:
                image_key = digest
                image_data = np.ascontiguousarray(np.asarray(image))
                image_entry = {"hash": digest, "full": True, "offset": [0, 0], "source_shape": list(shape)}
            if image_entry is not None:
                if source_kind:
                    image_entry["source_kind"] = str(source_kind)
                image_entry.update({"path": f"images/{image_key}", "source_path": src,
                                    "shape": list(image_data.shape), "added": created,
                                    "checksum": _io.checksum(image_data)})
                index["images"][image_key] = image_entry

            # Each folder carries its own record, so recovery can adopt it if the index misses it.
            attrs = {"region_id": rid, "bbox": [y0, x0, y1, x1], "image_hash": digest, **entry}
            what = f"accepting region {rid} v{version}"
            with _io.all_or_nothing(what) as (placed, staged):
                moves: List[Tuple[Path, str]] = []
                if image_entry is not None:
                    tmp = self._staging_dir(staged)
                    _write_array(tmp, image_data, {"napari_cdma_image": image_entry})
                    moves.append((tmp, image_entry["path"]))
                tmp = self._staging_dir(staged)
                if new_region:  # stage the region group with its first version inside
                    _write_group(tmp, {"region_id": rid, "index": region["index"], "holdout": region["holdout"],
                                       "image_hash": digest, "bbox": [y0, x0, y1, x1], "created": created})
                    vdir = tmp / f"v{version:04d}"
                else:
                    vdir = tmp
                _write_group(vdir, attrs)
                _write_array(vdir / "crop", crop)
                _write_array(vdir / "corrected", corrected_arr)
                _write_array(vdir / "predicted", predicted_arr)
                moves.append((tmp, f"regions/{rid}" if new_region else rel))
                self._apply(index, moves, placed, what)
        logger.info("accepted %s v%d (%s, holdout=%s) by %s", rid, version, (y0, x0, y1, x1),
                    region["holdout"], user)
        return self._record(rid, index["regions"][rid], version)

    def _record(self, rid: str, region: Dict[str, Any], version: Optional[int] = None) -> RegionRecord:
        versions = region["versions"]
        entry = versions[-1] if version is None else versions[version - 1]
        return RegionRecord(region_id=rid, version=int(entry["version"]), image_hash=region["image_hash"],
                            source_path=entry.get("source_path"), bbox=tuple(int(v) for v in region["bbox"]),
                            model_version=entry["model_version"], user=entry["user"],
                            created=entry["created"], holdout=bool(region["holdout"]),
                            withdrawn=bool(region["withdrawn"]), n_versions=len(versions),
                            image_name=entry.get("image_name"), withdrawn_at=region.get("withdrawn_at"),
                            withdrawn_by=region.get("withdrawn_by"),
                            source_kind=entry.get("source_kind") or (
                                SLIDE_SOURCE if not entry.get("image_name") and _is_slide_file(entry.get("source_path"))
                                else None))

    def _region(self, region_id: str) -> Dict[str, Any]:
        try:
            return self._index["regions"][region_id]
        except KeyError:
            raise KeyError(f"no region {region_id!r} in the store") from None

    def regions(self, include_withdrawn: bool = False) -> List[RegionRecord]:
        """The latest version of each region, in order of first acceptance."""
        return [self._record(rid, reg) for rid, reg in sorted(self._index["regions"].items())
                if include_withdrawn or not reg["withdrawn"]]

    def region_versions(self, region_id: str) -> List[RegionRecord]:
        """All versions of one region, oldest first."""
        region = self._region(region_id)
        return [self._record(region_id, region, v + 1) for v in range(len(region["versions"]))]

    def load_region(self, region_id: str, version: Optional[int] = None
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixels of a region version (default: the latest), verified against their checksums.

        Returns:
            ``(crop uint8 (h, w, 3), corrected (h, w), predicted (h, w))``.

        Raises:
            KeyError: no such region or version.
            StoreError: a file is missing or damaged; the message names the region and the file.
        """
        region = self._region(region_id)
        n = len(region["versions"])
        version = n if version is None else int(version)
        if not 1 <= version <= n:
            raise KeyError(f"region {region_id} has versions 1..{n}, not {version}")
        entry = region["versions"][version - 1]
        what = f"region {region_id} v{version}"
        base = _io.inside(self.root, entry["path"], what)
        sums = entry.get("checksums") or {}
        crop, corrected, predicted = (_io.read_array_verified(base / name, sums.get(name), what)
                                      for name in ("crop", "corrected", "predicted"))
        return crop, corrected, predicted

    def withdraw(self, region_id: str, user: Optional[str] = None) -> RegionRecord:
        """Withdraw a region: kept on disk with its versions, excluded from training and validation
        (:meth:`reinstate` makes it count again). A region already withdrawn is left as it is.

        Args:
            region_id: e.g. ``"r0003"``.
            user: who withdraws it (default: the login name); recorded with the time in its history.

        Raises:
            KeyError: no such region.
            StoreError: the store could not be written; nothing was changed.
        """
        return self._set_withdrawn(region_id, True, user)

    def reinstate(self, region_id: str, user: Optional[str] = None) -> RegionRecord:
        """Make a withdrawn region count again for training and validation (un-withdraw it), as it was:
        its versions and held-out mark are unchanged, and its history keeps the withdrawal and adds this
        (who, when). A region that is not withdrawn is left as it is.

        A region of a whole slide's window is reinstated in the project only: its correction is not written
        back into the slide's prediction store (the slide panel undid it there when it was withdrawn).

        Args:
            region_id: e.g. ``"r0003"``.
            user: who reinstates it (default: the login name).

        Raises:
            KeyError: no such region.
            ValueError: a live region of the same image and box was accepted since it was withdrawn (two live
                regions of one box: withdraw that one first).
            StoreError: the store could not be written; nothing was changed.
        """
        return self._set_withdrawn(region_id, False, user)

    def region_history(self, region_id: str) -> List[Dict[str, str]]:
        """What happened to a region, oldest first: each version's acceptance (``event`` ``"accepted v2"``),
        and each withdrawal and reinstatement, as ``{"event", "at" (ISO-8601 UTC), "by" (user)}``.

        Raises:
            KeyError: no such region.
        """
        region = self._region(region_id)
        accepted = [{"event": f"accepted v{int(v['version'])}", "at": str(v.get("created", "")),
                     "by": str(v.get("user", ""))} for v in region["versions"]]
        return sorted(accepted + _history(region), key=lambda e: e["at"])

    def _set_withdrawn(self, region_id: str, withdrawn: bool, user: Optional[str]) -> RegionRecord:
        """Withdraw (``withdrawn``) or reinstate a region: the region folder's record first, then the index
        (atomic rename); a failed index write puts the folder's record back."""
        what = f"{'withdrawing' if withdrawn else 'reinstating'} region {region_id}"
        with self._mutation() as index:
            if region_id not in index["regions"]:
                raise KeyError(f"no region {region_id!r} in the store")
            region = index["regions"][region_id]
            if bool(region["withdrawn"]) == withdrawn:
                return self._record(region_id, region)
            if not withdrawn:
                twin = next((r for r, reg in sorted(index["regions"].items())
                             if r != region_id and not reg["withdrawn"] and reg["image_hash"] == region["image_hash"]
                             and list(reg["bbox"]) == list(region["bbox"])), None)
                if twin is not None:
                    raise ValueError(f"region {twin} was accepted over the same box of the same image after "
                                     f"{region_id} was withdrawn: withdraw {twin} first to reinstate {region_id}")
            now, who = _now(), user or _default_user()
            event = "withdrawn" if withdrawn else "reinstated"
            mark: Dict[str, Any] = {"withdrawn": withdrawn, f"{event}_at": now, f"{event}_by": who,
                                    "history": _history(region) + [{"event": event, "at": now, "by": who}]}
            folder = _io.inside(self.root, f"regions/{region_id}", what)
            try:
                before = _io.read_attributes(folder)
            except (OSError, ValueError):
                before = None
            # The region folder records it too, so an older index restored from a backup is repaired
            # (recovery merges the folder's record when it is newer than the index's).
            try:
                _io.update_attributes(folder, mark)
                marked = True
            except (OSError, ValueError) as exc:
                if not withdrawn:  # the folder would still say withdrawn: recovery would withdraw it again
                    if isinstance(exc, OSError):
                        raise _disk_error(exc, what) from exc
                    raise StoreError(f"{what}: its folder's record cannot be read ({exc})") from exc
                marked = False
                logger.warning("region %s: could not record the withdrawal in its folder (%s)", region_id, exc)
            region.update(mark)
            try:
                self._commit(index)
            except OSError as exc:
                if marked and before is not None:
                    with contextlib.suppress(OSError, ValueError):
                        _io.update_attributes(folder, {k: before.get(k, False if k == "withdrawn" else None)
                                                       for k in mark})
                raise _disk_error(exc, what) from exc
        logger.info("%s region %s", event, region_id)
        return self._record(region_id, region)

    def training_regions(self) -> List[RegionRecord]:
        """Live regions that are not held out (latest version each)."""
        return [r for r in self.regions() if not r.holdout]

    def holdout_regions(self) -> List[RegionRecord]:
        """Live held-out regions (latest version each), for validating a retrained model."""
        return [r for r in self.regions() if r.holdout]

    # ------------------------------------------------------------------ unlabelled images
    def add_unlabelled_image(self, image: Any, source_path: Optional[PathLike] = None) -> str:
        """Keep a whole source image as unlabelled tissue for retraining; returns its hash.

        Raises:
            ValueError: not uint8 RGB, or larger than :data:`MAX_FULL_IMAGE_PIXELS` (accept
                regions of a whole slide instead: their surroundings are kept).
        """
        shape = tuple(int(s) for s in image.shape)
        if len(shape) != 3 or shape[2] != 3 or np.dtype(image.dtype) != np.uint8:
            raise ValueError(f"image must be uint8 RGB (H, W, 3), got shape {shape} dtype {image.dtype}")
        if shape[0] * shape[1] > MAX_FULL_IMAGE_PIXELS:
            raise ValueError(f"image of {shape[0]}x{shape[1]} is larger than {MAX_FULL_IMAGE_PIXELS} pixels; "
                             f"the store keeps the tissue around accepted regions of such images instead")
        digest = hash_image(image)
        if digest in self._index["images"]:
            return digest
        data = np.ascontiguousarray(np.asarray(image))
        entry = {"hash": digest, "full": True, "offset": [0, 0], "source_shape": list(shape),
                 "shape": list(shape), "path": f"images/{digest}",
                 "source_path": None if source_path is None else str(source_path),
                 "added": _now(), "checksum": _io.checksum(data)}
        with _io.all_or_nothing("adding an unlabelled image") as (placed, staged):
            # written and synced before the lock is taken: other writers wait only for the rename
            tmp = self._staging_dir(staged)
            _write_array(tmp, data, {"napari_cdma_image": entry})
            _io.fsync_tree(tmp)
            with self._mutation() as index:
                if digest in index["images"]:  # another writer kept it meanwhile
                    _io.undo([], staged)
                    return digest
                index["images"][digest] = entry
                self._apply(index, [(tmp, entry["path"])], placed, f"adding image {digest[:12]}")
        return digest

    def unlabelled_images(self, skip_damaged: bool = False) -> List[np.ndarray]:
        """All stored source images (whole images and context crops of large ones), uint8 (H, W, 3).

        Args:
            skip_damaged: log and leave out an image whose files are missing or damaged instead of
                raising.

        Raises:
            StoreError: an image is missing or damaged (unless ``skip_damaged``); the message names it.
        """
        return [image for _, image, _ in self.stored_images(skip_damaged)]

    def stored_images(self, skip_damaged: bool = False) -> List[Tuple[str, np.ndarray, bool]]:
        """``(hash, image, whole)`` of every stored source image, read once: the whole images (``whole`` True, as
        :meth:`whole_images` lists them) and the context crops of large ones (as :meth:`unlabelled_images`)."""
        return self._read_images(skip_damaged, whole_only=False)

    def slide_images(self) -> set:
        """Hashes of the stored images that came from whole slides and were never used as ordinary images.

        An image is a slide's when its image record or one of its region versions (withdrawn ones
        included) is marked ``source_kind == "slide"`` (:data:`SLIDE_SOURCE`), or, in a store written
        before that mark, when a region version of it names no layer and its source path is a
        whole-slide file (:data:`SLIDE_SUFFIXES`). The same tissue also opened as an image (a region
        version that names its layer, or a stored prediction, which only image layers save) is
        not a slide's only.
        """
        slide, ordinary = set(), set()
        for entry in self._index["images"].values():
            if entry.get("source_kind") == SLIDE_SOURCE:
                slide.add(str(entry.get("hash")))
        for region in self._index["regions"].values():
            digest = str(region["image_hash"])
            for entry in region["versions"]:
                kind = entry.get("source_kind")
                if kind == SLIDE_SOURCE or (kind is None and not entry.get("image_name")
                                            and _is_slide_file(entry.get("source_path"))):
                    slide.add(digest)
                elif entry.get("image_name"):
                    ordinary.add(digest)
        ordinary |= set((self._index.get("predictions") or {}).keys())
        return slide - ordinary

    def whole_images(self, skip_damaged: bool = False) -> List[Tuple[str, np.ndarray]]:
        """``(hash, image)`` of every stored whole source image (not the context crops of large ones).

        The hash is the one regions record (:func:`hash_image`), read from the index, not recomputed.
        """
        return [(digest, image) for digest, image, _ in self._read_images(skip_damaged, whole_only=True)]

    def list_whole_images(self) -> List[StoredImage]:
        """Every stored whole source image (as :meth:`whole_images` lists them) by hash and shape, read
        from the index and each array's metadata: no pixel is read or decoded.

        An image whose metadata is unreadable, whose shape is not the one the index records, or one
        of whose chunk files is missing is listed as ``damaged`` (:meth:`whole_images` with
        ``skip_damaged`` leaves it out); damaged chunk bytes are found only when it is read.
        """
        out = []
        for key, entry in sorted(self._index["images"].items()):
            if not entry.get("full", False):
                continue
            what = f"stored image {key[:12]}"
            digest = str(entry.get("hash", key))
            try:
                shape = _io.array_shape(_io.inside(self.root, entry["path"], what), what)
                if "shape" in entry and list(shape) != list(entry["shape"]):
                    raise StoreError(f"{what}: its array is {shape}, the index records {tuple(entry['shape'])}")
            except StoreError as exc:
                out.append(StoredImage(key, digest, (), str(exc)))
            else:
                out.append(StoredImage(key, digest, shape))
        return out

    def load_image(self, key: str) -> np.ndarray:
        """The pixels of the stored image ``key``, verified against their checksum.

        Raises:
            KeyError: no such image.
            StoreError: its files are missing or damaged; the message names the image and the file.
        """
        try:
            entry = self._index["images"][key]
        except KeyError:
            raise KeyError(f"no image {key!r} in the store") from None
        what = f"stored image {key[:12]}"
        return _io.read_array_verified(_io.inside(self.root, entry["path"], what), entry.get("checksum"), what)

    def _read_images(self, skip_damaged: bool, whole_only: bool) -> List[Tuple[str, np.ndarray, bool]]:
        out = []
        for key, entry in sorted(self._index["images"].items()):
            whole = bool(entry.get("full", False))
            if whole_only and not whole:
                continue
            try:
                out.append((str(entry.get("hash", key)), self.load_image(key), whole))
            except StoreError as exc:
                if not skip_damaged:
                    raise
                logger.warning("skipping a damaged image: %s", exc)
        return out

    # ------------------------------------------------------------------ latest predictions
    def save_prediction(self, image_hash: str, labels: Any, uncertainty: Any, *, model_version: str,
                        model_sha256: str = "", model_label: str = "", image_name: Optional[str] = None,
                        source_path: Optional[PathLike] = None,
                        ranked: Sequence[Tuple[float, Sequence[int]]] = (),
                        display_range: Sequence[float] = (0.0, 1.0), pasted: bool = True,
                        edited: Any = None, disagreement: Any = None,
                        covered: Sequence[Tuple[str, int]] = (), created: Optional[str] = None) -> PredictionRecord:
        """Keep ``labels`` and ``uncertainty`` as the latest prediction of an image, replacing the previous one.

        Args:
            image_hash: :func:`hash_image` of the image predicted.
            labels: the model's gland labels (H, W), one id per gland (0 = background).
            uncertainty: its uncertainty map (H, W), kept as float16.
            model_version: the store version that made it ("" for a checkpoint file outside the store).
            model_sha256: ``"sha256:<hex>"`` of that checkpoint file ("" if unknown).
            model_label: how the dock named the model (default: ``model_version``).
            image_name, source_path: the image's layer name and file, when known.
            ranked: its review regions ``[(score, (y0, x0, y1, x1))]``.
            display_range: the uncertainty map's contrast limits.
            pasted: whether its layer showed the store's accepted corrections.
            edited: the prediction layer as the user edited it (H, W), kept with the prediction
                (edits not accepted: shown again on reopen, never used for training); None: none.
            disagreement: the branches' disagreement map (H, W), kept as float16 (shown again on reopen as
                the hidden disagreement layer); None: not kept.
            covered: with ``edited``, the accepted regions ``(region_id, version)`` that ``edited`` holds.
            created: when the model made the prediction (ISO-8601 UTC), kept when the same prediction is saved
                again with edits (walk 20: a reopen said "predicted ... at" the time the edits were kept); default
                now. The time of this save is kept as ``saved``.

        Returns:
            The record of the saved prediction.

        Raises:
            ValueError: bad hash, shapes or labels, or an image of more than
                :data:`MAX_FULL_IMAGE_PIXELS` pixels (the store does not keep such images whole).
            StoreError: the store could not be written; the previous latest prediction is kept.
        """
        if not _io.IMAGE_HASH.fullmatch(str(image_hash)):
            raise ValueError(f"image_hash must be 64 hex digits, got {image_hash!r}")
        shape = tuple(int(s) for s in np.shape(labels))
        if len(shape) != 2:
            raise ValueError(f"labels must be (H, W), got shape {shape}")
        if shape[0] * shape[1] > MAX_FULL_IMAGE_PIXELS:
            raise ValueError(f"a prediction of {shape[0]}x{shape[1]} is larger than {MAX_FULL_IMAGE_PIXELS} "
                             "pixels; the store keeps the predictions of whole images only")
        labels_arr, labels_dtype = _label_dtype(labels, shape, "prediction")
        unc = np.asarray(uncertainty)
        if unc.shape != shape:
            raise ValueError(f"uncertainty has shape {unc.shape}, the labels {shape}")
        unc = np.ascontiguousarray(unc, dtype=np.float16)
        arrays = {"labels": (labels_arr, labels_dtype), "uncertainty": (unc, unc.dtype)}
        if edited is not None:
            arrays["edited"] = _label_dtype(edited, shape, "edited")
        if disagreement is not None:
            jsd = np.asarray(disagreement)
            if jsd.shape != shape:
                raise ValueError(f"disagreement has shape {jsd.shape}, the labels {shape}")
            jsd = np.ascontiguousarray(jsd, dtype=np.float16)
            arrays["disagreement"] = (jsd, jsd.dtype)
        lo, hi = (float(v) for v in display_range)
        regions = [[float(score), [int(v) for v in box]] for score, box in ranked]
        digest = str(image_hash)
        sums = {k: _io.checksum(a, dt) for k, (a, dt) in arrays.items()}  # cast a band at a time
        what = f"saving the latest prediction of image {digest[:12]}"
        now = _now()
        with _io.all_or_nothing(what) as (placed, staged):
            # the arrays are written and synced before the lock is taken: other writers (and the
            # GUI thread's reads of the index) wait only for the rename and the index
            tmp = self._staging_dir(staged)
            _write_group(tmp)
            for key, (arr, dt) in arrays.items():
                _write_array(tmp / key, arr, dtype=dt)
            _io.fsync_tree(tmp)
            with self._mutation() as index:
                predictions = index.setdefault("predictions", {})
                old = predictions.get(digest)
                number = int(old["number"]) + 1 if old else 1
                rel = f"predictions/{digest}_p{number:04d}"
                entry = {"image_hash": digest, "path": rel, "number": number, "shape": list(shape),
                         "model_version": str(model_version), "model_sha256": str(model_sha256 or ""),
                         "model_label": str(model_label or model_version), "created": str(created or now),
                         "saved": now,
                         "image_name": None if image_name is None else str(image_name),
                         "source_path": None if source_path is None else str(source_path),
                         "ranked": regions, "display_range": [lo, hi], "pasted": bool(pasted),
                         "edited": edited is not None, "disagreement": disagreement is not None,
                         "covered": [[str(r), int(v)] for r, v in covered] if edited is not None else [],
                         "checksums": sums}
                predictions[digest] = entry
                _io.update_attributes(tmp, {"napari_cdma_prediction": entry})
                self._apply(index, [(tmp, rel)], placed, what)
        if old and old.get("path") != rel:  # committed: the previous latest is no longer named
            with contextlib.suppress(StoreError):
                _remove_path(_io.inside(self.root, str(old["path"]), what))
        logger.info("saved the latest prediction of image %s (%s, model %s)", digest[:12], rel, model_version)
        return self._prediction_record(entry)

    @staticmethod
    def _prediction_record(entry: Dict[str, Any]) -> PredictionRecord:
        lo, hi = entry.get("display_range") or (0.0, 1.0)
        return PredictionRecord(
            image_hash=str(entry["image_hash"]), path=str(entry["path"]), number=int(entry["number"]),
            shape=tuple(int(v) for v in entry["shape"]), model_version=str(entry.get("model_version") or ""),
            model_sha256=str(entry.get("model_sha256") or ""), created=str(entry.get("created", "")),
            model_label=str(entry.get("model_label") or entry.get("model_version") or ""),
            image_name=entry.get("image_name"), source_path=entry.get("source_path"),
            ranked=[(float(score), tuple(int(v) for v in box)) for score, box in entry.get("ranked") or []],
            display_range=(float(lo), float(hi)), pasted=bool(entry.get("pasted", True)),
            edited=bool(entry.get("edited", False)), disagreement=bool(entry.get("disagreement", False)),
            covered=tuple((str(r), int(v)) for r, v in entry.get("covered") or []))

    def predictions(self) -> List[PredictionRecord]:
        """The latest prediction of every image that has one."""
        return [self._prediction_record(dict(e, image_hash=k))
                for k, e in sorted(self._index.get("predictions", {}).items())]

    def latest_prediction(self, image_hash: str) -> Optional[PredictionRecord]:
        """The latest prediction of an image, or None."""
        entry = self._index.get("predictions", {}).get(str(image_hash))
        return None if entry is None else self._prediction_record(dict(entry, image_hash=str(image_hash)))

    def load_prediction(self, image_hash: str) -> Tuple[np.ndarray, np.ndarray]:
        """Pixels of an image's latest prediction, verified against their checksums.

        Returns:
            ``(labels (H, W) uint8 or uint32, uncertainty (H, W) float16)``.

        Raises:
            KeyError: the image has no stored prediction.
            StoreError: a file is missing or damaged; the message names the image and the file.
        """
        entry = self._index.get("predictions", {}).get(str(image_hash))
        if entry is None:
            raise KeyError(f"no stored prediction of image {str(image_hash)[:12]}")
        what = f"latest prediction of image {str(image_hash)[:12]}"
        base = _io.inside(self.root, entry["path"], what)
        sums = entry.get("checksums") or {}
        labels, unc = (_io.read_array_verified(base / name, sums.get(name), what) for name in ("labels", "uncertainty"))
        if labels.shape != tuple(entry["shape"]) or unc.shape != labels.shape:
            raise StoreError(f"{what}: its arrays do not have the recorded shape {tuple(entry['shape'])}")
        return labels, unc

    def load_prediction_edits(self, image_hash: str) -> Optional[np.ndarray]:
        """The prediction layer as edited, kept with an image's latest prediction (None if none was kept).

        Raises:
            StoreError: its file is missing or damaged.
        """
        return self._prediction_extra(image_hash, "edited", "kept edits")

    def load_prediction_disagreement(self, image_hash: str) -> Optional[np.ndarray]:
        """The branches' disagreement map (float16), kept with an image's latest prediction (None if none was
        kept: a prediction saved without it, or by an older version of the plugin).

        Raises:
            StoreError: its file is missing or damaged.
        """
        return self._prediction_extra(image_hash, "disagreement", "branch disagreement")

    def _prediction_extra(self, image_hash: str, key: str, label: str) -> Optional[np.ndarray]:
        """The optional array ``key`` of an image's latest prediction, verified; None if it was not kept."""
        entry = self._index.get("predictions", {}).get(str(image_hash))
        if entry is None or not entry.get(key):
            return None
        what = f"{label} of image {str(image_hash)[:12]}"
        data = _io.read_array_verified(_io.inside(self.root, entry["path"], what) / key,
                                       (entry.get("checksums") or {}).get(key), what)
        if data.shape != tuple(entry["shape"]):
            raise StoreError(f"{what}: the array does not have the recorded shape {tuple(entry['shape'])}")
        return data

    def model_checksum(self, version: str) -> str:
        """``"sha256:<hex>"`` of a model version's checkpoint file ("" for a version the store does not
        hold): the recorded one for a stored version, the file's own for the bundled model."""
        if version == BUNDLED:
            from src_model.checkpoint import bundled_model_path

            try:
                return _cached_file_sha256(Path(bundled_model_path()))
            except OSError:
                return ""
        return next((str(m.get("sha256") or "") for m in self._index["models"] if m["version"] == version), "")

    # ------------------------------------------------------------------ models
    def add_model(self, checkpoint_path: PathLike, *, parent: Optional[str],
                  metrics: Optional[Dict[str, Any]] = None, note: str = "",
                  promoted: bool = False) -> ModelRecord:
        """Copy a checkpoint into the store as the next model version.

        The copy is loaded first the way the plugin loads models (weights only, the model built from
        the checkpoint's own config, weights loaded strictly), so a file that cannot be loaded never
        becomes a model version, let alone the current one.

        Args:
            checkpoint_path: a napari-cdma checkpoint file.
            parent: the version it was trained from (``"bundled"`` for the shipped model).
            metrics: numbers to keep with it (holdout Dice of old and new model, ...).
            note: free text.
            promoted: make it the current model.

        Raises:
            KeyError: ``parent`` is not in the store.
            StoreError: the file is missing or not a loadable napari-cdma checkpoint (the message
                says why), or the store could not be written; nothing was changed.
        """
        src = Path(checkpoint_path)
        if not src.is_file():
            raise StoreError(f"{src}: no such checkpoint file; no model was added")
        if parent is not None and parent != BUNDLED and not any(m["version"] == parent for m in self._index["models"]):
            self.refresh()
            if not any(m["version"] == parent for m in self._index["models"]):
                raise KeyError(f"parent model {parent!r} is not in the store")
        with _io.all_or_nothing(f"adding the model {src.name}") as (placed, staged):
            tmp = self._staging_dir(staged)
            _io.copy_file_synced(src, tmp)
            _check_checkpoint(tmp, src)  # the copy that goes in, not the file that may change
            digest = _io.file_sha256(tmp)
            with self._mutation() as index:
                number = 1 + max((int(m["version"][1:]) for m in index["models"]), default=0)
                version = f"v{number:04d}"
                rel = f"models/{version}.pt"
                created = _now()
                record = ModelRecord(version=version, path=rel, parent=parent, created=created,
                                     metrics=dict(metrics or {}), promoted=bool(promoted), note=note,
                                     sha256=digest)
                index["models"].append(asdict(record))
                if promoted:
                    index["current_model"] = version
                    index["current_history"].append({"version": version, "at": created, "user": _default_user()})
                side = self._staging_dir(staged)
                side.write_text(json.dumps({"napari_cdma_model": asdict(record)}, indent=1, sort_keys=True),
                                encoding="utf-8")
                self._apply(index, [(tmp, rel), (side, f"models/{version}.json")], placed,
                            f"adding model {version}")
        logger.info("added model %s (parent %s, promoted=%s)", version, parent, promoted)
        return record

    def models(self) -> List[ModelRecord]:
        """All model versions in the store, oldest first (the bundled model is not listed)."""
        return [ModelRecord(**m) for m in self._index["models"]]

    @property
    def current_model_version(self) -> str:
        """The current model version, ``"bundled"`` for the shipped model."""
        return str(self._index["current_model"])

    def set_current(self, version: str) -> None:
        """Make ``version`` (or ``"bundled"``) the current model: promote by hand or roll back."""
        with self._mutation() as index:
            if version != BUNDLED and not any(m["version"] == version for m in index["models"]):
                raise KeyError(f"no model {version!r} in the store; versions: "
                               f"{', '.join([BUNDLED] + [m['version'] for m in index['models']])}")
            index["current_model"] = version
            index["current_history"].append({"version": version, "at": _now(), "user": _default_user()})
            try:
                self._commit(index)
            except OSError as exc:
                raise _disk_error(exc, f"making {version} the current model") from exc
        logger.info("current model is now %s", version)

    def model_path(self, version: str) -> Path:
        """Checkpoint path of a model version (``"bundled"``: the model shipped with the package)."""
        if version == BUNDLED:
            from src_model.checkpoint import bundled_model_path

            return bundled_model_path()
        for m in self._index["models"]:
            if m["version"] == version:
                path = _io.inside(self.root, m["path"], f"model {version}")
                self._verify_model(version, path, m.get("sha256"))
                return path
        raise KeyError(f"no model {version!r} in the store")

    def _verify_model(self, version: str, path: Path, digest: Optional[str]) -> None:
        """Raise StoreError if the model file is missing or differs from its recorded checksum."""
        try:
            st = path.stat()
        except OSError as exc:
            raise StoreError(f"model {version}: {path} is missing or unreadable ({_io.one_line(exc)})") from exc
        key = (str(path), st.st_size, st.st_mtime_ns, digest)
        if not digest or key in self._verified_models:
            return
        try:
            ok = _io.file_sha256(path) == digest
        except OSError as exc:
            raise StoreError(f"model {version}: {path} is unreadable ({_io.one_line(exc)})") from exc
        if not ok:
            raise StoreError(f"model {version}: {path} does not match its recorded checksum (damaged file); restore "
                             f"it from a backup, or make another version current (the dock's Model versions panel: "
                             f"Roll back to selected)")
        self._verified_models.add(key)

    def current_model_path(self) -> Path:
        """Checkpoint path of the current model."""
        return self.model_path(self.current_model_version)
