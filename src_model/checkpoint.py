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
from .runtime import available_memory

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

    def write(f) -> None:
        try:
            torch.save(payload, f)
        except RuntimeError as exc:  # torch turns a failed write (a full disk) into a RuntimeError: the OSError again
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, OSError):
                raise OSError(cause.errno, cause.strerror, str(path)) from exc
            raise

    return atomic_write_bytes(path, write)


#: Most bytes a checkpoint may declare (the uncompressed size of its zip entries): the paper preset
#: with AdamW state is about 0.52 GB.
MAX_CHECKPOINT_BYTES = 768 * 2**20
#: Entries larger than this must not be compressed much: torch writes them stored (uncompressed),
#: so a high ratio means the file was made to expand when loaded.
_COMPRESSED_ENTRY_LIMIT = 2**20
_MAX_RATIO = 20
#: Limits of the model config fields (the presets are far inside them): a config beyond them is
#: refused before any layer is built.
CONFIG_INT_LIMITS = {"num_classes": (2, 256), "stem_width": (1, 1024), "aspp_channels": (1, 2048),
                     "low_level_channels": (1, 1024), "decoder_channels": (1, 2048), "norm_groups": (1, 256),
                     "attention_reduction": (1, 1024), "sa_kernel": (1, 15)}
CONFIG_LIST_LIMITS = {"layers": (4, 1, 64), "widths": (4, 1, 2048), "aspp_dilations": (4, 1, 256)}
MAX_BRANCHES = 8
_NOT_TORCH = "not a napari-cdma checkpoint (not a zip / torch file)"




def inspect_torch_zip(path: PathLike) -> int:
    """Check a torch file's zip directory before anything in it is read; returns its declared bytes.

    Raises:
        CheckpointError: not a zip file with a ``data.pkl`` (as ``torch.save`` writes), entries
            compressed far beyond what torch writes, more than :data:`MAX_CHECKPOINT_BYTES` of
            declared content, or more than the machine's available memory.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a checkpoint file (give a .pt file, e.g. RUN/final.pt)")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        if not zipfile.is_zipfile(path):
            damaged = "; damaged or truncated zip" if magic == b"PK\x03\x04" else ""
            raise CheckpointError(f"{path}: {_NOT_TORCH[:-1]}{damaged})")
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise CheckpointError(f"{path}: {_NOT_TORCH[:-1]}; damaged zip: {exc})") from exc
    if not any(i.filename == "data.pkl" or i.filename.endswith("/data.pkl") for i in infos):
        raise CheckpointError(f"{path}: not a readable checkpoint (a zip file without data.pkl: not a torch file)")
    if any(i.filename.endswith("/constants.pkl") for i in infos) and any("/code/" in i.filename for i in infos):
        raise CheckpointError(f"{path}: a TorchScript model (torch.jit.save), not a napari-cdma checkpoint; give one "
                              f"written by cdma train, cdma import-official or the plugin")
    for i in infos:
        if i.file_size > _COMPRESSED_ENTRY_LIMIT and i.file_size > _MAX_RATIO * max(1, i.compress_size):
            raise CheckpointError(
                f"{path}: refused: entry {i.filename} expands from {i.compress_size / 2**20:.1f} MiB to "
                f"{i.file_size / 2**20:.0f} MiB (torch writes checkpoints uncompressed; this file was made to "
                f"expand when loaded)")
    total = sum(i.file_size for i in infos)
    if total > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{path}: refused: declares {total / 2**20:.0f} MiB of tensors and data, more than "
                              f"the {MAX_CHECKPOINT_BYTES / 2**20:.0f} MiB any napari-cdma model needs")
    available = available_memory()
    if available is not None and 2 * total > available:
        raise CheckpointError(f"{path}: loading needs about {2 * total / 2**20:.0f} MiB of memory but only "
                              f"{available / 2**20:.0f} MiB is available")
    return total


def load_torch_file(path: PathLike, map_location: str = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` after :func:`inspect_torch_zip`; every failure is a
    :class:`CheckpointError` naming the file (never torch's advice to load unsafely)."""
    import torch
    from torch.torch_version import TorchVersion

    path = Path(path)
    inspect_torch_zip(path)
    try:
        # TorchVersion (a str subclass) is allowed so files that stored torch.__version__ load.
        with torch.serialization.safe_globals([TorchVersion]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError,
            AttributeError, TypeError, KeyError, IndexError) as exc:
        text = str(exc)
        if "Weights only load failed" in text or isinstance(exc, pickle.UnpicklingError):
            raise CheckpointError(f"{path}: not a readable checkpoint: refused, the file holds Python objects other "
                                  f"than tensors and plain values, which a checkpoint never contains (loading them "
                                  f"could run code)") from exc
        lines = [ln for ln in text.splitlines() if ln.strip() and "weights_only" not in ln]
        reason = lines[0][:200] if lines else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {reason})") from exc


