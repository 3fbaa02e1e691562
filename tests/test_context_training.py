"""Corrections trained in their context: a region labelled inside its box in the whole source image, the rest
IGNORE (src_model.data), cropped around the box, left out of the supervised loss, built by the retrain worker
for a recipe with ``in_context``."""
import numpy as np
import pytest
import torch

from napari_cdma.project.retrain_worker import training_pairs
from napari_cdma.project.store import ProjectStore
from src_model.data import IGNORE, TwoStreamPatches, box_crop, in_context_mask, labelled_box, load_pairs
from src_model.losses import supervised_loss
from src_model.recipes import RECIPES, default_steps


def test_a_mask_in_context_is_labelled_inside_its_box_only():
    truth = np.zeros((20, 30), np.uint8)
    truth[5:10, 5:25] = 3
    m = in_context_mask((100, 120), (40, 50, 60, 80), truth)
    assert m.dtype == np.int64 and m.shape == (100, 120)
    assert (m[40:60, 50:80] == (truth > 0)).all()
    outside = np.ones(m.shape, bool)
    outside[40:60, 50:80] = False
    assert (m[outside] == IGNORE).all()
    assert labelled_box(m) == (40, 50, 60, 80)
    assert labelled_box(truth) is None and labelled_box((truth > 0).astype(np.int64)) is None
    with pytest.raises(ValueError, match="does not fit"):
        in_context_mask((100, 120), (40, 50, 60, 70), truth)
    with pytest.raises(ValueError, match="no labelled pixel"):
        labelled_box(np.full((4, 4), IGNORE, np.int64))


