"""GlaS data: split, labelled choice, patch sampling away from glass, augmentation, two streams."""
import numpy as np
import pytest
import torch

from src_model import build_model
from src_model.data import (
    AugmentConfig,
    TwoStreamPatches,
    augment,
    boundary_coded,
    choose_labelled,
    ids_of,
    load_pairs,
    random_crop,
    read_split,
    ssl_split,
    touching_border,
)
from src_model.losses import supervised_loss
from src_model.tissue import tissue_mask
from src_model.trainer import CDMATrainer, TrainConfig

# the training ids of the full GlaS set as we use it (train_80..85 are not in it)
FULL_TRAIN_IDS = [f"train_{i}" for i in range(1, 80)]


def test_split_rows_and_selection_by_split_and_subset(glas_dir, tmp_path):
    # tests/data/glas/split.csv: 5 training crops, 2 Test A and 1 Test B images (see its README)
    rows = read_split(glas_dir)
    assert [(r.id, r.split, r.subset) for r in rows] == (
        [(f"train_{i}", "train", "train") for i in (1, 2, 3, 5, 10)]
        + [("testA_1", "test", "testA"), ("testA_2", "test", "testA"), ("testB_4", "test", "testB")])
    assert ids_of(rows, split="train") == ["train_1", "train_2", "train_3", "train_5", "train_10"]
    assert ids_of(rows, split="test") == ["testA_1", "testA_2", "testB_4"]
    assert ids_of(rows, subset="testA") == ["testA_1", "testA_2"] and ids_of(rows, subset="testB") == ["testB_4"]
    assert ids_of(rows, split="test", subset="testB") == ["testB_4"]
    assert ids_of(rows, split="train", subset="testA") == []
    assert ids_of(rows) == [r.id for r in rows]
    # without a subset column the subset is the split; a file without id/split columns is refused
    (tmp_path / "split.csv").write_text("id,split\na_1,train\nb_1,test\n")
    assert [(r.id, r.split, r.subset) for r in read_split(tmp_path)] == [("a_1", "train", "train"),
                                                                          ("b_1", "test", "test")]
    (tmp_path / "split.csv").write_text("name,fold\na_1,train\n")
    with pytest.raises(ValueError, match="split.csv"):
        read_split(tmp_path)


def test_labelled_choice_is_seeded_and_ten_percent(glas_dir):
    train = FULL_TRAIN_IDS
    a = choose_labelled(train, 0.1, seed=0)
    assert a == choose_labelled(train, 0.1, seed=0)
    assert a != choose_labelled(train, 0.1, seed=1)
    assert len(a) == 8 and set(a) <= set(train)
    with pytest.raises(ValueError):
        choose_labelled(train, 0.0, seed=0)
    # at least one image, even where 10% rounds to none (5 training images in the test subset)
    few = ids_of(read_split(glas_dir), split="train")
    one = choose_labelled(few, 0.1, seed=0)
    assert len(one) == 1 and set(one) <= set(few)


def test_missing_split_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="split.csv"):
        read_split(tmp_path)


def test_patches_avoid_glass():
    img = np.full((200, 200, 3), 245, np.uint8)
    img[:, :40] = (150, 60, 140)  # a strip of tissue on the left; the rest is glass
    tissue = tissue_mask(img)
    rng = np.random.default_rng(0)
    fractions = [tissue_mask(random_crop(rng, img, None, 64, tissue, min_tissue=0.3, tries=50)[0]).mean()
                 for _ in range(20)]
    assert min(fractions) >= 0.3


def test_small_images_are_padded_to_the_patch():
    img = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    mask = np.zeros((30, 50), np.uint8)
    crop, m = random_crop(np.random.default_rng(0), img, mask, 64)
    assert crop.shape == (64, 64, 3) and m.shape == (64, 64)


def test_augment_keeps_image_and_mask_aligned():
    img = np.zeros((32, 32, 3), np.uint8)
    img[:8, :16] = 255
    mask = (img[..., 0] > 0).astype(np.int64)
    cfg = AugmentConfig(color_jitter=0.0, noise_p=0.0)
    for seed in range(8):
        x, m = augment(np.random.default_rng(seed), img, mask, cfg)
        assert x.shape == (3, 32, 32) and x.dtype == np.float32
        assert np.array_equal(x[0] > 0.5, m > 0)


