"""Low-level I/O of the project store: atomic files, zarr arrays, checksums, the lock, the index,
staging, the write-ahead intent and quarantine.

Nothing here knows about regions or models; :mod:`napari_cdma.project.store` composes these into its
mutations and its recovery. The crash-safety rules they implement are described there.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

# Re-exported: the engine's crash-safe writes (temp file, fsync, rename, fsync of the folder).
from src_model.fileio import atomic_write_json, fsync_dir, fsync_path

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
INTENT_NAME = "intent.json"
QUARANTINE = "quarantine"
STALE_STAGING_S = 3600.0
CHUNK = 1024


class StoreError(RuntimeError):
    """The store cannot be opened or written; the message says why and what is still safe."""


class StoreVersionError(StoreError):
    """The store was written by a newer napari-cdma than this one."""


class StoreReadOnlyError(StoreError):
    """The store is on a read-only folder or file system: it can be read, not changed."""


# All are part of napari_cdma.project.store's public API; they live here so the helpers can raise them.
StoreError.__module__ = StoreVersionError.__module__ = StoreReadOnlyError.__module__ = "napari_cdma.project.store"


READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when empty), at most ``limit`` chars."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:limit]


def disk_error(exc: OSError, what: str) -> StoreError:
    """A :class:`StoreError` for a failed write, saying whether the disk is full or the store read-only."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(f"disk full while {what}; nothing was changed in the store, free some space "
                          f"and try again ({one_line(exc)})")
    if exc.errno in READ_ONLY_ERRNOS:
        return StoreReadOnlyError(f"the store is read-only: cannot write while {what}; nothing was changed "
                          f"({one_line(exc)})")
    return StoreError(f"could not write to the store while {what}; nothing was changed ({one_line(exc)})")


# ---------------------------------------------------------------------------- names and paths
REGION_ID = re.compile(r"^r\d{4,9}$")
VERSION_DIR = re.compile(r"^v(\d{4,9})$")
MODEL_VERSION = re.compile(r"^v\d{4,9}$")
IMAGE_KEY = re.compile(r"^[0-9a-f]{64}(_\d{1,9}){0,4}$")
#: The relative paths a mutation may place (and an intent may name).
PLACEABLE = re.compile(r"^(regions/r\d{4,9}(/v\d{4,9})?|images/[0-9a-f]{64}(_\d{1,9}){0,4}|"
                       r"models/v\d{4,9}\.(pt|json)|predictions/[0-9a-f]{64}_p\d{4,9})$")
#: Hash key of a stored image (or of its latest prediction).
IMAGE_HASH = re.compile(r"^[0-9a-f]{64}$")


def inside(root: Path, rel: str, what: str) -> Path:
    """``root / rel``, refusing a path that is absolute or resolves outside the store."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or "\\" in rel:
        raise StoreError(f"{what}: path {rel!r} is not a path inside the store; refusing to use it")
    path = root / rel
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real == real_root or os.path.commonpath([real_root, real]) != real_root:
        raise StoreError(f"{what}: path {rel!r} leaves the store {root}; refusing to use it")
    return path


# ---------------------------------------------------------------------------- checksums
def checksum(data: np.ndarray, dtype: Any = None) -> str:
    """``"sha256:<hex>"`` of an array's shape, dtype and bytes (C order); with ``dtype``, of the array
    cast to it, computed :data:`CHUNK` rows at a time (no whole-array copy)."""
    dtype = np.dtype(data.dtype if dtype is None else dtype)
    h = hashlib.sha256(f"{tuple(int(s) for s in data.shape)}|{dtype.str}|".encode())
    parts = [data] if dtype == data.dtype or not data.ndim else (
        data[r:r + CHUNK] for r in range(0, data.shape[0], CHUNK))
    for part in parts:
        part = np.ascontiguousarray(part, dtype=dtype)
        h.update(part.reshape(-1).view(np.uint8))  # the same bytes as tobytes(), without copying them
    return "sha256:" + h.hexdigest()


def file_sha256(path: Path) -> str:
    """``"sha256:<hex>"`` of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def fsync_tree(path: Path) -> None:
    """fsync every file and folder under ``path`` (a staged write) before it is named in an intent."""
    if path.is_file():
        paths = [path]
    else:
        paths = [Path(d) / f for d, _, files in os.walk(path) for f in files]
        paths += [Path(d) for d, _, _ in os.walk(path)]
    for p in paths:
        fsync_path(p)