def _is_state_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _shapes(sd: Dict[str, Any]) -> Dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def _meta_state_shapes(cfg) -> Dict[str, tuple]:
    """Key -> shape of an MTNet's state_dict for ``cfg``, built on the meta device (nothing allocated)."""
    import torch

    from .model import MTNet

    with torch.device("meta"):
        return _shapes(MTNet(cfg).state_dict())


def bare_state_dict_advice(path: PathLike, sd: Dict[str, Any]) -> str:
    """What a bare ``state_dict`` (tensors only, no format or config) is, and how to import it."""
    import torch

    from .config import PRESETS, get_config
    from .official import convert_official_state_dict

    shapes = _shapes(sd)
    for name, cfg in PRESETS.items():
        if _meta_state_shapes(cfg) == shapes:
            return (f"{path}: a bare state_dict (weights only, no format or config) of a napari-cdma MTNet with "
                    f"the '{name}' preset structure, not a checkpoint; wrap it in Python: "
                    f"m = src_model.build_model('{name}'); m.load_state_dict(torch.load(path, weights_only=True)); "
                    f"src_model.checkpoint.save_checkpoint('model.pt', m)")
    bias = sd.get("decoder1.conv4.bias")
    n_classes = int(bias.shape[0]) if isinstance(bias, torch.Tensor) and bias.dim() == 1 and 2 <= bias.shape[0] <= 256 \
        else 2
    official = _meta_state_shapes(get_config("paper", num_classes=n_classes))
    converted = _shapes(convert_official_state_dict(sd))
    missing = sorted(set(official) - set(converted))
    unexpected = sorted(set(converted) - set(official))
    bad = [k for k in official if k in converted and official[k] != converted[k]]
    if not missing and not unexpected and not bad:
        return (f"{path}: a bare state_dict of the official CDMA MTNet, not a napari-cdma checkpoint; convert it "
                f"with `cdma import-official {path} --out MODEL.pt`")
    detail = f"{len(missing)} of the official keys missing (e.g. {', '.join(missing[:3]) or '-'})"
    if unexpected:
        detail += f", {len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})"
    if bad:
        detail += f", {len(bad)} of another shape (e.g. {bad[0]})"
    return (f"{path}: a bare state_dict ({len(sd)} tensors, no format or config), not a napari-cdma checkpoint, and "
            f"not an official CDMA MTNet state_dict either ({detail}), so `cdma import-official` cannot convert it; "
            f"load it into the model it came from and save that with src_model.checkpoint.save_checkpoint")


