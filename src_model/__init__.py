"""src_model: the CDMA engine (model, losses, training, inference, data, CLI).

Pure PyTorch + NumPy; never imports napari or Qt.
"""
from .config import PRESETS, MTNetConfig, get_config
from .model import MTNet

__version__ = "0.1.0"


def build_model(name_or_config="lite", **overrides) -> MTNet:
    """Build an MTNet from a preset name (``"paper"``, ``"lite"``) or an :class:`MTNetConfig`."""
    cfg = name_or_config if isinstance(name_or_config, MTNetConfig) else get_config(name_or_config, **overrides)
    return MTNet(cfg)


def load_checkpoint(path=None, map_location="cpu"):
    """Load a checkpoint (default: the bundled model) and return the model in eval mode on CPU."""
    from .checkpoint import load_model

    return load_model(path, map_location=map_location)


__all__ = ["PRESETS", "MTNetConfig", "MTNet", "build_model", "get_config", "load_checkpoint", "__version__"]
