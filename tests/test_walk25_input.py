"""Pathologist walk 25, 16-bit input: a 12-bit camera's image stored in uint16 (a GlaS image x 16, values 0..4080) was
divided by 257 like a true 16-bit image, so the model saw a nearly black image: three huge 'glands', uncertainty
0.756...1.000, and the only note was "Converted from 16-bit (/ 257).".

Now the engine (src_model.io.to_rgb_uint8: CLI, training data, the dock) scales uint16 by its effective bit depth, the
smallest k in 8..16 holding its largest colour value (H&E brightfield has a near-white background), and says so.
Real GlaS images from tests/data, written as 16-bit TIFF files; the bundled model; the real dock under Xvfb.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import tifffile
from _dock import predicted_with_a_copy
from _glas import glas_image

from napari_cdma._layers import conversion_note, robust_range
from src_model.io import read_image, to_rgb_uint8


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.logical_and(a, b).sum()) / float(a.sum() + b.sum())


def test_a_12bit_image_in_uint16_reads_as_its_8bit_self(tmp_path):
    """x 16 (0..4080): x 255/4095, within one grey level of the 8-bit image; true 16-bit (x 257) still / 257,
    exactly; 8-bit values stored in uint16 kept as they are; 10- and 14-bit likewise by their depth."""
    rgb = glas_image()
    assert rgb.max() == 255  # the test's premise: a full-range 8-bit image
    files = {}
    for name, data in {"12bit": rgb.astype(np.uint16) * 16, "16bit": rgb.astype(np.uint16) * 257,
                       "8in16": rgb.astype(np.uint16), "10bit": rgb.astype(np.uint16) * 4,
                       "14bit": rgb.astype(np.uint16) * 64}.items():
        files[name] = tmp_path / f"{name}.tif"
        tifffile.imwrite(files[name], data, photometric="rgb")
    assert np.array_equal(read_image(files["16bit"]), rgb)
    assert np.array_equal(read_image(files["8in16"]), rgb)
    for name in ("10bit", "12bit", "14bit"):
        got = read_image(files[name]).astype(int)
        assert np.abs(got - rgb).max() <= 1, name  # walk 25: 12-bit was rgb * 16 / 257, about rgb / 16
        assert got.max() >= 254, name


def test_the_alpha_channel_keeps_the_16bit_scale():
    """An RGBA uint16 image of 12-bit colour with an opaque 16-bit alpha: colour by 12 bits, alpha opaque."""
    rgb = glas_image()[:64, :64]
    rgba = np.concatenate([rgb.astype(np.uint16) * 16, np.full((64, 64, 1), 65535, np.uint16)], axis=2)
    assert np.abs(to_rgb_uint8(rgba).astype(int) - rgb).max() <= 1


def test_a_12bit_image_predicts_the_8bit_images_glands(tmp_path):
    import src_model
    from src_model.inference import predict

    rgb = glas_image()
    path = tmp_path / "testA_2_12bit.tif"
    tifffile.imwrite(path, rgb.astype(np.uint16) * 16, photometric="rgb")
    model = src_model.load_checkpoint()
    p8 = predict(model, rgb)
    p12 = predict(model, read_image(path))
    from scipy import ndimage

    n8, n12 = ndimage.label(p8.labels > 0)[1], ndimage.label(p12.labels > 0)[1]
    assert n8 > 3
    assert _dice(p12.labels > 0, p8.labels > 0) > 0.98  # walk 25: three huge 'glands' over a nearly black image
    assert abs(n12 - n8) <= 2
    assert abs(float(p12.uncertainty.mean()) - float(p8.uncertainty.mean())) < 0.02


def test_cdma_predict_says_the_bit_depth(tmp_path, lite_checkpoint):
    """The CLI's stderr names the conversion of each uint16 input."""
    rgb = glas_image()[:96, :128]
    tifffile.imwrite(tmp_path / "cam12.tif", rgb.astype(np.uint16) * 16, photometric="rgb")
    tifffile.imwrite(tmp_path / "full16.tif", rgb.astype(np.uint16) * 257, photometric="rgb")
    proc = subprocess.run([sys.executable, "-m", "src_model.cli", "predict", str(tmp_path / "cam12.tif"),
                           str(tmp_path / "full16.tif"), "--model", str(lite_checkpoint), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (f"{tmp_path / 'cam12.tif'}: Converted from 12-bit in 16-bit storage (max 4080; \u00d7 255/4095)."
            in proc.stderr), proc.stderr
    assert f"{tmp_path / 'full16.tif'}: Converted from 16-bit (/ 257)." in proc.stderr, proc.stderr


def test_the_dock_note_and_range_follow_the_bit_depth():
    rgb = glas_image()
    assert conversion_note(rgb.astype(np.uint16) * 16) == \
        "Converted from 12-bit in 16-bit storage (max 4080; \u00d7 255/4095)."
    assert conversion_note(rgb.astype(np.uint16) * 257) == "Converted from 16-bit (/ 257)."
    assert "8-bit values in 16-bit storage" in conversion_note(rgb.astype(np.uint16))
    # the disagreement map's range is taken over the tissue the model saw, the same for the 12-bit layer
    values = np.random.default_rng(0).random(rgb.shape[:2]).astype(np.float32)
    values[rgb.mean(axis=2) < 200] += 1.0
    assert np.allclose(robust_range(values, rgb.astype(np.uint16) * 16), robust_range(values, rgb), atol=1e-3)


def test_the_dock_predicts_a_12bit_layer_as_its_8bit_self_and_says_12bit(make_napari_viewer, qtbot):
    rgb = glas_image()
    widget, labels8, labels12 = predicted_with_a_copy(make_napari_viewer, qtbot, rgb, rgb.astype(np.uint16) * 16,
                                                      "testA_2 12-bit")
    assert labels8.max() > 0
    assert _dice(labels12 > 0, labels8 > 0) > 0.98
    text = widget.predict_panel.status.text()
    assert "12-bit in 16-bit storage" in text and "255/4095" in text, text
    assert "/ 257" not in text, text