def copy_file_synced(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` (a staging name) and fsync it before it is renamed into place."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())


def write_array(path: Path, data: np.ndarray, attributes: Optional[Dict[str, Any]] = None,
                dtype: Any = None) -> None:
    """Write ``data`` (cast to ``dtype`` if given, :data:`CHUNK` rows at a time) as a zarr v3 array at
    directory ``path`` (which must not exist yet).

    Every chunk is written, background ones included, so a chunk file that is missing later is
    damage (zarr would otherwise read it back silently as its fill value).
    """
    import zarr
    from zarr.storage import LocalStore

    chunks = tuple(min(int(s), CHUNK) if i < 2 else int(s) for i, s in enumerate(data.shape))
    dtype = np.dtype(data.dtype if dtype is None else dtype)
    arr = zarr.create_array(store=LocalStore(str(path)), shape=data.shape, dtype=dtype,
                            chunks=chunks, overwrite=False, attributes=attributes or {},
                            config={"write_empty_chunks": True})
    if dtype == data.dtype or not data.ndim:
        arr[...] = data
        return
    for r in range(0, data.shape[0], CHUNK):  # one band of chunks at a time: no whole-array cast
        arr[r:r + CHUNK] = data[r:r + CHUNK].astype(dtype)


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


def read_attributes(path: Path) -> Dict[str, Any]:
    """The attributes in the zarr v3 metadata (``zarr.json``) of the group or array at ``path``."""
    meta = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
    attrs = meta.get("attributes", {}) if isinstance(meta, dict) else {}
    if not isinstance(attrs, dict):
        raise ValueError(f"{path / 'zarr.json'}: attributes are not a mapping")
    return attrs


def update_attributes(path: Path, changes: Dict[str, Any]) -> None:
    """Merge ``changes`` into the attributes of the zarr group at ``path`` (atomic rewrite)."""
    meta = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
    meta.setdefault("attributes", {}).update(changes)
    atomic_write_json(path / "zarr.json", meta)


def _chunk_grid(shape: Tuple[int, ...], chunks: Tuple[int, ...]
                ) -> List[Tuple[Tuple[int, ...], Tuple[slice, ...]]]:
    import itertools

    ranges = [range(-(-s // c)) for s, c in zip(shape, chunks, strict=True)]
    return [(idx, tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, chunks, shape, strict=True)))
            for idx in itertools.product(*ranges)]


def _chunk_file(path: Path, idx: Tuple[int, ...]) -> Path:
    return path.joinpath("c", *(str(i) for i in idx))


def _missing_chunks(path: Path, grid: List[Tuple[Tuple[int, ...], Tuple[slice, ...]]]) -> List[Path]:
    return [_chunk_file(path, idx) for idx, _ in grid if not _chunk_file(path, idx).is_file()]


def array_shape(path: Path, what: str) -> Tuple[int, ...]:
    """The shape of the zarr v3 array at ``path``, from its metadata: no chunk is read or decoded.

    Raises:
        StoreError: ``zarr.json`` is missing or unreadable, or a chunk file is missing (its pixels
            would read back as background). A chunk whose bytes are damaged is found only by
            :func:`read_array_verified`.
    """
    try:
        meta = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
        shape = tuple(int(s) for s in meta["shape"])
        grid = _chunk_grid(shape, tuple(int(c) for c in meta["chunk_grid"]["configuration"]["chunk_shape"]))
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as exc:
        raise StoreError(f"{what}: {path / 'zarr.json'} is missing or unreadable ({one_line(exc)})") from exc
    missing = _missing_chunks(path, grid)
    if missing:
        raise StoreError(f"{what}: chunk file {missing[0]} is missing ({len(missing)} missing in {path})")
    return shape


def read_array_verified(path: Path, expected: Optional[str], what: str) -> np.ndarray:
    """Read the array at ``path`` whole and check it against its recorded checksum.

    Args:
        expected: the ``"sha256:..."`` recorded when it was written; None for data written before
            checksums were kept (only readability is checked then).
        what: names the data in errors, e.g. ``"region r0003 v1"``.

    Raises:
        StoreError: unreadable metadata, a missing or damaged chunk file, or a checksum mismatch;
            the message names ``what`` and the file.
    """
    import zarr
    from zarr.storage import LocalStore

    try:
        arr = zarr.open_array(store=LocalStore(str(path), read_only=True), mode="r")
    except Exception as exc:  # zarr raises several types for missing or garbled metadata
        raise StoreError(f"{what}: {path / 'zarr.json'} is missing or unreadable ({one_line(exc)})") from exc
    try:
        data = np.asarray(arr[...])
    except Exception as exc:  # a garbled chunk: name the file
        bad = None
        for idx, sl in _chunk_grid(arr.shape, arr.chunks):
            try:
                arr[sl]
            except Exception:  # this is the one
                bad = _chunk_file(path, idx)
                break
        raise StoreError(f"{what}: chunk file {bad or path} is damaged ({one_line(exc)})") from exc
    if expected is not None and checksum(data) != expected:
        missing = _missing_chunks(path, _chunk_grid(arr.shape, arr.chunks))
        if missing:
            raise StoreError(f"{what}: chunk file {missing[0]} is missing ({len(missing)} missing in "
                             f"{path}); its pixels would read back as background")
        raise StoreError(f"{what}: {path} does not match its recorded checksum (damaged data)")
    return data


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
    """Hold the store's exclusive lock file (POSIX ``flock``; a no-op elsewhere).

    Raises:
        StoreError: the lock file cannot be opened for writing (the message says "read-only" when
            the folder or file system is read-only).
    """
    fd = None
    if fcntl is not None:
        try:
            fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            if exc.errno in READ_ONLY_ERRNOS:
                raise StoreReadOnlyError(f"the store {root} is read-only: nothing can be added or changed "
                                 f"({one_line(exc)})") from exc
            raise StoreError(f"cannot take the lock of the store {root} ({one_line(exc)})") from exc
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def clean_staging(root: Path) -> None:
    """Remove staging leftovers of interrupted writes (old enough not to be in progress).

    Call it after :func:`read_intent` found no intent (or it was resolved): an intent's staged
    data is never removed here.
    """
    staging = root / STAGING
    if not staging.is_dir() or (root / INTENT_NAME).exists():
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


def place(root: Path, tmp: Path, target: Path) -> Path:
    """Rename a staged file or directory into place.

    A target that already exists is data the index does not name (the caller holds the lock and
    has just read the index): it is moved to quarantine, never overwritten, never a reason to fail.
    """
    if os.path.lexists(target):
        quarantine(root, target, "in the way of a new write and not named by the index")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(tmp, target)
    fsync_dir(target.parent)
    return target


def quarantine(root: Path, path: Path, reason: str) -> Path:
    """Move ``path`` (inside the store) to ``quarantine/<time>-<id>/<its relative path>``; logged."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
    dest = root / QUARANTINE / stamp / path.relative_to(root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(path, dest)
    logger.warning("moved %s to %s: %s", path.relative_to(root), dest.relative_to(root), reason)
    return dest


# ---------------------------------------------------------------------------- write-ahead intent
def write_intent(root: Path, intent: Dict[str, Any]) -> None:
    """Write ``intent.json`` atomically: what a mutation is about to place, and the index it commits."""
    atomic_write_json(root / INTENT_NAME, intent)


def read_intent(root: Path) -> Optional[Dict[str, Any]]:
    """The pending intent, or None. An unreadable one (never written by the store) is quarantined."""
    path = root / INTENT_NAME
    try:
        intent = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        quarantine(root, path, f"unreadable intent ({one_line(exc)})")
        return None
    if not isinstance(intent, dict):
        quarantine(root, path, "intent is not a JSON object")
        return None
    return intent


def drop_intent(root: Path) -> None:
    """Remove ``intent.json`` (the mutation it describes is committed or undone)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(root / INTENT_NAME)
    fsync_dir(root)


def remove_temp_files(root: Path) -> List[str]:
    """Remove temp files that an interrupted atomic write left next to the index or the intent."""
    removed = []
    for name in (INDEX_NAME, INTENT_NAME):
        for tmp in root.glob(f"{name}.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp.name)
    return removed


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
