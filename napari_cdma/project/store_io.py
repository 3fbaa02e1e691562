"""Low-level I/O of the project store: atomic files, zarr arrays, the lock, the index, staging.

Nothing here knows about regions or models; :mod:`napari_cdma.project.store` composes these into its
mutations. The crash-safety rules they implement are described there.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

try:  # POSIX only; on other systems the in-process lock is all we have.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("napari_cdma.project.store")  # its messages are the store's

STORE_FORMAT = "napari-cdma-store"
STORE_FORMAT_VERSION = 1
INDEX_NAME = "index.json"
STAGING = ".staging"
LOCK_NAME = ".lock"
STALE_STAGING_S = 3600.0
CHUNK = 1024


class StoreError(RuntimeError):
    """The store cannot be opened or written; the message says why and what is still safe."""


class StoreVersionError(StoreError):
    """The store was written by a newer napari-cdma than this one."""


# Both are part of napari_cdma.project.store's public API; they live here so the helpers can raise them.
StoreError.__module__ = StoreVersionError.__module__ = "napari_cdma.project.store"


def disk_error(exc: OSError, what: str) -> StoreError:
    """A :class:`StoreError` for a failed write, saying whether the disk is full."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(f"disk full while {what}; nothing was changed in the store, free some space "
                          f"and try again ({exc})")
    return StoreError(f"could not write to the store while {what}; nothing was changed ({exc})")


def fsync_dir(path: Path) -> None:
    """fsync a directory so that a rename inside it survives a crash (where supported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_json(path: Path, data: Dict[str, Any]) -> None:
    """Write JSON to a temp file next to ``path``, fsync, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def copy_file_synced(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` (a staging name) and fsync it before it is renamed into place."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())


def write_array(path: Path, data: np.ndarray) -> None:
    """Write ``data`` as a zarr v3 array at directory ``path`` (which must not exist yet)."""
    import zarr
    from zarr.storage import LocalStore

    chunks = tuple(min(int(s), CHUNK) if i < 2 else int(s) for i, s in enumerate(data.shape))
    arr = zarr.create_array(store=LocalStore(str(path)), shape=data.shape, dtype=data.dtype,
                            chunks=chunks, overwrite=False)
    arr[...] = data


def write_group(path: Path, attributes: Optional[Dict[str, Any]] = None) -> None:
    """Write a zarr v3 group (with ``attributes``) at directory ``path``."""
    import zarr
    from zarr.storage import LocalStore

    zarr.open_group(store=LocalStore(str(path)), mode="w", attributes=attributes or {})


def read_array(path: Path) -> np.ndarray:
    """Read the zarr v3 array at directory ``path`` whole."""
    import zarr
    from zarr.storage import LocalStore

    return np.asarray(zarr.open_array(store=LocalStore(str(path), read_only=True), mode="r")[...])


def check_version(root: Path, version: Any) -> None:
    """Refuse a store format version this napari-cdma does not understand."""
    if not isinstance(version, int):
        raise StoreError(f"{root}: store format version {version!r} is not understood")
    if version > STORE_FORMAT_VERSION:
        raise StoreVersionError(
            f"{root} was written by a newer napari-cdma (store format {version}, this version "
            f"reads up to {STORE_FORMAT_VERSION}); upgrade napari-cdma to open it. The store was "
            f"not modified.")


def read_index(root: Path) -> Dict[str, Any]:
    """Check the store's zarr metadata and format version, then read ``index.json``."""
    meta_path = root / "zarr.json"
    if not meta_path.is_file():
        raise StoreError(f"{root} is not a napari-cdma store (no zarr.json) and is not empty; "
                         f"choose an empty or new folder")
    try:
        attrs = json.loads(meta_path.read_text(encoding="utf-8")).get("attributes", {})
    except (OSError, ValueError) as exc:
        raise StoreError(f"{root}: unreadable store metadata ({exc})") from exc
    if attrs.get("format") != STORE_FORMAT:
        raise StoreError(f"{root} is a zarr folder but not a napari-cdma store")
    check_version(root, attrs.get("format_version"))
    try:
        index = json.loads((root / INDEX_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise StoreError(f"{root}: the store index {INDEX_NAME} is missing") from exc
    except (OSError, ValueError) as exc:
        raise StoreError(f"{root}: the store index {INDEX_NAME} is unreadable ({exc})") from exc
    if index.get("format") != STORE_FORMAT:
        raise StoreError(f"{root}: {INDEX_NAME} is not a napari-cdma store index")
    check_version(root, index.get("format_version"))
    return index


@contextlib.contextmanager
def process_lock(root: Path) -> Iterator[None]:
    """Hold the store's exclusive lock file (POSIX ``flock``; a no-op elsewhere)."""
    lock_file = None
    if fcntl is not None:
        lock_file = open(root / LOCK_NAME, "a")  # noqa: SIM115 - closed below
        fcntl.flock(lock_file, fcntl.LOCK_EX)
    try:
        yield
    finally:
        if lock_file is not None:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
            lock_file.close()


def clean_staging(root: Path) -> None:
    """Remove staging leftovers of interrupted writes (old enough not to be in progress)."""
    staging = root / STAGING
    if not staging.is_dir():
        return
    for entry in staging.iterdir():
        try:
            if time.time() - entry.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        except OSError:
            logger.debug("could not remove staging leftover %s", entry, exc_info=True)


def staging_path(root: Path, staged: List[Path]) -> Path:
    """A fresh temporary name under .staging/, remembered in ``staged`` for clean-up."""
    staging = root / STAGING
    staging.mkdir(exist_ok=True)
    path = staging / uuid.uuid4().hex
    staged.append(path)
    return path


def place(tmp: Path, target: Path) -> Path:
    """Rename a staged directory into place (the target must not exist)."""
    if target.exists():
        raise StoreError(f"{target} exists but the index does not name it; refusing to overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(tmp, target)
    return target


@contextlib.contextmanager
def all_or_nothing(what: str) -> Iterator[Tuple[List[Path], List[Path]]]:
    """Yield the lists a mutation fills with what it stages and places; on any error remove it all.

    An OSError (a full disk, say) becomes a :class:`StoreError` naming ``what``; the index is
    committed last inside the block, so a failure leaves the store as it was.
    """
    placed: List[Path] = []
    staged: List[Path] = []
    try:
        yield placed, staged
    except OSError as exc:
        undo(placed, staged)
        raise disk_error(exc, what) from exc
    except BaseException:
        undo(placed, staged)
        raise


def undo(placed: List[Path], staged: List[Path]) -> None:
    """Remove what a failed mutation renamed into place and what it left in staging."""
    for path in reversed(placed + staged):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
