"""The reference check of fine-tuning (src_model.reference_check): the share of a fine-tuning's change of the
weights that is kept is decided on the replay pack's labelled GlaS training crops."""
from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch

from src_model.checkpoint import load_model, read_checkpoint
from src_model.data import load_pairs
from src_model.finetune import finetune, interpolate
from src_model.progress import drain
from src_model.recipes import RECIPES
from src_model.reference_check import KEEPS, guarded_keep, pack_reference, reference_dice
from src_model.replay_pack import MASK_DIR, PACK_DIR, load_pack, load_pack_masks

FAST = {"patch": 96, "batch_labelled": 2, "batch_unlabelled": 2}


@pytest.fixture(scope="module")
def reference():
    crops, masks = pack_reference()
    # a few crops with glands and one without keep the tests quick; the check itself uses the whole pack
    with_glands = [i for i, m in enumerate(masks) if m.any()][:3]
    without = [i for i, m in enumerate(masks) if not m.any()][:1]
    keep = with_glands + without
    return [crops[i] for i in keep], [masks[i] for i in keep]


def _pushed_to_gland(model: torch.nn.Module, by: float) -> torch.nn.Module:
    """A copy whose three heads favour gland by ``by`` logits: it calls stroma gland, a harmful change."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in out.named_parameters():
            if name.endswith("conv4.bias") and p.numel() == 2:
                p[0] -= by / 2
                p[1] += by / 2
    return out


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


def test_every_pack_crop_has_its_expert_mask():
    crops, masks = load_pack(), load_pack_masks()
    assert len(masks) == len(crops)
    assert all(m.dtype == np.bool_ and m.shape == c.shape[:2] for c, m in zip(crops, masks, strict=True))
    share = [float(m.mean()) for m in masks]
    # GlaS tissue: most crops hold glands, some are stroma only (they catch glands called where there are none)
    assert sum(s > 0.1 for s in share) >= len(masks) // 2 and max(share) < 0.95
    assert (PACK_DIR / MASK_DIR).is_dir()


def test_a_crop_without_its_mask_is_a_clear_error(tmp_path):
    pack = tmp_path / "pack"
    shutil.copytree(PACK_DIR, pack)
    victim = sorted((pack / MASK_DIR).glob("*.png"))[0]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=f"{victim.name}.*no mask"):
        load_pack_masks(pack)


def test_the_bundled_model_segments_the_reference_crops(reference):
    crops, masks = reference
    model = load_model(None).train()
    good = reference_dice(model, crops, masks)
    assert model.training  # scoring leaves a model in training mode as it found it
    bad = reference_dice(_pushed_to_gland(model, 6.0), crops, masks)
    assert good > 0.85 and bad < good - 0.02


def test_a_harmful_change_is_taken_back_as_far_as_needed(reference):
    crops, masks = reference
    previous = load_model(None)
    tuned = _pushed_to_gland(previous, 6.0)
    expected = copy.deepcopy(tuned)
    result = guarded_keep(previous, tuned, crops, masks, max_drop=0.005)
    assert result.keep < 1.0 and result.tried[1.0] < result.previous_dice - 0.005
    # the kept interpolation is the first that passes, and every share tried before it failed
    tried = list(result.tried)
    assert tried == [k for k in KEEPS if k >= result.keep and k > 0]
    if result.keep > 0:
        assert result.tried[result.keep] >= result.previous_dice - 0.005
    assert all(result.tried[k] < result.previous_dice - 0.005 for k in tried if k != result.keep)
    # the model now holds exactly that interpolation
    interpolate(previous, expected, result.keep)
    assert _same_weights(tuned, expected)


def test_a_harmless_change_is_kept_whole(reference):
    crops, masks = reference
    previous = load_model(None)
    tuned = copy.deepcopy(previous)
    with torch.no_grad():  # a change the crops cannot see: the gland head a hair more confident
        for name, p in tuned.named_parameters():
            if name.endswith("conv4.bias"):
                p[1] += 1e-4
    before = copy.deepcopy(tuned)
    result = guarded_keep(previous, tuned, crops, masks, max_drop=0.005)
    assert result.keep == 1.0 and list(result.tried) == [1.0]
    assert _same_weights(tuned, before)


def test_cancel_during_the_check_returns_the_previous_weights(reference):
    crops, masks = reference
    previous = load_model(None)
    tuned = _pushed_to_gland(previous, 6.0)
    result = guarded_keep(previous, tuned, crops, masks, max_drop=0.005, cancel=lambda: True)
    assert result.keep == 0.0 and result.tried == {}
    float_keys = [k for k, v in previous.state_dict().items() if v.dtype.is_floating_point]
    assert all(torch.equal(tuned.state_dict()[k], previous.state_dict()[k]) for k in float_keys)
    with pytest.raises(ValueError, match="max_drop"):
        guarded_keep(previous, tuned, crops, masks, max_drop=-0.1)


def test_finetune_with_the_check_records_its_decision_in_the_checkpoint(glas_dir, tmp_path):
    recipe = RECIPES["default_check05"]
    assert recipe.check_drop == pytest.approx(0.005) and RECIPES["default"].check_drop < 0  # off by default
    pairs = load_pairs(glas_dir, ["testA_1"])
    run = finetune("bundled", pairs, [pairs[0][0]], tmp_path, recipe=recipe, steps=2, overrides=FAST)
    result = drain(run)
    prov = read_checkpoint(result.checkpoint)["provenance"]
    check = prov["reference_check"]
    assert check["keep"] in KEEPS and check["max_drop"] == pytest.approx(0.005)
    assert f"reference check, keep {check['keep']:g}" in prov["weights"]
    assert 0.5 < check["previous_dice"] <= 1.0
    if check["keep"] > 0:
        assert check["tried"][f"{check['keep']:g}"] >= check["previous_dice"] - 0.005
