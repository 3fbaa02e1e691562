"""The checked-in GlaS subset (tests/data/glas) read as arrays, for tests that build their input from it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

GLAS = Path(__file__).parent / "data" / "glas"


def glas_image(name: str = "testA_2", mode: str = "RGB") -> np.ndarray:
    """The GlaS image ``name`` as a uint8 array, converted by PIL to ``mode`` ("RGB": (H, W, 3); "L": grey (H, W))."""
    from PIL import Image

    return np.asarray(Image.open(GLAS / "images" / f"{name}.png").convert(mode))
