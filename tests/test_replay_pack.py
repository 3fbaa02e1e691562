"""The replay pack (src_model.replay_pack): reference crops of GlaS training tissue that fine-tuning keeps
distilling on, so that a retrain on a project's corrections keeps the previous answers outside the project."""
from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from src_model.checkpoint import load_model, read_checkpoint
from src_model.data import load_images, load_pairs
from src_model.finetune import DistillHook, PatchSampler, finetune, get_recipe
from src_model.inference import predict
from src_model.progress import drain
from src_model.replay_pack import PACK_DIR, load_pack, pack_files

FAST = {"patch": 96, "batch_labelled": 2, "batch_unlabelled": 2}


def test_the_pack_is_training_tissue_named_in_its_index():
    crops = load_pack()
    assert len(crops) >= 10
    assert all(c.dtype == np.uint8 and c.ndim == 3 and c.shape[2] == 3 and min(c.shape[:2]) >= 256 for c in crops)
    index = json.loads((PACK_DIR / "index.json").read_text())
    assert sorted(e["file"] for e in index["crops"]) == [f.name for f in pack_files()]
    # only GlaS training images: never a test image, which the annotation sessions measure forgetting on
    assert index["source_ids"] and all(i.startswith("train_") for i in index["source_ids"])
    assert {e["image"] for e in index["crops"]} <= set(index["source_ids"])
    assert (PACK_DIR / "README.md").is_file()


def test_a_missing_pack_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no reference crops"):
        load_pack(tmp_path)


class _Trainer:
    def __init__(self, model):
        self.model, self.device = model, torch.device("cpu")


def test_distill_hook_distils_on_pack_patches_besides_the_batch():
    torch.manual_seed(0)
    teacher = load_model(None)
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    calls = []
    student.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    pack = PatchSampler(load_pack(), 64, seed=0)
    x = torch.rand(2, 3, 64, 64)  # two labelled patches, no unlabelled ones in the batch
    logits = [z.float() for z in student(x)]
    calls.clear()
    assert DistillHook(teacher, 1.0, 2.0).extra_loss(_Trainer(student), x, logits, n_labelled=2) == {}
    loss = DistillHook(teacher, 1.0, 2.0, pack=pack, n_pack=3).extra_loss(_Trainer(student), x, logits, 2)
    assert calls == [3] and float(loss["distill"].detach()) > 0  # the student ran on the 3 pack patches
    # with unlabelled patches in the batch, the pack's patches join them
    calls.clear()
    x4 = torch.rand(4, 3, 64, 64)
    logits4 = [z.float() for z in student(x4)]
    calls.clear()
    both = DistillHook(teacher, 1.0, 2.0, pack=pack, n_pack=2).extra_loss(_Trainer(student), x4, logits4, 2)
    alone = DistillHook(teacher, 1.0, 2.0).extra_loss(_Trainer(student), x4, logits4, 2)
    assert calls == [2] and float(both["distill"].detach()) != float(alone["distill"].detach())


def test_fine_tuning_with_the_pack_keeps_the_packs_tissue_closer_to_the_previous_model(tmp_path, glas_dir):
    """A correction that contradicts the model (no gland in a gland-rich crop) moves a fine-tune; the pack's
    crops, tissue outside the project, move less when the recipe also distils on them."""
    (image, _), = load_pairs(glas_dir, ["testA_1"])
    crop = image[100:356, 200:456]
    labelled = [(crop, np.zeros(crop.shape[:2], np.uint8))]
    unlabelled = load_images(glas_dir, ["testA_2"])
    probe = load_pack()[::4]
    before = [predict(load_model(None), c, tile=256, device="cpu").probability[1] for c in probe]
    torch.set_num_threads(1)

    def drift(replay_pack):
        r = dataclasses.replace(get_recipe("default"), lr=1e-3, replay_pack=replay_pack)
        result = drain(finetune("bundled", labelled, unlabelled, tmp_path / f"p{replay_pack}", recipe=r, steps=8,
                                semi_supervised=False, seed=0, device="cpu", overrides=FAST))
        model = load_model(result.checkpoint)
        moved = [np.abs(predict(model, c, tile=256, device="cpu").probability[1] - b).mean()
                 for c, b in zip(probe, before, strict=True)]
        return result, float(np.mean(moved))

    _, without = drift(0)
    result, with_pack = drift(4)
    assert read_checkpoint(result.checkpoint)["provenance"]["recipe"]["replay_pack"] == 4
    assert without > 0.01  # the contradicting correction really moved the model on the pack's tissue
    assert with_pack < 0.8 * without
