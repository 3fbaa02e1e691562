"""The project store: accepted corrections and model versions, on disk, with provenance.

Layout of a store directory (a zarr v3 hierarchy plus a JSON index)::

    store/
      zarr.json                  root group; attributes: format, format_version, holdout_fraction
      index.json                 the metadata index (regions, versions, models, current model)
      regions/<rid>/v0001/       one group per accepted version: arrays crop, corrected, predicted
      images/<key>               source images kept as unlabelled tissue for retraining
      models/v0001.pt            model checkpoints
      .staging/                  temporary names; renamed into place when complete

``index.json`` is the source of truth for metadata: it is small, and written to a temporary file,
fsynced and renamed over the old one, so a crash or a full disk leaves the previous index whole.
Pixels are written under ``.staging/`` first and renamed into place only when complete; data that
the index does not name (an interrupted write) is never read.

Held-out regions: the n-th region accepted in the store (n = 0, 1, 2, ...) is held out when
``floor((n + 1) * f) > floor(n * f)``, with ``f`` the holdout fraction fixed at creation. For the
default ``f = 0.2`` that is every 5th region (n % 5 == 4), so any 10 regions hold out 2. The
decision is recorded at first acceptance and stays with the region across its versions.

Large sources: a source image of more than :data:`MAX_FULL_IMAGE_PIXELS` pixels (a whole slide)
is not copied whole; each accepted region stores instead the full-resolution crop of the source
around its box, widened by :data:`CONTEXT_MARGIN` pixels on each side, as unlabelled tissue.

Several processes may use one store (napari and the retraining worker): every mutation takes an
exclusive lock file (POSIX) and re-reads the index first.
"""
from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import fractions
import getpass
import hashlib
import logging
import math
import os
import shutil  # noqa: F401 - kept as store.shutil (tests patch shutil.copyfileobj through it)
import threading
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import store_io as _io
# Re-exported: the store's public names. The underscore aliases are the module globals that the
# store's write paths call (tests replace them to simulate a full disk).
from .store_io import INDEX_NAME, STAGING, STORE_FORMAT, STORE_FORMAT_VERSION, StoreError, StoreVersionError
from .store_io import atomic_write_json as _atomic_write_json
from .store_io import disk_error as _disk_error
from .store_io import read_array as _read_array
from .store_io import write_array as _write_array
from .store_io import write_group as _write_group

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
BBox = Tuple[int, int, int, int]

