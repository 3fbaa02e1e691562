"""src_model: the CDMA engine (model, losses, training, inference, data, CLI).

Pure PyTorch + NumPy; never imports napari or Qt. Importing the package does not import torch:
``MTNet`` is loaded on first use (module ``__getattr__``) and :func:`build_model` /
:func:`load_checkpoint` import what they need when called, so ``cdma --help``, ``src_model.io``
and the plugin's start-up stay fast.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import PRESETS, MTNetConfig, get_config

if TYPE_CHECKING:
    from .model import MTNet

__version__ = "0.1.0"

_LAZY = {"MTNet": ".model"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


def build_model(name_or_config="lite", **overrides) -> "MTNet":
    """Build an MTNet from a preset name (``"paper"``, ``"lite"``) or an :class:`MTNetConfig`."""
    from .model import MTNet

    cfg = name_or_config if isinstance(name_or_config, MTNetConfig) else get_config(name_or_config, **overrides)
    return MTNet(cfg)


def load_checkpoint(path=None, map_location="cpu") -> "MTNet":
    """Load a checkpoint (default: the bundled model) and return the model in eval mode on CPU."""
    from .checkpoint import load_model

    return load_model(path, map_location=map_location)


__all__ = ["PRESETS", "MTNetConfig", "MTNet", "build_model", "get_config", "load_checkpoint", "__version__"]
