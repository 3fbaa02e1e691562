"""GUI test fixtures.

``make_napari_viewer`` comes from napari's pytest plugin (entry point ``pytest11: napari``), loaded
automatically once napari is installed.
"""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def lite_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised ``lite`` model saved as a napari-cdma checkpoint (CPU, seed 0)."""
    import torch

    import src_model
    from src_model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "lite_random.pt"
    # str(): save_checkpoint's default provenance keeps torch.__version__ as a TorchVersion object,
    # which weights_only loading refuses (reported to the engine owner); a plain str loads.
    save_checkpoint(path, src_model.build_model("lite"),
                    provenance={"note": "random test model", "torch": str(torch.__version__)})
    return path


@pytest.fixture
def foreign_checkpoint(tmp_path) -> Path:
    """A file named like a checkpoint that holds random bytes."""
    import numpy as np

    path = tmp_path / "foreign.pt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path