@pytest.mark.parametrize("box", [(10, 20, 42, 60), (0, 0, 16, 16), (70, 90, 100, 120), (5, 5, 95, 115)])
def test_a_box_crop_holds_a_small_box_whole_and_lies_inside_a_large_one(box):
    rng = np.random.default_rng(0)
    img = np.arange(100 * 120 * 3, dtype=np.int64).reshape(100, 120, 3)
    mask = np.arange(100 * 120, dtype=np.int64).reshape(100, 120)
    y0, x0, y1, x1 = box
    for _ in range(50):
        crop, m = box_crop(rng, img, mask, 64, box)
        assert crop.shape == (64, 64, 3) and m.shape == (64, 64)
        ys, xs = m // 120, m % 120  # the pixels' own coordinates
        assert np.array_equal(crop[..., 0] // 3, m)
        if y1 - y0 <= 64:
            assert ys.min() <= y0 and ys.max() >= y1 - 1
        else:
            assert ys.min() >= y0 and ys.max() <= y1 - 1
        if x1 - x0 <= 64:
            assert xs.min() <= x0 and xs.max() >= x1 - 1
        else:
            assert xs.min() >= x0 and xs.max() <= x1 - 1


def test_patches_of_a_correction_in_context_weigh_nothing_outside_its_box(glas_dir):
    image, mask = load_pairs(glas_dir, ["testA_1"])[0]
    box = (100, 150, 228, 278)  # a 128 px region
    m = in_context_mask(mask.shape, box, mask[100:228, 150:278])
    ds = TwoStreamPatches([(image, m)], [image], 2, 1, 256, seed=0)
    for _, batch in zip(range(5), ds, strict=False):
        w, t = batch["weight"], batch["target"]
        assert set(t.unique().tolist()) <= {0, 1}
        for k in range(2):  # each labelled patch holds the 128 x 128 box whole: 16384 px weigh 1, the rest 0
            assert int((w[k] == 1).sum()) == 128 * 128 and int((w[k] == 0).sum()) == 256 * 256 - 128 * 128
            assert int(t[k][w[k] == 1].sum()) == int((mask[100:228, 150:278] > 0).sum())
            assert (t[k][w[k] == 0] == 0).all()
        assert (w[2] == 1).all()  # the unlabelled patch
    # a fully labelled pair keeps the old batches: no weight at all
    assert "weight" not in next(iter(TwoStreamPatches([(image, mask)], [image], 2, 1, 256, seed=0)))


def test_the_supervised_loss_ignores_pixels_of_weight_zero():
    torch.manual_seed(0)
    logits = [torch.randn(2, 2, 16, 16, requires_grad=True) for _ in range(3)]
    target = torch.randint(0, 2, (2, 16, 16))
    w = torch.zeros(2, 16, 16)
    w[:, 4:12, 4:12] = 1
    loss = supervised_loss(logits, target, w)
    loss.backward()
    for z in logits:  # nothing outside the labelled box reaches the gradient, Dice term included
        assert float(z.grad.permute(1, 0, 2, 3)[:, w == 0].abs().max()) == 0.0
        assert float(z.grad.abs().max()) > 0
    # the loss is that of the box alone
    inside = [z.detach()[:, :, 4:12, 4:12] for z in logits]
    assert loss.item() == pytest.approx(supervised_loss(inside, target[:, 4:12, 4:12]).item(), rel=1e-5)
    changed = [z.detach().clone() for z in logits]
    for z in changed:
        z[:, :, :4] = 50.0  # outside the box
    assert supervised_loss(changed, target, w).item() == pytest.approx(loss.item(), rel=1e-6)


def test_default_steps_count_the_labelled_pixels_not_the_context():
    r = RECIPES["default"]
    region = np.ones((256, 256), np.uint8)
    in_image = in_context_mask((775, 522), (0, 0, 256, 256), region)
    assert default_steps(r, [(None, in_image)] * 7) == default_steps(r, [(None, region)] * 7) == 70


def test_the_worker_trains_a_region_in_its_source_image_for_an_in_context_recipe(tmp_path, glas_dir):
    from src_model.io import read_image, read_mask

    assert RECIPES["default"].in_context and RECIPES["default_context"].in_context
    assert not RECIPES["default_crop"].in_context
    store = ProjectStore.open(tmp_path / "store")
    image, mask = read_image(glas_dir / "images" / "testA_1.png"), read_mask(glas_dir / "masks" / "testA_1.png")
    big = np.zeros((2100, 2100, 3), np.uint8)  # larger than WHOLE_CONTEXT_PIXELS: a window around the region
    big[1000:1000 + image.shape[0], 1000:1000 + image.shape[1]] = image
    store.accept_region(image, (100, 150, 228, 278), mask[100:228, 150:278], np.zeros((128, 128), np.uint8),
                        model_version="bundled", source_path="testA_1.png")
    store.accept_region(big, (1100, 1150, 1228, 1278), mask[100:228, 150:278], np.zeros((128, 128), np.uint8),
                        model_version="bundled", source_path="big.png")
    whole = dict(store.whole_images())
    items = [(rec, *store.load_region(rec.region_id)[:2]) for rec in store.regions()]
    alone = training_pairs(items, whole, context=False)
    assert [p[0].shape for p in alone] == [(128, 128, 3)] * 2
    assert all(np.array_equal(p[1], (mask[100:228, 150:278] > 0)) for p in alone)
    framed = training_pairs(items, whole, context=True)
    (img0, m0), (img1, m1) = framed
    assert img0.shape == image.shape and np.array_equal(img0, image)
    assert labelled_box(m0) == (100, 150, 228, 278) and np.array_equal(m0[100:228, 150:278], mask[100:228, 150:278] > 0)
    assert img1.shape == (128 + 2 * 512, 128 + 2 * 512, 3)  # the region and 512 px around it
    assert labelled_box(m1) == (512, 512, 640, 640) and np.array_equal(img1[512:640, 512:640], image[100:228, 150:278])
    # an image the store does not hold whole: the region alone
    assert training_pairs(items[:1], {}, context=True)[0][0].shape == (128, 128, 3)


def test_a_recipe_that_keeps_half_the_change_lands_midway_between_the_two_models(tmp_path, glas_dir):
    import dataclasses

    from src_model import build_model, load_checkpoint
    from src_model.finetune import finetune
    from src_model.progress import drain

    pairs = load_pairs(glas_dir, ["train_5"])
    torch.manual_seed(0)
    init = build_model("lite")
    full = dataclasses.replace(RECIPES["default"], name="full")
    half = dataclasses.replace(RECIPES["default"], name="half", keep=0.5)
    kw = dict(steps=3, seed=0, device="cpu", threads=1, overrides={"patch": 96, "batch_labelled": 1,
                                                                   "batch_unlabelled": 1})
    a = drain(finetune(init, pairs, [pairs[0][0]], tmp_path / "full", recipe=full, **kw), lambda p: None)
    b = drain(finetune(init, pairs, [pairs[0][0]], tmp_path / "half", recipe=half, **kw), lambda p: None)
    tuned, mid = load_checkpoint(a.checkpoint).state_dict(), load_checkpoint(b.checkpoint).state_dict()
    before = init.state_dict()
    moved = [k for k, v in before.items() if v.dtype.is_floating_point and not torch.equal(v, tuned[k])]
    assert moved  # the run changed the weights ...
    for k in moved:  # ... and the kept model is their midpoint
        assert torch.allclose(mid[k], (before[k] + tuned[k]) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="keep"):
        from src_model.finetune import interpolate
        interpolate(init, build_model("lite"), 1.5)
