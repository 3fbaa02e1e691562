"""Self-describing checkpoints: written atomically, loaded without executing code.

A checkpoint is a dict saved with ``torch.save`` holding only tensors and plain Python values:
``format`` ("napari-cdma-checkpoint"), ``format_version``, ``model`` (architecture name),
``config`` (MTNetConfig as a dict), ``state_dict``, and optionally ``optimizer``, ``step``,
``provenance`` (who/what/when trained it) and ``extra``. Loading uses ``weights_only=True``.

Importing this module does not import torch: :data:`BUNDLED_NAME`, :func:`bundled_model_path`
and :class:`CheckpointError` are usable on napari's GUI thread; the functions that read or
write checkpoints import torch when called.
"""
from __future__ import annotations

import datetime as _dt
import os
import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Union

from .fileio import atomic_write_bytes

if TYPE_CHECKING:
    import torch

    from .model import MTNet

#: Name of the model shipped inside the package, wherever a model is chosen by name (the CLI's
#: ``--init``, the project store's model versions, the plugin's model list).
BUNDLED_NAME = "bundled"
FORMAT = "napari-cdma-checkpoint"
FORMAT_VERSION = 1
MODEL_NAME = "MTNet"
PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A file is not a usable napari-cdma checkpoint; the message names the file and the reason."""


def bundled_model_path() -> Path:
    """Path of the default model shipped inside the package."""
    return Path(__file__).resolve().parent / "bundled" / "cdma_lite_glas.pt"


def save_checkpoint(path: PathLike, model: "MTNet", *, optimizer: Optional["torch.optim.Optimizer"] = None,
                    step: int = 0, provenance: Optional[Dict[str, Any]] = None,
                    extra: Optional[Dict[str, Any]] = None, overwrite: bool = True) -> Path:
    """Write a checkpoint atomically (:func:`src_model.fileio.atomic_write_bytes`).

    Args:
        overwrite: if False and ``path`` exists, raise ``FileExistsError`` instead of replacing it.
    """
    import torch

    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite a checkpoint")
    prov = {"saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "torch": str(torch.__version__)}
    prov.update(provenance or {})
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": MODEL_NAME,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "step": int(step),
        "provenance": prov,
        "extra": extra or {},
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    return atomic_write_bytes(path, lambda f: torch.save(payload, f))


def read_checkpoint(path: PathLike, map_location: str = "cpu") -> Dict[str, Any]:
    """Read and validate a checkpoint dict (no code from the file is executed).

    Raises:
        CheckpointError: missing, truncated, not a torch file, unsafe content, foreign or newer format.
    """
    import torch
    from torch.torch_version import TorchVersion

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        # TorchVersion (a str subclass) is allowed so files that stored torch.__version__ load.
        with torch.serialization.safe_globals([TorchVersion]):
            data = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {reason[:200]})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a napari-cdma checkpoint (top level is {type(data).__name__})")
    if data.get("format") != FORMAT:
        hint = ""
        if any(isinstance(k, str) and k.startswith(("decoder1.", "stage1.")) for k in data):
            hint = "; it looks like an official CDMA state_dict: convert it with `cdma import-official`"
        raise CheckpointError(f"{path}: not a napari-cdma checkpoint{hint}")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version} is newer than this napari-cdma "
                              f"supports ({FORMAT_VERSION}); upgrade napari-cdma")
    if data.get("model") != MODEL_NAME or "state_dict" not in data or "config" not in data:
        raise CheckpointError(f"{path}: checkpoint is missing its model name, config or weights")
    return data


def model_from_checkpoint_dict(data: Dict[str, Any], source: str = "checkpoint") -> "MTNet":
    """Build the model of a checkpoint dict (from :func:`read_checkpoint`) and load its weights."""
    from .config import MTNetConfig
    from .model import MTNet

    try:
        cfg = MTNetConfig.from_dict(data["config"])
        model = MTNet(cfg)
        model.load_state_dict(data["state_dict"], strict=True)
    except (ValueError, TypeError, RuntimeError, KeyError) as exc:
        reason = str(exc).splitlines()[0][:200]
        raise CheckpointError(f"{source}: weights do not fit the stored config ({reason})") from exc
    return model


def load_model(path: Optional[PathLike] = None, map_location: str = "cpu") -> "MTNet":
    """Load the model of a checkpoint (default: the bundled one), in eval mode on CPU."""
    path = bundled_model_path() if path is None else Path(path)
    if not path.exists() and path == bundled_model_path():
        raise CheckpointError(f"{path}: the bundled model is missing from this installation")
    model = model_from_checkpoint_dict(read_checkpoint(path, map_location), str(path))
    model.checkpoint_path = str(path)
    return model.eval()
