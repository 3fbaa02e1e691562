"""GlaS-layout data: split file, labelled/unlabelled split, patch sampling and augmentation.

A data folder holds ``images/<id>.png``, ``masks/<id>.png`` (0 = background, >0 = object) and
``split.csv`` (``id,split,subset``). Targets are binary: mask > 0.

A labelled mask may also mark pixels nobody labelled with :data:`IGNORE` (-1): a correction given in its
context (the whole image, labelled only inside the corrected box). Training patches of such a pair cover
the labelled box (:func:`box_crop`) and its ignored pixels weigh nothing in the supervised loss.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy import ndimage as ndi

from .io import read_image, read_mask, to_model_input
from .tiling import pad_to
from .tissue import tissue_mask

Labelled = Tuple[np.ndarray, np.ndarray]

#: Mask value of a pixel nobody labelled (a correction's context): no supervised loss there.
IGNORE = -1


def labelled_box(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """``(y0, x0, y1, x1)`` bounding the labelled pixels of a mask with :data:`IGNORE` pixels; None when every
    pixel is labelled (the usual whole-image mask). Raises ValueError when no pixel is labelled."""
    m = np.asarray(mask)
    if not np.issubdtype(m.dtype, np.signedinteger):
        return None
    known = m != IGNORE
    if known.all():
        return None
    rows, cols = np.flatnonzero(known.any(axis=1)), np.flatnonzero(known.any(axis=0))
    if rows.size == 0:
        raise ValueError("a labelled mask has no labelled pixel (all IGNORE)")
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def in_context_mask(shape: Tuple[int, int], box: Tuple[int, int, int, int], mask: np.ndarray) -> np.ndarray:
    """An int64 mask of ``shape``: ``mask`` (> 0 = gland) inside ``box`` = ``(y0, x0, y1, x1)``, :data:`IGNORE`
    elsewhere; with the whole image, the pair trains the correction in its context."""
    y0, x0, y1, x1 = (int(v) for v in box)
    m = np.asarray(mask)
    if m.shape != (y1 - y0, x1 - x0):
        raise ValueError(f"mask {m.shape} does not fit box {box}")
    out = np.full(tuple(shape), IGNORE, np.int64)
    out[y0:y1, x0:x1] = m > 0
    return out


@dataclass(frozen=True)
class SplitRow:
    id: str
    split: str
    subset: str


def read_split(data_dir: Path) -> List[SplitRow]:
    """Rows of ``split.csv``; raises ValueError naming the file if it is missing or malformed."""
    path = Path(data_dir) / "split.csv"
    if not path.is_file():
        raise ValueError(f"{path}: no split.csv in the data folder (expected images/, masks/, split.csv)")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"id", "split"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: needs columns id,split[,subset]")
        return [SplitRow(r["id"], r["split"], r.get("subset") or r["split"]) for r in reader]


def ids_of(rows: Sequence[SplitRow], split: Optional[str] = None, subset: Optional[str] = None) -> List[str]:
    return [r.id for r in rows if (split is None or r.split == split) and (subset is None or r.subset == subset)]


def choose_labelled(train_ids: Sequence[str], fraction: float, seed: int) -> List[str]:
    """A seeded choice of ``round(fraction * n)`` (at least 1) image ids to use with labels."""
    if not 0 < fraction <= 1:
        raise ValueError(f"labelled fraction must be in (0, 1], got {fraction}")
    ids = sorted(train_ids)
    n = max(1, int(round(fraction * len(ids))))
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(ids, size=n, replace=False).tolist())


def image_path(data_dir: Path, image_id: str) -> Path:
    for ext in (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".npy"):
        p = Path(data_dir) / "images" / f"{image_id}{ext}"
        if p.exists():
            return p
    raise ValueError(f"{Path(data_dir) / 'images'}: no image file for id {image_id!r}")


def load_pairs(data_dir: Path, ids: Sequence[str]) -> List[Labelled]:
    """Load ``(image uint8 (H, W, 3), mask (H, W))`` for each id."""
    out = []
    for i in ids:
        img = read_image(image_path(data_dir, i))
        mask = read_mask(Path(data_dir) / "masks" / f"{i}.png")
        if mask.shape != img.shape[:2]:
            raise ValueError(f"{data_dir}/masks/{i}.png: mask shape {mask.shape} != image shape {img.shape[:2]}")
        out.append((img, mask))
    return out


def load_images(data_dir: Path, ids: Sequence[str]) -> List[np.ndarray]:
    return [read_image(image_path(data_dir, i)) for i in ids]


def write_split_record(path: Path, record: Dict) -> None:
    """Record which ids were labelled / unlabelled / held out (JSON), put in place whole
    (:func:`src_model.fileio.atomic_write_bytes`): a full disk or a kill leaves the earlier record, never a
    truncated one. The folder is created if needed."""
    from .fileio import atomic_write_bytes

    text = json.dumps(record, indent=2, sort_keys=True)
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


# ---------------------------------------------------------------- patches and augmentation

@dataclass(frozen=True)
class AugmentConfig:
    flip_p: float = 0.5
    rot90_p: float = 0.5
    color_jitter: float = 0.08  # per-channel gain/offset half-width (mild stain variation)
    noise_p: float = 0.25
    noise_std: float = 0.04
    stain_jitter: float = 0.0  # HED stain jitter half-width (0 = off); see hed_jitter


# Ruifrok & Johnston's H&E-DAB stain vectors (rows: haematoxylin, eosin, DAB), as skimage.color.rgb_from_hed
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float32)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED).astype(np.float32)


def hed_jitter(rng: np.random.Generator, x: np.ndarray, sigma: float) -> np.ndarray:
    """Stain augmentation in HED space (Tellez et al., 2018): the optical density of each stain is
    scaled by U(1 - sigma, 1 + sigma) and shifted by U(-sigma, sigma).

    Args:
        x: RGB float (H, W, 3) in [0, 1].

    Returns:
        float32 (H, W, 3), not clipped.
    """
    alpha = 1 + rng.uniform(-sigma, sigma, size=3).astype(np.float32)
    beta = rng.uniform(-sigma, sigma, size=3).astype(np.float32)
    od = -np.log(np.maximum(x, 1e-6, dtype=np.float32))
    hed = (od @ _HED_FROM_RGB) * alpha + beta
    return np.exp(-(hed @ _RGB_FROM_HED))


def random_crop(rng: np.random.Generator, img: np.ndarray, mask: Optional[np.ndarray], size: int,
                tissue: Optional[np.ndarray] = None, min_tissue: float = 0.3, tries: int = 10):
    """A random ``size`` x ``size`` crop (padded by :func:`~src_model.tiling.pad_to` if the image is smaller).

    With a ``tissue`` mask, retries up to ``tries`` times to find a crop that is mostly tissue,
    so patches of empty glass are rare.
    """
    img = pad_to(img, size)
    if mask is not None:
        mask = pad_to(mask, size)
    if tissue is not None:
        tissue = pad_to(tissue, size)
    h, w = img.shape[:2]
    for _ in range(tries):
        y = int(rng.integers(0, h - size + 1))
        x = int(rng.integers(0, w - size + 1))
        if tissue is None or tissue[y:y + size, x:x + size].mean() >= min_tissue:
            break
    crop_m = None if mask is None else mask[y:y + size, x:x + size]
    return img[y:y + size, x:x + size], crop_m


def box_crop(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, size: int,
             box: Tuple[int, int, int, int]):
    """A random ``size`` x ``size`` crop that holds ``box`` = ``(y0, x0, y1, x1)`` whole when it fits, or lies
    inside it when the box is larger (padded by :func:`~src_model.tiling.pad_to` if the image is smaller)."""
    img, mask = pad_to(img, size), pad_to(mask, size)
    h, w = img.shape[:2]

    def start(lo: int, hi: int, extent: int) -> int:
        a, b = max(0, min(lo, hi - size)), min(extent - size, max(lo, hi - size))
        return int(rng.integers(a, max(a, b) + 1))

    y, x = start(box[0], box[2], h), start(box[1], box[3], w)
    return img[y:y + size, x:x + size], mask[y:y + size, x:x + size]


def augment(rng: np.random.Generator, img: np.ndarray, mask: Optional[np.ndarray], cfg: AugmentConfig):
    """Flip, rotate by 90 degrees, stain and colour jitter and noise.

    Args:
        img: RGB uint8 (H, W, 3).
        mask: (H, W) or None; flipped and rotated with the image.

    Returns:
        the model input of the augmented image, float32 (3, H, W) in [0, 1] (the normalisation of
        :func:`~src_model.io.to_model_input`), and the mask.
    """
    if rng.random() < cfg.flip_p:
        axis = int(rng.integers(0, 2))
        img = np.flip(img, axis)
        mask = None if mask is None else np.flip(mask, axis)
    if rng.random() < cfg.rot90_p:
        k = int(rng.integers(1, 4))
        img = np.rot90(img, k)
        mask = None if mask is None else np.rot90(mask, k)
    x = to_model_input(img)[0].numpy().transpose(1, 2, 0)  # (H, W, 3) view, so the colour axis is last
    if cfg.stain_jitter > 0:
        x = hed_jitter(rng, x, cfg.stain_jitter)
    if cfg.color_jitter > 0:
        gain = 1 + rng.uniform(-cfg.color_jitter, cfg.color_jitter, size=3).astype(np.float32)
        offset = rng.uniform(-cfg.color_jitter, cfg.color_jitter, size=3).astype(np.float32) * 0.5
        x = x * gain + offset
    if rng.random() < cfg.noise_p:
        x = x + rng.normal(0, cfg.noise_std, size=x.shape).astype(np.float32)
    x = np.clip(x, 0, 1).transpose(2, 0, 1)
    return np.ascontiguousarray(x), None if mask is None else np.ascontiguousarray(mask)


def touching_border(instances: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` px (a square window) of two different instances: the gaps and contact
    lines between touching glands. ``instances``: (H, W) integer labels, 0 = background. Returns bool (H, W)."""
    m = np.asarray(instances).astype(np.int64)
    size = 2 * int(radius) + 1
    none = int(m.max()) + 1
    highest = ndi.maximum_filter(m, size=size)
    lowest = ndi.minimum_filter(np.where(m > 0, m, none), size=size)  # lowest instance id near each pixel
    return (lowest < none) & (highest > lowest)


