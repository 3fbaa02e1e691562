"""HED stain jitter (AugmentConfig.stain_jitter): off by default, exact at zero, bounded, mask-aligned."""
import numpy as np
from skimage.color import rgb2hed

from src_model.data import AugmentConfig, augment, hed_jitter


def _tissue(seed=0, shape=(48, 40)):
    rng = np.random.default_rng(seed)
    return rng.integers(20, 250, shape + (3,), dtype=np.uint8)


def test_off_by_default_and_the_random_stream_is_unchanged():
    assert AugmentConfig().stain_jitter == 0.0
    img = _tissue()
    a, _ = augment(np.random.default_rng(3), img, None, AugmentConfig())
    b, _ = augment(np.random.default_rng(3), img, None, AugmentConfig(stain_jitter=0.0))
    assert np.array_equal(a, b)


def test_zero_width_is_the_identity_and_matches_skimage_stain_space():
    x = _tissue().astype(np.float32) / 255
    assert np.allclose(hed_jitter(np.random.default_rng(0), x, 0.0), x, atol=1e-4)
    # our stain space is skimage's (up to its 1/-log(1e-6) scaling of the optical density and its
    # clipping of negative stain amounts, which we keep so that the round trip is exact)
    ours = -np.log(np.maximum(x, 1e-6)) @ np.linalg.inv(np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11],
                                                                   [0.27, 0.57, 0.78]]))
    assert np.allclose(np.maximum(ours / -np.log(1e-6), 0), rgb2hed(x), atol=1e-4)


def test_jitter_changes_colour_within_bounds_and_keeps_the_mask_aligned():
    img = _tissue(1)
    img[:8, :16] = 255
    mask = np.zeros(img.shape[:2], np.int64)
    mask[:8, :16] = 1
    cfg = AugmentConfig(color_jitter=0.0, noise_p=0.0, stain_jitter=0.2)
    plain = AugmentConfig(color_jitter=0.0, noise_p=0.0)
    for seed in range(6):
        x, m = augment(np.random.default_rng(seed), img, mask, cfg)
        y, n = augment(np.random.default_rng(seed), img, mask, plain)
        assert x.shape == y.shape and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
        assert np.array_equal(m, n)  # geometry draws come first: the same flips and rotations
        assert np.abs(x - y).mean() > 1e-3  # the stains moved
        assert np.abs(x - y).mean() < 0.2  # ... but not beyond recognition
