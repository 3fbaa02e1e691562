"""Block-by-block post-processing of a large prediction (src_model.blockwise) on real GlaS masks.

The lean steps must give exactly the engine's results: the same h-maxima as scikit-image, the same
instance labels as src_model.postprocess.to_instances in a window, and block by block the same
glands as the whole-image src_model.postprocess.instance_labels (ids may differ: raster order of
the blocks), while using less memory.
"""
from __future__ import annotations

import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage as ndi

from src_model.blockwise import BlockReview, h_maxima_by_object, window_instances
from src_model.io import read_image, read_mask
from src_model.postprocess import DEFAULT_INSTANCES, PostprocessConfig, instance_labels, to_instances

#: the bundled model's earlier rule, and one with lumen filling: the lean path must match each
CONFIGS = [DEFAULT_INSTANCES, PostprocessConfig(min_size=1600, fill_holes=True, split_h=16.0, split_sigma=2.0),
           replace(DEFAULT_INSTANCES, lumen_holes=True)]


@pytest.fixture(scope="module")
def mosaic(glas_dir):
    """A 3 x 3 mosaic of the checked-in GlaS images and their gland masks (each cropped to
    500 x 750, cycled): (image RGB uint8, mask bool), 1500 x 2250 px."""
    import csv

    with (glas_dir / "split.csv").open(newline="") as f:
        ids = [row["id"] for row in csv.DictReader(f)]
    cell = (500, 750)
    image = np.zeros((3 * cell[0], 3 * cell[1], 3), np.uint8)
    mask = np.zeros(image.shape[:2], bool)
    for k in range(9):
        y, x = (k // 3) * cell[0], (k % 3) * cell[1]
        name = ids[k % len(ids)]
        img = read_image(glas_dir / "images" / f"{name}.png")[:cell[0], :cell[1]]
        msk = read_mask(glas_dir / "masks" / f"{name}.png")[:cell[0], :cell[1]] > 0
        image[y:y + img.shape[0], x:x + img.shape[1]] = img[..., :3]
        mask[y:y + msk.shape[0], x:x + msk.shape[1]] = msk
    return image, mask


def smoothed_distance(mask: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    return ndi.gaussian_filter(ndi.distance_transform_edt(mask), sigma)


@pytest.mark.parametrize("h", [2.0, 16.0, 24.0, 60.0])
def test_h_maxima_by_object_is_skimage(mosaic, h):
    from skimage.morphology import h_maxima

    dist = smoothed_distance(mosaic[1])
    expected = (h_maxima(dist, h) > 0) & (dist > 0)
    got = h_maxima_by_object(dist, h)
    assert got.dtype == bool and got.shape == dist.shape
    assert expected.any()
    np.testing.assert_array_equal(got, expected)


def test_h_maxima_by_object_low_objects(mosaic):
    """Objects whose own maxima are under h next to one that is not (their marker lies below 0,
    where the background's reconstruction decides), and an image with no h-maximum at all."""
    from skimage.morphology import h_maxima

    dist = smoothed_distance(mosaic[1])
    low = dist * (10.0 / dist.max())
    low[:200, :300] = dist[:200, :300]  # one corner keeps its full height
    for img in (low, dist * (10.0 / dist.max())):
        expected = (h_maxima(img, 16.0) > 0) & (img > 0)
        np.testing.assert_array_equal(h_maxima_by_object(img, 16.0), expected)
    with pytest.raises(ValueError):
        h_maxima_by_object(dist.astype(np.float32), 16.0)


@pytest.mark.parametrize("cfg", CONFIGS, ids=["default", "min1600_h16", "lumens"])
def test_window_instances_is_to_instances(mosaic, cfg):
    mask = mosaic[1]
    for window in (mask, mask[:1088, :1088], mask[400:1488, 1100:2188]):
        expected = to_instances(window, cfg)
        got = window_instances(window, cfg)
        assert got.dtype == expected.dtype and expected.max() > 5
        np.testing.assert_array_equal(got, expected)


def test_window_instances_uses_less_memory(mosaic):
    """The h-maxima object by object: a fraction of the whole-window reconstruction's memory."""
    window = mosaic[1][:1088, :1088]

    def peak(fn) -> int:
        tracemalloc.start()
        try:
            fn(window, DEFAULT_INSTANCES)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    engine, lean = peak(to_instances), peak(window_instances)
    assert lean < 0.6 * engine, (lean / 2**20, engine / 2**20)


def test_blocks_are_the_whole_image_glands(mosaic):
    """Block by block (768-px blocks, 160-px margin: 6 blocks over the mosaic, glands crossing
    block edges), the labels are the whole-image instance labels up to a renumbering."""
    image, mask = mosaic
    rng = np.random.default_rng(0)
    uncertainty = rng.random(mask.shape).astype(np.float16)
    review = BlockReview(mask.astype(np.uint8), uncertainty, image)
    labels = np.zeros(mask.shape, np.int32)
    n_blocks = 0
    for y0, x0, block in review.blocks():
        labels[y0:y0 + block.shape[0], x0:x0 + block.shape[1]] = block
        n_blocks += 1
    whole = instance_labels(mask)
    n_glands = len(np.unique(whole[whole > 0]))
    assert n_blocks == 6 and n_glands > 20
    assert ((labels > 0) == (whole > 0)).all()
    pairs = np.unique(np.stack([labels[whole > 0], whole[whole > 0]]), axis=1)
    # one block label per whole-image gland and vice versa: the same glands, renumbered
    assert len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1])) == n_glands
    rows = review.glands()
    assert [r["id"] for r in rows] == list(range(1, labels.max() + 1))
    assert [r["area"] for r in rows] == np.bincount(labels.ravel())[1:].tolist()
