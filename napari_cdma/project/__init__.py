"""The plugin's Qt-free project layer: the zarr project store and the retraining job.

Nothing here imports napari or Qt, so the store and the retrain worker run headless too.
"""