BORDER_CODE = 2  # boundary-aware coding of a labelled mask: object (0 / 1) + BORDER_CODE on touching borders


def boundary_coded(instances: np.ndarray, radius: int) -> np.ndarray:
    """int64 (H, W): (instances > 0) + :data:`BORDER_CODE` on :func:`touching_border` pixels, so one
    array carries the target and where the loss weighs more. Crops and flips move it like a mask."""
    code = (np.asarray(instances) > 0).astype(np.int64)
    code[touching_border(instances, radius)] += BORDER_CODE
    return code


class TwoStreamPatches(torch.utils.data.IterableDataset):
    """Endless batches of ``n_labelled`` labelled + ``n_unlabelled`` unlabelled patches.

    The labelled stream walks a reshuffled pass over the labelled images (an epoch = one pass);
    the unlabelled stream is an endlessly reshuffled stream of its own. Each worker of a
    DataLoader draws from its own generator seeded with (seed, worker id), so augmentation
    randomness is never repeated across workers.

    With ``boundary_weight`` > 0 (boundary-aware training; the masks must hold instance labels), the
    batch carries ``weight`` float32 (B, P, P): 1 + ``boundary_weight`` on the pixels near two different
    instances (:func:`touching_border`, ``boundary_radius``: the gaps between neighbouring glands and
    their facing edges), 1 elsewhere; the targets are unchanged. A labelled mask with :data:`IGNORE` pixels
    (a correction in its context) is cropped around its labelled box (:func:`box_crop`) and its ignored
    pixels get ``weight`` 0 (target 0): the supervised loss never sees them.

    Yields:
        dict with ``image`` float32 (B, 3, P, P) in [0, 1] (labelled first) and ``target`` int64
        (B, P, P) (zeros for the unlabelled part), ``n_labelled`` int (and ``weight``, see above).
    """

    def __init__(self, labelled: Sequence[Labelled], unlabelled: Sequence[np.ndarray], n_labelled: int,
                 n_unlabelled: int, patch: int, seed: int = 0, augment_cfg: AugmentConfig = AugmentConfig(),
                 boundary_weight: float = 0.0, boundary_radius: int = 8):
        super().__init__()
        if not labelled:
            raise ValueError("training needs at least one labelled image")
        self.boundary_weight = float(boundary_weight)
        self._boxes = [labelled_box(m) for _, m in labelled]
        if self.boundary_weight > 0:
            self.labelled = [(img, self._keep_ignore(boundary_coded(np.maximum(m, 0), boundary_radius), m))
                             for img, m in labelled]
        else:
            self.labelled = [(img, self._keep_ignore((np.asarray(m) > 0).astype(np.int64), m)) for img, m in labelled]
        self.unlabelled = list(unlabelled) or [img for img, _ in labelled]
        self.n_labelled, self.n_unlabelled = n_labelled, n_unlabelled
        self.patch, self.seed, self.augment_cfg = patch, seed, augment_cfg
        self._tissue_l = [None if box is not None else tissue_mask(img)
                          for (img, _), box in zip(self.labelled, self._boxes, strict=True)]
        self._tissue_u = [tissue_mask(img) for img in self.unlabelled]

    @staticmethod
    def _keep_ignore(target: np.ndarray, mask: np.ndarray) -> np.ndarray:
        m = np.asarray(mask)
        if np.issubdtype(m.dtype, np.signedinteger):
            target[m == IGNORE] = IGNORE
        return target

    def _rng(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        wid = 0 if info is None else info.id
        return np.random.default_rng([self.seed, wid])

    @staticmethod
    def _stream(rng: np.random.Generator, n: int) -> Iterator[int]:
        while True:
            yield from rng.permutation(n).tolist()

    def __iter__(self):
        rng = self._rng()
        lab = self._stream(rng, len(self.labelled))
        unl = self._stream(rng, len(self.unlabelled))
        p = self.patch
        while True:
            images, targets = [], []
            for _ in range(self.n_labelled):
                i = next(lab)
                if self._boxes[i] is None:
                    img, m = random_crop(rng, *self.labelled[i], p, self._tissue_l[i])
                else:
                    img, m = box_crop(rng, *self.labelled[i], p, self._boxes[i])
                x, m = augment(rng, img, m, self.augment_cfg)
                images.append(x)
                targets.append(m)
            for _ in range(self.n_unlabelled):
                i = next(unl)
                img, _ = random_crop(rng, self.unlabelled[i], None, p, self._tissue_u[i])
                x, _ = augment(rng, img, None, self.augment_cfg)
                images.append(x)
                targets.append(np.zeros((p, p), np.int64))
            target = np.stack(targets)
            batch = {"image": torch.from_numpy(np.stack(images)), "n_labelled": self.n_labelled}
            ignored = target == IGNORE
            if self.boundary_weight > 0 or ignored.any():
                border = target >= BORDER_CODE
                weight = np.where(border, 1 + self.boundary_weight, 1).astype(np.float32)
                weight[ignored] = 0
                batch["weight"] = torch.from_numpy(weight)
                target[border] -= BORDER_CODE
                target[ignored] = 0
            batch["target"] = torch.from_numpy(target)
            yield batch


def ssl_split(data_dir: Path, fraction: float, n_val: int, seed: int) -> Dict[str, object]:
    """The semi-supervised benchmark split of a GlaS-layout folder, drawn by ``seed``.

    ``fraction`` of the training ids are labelled (:func:`choose_labelled`); ``n_val`` of the rest
    are held out for validation (seed + 1); the remaining ones are the unlabelled pool. Test ids are
    never part of it.

    Returns:
        ``{"seed", "fraction", "labelled", "val", "unlabelled", "train_all"}`` (``train_all``: every
        training id but the validation ones), lists sorted where the draw allows.
    """
    train_ids = ids_of(read_split(data_dir), split="train")
    labelled = choose_labelled(train_ids, fraction, seed)
    rest = sorted(set(train_ids) - set(labelled))
    val = choose_labelled(rest, n_val / len(rest), seed + 1) if n_val else []
    unlabelled = sorted(set(rest) - set(val))
    return {"seed": seed, "fraction": fraction, "labelled": labelled, "val": val, "unlabelled": unlabelled,
            "train_all": sorted(set(train_ids) - set(val))}

