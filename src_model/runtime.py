"""Where the engine runs: the CPU cores and memory this process may use and the torch device to compute on.

Importing this module does not import torch (the plugin and the retraining job use
:func:`cpu_cores` on napari's GUI thread); :func:`resolve_device` imports it when called.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional, Union

if TYPE_CHECKING:
    import torch


def cpu_cores() -> int:
    """CPU cores this process may run on: its affinity set on Linux, else ``os.cpu_count()``.

    On a shared machine (a container, a job limited by ``taskset``) the affinity set is smaller
    than the machine's core count, and it is what thread counts must be sized to.
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 2


#: Who runs torch: inference in napari's process, a retraining job beside the viewer, or a headless command.
THREAD_ROLES = ("viewer", "retrain", "cli")


def torch_threads(role: str, cores: Optional[int] = None) -> int:
    """Torch intra-op threads for ``role``, sized so the viewer's inference and a retraining job never
    ask for more cores than there are between them.

    * ``"viewer"``: prediction in napari's process gets half the cores (at least 1): the GUI
      thread and a retraining job beside it need the rest. On a busy CPU more threads made
      the dock's prediction several times slower, not faster (issue 9).
    * ``"retrain"``: the background retraining job gets the other half, less one core for the
      GUI thread when there is one to spare (at least 1).
    * ``"cli"``: a headless command (``cdma predict``, ``cdma train``) alone on the machine gets every core.

    Args:
        role: one of :data:`THREAD_ROLES`.
        cores: cores to share (default: :func:`cpu_cores`).
    """
    n = cpu_cores() if cores is None else int(cores)
    n = max(1, n)
    if role == "viewer":
        return max(1, n // 2)
    if role == "retrain":
        return max(1, (n - 1) // 2)
    if role == "cli":
        return n
    raise ValueError(f"role must be one of {THREAD_ROLES}, got {role!r}")


def available_memory() -> Optional[int]:
    """Bytes of memory available to new allocations (``MemAvailable`` of /proc/meminfo), or None
    where the platform does not say (not Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def resolve_device(device: Union[str, "torch.device"] = "auto") -> "torch.device":
    """The torch device for ``device``: ``"auto"`` means CUDA if available, else CPU.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.

    Raises:
        ValueError: a CUDA device is asked for but CUDA is not available.
    """
    import torch

    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available")
    return dev


__all__ = ["THREAD_ROLES", "available_memory", "cpu_cores", "resolve_device", "torch_threads"]
