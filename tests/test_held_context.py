"""Held-out regions are scored in their source image, at the dock's tiling (napari_cdma/project/retrain_worker.py,
in_context): a region the pathologist accepted unchanged scores 1.0 for the model that predicted it. Scored
as a crop alone, the bundled model's own prediction of uncertain GlaS tissue scored far lower (pathologist
walk: 0.679), so the promotion rule compared models on something neither is used for."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from napari_cdma.project.retrain_worker import HELD_CONTEXT_PX, WHOLE_CONTEXT_PIXELS, _score_held, in_context

BOXES = [(100, 100), (200, 300), (300, 500), (394, 647), (150, 400)]  # 128 px boxes of testA_1 (522 x 775)


@pytest.fixture(scope="module")
def sample():
    import torch

    from src_model.checkpoint import bundled_model_path, load_model
    from src_model.inference import predict
    from src_model.io import read_image

    torch.set_num_threads(1)
    image = read_image(__import__("pathlib").Path(__file__).parent / "data" / "glas" / "images" / "testA_1.png")
    model = load_model(bundled_model_path())
    dock = predict(model, image).labels > 0  # the dock's tiling (the engine's defaults)
    return model, image, dock


def _held(image, dock):
    out = []
    for k, (y0, x0) in enumerate(BOXES):
        rec = SimpleNamespace(region_id=f"r{k + 1:04d}", image_hash="testA_1", bbox=(y0, x0, y0 + 128, x0 + 128))
        out.append((rec, image[y0:y0 + 128, x0:x0 + 128], dock[y0:y0 + 128, x0:x0 + 128].astype(np.uint8)))
    return out


def test_regions_accepted_unchanged_score_one_for_the_model_that_predicted_them(sample):
    model, image, dock = sample
    held = _held(image, dock)
    old, new, per, _ = _score_held(model, model, held, 320, 0.2, "cpu", lambda: False, {"testA_1": image})
    assert old == pytest.approx(1.0) and new == pytest.approx(1.0)
    assert per["testA_1"][0] == len(BOXES)
    # the same regions scored as crops alone, as before: the model disagrees with itself
    alone, *_ = _score_held(model, model, held, 320, 0.2, "cpu", lambda: False, {})
    assert alone < 0.95


def test_in_context_uses_the_whole_image_a_window_or_the_crop():
    rec = SimpleNamespace(image_hash="h", bbox=(10, 20, 138, 148))
    crop, truth = np.zeros((128, 128, 3), np.uint8), np.zeros((128, 128), np.uint8)
    small = np.zeros((300, 400, 3), np.uint8)
    image, _, box = in_context(rec, crop, truth, {"h": small})
    assert image is small and box == (10, 20, 138, 148)
    side = int(WHOLE_CONTEXT_PIXELS ** 0.5) + 1
    big = np.zeros((side, side, 3), np.uint8)
    far = SimpleNamespace(image_hash="h", bbox=(1000, 1200, 1128, 1328))
    window, _, box = in_context(far, crop, truth, {"h": big})
    assert window.shape[:2] == (128 + 2 * HELD_CONTEXT_PX,) * 2 and box == (HELD_CONTEXT_PX, HELD_CONTEXT_PX,
                                                                          HELD_CONTEXT_PX + 128, HELD_CONTEXT_PX + 128)
    assert in_context(rec, crop, truth, {})[0] is crop  # no stored image: the region alone
    assert in_context(rec, crop, truth, {"h": small[:100]})[0] is crop  # an image the box does not fit
