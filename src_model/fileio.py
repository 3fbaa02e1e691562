"""Crash-safe file writes: a temp file next to the target, fsync, rename, fsync the folder.

A crash, a kill or a full disk at any point leaves either the old file or the new one at the
target path, never a partial file; after the function returns, the new file survives a power
loss (where the file system honours fsync). Used for checkpoints and the project store's index.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Union

PathLike = Union[str, os.PathLike]


def fsync_path(path: PathLike) -> None:
    """fsync a file or a directory (a directory: so that a rename inside it survives a crash).

    Best effort: where the platform cannot open or fsync it (a directory on Windows), nothing happens.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported (Windows), or gone
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


fsync_dir = fsync_path  # the name callers use after a rename


def atomic_write_bytes(path: PathLike, writer: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``writer(fileobj)`` on a temp file next to ``path``, then put it at ``path`` atomically.

    The temp file is flushed and fsynced, renamed over ``path`` and the folder is fsynced. The
    folder is created if needed; the file gets the usual mode (0666 less the umask). If
    ``writer`` raises (a full disk, a bug), the temp file is removed and any earlier file at
    ``path`` is left untouched.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not exc.filename:  # a write that failed (a full disk) names no file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_json(path: PathLike, data: Any) -> Path:
    """Write ``data`` as JSON (indent 1, sorted keys, UTF-8) with :func:`atomic_write_bytes`."""
    text = json.dumps(data, indent=1, sort_keys=True)
    return atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


__all__ = ["fsync_path", "fsync_dir", "atomic_write_bytes", "atomic_write_json"]
