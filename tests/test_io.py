"""Reading images and masks: formats, conversion rules and clear errors naming the file."""
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from src_model import io
from src_model.io import ImageReadError, read_image, read_mask, to_model_input, to_rgb_uint8


@pytest.fixture
def image_path(glas_dir):
    return glas_dir / "images" / "testA_1.png"


def test_read_real_glas_image_and_mask(image_path, glas_dir):
    img = read_image(image_path)
    assert img.dtype == np.uint8 and img.shape == (522, 775, 3)
    assert np.array_equal(img, np.asarray(Image.open(image_path).convert("RGB")))
    mask = read_mask(glas_dir / "masks" / "testA_1.png")
    assert mask.shape == (522, 775) and np.issubdtype(mask.dtype, np.integer)
    assert mask.min() == 0 and mask.max() >= 2  # background + several gland instances as stored


@pytest.mark.parametrize("suffix", [".tif", ".bmp", ".npy", ".jpg"])
def test_round_trip_formats(tmp_path, suffix, image_path):
    img = read_image(image_path)[:64, :80]
    path = tmp_path / f"crop{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, img)
    elif suffix == ".npy":
        np.save(path, img)
    else:
        Image.fromarray(img).save(path)
    out = read_image(path)
    assert out.shape == (64, 80, 3) and out.dtype == np.uint8
    if suffix != ".jpg":  # lossless formats give the pixels back
        assert np.array_equal(out, img)
    else:
        assert np.abs(out.astype(int) - img).mean() < 10


def test_truncated_png_is_an_error_naming_the_file(tmp_path, image_path):
    data = image_path.read_bytes()
    bad = tmp_path / "truncated.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated.png"):
        read_image(bad)


def test_truncated_png_is_an_error_even_if_pillow_was_relaxed(tmp_path):
    from PIL import ImageFile

    rng = np.random.default_rng(0)
    path = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 255, (120, 90, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with pytest.raises(ImageReadError, match="noise.png"):
            read_image(path)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored after the read
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


@pytest.mark.parametrize("name, content", [("garbage.png", b"not a png at all"), ("garbage.tif", b"II*\x00junk"),
                                           ("garbage.npy", b"\x93NUMPY junk"), ("empty.jpg", b"")])
def test_corrupt_files_raise_with_file_name(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=name.replace(".", r"\.")):
        read_image(path)


def test_missing_file_and_unsupported_suffix(tmp_path):
    with pytest.raises(ImageReadError, match="does not exist"):
        read_image(tmp_path / "nope.png")
    wrong = tmp_path / "image.gif"
    wrong.write_bytes(b"GIF89a")
    with pytest.raises(ImageReadError, match=r"image\.gif.*unsupported"):
        read_image(wrong)
    assert issubclass(ImageReadError, ValueError)


def test_pickled_npy_is_refused(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImageReadError, match="objects.npy"):
        read_image(path)


def test_uint16_tiff_uses_full_range(tmp_path):
    ramp = np.array([[0, 257, 32896, 65535]], dtype=np.uint16).repeat(3, 0)
    path = tmp_path / "sixteen.tif"
    tifffile.imwrite(path, np.stack([ramp] * 3, axis=-1))
    out = read_image(path)
    assert out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]


def test_rgba_png_composited_over_white(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:4, :, 3] = 255  # opaque red-ish top half
    rgba[4:, :, 3] = 0  # transparent bottom half
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    out = read_image(path)
    assert out.shape == (8, 8, 3)
    assert out[0, 0].tolist() == [200, 0, 0]
    assert out[7, 7].tolist() == [255, 255, 255]
    half = to_rgb_uint8(np.array([[[0, 0, 0, 128]]], dtype=np.uint8))
    assert half[0, 0].tolist() == [127, 127, 127]


def test_grayscale_png_and_arrays_replicated(tmp_path):
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    path = tmp_path / "grey.png"
    Image.fromarray(grey, "L").save(path)
    out = read_image(path)
    assert out.shape == (8, 8, 3) and np.array_equal(out[..., 2], grey)
    assert np.array_equal(to_rgb_uint8(grey[..., None]), out)


