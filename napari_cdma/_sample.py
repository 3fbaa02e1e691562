"""Sample data contribution: one GlaS H&E image (research use only, see samples/ATTRIBUTION.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

SAMPLE_PATH = Path(__file__).resolve().parent / "samples" / "glas_testA_1.png"
SAMPLE_NAME = "GlaS testA_1 (H&E)"


def read_sample_image() -> np.ndarray:
    """Read the shipped GlaS image.

    Returns:
        uint8 RGB array of shape (522, 775, 3).
    """
    from PIL import Image

    with Image.open(SAMPLE_PATH) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def make_sample_data() -> List[Tuple[np.ndarray, Dict[str, Any], str]]:
    """napari sample-data command: the GlaS image as an RGB image layer.

    Returns:
        A single layer-data tuple ``(data, {"name", "rgb", "metadata"}, "image")``.
    """
    meta = {"source_path": str(SAMPLE_PATH), "dataset": "GlaS@MICCAI2015 (research use only)"}
    return [(read_sample_image(), {"name": SAMPLE_NAME, "rgb": True, "metadata": meta}, "image")]