def read_checkpoint(path: PathLike, map_location: str = "cpu") -> Dict[str, Any]:
    """Read and validate a checkpoint dict (no code from the file is executed).

    The zip directory is checked before anything is read (:func:`inspect_torch_zip`), so a file
    declaring more than :data:`MAX_CHECKPOINT_BYTES` is refused before it is loaded.

    Raises:
        CheckpointError: missing, truncated, not a torch file, unsafe content, too large, foreign
            (a bare state_dict: what it is and how to import it) or newer format.
    """
    path = Path(path)
    data = load_torch_file(path, map_location)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a napari-cdma checkpoint (top level is {type(data).__name__})")
    if "format" not in data:
        if _is_state_dict(data):
            raise CheckpointError(bare_state_dict_advice(path, data))
        if _is_state_dict(data.get("state_dict")):
            raise CheckpointError(bare_state_dict_advice(path, data["state_dict"]) +
                                  " (found under the key 'state_dict')")
        keys = ", ".join(repr(k) for k in list(data)[:5])
        raise CheckpointError(f"{path}: not a napari-cdma checkpoint (no 'format' entry; keys {keys})")
    if data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a napari-cdma checkpoint (format {str(data.get('format'))[:60]!r})")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: unreadable format_version {str(version)[:40]!r} (expected an integer "
                              f"1..{FORMAT_VERSION})")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version} is newer than this napari-cdma "
                              f"supports ({FORMAT_VERSION}); upgrade napari-cdma")
    if data.get("model") != MODEL_NAME or "state_dict" not in data or "config" not in data:
        raise CheckpointError(f"{path}: checkpoint is missing its model name, config or weights")
    return data


def check_config_limits(config: Any, source: str = "checkpoint") -> None:
    """Refuse a model config (dict) with fields of the wrong type or beyond the limits
    (:data:`CONFIG_INT_LIMITS`, :data:`CONFIG_LIST_LIMITS`, :data:`MAX_BRANCHES`), before any layer
    is built from it."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{source}: unusable model config (a {type(config).__name__}, not a dict)")

    def bad(name: str, value: Any, rule: str) -> CheckpointError:
        return CheckpointError(f"{source}: unusable model config: {name}={str(value)[:60]} ({rule})")

    for name, (lo, hi) in CONFIG_INT_LIMITS.items():
        if name in config:
            v = config[name]
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise bad(name, v, f"must be an integer in {lo}..{hi}")
    for name, (n, lo, hi) in CONFIG_LIST_LIMITS.items():
        if name in config:
            v = config[name]
            if not isinstance(v, (list, tuple)) or len(v) != n or not all(
                    isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi for x in v):
                raise bad(name, v, f"must be {n} integers in {lo}..{hi}")
    if "branches" in config:
        v = config["branches"]
        if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= MAX_BRANCHES \
                or not all(isinstance(x, str) for x in v):
            raise bad("branches", v, f"must be 1..{MAX_BRANCHES} branch names")
    if "feature_noise" in config and (not isinstance(config["feature_noise"], (int, float))
                                      or isinstance(config["feature_noise"], bool)):
        raise bad("feature_noise", config["feature_noise"], "must be a number")


def model_from_checkpoint_dict(data: Dict[str, Any], source: str = "checkpoint") -> "MTNet":
    """Build the model of a checkpoint dict (from :func:`read_checkpoint`) and load its weights.

    The config is checked against :func:`check_config_limits` and the weights against the shapes
    of the model it describes (built on the meta device, nothing allocated) before the model is
    built for real.
    """
    from .config import MTNetConfig
    from .model import MTNet

    check_config_limits(data.get("config"), source)
    try:
        cfg = MTNetConfig.from_dict(data["config"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{source}: unusable model config ({str(exc).splitlines()[0][:200]})") from exc
    sd = data["state_dict"]
    if not _is_state_dict(sd):
        raise CheckpointError(f"{source}: the checkpoint's state_dict is not a mapping of names to tensors")
    expected, found = _meta_state_shapes(cfg), _shapes(sd)
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    bad = [k for k in expected if k in found and expected[k] != found[k]]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if bad:
            parts.append(f"{len(bad)} of another shape (e.g. {bad[0]}: {found[bad[0]]} vs {expected[bad[0]]})")
        raise CheckpointError(f"{source}: weights do not fit the stored config ({'; '.join(parts)})")
    try:
        model = MTNet(cfg)
        model.load_state_dict(sd, strict=True)
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
