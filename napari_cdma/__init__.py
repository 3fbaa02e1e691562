"""napari-cdma: the napari plugin of the CDMA engine.

Importing this package loads neither napari, Qt nor torch: napari imports the dock and sample
modules named in ``napari.yaml`` when they are used, and torch loads in the predict worker.
The version has one source, ``src_model.__version__`` (setup.cfg reads it too); it is looked up
on first access so that ``import napari_cdma`` stays instant.
"""
from typing import Any

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from src_model import __version__

        return __version__
    raise AttributeError(f"module 'napari_cdma' has no attribute {name!r}")
