"""Padding of small images and masks to a tile or patch (one rule for inference and training)."""
import numpy as np
import pytest

from src_model.tiling import pad_to


def test_large_enough_arrays_are_returned_as_they_are():
    img = np.zeros((40, 50, 3), np.uint8)
    assert pad_to(img, 40) is img and pad_to(img, 16) is img


def test_pad_mirrors_without_repeating_the_edge_pixel():
    row = np.arange(4, dtype=np.int32)[None, :].repeat(2, axis=0)  # (2, 4): columns 0 1 2 3
    out = pad_to(row, 6)
    assert out.shape == (6, 6)
    assert out[0].tolist() == [0, 1, 2, 3, 2, 1]  # reflect about the last column
    assert out[:, 0].tolist() == [0] * 6  # every row holds the same values


@pytest.mark.parametrize("shape", [(3, 5, 3), (3, 5)])
def test_arrays_smaller_than_the_pad_are_mirrored_back_and_forth(shape):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, shape).astype(np.uint8)
    out = pad_to(arr, 16)
    assert out.shape == (16, 16) + shape[2:] and out.dtype == arr.dtype
    assert np.array_equal(out[:3, :5], arr)
    # period of a mirrored axis of length n is 2 (n - 1): rows 0 1 2 1 0 1 2 ..., columns 0 1 2 3 4 3 2 1 0 ...
    rows = [0, 1, 2, 1] * 4
    cols = ([0, 1, 2, 3, 4, 3, 2, 1] * 2)[:16]
    assert np.array_equal(out, arr[np.ix_(rows, cols)])


def test_a_one_pixel_axis_is_repeated():
    arr = np.array([[[10, 20, 30]], [[40, 50, 60]]], np.uint8)  # (2, 1, 3)
    out = pad_to(arr, 4)
    assert out.shape == (4, 4, 3)
    assert (out[:, 1:] == out[:, :1]).all()
    assert out[:, 0, 0].tolist() == [10, 40, 10, 40]