def test_two_stream_batches_and_worker_seeding(glas_dir):
    pairs = load_pairs(glas_dir, ["train_1", "train_2"])
    unl = [p[0] for p in load_pairs(glas_dir, ["train_3"])]
    ds = TwoStreamPatches(pairs, unl, n_labelled=2, n_unlabelled=3, patch=64, seed=5)
    batch = next(iter(ds))
    assert batch["image"].shape == (5, 3, 64, 64) and batch["n_labelled"] == 2
    assert batch["target"].shape == (5, 64, 64) and batch["target"][2:].abs().sum() == 0
    assert set(batch["target"][:2].unique().tolist()) <= {0, 1}
    # two workers: each draws its own patches/augmentations (never the same stream twice)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    it = iter(loader)
    b0, b1 = next(it), next(it)  # batches alternate between worker 0 and worker 1
    assert not torch.equal(b0["image"], b1["image"])
    # and reproducible: the same seed gives the same first batch
    assert torch.equal(next(iter(ds))["image"], batch["image"])


def test_ssl_split_is_seeded_disjoint_and_never_uses_test_images(glas_dir):
    a = ssl_split(glas_dir, 0.2, 1, seed=0)
    assert a == ssl_split(glas_dir, 0.2, 1, seed=0)
    assert len(a["labelled"]) == 1 and len(a["val"]) == 1 and len(a["unlabelled"]) == 3
    parts = [set(a[k]) for k in ("labelled", "val", "unlabelled")]
    assert sum(map(len, parts)) == len(set.union(*parts)) == 5  # disjoint, all 5 training ids
    assert not any(i.startswith("test") for p in parts for i in p)
    assert set(a["train_all"]) == parts[0] | parts[2]
    assert any(ssl_split(glas_dir, 0.2, 1, seed=s)["labelled"] != a["labelled"] for s in range(1, 6))


def test_touching_border_marks_the_gap_between_two_glands_only():
    m = np.zeros((20, 30), np.int64)
    m[5:15, 2:10] = 1  # columns 2..9
    m[5:15, 13:21] = 2  # columns 13..20: a 3-px gap to gland 1
    m[5:15, 27:30] = 3  # columns 27..29: a 6-px gap to gland 2
    # within 4 px (square window) of glands 1 and 2: columns 13-4 .. 9+4 = 9..13 (gap and facing edges);
    # of glands 2 and 3: columns 27-4 .. 20+4 = 23..24
    b = touching_border(m, 4)
    assert b[8, 9:14].all() and b[8, 23:25].all()
    assert not b[8, :9].any() and not b[8, 14:23].any() and not b[8, 25:].any()
    assert not b[0].any() and b[1, 11]  # row 0 is 5 rows from the glands, row 1 is 4
    assert touching_border(m, 2)[8].nonzero()[0].tolist() == [11]  # 2 px: only the middle of the 3-px gap
    assert not touching_border((m > 0).astype(np.int64), 4).any()  # one instance: nothing touches


def test_boundary_weights_follow_the_patch_and_keep_the_targets(glas_dir):
    pairs = load_pairs(glas_dir, ["train_5"])  # two glands of this crop lie close together
    code = boundary_coded(pairs[0][1], 8)
    assert (code >= 2).any() and np.array_equal(code % 2, (pairs[0][1] > 0).astype(np.int64))
    ds = TwoStreamPatches(pairs, [pairs[0][0]], 1, 1, 320, seed=0, boundary_weight=4.0, boundary_radius=8)
    batch = next(iter(ds))
    w, t = batch["weight"], batch["target"]
    assert w.shape == t.shape and set(w.unique().tolist()) == {1.0, 5.0}
    assert set(t.unique().tolist()) == {0, 1}
    assert (w[1] == 1).all()  # the unlabelled patch carries no boundary weight
    # the weighted pixels moved with the (possibly flipped / rotated) mask: same count as on the full image
    assert int((w[0] == 5).sum()) == int((code >= 2).sum())
    plain = next(iter(TwoStreamPatches(pairs, [pairs[0][0]], 1, 1, 320, seed=0)))
    assert "weight" not in plain and torch.equal(plain["target"], t)


def test_the_trainer_weighs_the_boundary_pixels_in_its_loss(glas_dir):
    pairs = load_pairs(glas_dir, ["train_5"])
    batch = next(iter(TwoStreamPatches(pairs, [pairs[0][0]], 1, 1, 320, seed=0, boundary_weight=4.0)))
    assert (batch["weight"] > 1).any()
    torch.manual_seed(0)
    model = build_model("lite")
    cfg = TrainConfig(steps=2, batch_labelled=1, batch_unlabelled=1, patch=320, warmup_steps=5, device="cpu")
    with torch.no_grad():
        model.train()
        logits = model(batch["image"])
    weighted = supervised_loss([z[:1] for z in logits], batch["target"][:1], batch["weight"][:1]).item()
    plain = supervised_loss([z[:1] for z in logits], batch["target"][:1]).item()
    assert abs(weighted - plain) > 1e-4
    torch.manual_seed(0)
    model = build_model("lite")
    trainer = CDMATrainer(model, cfg, torch.device("cpu"))
    trainer.configure_optimizer()
    assert trainer.train_step(batch)["sup"] == pytest.approx(weighted, rel=1e-4)  # the step's loss is the weighted one