BUNDLED = "bundled"
MAX_FULL_IMAGE_PIXELS = 50_000_000
CONTEXT_MARGIN = 256
DEFAULT_HOLDOUT_FRACTION = 0.2


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
    """

    version: str
    path: str
    parent: Optional[str]
    created: str
    metrics: Dict[str, Any] = field(default_factory=dict)
    promoted: bool = False
    note: str = ""


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


def _label_array(mask: Any, shape: Tuple[int, int], name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"{name} mask has shape {mask.shape}, the region is {shape}")
    if mask.dtype == bool:
        return mask.astype(np.uint8)
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"{name} mask must hold integer labels (0 = background), got dtype {mask.dtype}")
    if mask.size and int(mask.min()) < 0:
        raise ValueError(f"{name} mask has negative labels")
    top = int(mask.max()) if mask.size else 0
    out_dtype = np.uint8 if top <= np.iinfo(np.uint8).max else np.uint32
    return mask.astype(out_dtype)


class ProjectStore:
    """Accepted corrections and model versions of one project, on disk.

    Open with :meth:`ProjectStore.open`. Reads use the index loaded at open (or at the last
    mutation or :meth:`refresh`); every mutation re-reads the index under a lock first.
    """

    def __init__(self, root: Path, index: Dict[str, Any]) -> None:
        self.root = root
        self._index = index
        self._lock = threading.RLock()

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

        Raises:
            StoreVersionError: the store was written by a newer napari-cdma.
            StoreError: the path is not a napari-cdma store, or it is absent and ``create`` is False.
        """
        root = Path(path).expanduser().resolve()
        if root.exists() and not root.is_dir():
            raise StoreError(f"{root} is a file, not a napari-cdma store directory")
        is_empty = not root.exists() or not any(root.iterdir())
        if is_empty:
            if not create:
                raise StoreError(f"{root}: no napari-cdma store here")
            return cls._create(root, holdout_fraction)
        index = _io.read_index(root)
        store = cls(root, index)
        _io.clean_staging(root)
        return store

    @classmethod
    def _create(cls, root: Path, holdout_fraction: float) -> "ProjectStore":
        if not 0.0 <= float(holdout_fraction) < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
        index = {
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
            self._index = _io.read_index(self.root)

    @contextlib.contextmanager
    def _mutation(self) -> Iterator[Dict[str, Any]]:
        """Lock, re-read the index, yield a copy to change; the caller commits with _commit."""
        with self._lock, _io.process_lock(self.root):
            self._index = _io.read_index(self.root)
            yield copy.deepcopy(self._index)

    def _commit(self, index: Dict[str, Any]) -> None:
        _atomic_write_json(self.root / INDEX_NAME, index)
        self._index = index

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
                      image_hash: Optional[str] = None) -> RegionRecord:
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

        Returns:
            The record of the stored version.

        Raises:
            ValueError: bad shapes, dtypes or box.
            StoreError: the store could not be written (e.g. disk full); nothing was changed.
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
                     "created": created, "source_path": src}
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
                image_entry.update({"path": f"images/{image_key}", "source_path": src,
                                    "shape": list(image_data.shape), "added": created})
                index["images"][image_key] = image_entry

            attrs = {"region_id": rid, "bbox": [y0, x0, y1, x1], "image_hash": digest, **entry}
            with _io.all_or_nothing(f"accepting region {rid}") as (placed, staged):
                if image_entry is not None:
                    tmp = self._staging_dir(staged)
                    _write_array(tmp, image_data)
                    placed.append(_io.place(tmp, self.root / image_entry["path"]))
                tmp = self._staging_dir(staged)
                if new_region:  # stage the region group with its first version inside
                    _write_group(tmp, {"region_id": rid})
                    vdir = tmp / f"v{version:04d}"
                else:
                    vdir = tmp
                _write_group(vdir, attrs)
                _write_array(vdir / "crop", crop)
                _write_array(vdir / "corrected", corrected_arr)
                _write_array(vdir / "predicted", predicted_arr)
                target = self.root / "regions" / rid
                placed.append(_io.place(tmp, target if new_region else self.root / rel))
                self._commit(index)
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
                            withdrawn=bool(region["withdrawn"]), n_versions=len(versions))

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
        """Pixels of a region version (default: the latest).

        Returns:
            ``(crop uint8 (h, w, 3), corrected (h, w), predicted (h, w))``.
        """
        region = self._region(region_id)
        n = len(region["versions"])
        version = n if version is None else int(version)
        if not 1 <= version <= n:
            raise KeyError(f"region {region_id} has versions 1..{n}, not {version}")
        base = self.root / region["versions"][version - 1]["path"]
        try:
            return _read_array(base / "crop"), _read_array(base / "corrected"), _read_array(base / "predicted")
        except (OSError, ValueError, KeyError) as exc:
            raise StoreError(f"{base}: region pixels are unreadable ({exc})") from exc

    def withdraw(self, region_id: str) -> RegionRecord:
        """Withdraw a region: kept on disk with its versions, excluded from training and validation."""
        with self._mutation() as index:
            if region_id not in index["regions"]:
                raise KeyError(f"no region {region_id!r} in the store")
            region = index["regions"][region_id]
            region["withdrawn"] = True
            region["withdrawn_at"] = _now()
            region["withdrawn_by"] = _default_user()
            try:
                self._commit(index)
            except OSError as exc:
                raise _disk_error(exc, f"withdrawing region {region_id}") from exc
        logger.info("withdrew region %s", region_id)
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
        with self._mutation() as index:
            if digest in index["images"]:
                return digest
            index["images"][digest] = {"hash": digest, "full": True, "offset": [0, 0], "source_shape": list(shape),
                                       "shape": list(shape), "path": f"images/{digest}",
                                       "source_path": None if source_path is None else str(source_path),
                                       "added": _now()}
            with _io.all_or_nothing("adding an unlabelled image") as (placed, staged):
                tmp = self._staging_dir(staged)
                _write_array(tmp, data)
                placed.append(_io.place(tmp, self.root / "images" / digest))
                self._commit(index)
        return digest

    def unlabelled_images(self) -> List[np.ndarray]:
        """All stored source images (whole images and context crops of large ones), uint8 (H, W, 3)."""
        out = []
        for key, entry in sorted(self._index["images"].items()):
            try:
                out.append(_read_array(self.root / entry["path"]))
            except (OSError, ValueError, KeyError) as exc:
                raise StoreError(f"{self.root / entry['path']}: stored image is unreadable ({exc})") from exc
        return out

    # ------------------------------------------------------------------ models
    def add_model(self, checkpoint_path: PathLike, *, parent: Optional[str],
                  metrics: Optional[Dict[str, Any]] = None, note: str = "",
                  promoted: bool = False) -> ModelRecord:
        """Copy a checkpoint into the store as the next model version.

        Args:
            checkpoint_path: a napari-cdma checkpoint file.
            parent: the version it was trained from (``"bundled"`` for the shipped model).
            metrics: numbers to keep with it (holdout Dice of old and new model, ...).
            note: free text.
            promoted: make it the current model.

        Raises:
            ValueError: the file is missing or not a torch checkpoint archive.
            StoreError: the store could not be written; nothing was changed.
        """
        src = Path(checkpoint_path)
        if not src.is_file() or not zipfile.is_zipfile(src):
            raise ValueError(f"{src} is not a checkpoint file")
        if parent is not None and parent != BUNDLED and not any(m["version"] == parent for m in self._index["models"]):
            self.refresh()
            if not any(m["version"] == parent for m in self._index["models"]):
                raise KeyError(f"parent model {parent!r} is not in the store")
        with self._mutation() as index:
            number = len(index["models"]) + 1
            version = f"v{number:04d}"
            rel = f"models/{version}.pt"
            created = _now()
            record = ModelRecord(version=version, path=rel, parent=parent, created=created,
                                 metrics=dict(metrics or {}), promoted=bool(promoted), note=note)
            index["models"].append(asdict(record))
            if promoted:
                index["current_model"] = version
                index["current_history"].append({"version": version, "at": created, "user": _default_user()})
            target = self.root / rel
            with _io.all_or_nothing(f"adding model {version}") as (placed, staged):
                tmp = self._staging_dir(staged)
                _io.copy_file_synced(src, tmp)
                if target.exists():
                    raise StoreError(f"{target} exists but the index does not name it; refusing to overwrite")
                target.parent.mkdir(exist_ok=True)
                os.replace(tmp, target)
                placed.append(target)
                self._commit(index)
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
            from src_model.checkpoint import bundled_model_path  # lazy: imports torch

            return bundled_model_path()
        for m in self._index["models"]:
            if m["version"] == version:
                return self.root / m["path"]
        raise KeyError(f"no model {version!r} in the store")

    def current_model_path(self) -> Path:
        """Checkpoint path of the current model."""
        return self.model_path(self.current_model_version)