def test_conversion_rules():
    rgb = np.random.default_rng(1).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    assert to_rgb_uint8(rgb) is not None and np.array_equal(to_rgb_uint8(rgb), rgb)
    assert np.array_equal(to_rgb_uint8(rgb.astype(np.float32) / 255.0), rgb)
    assert np.array_equal(to_rgb_uint8(np.moveaxis(rgb, 2, 0).copy()), rgb)  # channel-first
    big = np.zeros((3, 20, 30), dtype=np.uint8)
    assert to_rgb_uint8(big).shape == (20, 30, 3)
    assert np.array_equal(to_rgb_uint8(rgb.astype(np.int64)), rgb)


def test_ambiguous_small_channel_first_is_an_error():
    with pytest.raises(ImageReadError, match=r"layer x.*\(3, 4, 7\)"):
        to_rgb_uint8(np.zeros((3, 4, 7), dtype=np.uint8), source="layer x")


@pytest.mark.parametrize("array, pattern", [
    (np.zeros((5, 5), dtype=bool), "boolean"),
    (np.full((5, 5, 3), 1.5, dtype=np.float32), r"\[0, 1\]"),
    (np.full((5, 5, 3), np.nan, dtype=np.float32), "NaN"),
    (np.zeros((5, 5, 2), dtype=np.uint8), r"\(5, 5, 2\)"),
    (np.zeros((5, 5, 6), dtype=np.uint8), r"\(5, 5, 6\)"),
    (np.zeros((2, 5, 5, 3), dtype=np.uint8), r"\(2, 5, 5, 3\)"),
    (np.zeros((0, 7, 3), dtype=np.uint8), "empty"),
    (np.full((5, 5), 300, dtype=np.int32), "0..255"),
])
def test_bad_arrays_raise_naming_source(array, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        to_rgb_uint8(array, source="my-layer")
    assert "my-layer" in str(info.value)


def test_pixel_limit_points_to_whole_slide_path(monkeypatch):
    monkeypatch.setattr(io, "MAX_PIXELS", 100)
    with pytest.raises(ImageReadError, match="whole-slide"):
        to_rgb_uint8(np.zeros((20, 20, 3), dtype=np.uint8))


def test_pixel_limit_checked_before_decoding_png(tmp_path, monkeypatch):
    path = tmp_path / "large.png"
    Image.fromarray(np.zeros((30, 30, 3), dtype=np.uint8)).save(path)
    monkeypatch.setattr(io, "MAX_PIXELS", 100)
    with pytest.raises(ImageReadError, match=r"large\.png.*whole-slide"):
        read_image(path)


def test_read_mask_formats(tmp_path):
    labels = np.zeros((10, 12), dtype=np.uint16)
    labels[2:5, 3:9] = 1
    labels[6:9, 1:4] = 300
    tifffile.imwrite(tmp_path / "m.tif", labels)
    assert np.array_equal(read_mask(tmp_path / "m.tif"), labels)
    np.save(tmp_path / "m.npy", labels.astype(np.int32))
    assert np.array_equal(read_mask(tmp_path / "m.npy"), labels)
    Image.fromarray(np.stack([labels.astype(np.uint8)] * 3, -1)).save(tmp_path / "grey_rgb.png")
    assert np.array_equal(read_mask(tmp_path / "grey_rgb.png"), labels.astype(np.uint8))
    colour = np.zeros((4, 4, 3), dtype=np.uint8)
    colour[0, 0] = (255, 0, 0)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(ImageReadError, match="colour.png"):
        read_mask(tmp_path / "colour.png")
    np.save(tmp_path / "float.npy", np.full((3, 3), 0.5))
    with pytest.raises(ImageReadError, match="float.npy"):
        read_mask(tmp_path / "float.npy")


def test_to_model_input_is_image_over_255():
    img = np.random.default_rng(2).integers(0, 256, (5, 9, 3), dtype=np.uint8)
    x = to_model_input(img)
    assert x.shape == (1, 3, 5, 9) and x.dtype == torch.float32
    assert torch.allclose(x[0, 1], torch.from_numpy(img[..., 1]).float() / 255)
    assert x.min() >= 0 and x.max() <= 1
    with pytest.raises(ValueError, match="uint8"):
        to_model_input(img.astype(np.float32))


def test_to_model_input_takes_batches_and_keeps_channels_last_strides():
    imgs = np.random.default_rng(3).integers(0, 256, (2, 5, 9, 3), dtype=np.uint8)
    x = to_model_input(imgs)
    assert x.shape == (2, 3, 5, 9) and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x[1], to_model_input(imgs[1])[0])
    assert torch.equal(to_model_input(torch.from_numpy(imgs)), x)
    with pytest.raises(ValueError, match="uint8"):
        to_model_input(imgs[..., :2])


