"""Input files the `cdma` commands are given by mistake: each is one line that says what the file is and what to
do, exit status 2, no traceback, nothing written. Real subprocesses on real files.
"""
from __future__ import annotations

import subprocess
import sys


def cdma(*args):
    return subprocess.run([sys.executable, "-m", "src_model.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def one_line(proc, expected):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.strip().splitlines() == [expected]


def test_import_official_of_a_napari_cdma_checkpoint_says_so(tmp_path, lite_checkpoint):
    out = tmp_path / "imported.pt"
    proc = cdma("import-official", lite_checkpoint, "--out", out)
    one_line(proc, f"cdma import-official: error: {lite_checkpoint}: already a napari-cdma checkpoint; use it as it is")
    assert not out.exists()


def test_a_folder_given_as_the_model_is_named_a_folder(tmp_path, glas_dir):
    run = tmp_path / "run"
    run.mkdir()
    out = tmp_path / "preds"
    proc = cdma("predict", glas_dir / "images" / "testA_2.png", "--model", run, "--out", out)
    one_line(proc, f"cdma predict: error: {run}: a folder, not a checkpoint file (give a .pt file, e.g. RUN/final.pt)")
    assert not out.exists()


def test_a_file_given_as_the_store_to_export_is_named_a_file(tmp_path, glas_dir):
    image = glas_dir / "images" / "testA_2.png"
    out = tmp_path / "glands.geojson"
    proc = cdma("export", image, "--geojson", out)
    one_line(proc, f"cdma export: error: {image}: a file, not a store (a folder made by cdma predict-slide)")
    assert not out.exists()


def test_a_tiny_colour_image_is_not_called_greyscale(tmp_path, lite_checkpoint):
    import numpy as np
    from PIL import Image

    rgb = tmp_path / "dot.png"
    Image.fromarray(np.array([[[200, 40, 120]]], np.uint8)).save(rgb)  # 1 x 1 RGB
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((40, 40), 128, np.uint8)).save(grey)
    proc = cdma("predict", rgb, grey, "--model", lite_checkpoint, "--out", tmp_path / "preds", "--tile", 64)
    assert proc.returncode == 0, proc.stderr[-2000:]
    warned = [line.split(":")[0] for line in proc.stderr.splitlines() if "greyscale" in line]
    assert warned == [str(grey)], proc.stderr


def test_a_torchscript_model_is_named_as_such(tmp_path, glas_dir):
    import torch

    scripted = tmp_path / "model.pt"
    torch.jit.script(torch.nn.Conv2d(3, 2, 1)).save(str(scripted))
    out = tmp_path / "preds"
    proc = cdma("predict", glas_dir / "images" / "testA_2.png", "--model", scripted, "--out", out)
    one_line(proc, f"cdma predict: error: {scripted}: a TorchScript model (torch.jit.save), not a napari-cdma "
                   f"checkpoint; give one written by cdma train, cdma import-official or the plugin")
    assert not out.exists()


def test_an_image_too_large_for_memory_names_the_command_to_use(tmp_path):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    huge = tmp_path / "huge.png"  # a header declaring 100000 x 100000 RGB pixels, a few bytes of data
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))
    out = tmp_path / "preds"
    proc = cdma("predict", huge, "--out", out)
    one_line(proc, f"cdma predict: error: {huge}: image of 100000 x 100000 = 10000 megapixels is larger than the "
                   f"in-memory limit of 400 megapixels; use the whole-slide path (cdma predict-slide, or the dock's "
                   f"Whole slide panel)")
    assert not out.exists()
