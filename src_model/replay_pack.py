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
#: The subfolder of a pack holding each crop's expert mask, under the crop's file name (gland > 0).
MASK_DIR = "masks"


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


def load_pack_masks(folder: Optional[PathLike] = None) -> List[np.ndarray]:
    """The expert masks of the pack's crops (bool (H, W), True = gland), in :func:`load_pack`'s order.

    Raises:
        FileNotFoundError: a crop without its mask (a pack written before masks were stored: rerun
            ``benchmarks/make_replay_pack.py``).
        ValueError: a mask that is unreadable or not the shape of its crop.
    """
    from .io import image_shape, read_mask

    out = []
    for f in pack_files(folder):
        m = f.parent / MASK_DIR / f.name
        if not m.is_file():
            raise FileNotFoundError(f"{f.name}: the replay pack has no mask {m}; reinstall napari-cdma or rerun "
                                    "benchmarks/make_replay_pack.py")
        mask = np.asarray(read_mask(m)) > 0
        shape = image_shape(f)  # the header only: the crops are read by load_pack
        if mask.shape != shape:
            raise ValueError(f"{m}: mask shape {mask.shape} != crop shape {shape}")
        out.append(mask)
    return out


__all__ = ["PACK_DIR", "MASK_DIR", "pack_files", "load_pack", "load_pack_masks"]
