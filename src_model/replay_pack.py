"""The reference tissue shipped with the bundled model: a few crops of its training images on which fine-tuning
keeps distilling towards the previous model (a rehearsal set), so that a retrain on one project's corrections
keeps the answers on tissue that project does not hold.

The crops are PNG files in ``src_model/bundled/replay/`` (GlaS training images, research use only, attributed
in that folder's README); ``benchmarks/make_replay_pack.py`` wrote them. Their soft labels are not stored: the
previous model predicts them on the fly (:class:`src_model.finetune.DistillHook`), so the pack serves any
model, not only the bundled one.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Union

import numpy as np

PathLike = Union[str, Path]

#: Where the bundled pack lives.
PACK_DIR = Path(__file__).resolve().parent / "bundled" / "replay"


def pack_files(folder: Optional[PathLike] = None) -> List[Path]:
    """The pack's crops, sorted by name."""
    return sorted(Path(folder or PACK_DIR).glob("*.png"))


def load_pack(folder: Optional[PathLike] = None) -> List[np.ndarray]:
    """The pack's crops as RGB uint8 (H, W, 3) arrays.

    Raises:
        FileNotFoundError: the folder holds no crop (an install without the package data).
        ValueError: a crop that is not a readable RGB image (:func:`src_model.io.read_image`'s message).
    """
    from .io import read_image

    files = pack_files(folder)
    if not files:
        raise FileNotFoundError(f"no reference crops (*.png) in {Path(folder or PACK_DIR)}: the replay pack is "
                                "part of the package data; reinstall napari-cdma")
    return [read_image(f) for f in files]


__all__ = ["PACK_DIR", "pack_files", "load_pack"]
