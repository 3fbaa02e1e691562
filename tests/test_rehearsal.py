"""Rehearsal with true labels during fine-tuning (src_model.finetune.RehearsalHook): patches of the replay pack's
crops are trained with their expert masks besides the corrections."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from src_model.checkpoint import load_model, read_checkpoint
from src_model.data import AugmentConfig, load_pairs
from src_model.finetune import LabelledPatchSampler, RehearsalHook, finetune
from src_model.progress import drain
from src_model.recipes import RECIPES
from src_model.reference_check import pack_reference, reference_dice

FAST = {"patch": 96, "batch_labelled": 2, "batch_unlabelled": 2}
NO_COLOUR = AugmentConfig(color_jitter=0.0, noise_p=0.0, stain_jitter=0.0)


def _two_tone(size: int = 64):
    """Pink 'gland' on the left half, purple stroma on the right; the mask marks the left half."""
    img = np.zeros((size, size, 3), np.uint8)
    img[:, : size // 2] = (230, 90, 120)
    img[:, size // 2:] = (120, 60, 200)
    mask = np.zeros((size, size), np.uint8)
    mask[:, : size // 2] = 255
    return img, mask


def test_patches_and_masks_turn_together():
    sampler = LabelledPatchSampler([_two_tone()], patch=32, seed=0, augment_cfg=NO_COLOUR)
    x, y = sampler.sample(24)
    assert x.shape == (24, 3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (24, 32, 32) and y.dtype == torch.int64
    assert set(torch.unique(y).tolist()) <= {0, 1}
    gland, stroma = y == 1, y == 0
    red_minus_blue = x[:, 0] - x[:, 2]
    # wherever the mask says gland the pixel is the pink one, however the patch was flipped or turned
    assert bool((red_minus_blue[gland] > 0).all()) and bool((red_minus_blue[stroma] < 0).all())
    # and the patches were turned: the gland side is not always on the left
    left_is_gland = (y[:, :, 0] == 1).float().mean(dim=1)
    assert float(left_is_gland.min()) < 0.5


def test_a_sampler_needs_data():
    with pytest.raises(ValueError, match="at least one"):
        LabelledPatchSampler([], patch=32, seed=0)
    with pytest.raises(ValueError, match="n >= 1"):
        RehearsalHook(LabelledPatchSampler([_two_tone()], 32, 0), 0)


def test_rehearsal_pulls_a_drifted_model_back_to_the_expert_masks():
    crops, masks = pack_reference()
    keep = [i for i, m in enumerate(masks) if m.any()][:2] + [i for i, m in enumerate(masks) if not m.any()][:1]
    crops, masks = [crops[i] for i in keep], [masks[i] for i in keep]
    model = load_model(None)
    with torch.no_grad():  # a model that drifted towards calling stroma gland
        for name, p in model.named_parameters():
            if name.endswith("conv4.bias") and p.numel() == 2:
                p[0] -= 3.0
                p[1] += 3.0
    drifted = reference_dice(copy.deepcopy(model), crops, masks)
    heads = [p for n, p in model.named_parameters() if n.endswith("conv4.bias")]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in heads:
        p.requires_grad_(True)
    hook = RehearsalHook(LabelledPatchSampler(list(zip(crops, masks, strict=True)), 96, 0), n=2)
    trainer = SimpleNamespace(model=model.train(), device="cpu")
    opt = torch.optim.SGD(heads, lr=0.5)
    for _ in range(8):
        loss = hook.extra_loss(trainer, None, [], 0)["rehearse"]
        assert loss.requires_grad and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert reference_dice(model, crops, masks) > drifted + 0.02


def test_finetune_with_rehearsal_trains_the_term(glas_dir, tmp_path):
    recipe = RECIPES["default_rehearse2"]
    assert recipe.rehearse == 2 and RECIPES["default"].rehearse == 0  # off by default
    pairs = load_pairs(glas_dir, ["testA_1"])
    result = drain(finetune("bundled", pairs, [pairs[0][0]], tmp_path, recipe=recipe, steps=2, overrides=FAST))
    assert result.steps_done == 2
    assert all("rehearse" in h and h["rehearse"] > 0 for h in result.history)
    assert read_checkpoint(result.checkpoint)["provenance"]["recipe"]["rehearse"] == 2
