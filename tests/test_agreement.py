"""The promotion's no-regression check (src_model.agreement): where it looks, what it counts, and that it
refuses a fine-tuned model that forgot, on real GlaS images of tests/data and the bundled model."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from src_model.agreement import (
    CHECK_SHARE,
    MIN_AGREEMENT,
    agreement,
    check_box,
    distill_part,
    excluded_mask,
    gland_matches,
    label_agreement,
    tissue_crops,
    worst_image,
)
from src_model.checkpoint import load_model
from src_model.data import load_images, load_pairs
from src_model.finetune import finetune, get_recipe
from src_model.inference import predict
from src_model.progress import drain


def _disk(shape, cy, cx, r):
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_check_strip_is_the_end_of_the_longer_side_and_fine_tuning_never_sees_it():
    wide = np.zeros((522, 775, 3), np.uint8)
    y0, x0, y1, x1 = check_box(wide.shape)
    assert (y0, y1, x1) == (0, 522, 775) and x1 - x0 == round(775 * CHECK_SHARE)
    assert distill_part(wide).shape == (522, x0, 3)
    tall = np.zeros((900, 600, 3), np.uint8)
    y0, x0, y1, x1 = check_box(tall.shape)
    assert (x0, x1, y1) == (0, 600, 900) and y1 - y0 == round(900 * CHECK_SHARE)
    assert distill_part(tall).shape == (y0, 600, 3)
    small = np.zeros((300, 400, 3), np.uint8)  # too small to split: all of it trains and is compared
    assert check_box(small.shape) is None and distill_part(small) is small


def test_crops_within_the_strip_compare_only_strip_tissue(glas_dir):
    image = load_images(glas_dir, ["testB_4"])[0]
    strip = check_box(image.shape)
    crops = tissue_crops(image, 8, within=strip)
    assert crops, "the strip of a GlaS image has tissue"
    for y0, _, _, x1 in crops:  # each crop overlaps the strip (its context may reach beyond it)
        assert x1 > strip[1] and y0 < strip[2]
    everywhere = tissue_crops(image, 8)
    assert any(x1 <= strip[1] for _, _, _, x1 in everywhere)  # without ``within``, crops away from the strip


def test_gland_matches_counts_the_glands_one_map_lost():
    shape = (300, 400)  # glands of radius 30: above the post-processing's smallest gland (1600 px)
    old = _disk(shape, 80, 80, 30) | _disk(shape, 80, 220, 30) | _disk(shape, 220, 320, 30)
    new = _disk(shape, 80, 80, 30) | _disk(shape, 80, 220, 15)  # one gland shrank below half, one gone
    assert gland_matches(old, new) == (1, 3)
    assert gland_matches(new, old) == (1, 1)  # the shrunk one is too small to count as a gland
    valid = np.zeros(shape, bool)
    valid[:, :150] = True  # only the first gland is compared
    assert gland_matches(old, new, valid) == (1, 1)
    num, den = label_agreement(old, new, valid)
    assert num == den  # the first gland is identical


def test_worst_image_leaves_out_images_with_too_little_gland():
    per = {"a": {"agreement": 0.99, "gland_px": 50_000}, "b": {"agreement": 0.90, "gland_px": 30_000},
           "c": {"agreement": 0.10, "gland_px": 100}}
    assert worst_image(per, min_gland_px=4000) == {"worst": 0.90, "worst_image": "b"}
    assert worst_image({"c": per["c"]}, min_gland_px=4000) == {"worst": None, "worst_image": None}


CORRECTED_BOX = (100, 200, 356, 456)  # (y0, x0, y1, x1) of the corrected crop of testA_1


@pytest.fixture(scope="module")
def forgetful(glas_dir, tmp_path_factory):
    """The bundled model fine-tuned on a correction that contradicts it (no gland in a gland-rich crop of
    testA_1), with testB_4 as the store's uncorrected tissue: it forgets glands wherever the
    distillation does not hold them."""
    torch.set_num_threads(1)
    (image, _), = load_pairs(glas_dir, ["testA_1"])
    y0, x0, y1, x1 = CORRECTED_BOX
    crop = image[y0:y1, x0:x1]
    store_image = load_images(glas_dir, ["testB_4"])[0]
    recipe = dataclasses.replace(get_recipe("default"), lr=1e-3)  # a large step, so a few steps show
    out = tmp_path_factory.mktemp("forgetful")
    result = drain(finetune("bundled", [(crop, np.zeros(crop.shape[:2], np.uint8))], [store_image], out,
                            recipe=recipe, steps=6, semi_supervised=False, seed=0, device="cpu",
                            overrides={"patch": 96, "batch_labelled": 2, "batch_unlabelled": 2},
                            reserve_check=True))
    return load_model(None), load_model(result.checkpoint), image, store_image


def test_check_refuses_a_model_that_lost_glands_where_nobody_corrected_while_distilled_tissue_agrees(forgetful):
    old, new, image, store_image = forgetful
    # testA_1 away from its corrected crop: tissue nobody corrected, outside the distillation stream
    a, b = predict(old, image).labels, predict(new, image).labels
    elsewhere = ~excluded_mask(a.shape, [CORRECTED_BOX])
    kept, n = gland_matches(a, b, elsewhere)
    num, den = label_agreement(a, b, elsewhere)
    assert kept < n and num / den < 0.9, "the fine-tune lost glands nobody corrected"

    # On the tissue the distillation trained on, the new model still agrees with the old one: the check
    # there (the default, reserved=False) would have promoted it.
    a, b = predict(old, store_image).labels, predict(new, store_image).labels
    distilled = ~excluded_mask(a.shape, [check_box(a.shape)])
    num, den = label_agreement(a, b, distilled)
    assert num / den >= MIN_AGREEMENT
    assert float((a == b)[distilled].mean()) >= MIN_AGREEMENT  # and pixel agreement too

    # The strip check compares on the strip the fine-tune never trained on, and refuses.
    result = drain(agreement(old, new, [("testB_4", store_image, [])], reserved=True))
    assert result["crops"] >= 1 and result["per_image"]["testB_4"]["crops"] == result["crops"]
    assert result["pooled"] < MIN_AGREEMENT and result["worst"] < MIN_AGREEMENT

    from napari_cdma.project.events import Done
    from napari_cdma.project.retrain_job import rule_decision

    done = Done(checkpoint="x.pt", old_dice=0.80, new_dice=0.90, better=True, n_holdout=10,
                parent_model="v0001", steps_done=6, agreement=result["pooled"], min_agreement=MIN_AGREEMENT,
                agreement_crops=result["crops"])  # better on plenty of held-out regions, yet refused
    promote, reason, why, keep = rule_decision(done)
    assert not promote and "uncorrected tissue" in reason
    assert why == "changed_uncorrected" and not keep


def _perturbed(model, scale: float, seed: int = 0):
    """A copy of ``model`` whose weight tensors got Gaussian noise of ``scale`` times their own spread."""
    import copy

    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            if p.dim() > 1:
                p.add_(torch.randn(p.shape, generator=gen) * scale * p.std())
    return out


def test_rule_promotes_an_unchanged_model_and_refuses_one_whose_weights_were_scrambled(glas_dir):
    """The check's job as calibrated (benchmarks/results/promotion_check.md): gross change on tissue nobody
    corrected is refused whatever the held-out score says; an unchanged model, or one changed a little, is
    promoted on its held-out score."""
    from napari_cdma.project.events import Done
    from napari_cdma.project.retrain_job import MIN_HOLDOUT_FOR_PROMOTION, rule_decision

    torch.set_num_threads(1)
    old = load_model(None)
    image = load_images(glas_dir, ["testB_4"])[0]
    images = [("testB_4", image, [(0, 0, 128, 128)])]  # one accepted box, left out of the comparison

    def decide(new):
        result = drain(agreement(old, new, images, max_crops=2))
        done = Done(checkpoint="x.pt", old_dice=0.80, new_dice=0.85, better=True,
                    n_holdout=MIN_HOLDOUT_FOR_PROMOTION, parent_model="v0001", steps_done=10,
                    agreement=result["pooled"], min_agreement=MIN_AGREEMENT, agreement_crops=result["crops"])
        return result, rule_decision(done)[:2]

    same, (promote, reason) = decide(_perturbed(old, 0.0))
    assert same["pooled"] == 1.0 and same["crops"] == 2
    assert promote and reason.startswith(f"better on {MIN_HOLDOUT_FOR_PROMOTION} held-out regions")

    nudged, (promote, _) = decide(_perturbed(old, 0.05))  # a small change of every weight
    assert MIN_AGREEMENT <= nudged["pooled"] < 1.0 and promote

    scrambled, (promote, reason) = decide(_perturbed(old, 0.4))
    assert scrambled["pooled"] < MIN_AGREEMENT and not promote
    assert f"agreement with the current model {scrambled['pooled']:.3f} < {MIN_AGREEMENT:.3f}" in reason
    assert "the current model stays" in reason