# ----------------------------------------------------------------------------- one image per TIFF (issue 10)
def _three_grey_pages(path, rgb):
    with tifffile.TiffWriter(path) as w:  # no tifffile metadata: one series of 3 pages
        for c in range(3):
            w.write(rgb[..., c], metadata=None)


def test_multi_page_tiff_is_refused_unless_a_page_is_chosen(tmp_path, image_path):
    rgb = read_image(image_path)[:40, :60]
    path = tmp_path / "stack.tif"
    _three_grey_pages(path, rgb)
    for reader in (read_image, io.image_shape, io.image_header):
        with pytest.raises(ImageReadError, match=r"stack\.tif: TIFF file holds 3 pages.*--page N \(0\.\.2\)"):
            reader(path)
    page = read_image(path, page=1)
    assert page.shape == (40, 60, 3) and np.array_equal(page[..., 0], rgb[..., 1])  # grey, not RGB
    assert io.image_shape(path, page=2) == (40, 60)
    with pytest.raises(ImageReadError, match=r"stack\.tif: --page 3 is out of range"):
        read_image(path, page=3)


def test_multi_series_tiff_is_refused_unless_a_series_is_chosen(tmp_path, image_path):
    rgb = read_image(image_path)[:40, :60]
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, rgb, photometric="rgb")
    tifffile.imwrite(path, rgb[:20, :30, 0], append=True)
    with pytest.raises(ImageReadError, match=r"two\.tif: TIFF file holds 2 image series.*--series N \(0\.\.1\)"):
        read_image(path)
    assert np.array_equal(read_image(path, series=0), rgb)
    assert read_image(path, series=1).shape == (20, 30, 3)
    with pytest.raises(ImageReadError, match=r"two\.tif: --series 2 is out of range"):
        io.image_shape(path, series=2)


def test_single_image_tiffs_still_read_and_choices_elsewhere_are_refused(tmp_path, image_path):
    rgb = read_image(image_path)[:40, :60]
    planar = tmp_path / "planar.tif"
    tifffile.imwrite(planar, np.moveaxis(rgb, 2, 0).copy(), photometric="rgb")  # one page, planar RGB
    assert np.array_equal(read_image(planar), rgb) and np.array_equal(read_image(planar, page=0), rgb)
    with pytest.raises(ImageReadError, match=r"planar\.tif: --page 1 is out of range"):
        read_image(planar, page=1)
    with pytest.raises(ImageReadError, match=r"testA_1\.png: --series 1 applies to TIFF files only"):
        read_image(image_path, series=1)


def test_image_header_reads_no_pixels_and_states_decode_cost(tmp_path, image_path, monkeypatch):
    rgb = read_image(image_path)[:40, :60]
    tif = tmp_path / "rgb.tif"
    tifffile.imwrite(tif, rgb, photometric="rgb")
    head = io.image_header(tif)
    assert (head["height"], head["width"], head["read_bytes"]) == (40, 60, 0)  # read straight into the result
    png = io.image_header(image_path)
    assert (png["height"], png["width"]) == (522, 775) and png["read_bytes"] >= 4 * 522 * 775
    sixteen = tmp_path / "sixteen.npy"
    np.save(sixteen, np.zeros((10, 20, 3), np.uint16))
    assert io.image_header(sixteen)["read_bytes"] > 10 * 20 * 3 * 2
    monkeypatch.setattr(io, "MAX_PIXELS", 100)
    with pytest.raises(ImageReadError, match=r"rgb\.tif.*whole-slide"):
        io.image_header(tif)


def test_uint16_conversion_is_exact_for_every_value_and_works_in_bands(monkeypatch):
    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    monkeypatch.setattr(io, "_CONVERT_ROWS", 7)  # several bands, the last one partial
    out = to_rgb_uint8(every)
    assert np.array_equal(out[..., 0], np.rint(every / 257.0).astype(np.uint8)) and out.shape == (256, 256, 3)
