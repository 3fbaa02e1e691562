"""Review 18: a TIFF whose header declares more image than its strips hold is refused by `cdma predict` as it is by
`cdma predict-slide` (one shared check), instead of being predicted with the missing rows read as zeros.
Real subprocesses on real files.
"""
from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest


def cdma(*args):
    return subprocess.run([sys.executable, "-m", "src_model.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def _glas_rgb(glas_dir, rows):
    from PIL import Image

    rgb = np.asarray(Image.open(glas_dir / "images" / "testA_2.png").convert("RGB"))
    return np.ascontiguousarray(rgb[:rows, :256])


def _lying_tiff(path, rgb):
    """``rgb`` as a zlib TIFF of one strip, then its ImageLength tag patched to twice the rows."""
    import tifffile

    tifffile.imwrite(path, rgb, photometric="rgb", compression="zlib", rowsperstrip=rgb.shape[0])
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags["ImageLength"]
        struct.pack_into("<H" if tag.dtype == 3 else "<I", data, tag.valueoffset, 2 * rgb.shape[0])
    path.write_bytes(bytes(data))


def test_predict_refuses_a_tiff_whose_header_needs_more_strips_than_it_holds(tmp_path, glas_dir, lite_checkpoint):
    lie = tmp_path / "lie.tif"
    _lying_tiff(lie, _glas_rgb(glas_dir, 200))
    out = tmp_path / "preds"
    proc = cdma("predict", lie, "--model", lite_checkpoint, "--out", out, "--tile", 64)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0] == (f"cdma predict: error: {lie}: truncated: the TIFF file holds 1 strip(s) of image data where "
                        f"its header's 400 x 256 size needs 2"), lines[0]
    assert not out.exists()


def test_image_header_refuses_the_same_file(tmp_path, glas_dir):
    from src_model.io import ImageReadError, image_header, read_image

    lie = tmp_path / "lie.tif"
    _lying_tiff(lie, _glas_rgb(glas_dir, 120))
    for read in (image_header, read_image):
        with pytest.raises(ImageReadError, match=r"truncated: the TIFF file holds 1 strip\(s\)"):
            read(lie)


def test_predict_slide_refuses_the_same_file_with_its_level(tmp_path, glas_dir):
    from src_model.slide import SlideError, open_slide

    lie = tmp_path / "lie.tif"
    _lying_tiff(lie, _glas_rgb(glas_dir, 120))
    with pytest.raises(SlideError, match=r"truncated: level 0 holds 1 strip\(s\) of image data where its header's "
                                         r"240 x 256 size needs 2"):
        open_slide(lie)


def test_a_valid_multi_strip_zlib_tiff_still_predicts(tmp_path, glas_dir, lite_checkpoint):
    import tifffile

    good = tmp_path / "good.tif"
    rgb = _glas_rgb(glas_dir, 200)
    tifffile.imwrite(good, rgb, photometric="rgb", compression="zlib", rowsperstrip=16)
    with tifffile.TiffFile(good) as tif:
        assert len(tif.pages[0].dataoffsets) == 13
    out = tmp_path / "preds"
    proc = cdma("predict", good, "--model", lite_checkpoint, "--out", out, "--tile", 64)
    assert proc.returncode == 0, proc.stderr[-2000:]
    masks = sorted(p.name for p in out.iterdir())
    assert masks, proc.stderr
