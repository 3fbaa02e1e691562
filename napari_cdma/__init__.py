"""napari-cdma: the napari plugin of the CDMA engine."""
__version__ = "0.1.0"
