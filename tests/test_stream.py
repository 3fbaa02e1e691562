"""Streaming prediction (``cdma predict``): same maps as in-memory inference, written band by band."""
import numpy as np
import pytest
import torch
from PIL import Image

import src_model
from src_model.inference import predict
from src_model.io import read_image
from src_model.progress import drain
from src_model.stream import (
    MemoryBudgetError,
    NpyWriter,
    PngWriter,
    check_memory,
    estimate_predict_bytes,
    predict_to_files,
)
from src_model.tissue import tissue_mask
from src_model.uncertainty import rank_tiles


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return src_model.build_model("lite").eval()


@pytest.mark.parametrize("shape, tile, overlap", [((150, 230), 64, 0.25), ((40, 50), 64, 0.2)])
def test_streamed_maps_equal_in_memory_prediction(tmp_path, glas_dir, model, shape, tile, overlap):
    image = read_image(glas_dir / "images" / "testA_1.png")[100:100 + shape[0], 200:200 + shape[1]]
    events = []
    summary = drain(predict_to_files(model, image, tmp_path, "x", tile=tile, overlap=overlap, review_size=48,
                                     return_branches=True), events.append)
    ref = predict(model, image, tile=tile, overlap=overlap, return_branches=True)
    assert events[-1].step == events[-1].total
    for name, want in (("disagreement", ref.disagreement), ("entropy", ref.entropy),
                       ("uncertainty", ref.uncertainty),
                       ("probability", ref.probability[1]), ("branch_probs", ref.branch_probs[:, 1])):
        got = np.load(tmp_path / f"x_{name}.npy")
        assert got.dtype == np.float16 and got.shape == want.shape
        assert np.abs(got.astype(np.float32) - want).max() < 1e-3, name
    # the uncertainty map is Prediction.uncertainty (mean branch entropy) to float16 rounding
    unc = np.load(tmp_path / "x_uncertainty.npy").astype(np.float32)
    assert unc.shape == image.shape[:2] and 0 <= unc.min() and unc.max() <= 1
    np.testing.assert_allclose(unc, ref.uncertainty, rtol=2.0**-11, atol=1e-6)
    mask = np.array(Image.open(tmp_path / "x_mask.png"))
    assert np.array_equal(mask, (ref.labels > 0).astype(np.uint8) * 255)
    dis_png = np.array(Image.open(tmp_path / "x_disagreement.png")).astype(int)
    assert np.abs(dis_png - np.round(ref.disagreement * 255)).max() <= 1
    assert summary.foreground_fraction == pytest.approx((ref.labels > 0).mean())
    assert summary.mean_disagreement == pytest.approx(float(ref.disagreement.mean()), rel=1e-4, abs=1e-7)
    assert summary.mean_uncertainty == pytest.approx(float(ref.uncertainty.mean()), rel=1e-4, abs=1e-7)
    # review squares: the grid ranked by the uncertainty map (not by disagreement)
    want_rank = rank_tiles(ref.uncertainty, tissue_mask(image), 48)
    assert [b for _, b in summary.review_tiles] == [b for _, b in want_rank]
    assert [s for s, _ in summary.review_tiles] == pytest.approx([s for s, _ in want_rank], rel=1e-5, abs=1e-7)
    if shape == (150, 230):  # on this crop the two maps rank the squares differently
        assert [b for _, b in summary.review_tiles] != [b for _, b in rank_tiles(ref.disagreement, tissue_mask(image),
                                                                                  48)]
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_failed_prediction_leaves_no_files(tmp_path, glas_dir, model):
    image = read_image(glas_dir / "images" / "testA_1.png")[:100, :100]
    gen = predict_to_files(model, image, tmp_path, "x", tile=64)
    next(gen)
    gen.close()  # interrupted after the first batch
    assert list(tmp_path.iterdir()) == []


def test_writers_produce_standard_files(tmp_path):
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 256, (37, 23), dtype=np.uint8)
    png = PngWriter(tmp_path / "a.png", 37, 23)
    for r0 in range(0, 37, 10):
        png.write_rows(rows[r0:r0 + 10])
    png.close()
    assert np.array_equal(np.array(Image.open(tmp_path / "a.png")), rows)
    data = rng.random((3, 37, 23)).astype(np.float16)
    npy = NpyWriter(tmp_path / "a.npy", data.shape, np.float16)
    for r0 in (30, 0, 10, 20):  # any order
        npy.write_rows(r0, data[:, r0:r0 + 10])
    npy.close()
    assert np.array_equal(np.load(tmp_path / "a.npy"), data)
    short = PngWriter(tmp_path / "b.png", 5, 4)
    short.write_rows(np.zeros((2, 4), np.uint8))
    with pytest.raises(ValueError, match="2 of 5 rows"):
        short.close()


def test_memory_estimate_is_bounded_and_refusal_names_the_file():
    small = estimate_predict_bytes(12000, 12000)
    assert small["image"] == 12000 * 12000 * 3
    assert small["total"] < 1.5 * 2**30  # the budget of the 12000 x 12000 benchmark
    big = estimate_predict_bytes(20000, 20000)
    assert big["total"] - small["total"] < 1.5 * (big["image"] - small["image"])  # ~ the image, not 18x it
    with pytest.raises(MemoryBudgetError, match=r"huge\.tif: predicting this image needs about 1\.\d\d GB .* "
                                                r"only 0\.50 GB is available"):
        check_memory("huge.tif", small, available=500_000_000)
    check_memory("huge.tif", small, available=10**12)
