"""napari-cdma: the napari plugin of the CDMA engine.

Importing this package loads neither napari, Qt nor torch: napari imports the dock and sample
modules named in ``napari.yaml`` when they are used, and torch loads in the predict worker.
"""
from src_model import __version__

__all__ = ["__version__"]
