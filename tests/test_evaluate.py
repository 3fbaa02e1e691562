"""Evaluation: ``evaluate_model`` (the pipeline of ``cdma evaluate``) and held-out scoring (``score_regions``).

A pointwise stand-in model calls every dark pixel foreground, so the masks it predicts are exactly
the ones drawn into the images, and the metrics can be worked out by hand.
"""
import inspect

import numpy as np
import pytest
import torch
from PIL import Image
from test_metrics import box, check  # the hand-made masks and the exact check of the metric tests
from torch import nn

from src_model.evaluate import evaluate_model, score_regions, summarize
from src_model.metrics import evaluate_image, pooled_dice
from src_model.progress import Progress, drain
from src_model.tiling import EVAL_OVERLAP, EVAL_TILE


class Dark(nn.Module):
    """Three identical 'branches': foreground where the pixel is dark (pointwise, so tiling changes nothing)."""

    def forward(self, x):
        v = x.mean(1, keepdim=True)
        logits = torch.cat([v - 0.5, 0.5 - v], 1) * 20
        return logits, logits, logits


def image_of(pred):
    """An RGB image that :class:`Dark` segments as ``pred > 0``."""
    return np.repeat(np.where(pred[..., None] > 0, 0, 255).astype(np.uint8), 3, axis=2)


def items():
    """(id, subset, prediction, ground truth): two GT glands; perfect, merged, and missed."""
    gt = box((10, 12), 0, 9, 0, 4, 1)
    box(gt.shape, 0, 9, 6, 8, 2, out=gt)
    merged = box(gt.shape, 0, 9, 0, 8)  # one object over both glands: TP 1, FP 0, FN 1, F1 2/3
    return [("a1", "testA", gt > 0, gt), ("a2", "testA", merged, gt), ("b1", "testB", np.zeros_like(gt), gt)]


def write_folder(root, rows):
    (root / "images").mkdir()
    (root / "masks").mkdir()
    lines = ["id,split,subset"]
    for image_id, subset, pred, gt in rows:
        Image.fromarray(image_of(pred)).save(root / "images" / f"{image_id}.png")
        Image.fromarray(gt.astype(np.uint8)).save(root / "masks" / f"{image_id}.png")
        lines.append(f"{image_id},test,{subset}")
    (root / "split.csv").write_text("\n".join(lines) + "\n")
    return root


def test_evaluate_model_scores_each_image_and_summarizes_subsets(tmp_path):
    data = write_folder(tmp_path, items())
    events = []
    report = drain(evaluate_model(Dark(), data, split="test"), events.append)
    assert [e.step for e in events] == [1, 2, 3]
    assert all(isinstance(e, Progress) and e.stage == "evaluate" and e.total == 3 for e in events)
    assert [(r["id"], r["subset"]) for r in report["per_image"]] == [("a1", "testA"), ("a2", "testA"), ("b1", "testB")]
    for rec, (_, _, pred, gt) in zip(report["per_image"], items(), strict=True):
        expected = evaluate_image(pred, gt)
        check(rec, **{k: expected[k] for k in ("dice", "f1", "object_dice", "object_hausdorff")})
    res = report["summary"]
    assert list(res) == ["testA", "testB", "all"]
    check(res["testA"], f1=(1 + 2 / 3) / 2, n_images=2)
    check(res["testB"], f1=0, object_dice=0, n_images=1)
    # Pooled over all: TP 2+1+0 = 3, FP 0, FN 0+1+2 = 3 -> F1 6/9; mean of per-image F1 (1+2/3+0)/3.
    check(res["all"], f1=(5 / 3) / 3, f1_pooled=6 / 9, recall_pooled=0.5, precision_pooled=1, n_images=3)
    one = drain(evaluate_model(Dark(), data, ids=["a2"]))
    assert [r["id"] for r in one["per_image"]] == ["a2"] and set(one["summary"]) == {"testA", "all"}
    with pytest.raises(ValueError, match="nope"):
        drain(evaluate_model(Dark(), data, ids=["nope"]))


def test_summarize_refuses_a_subset_named_like_the_total():
    gt = box((6, 6), 1, 4, 1, 4)
    with pytest.raises(ValueError, match="all"):
        summarize([{"subset": "all", **evaluate_image(gt, gt)}])


def test_score_regions_pools_dice_over_regions_and_stops_when_cancelled():
    regions = [(image_of(pred), gt) for _, _, pred, gt in items()]
    expected = pooled_dice([(pred, gt) for _, _, pred, gt in items()])
    events = []
    assert drain(score_regions(Dark(), regions), events.append) == pytest.approx(expected)
    assert [(e.step, e.total) for e in events] == [(1, 3), (2, 3), (3, 3)]
    asked = []

    def cancel_after_one():
        asked.append(1)
        return len(asked) > 1

    assert drain(score_regions(Dark(), regions, cancel=cancel_after_one)) is None
    assert len(asked) == 2


def test_every_evaluation_uses_the_released_tiling():
    assert (EVAL_TILE, EVAL_OVERLAP) == (256, 0.25)
    for fn in (evaluate_model, score_regions):
        params = inspect.signature(fn).parameters
        assert (params["tile"].default, params["overlap"].default) == (EVAL_TILE, EVAL_OVERLAP), fn.__name__


def test_postprocess_fills_a_ring_prediction_only_with_lumen_filling(tmp_path):
    """A prediction that finds a gland's epithelium but not its pale inside (a ring) scores as the
    filled gland once the lumen is filled; the old rule (holes under min_size) keeps the hole."""
    from scipy import ndimage as ndi

    from src_model.postprocess import PostprocessConfig

    y, x = np.mgrid[:200, :260]
    gt = (np.hypot(y - 100, x - 130) < 80).astype(np.uint8)
    ring = gt.astype(bool) & ~ndi.binary_erosion(gt, iterations=25)
    data = write_folder(tmp_path, [("a1", "testA", ring, gt)])
    old = PostprocessConfig(min_size=100, fill_holes=True, split_h=16.0)
    new = PostprocessConfig(min_size=100, fill_holes=True, split_h=16.0, lumen_holes=True)
    before = drain(evaluate_model(Dark(), data, postprocess=old))
    after = drain(evaluate_model(Dark(), data, postprocess=new))
    assert before["per_image"][0]["dice"] == pytest.approx(evaluate_image(ring, gt)["dice"])
    assert before["per_image"][0]["dice"] < 0.8
    check(after["per_image"][0], dice=1.0, f1=1.0, object_dice=1.0, object_hausdorff=0.0)
    assert after["postprocess"]["lumen_holes"] is True and before["postprocess"]["lumen_holes"] is False


def test_cli_evaluate_postprocess_flags(glas_dir, tmp_path, capsys):
    """``--postprocess default`` is the plugin's DEFAULT_INSTANCES, and the explicit flags can spell it;
    ``--fill-lumens`` adds lumen filling to them; the two ways cannot be mixed."""
    import dataclasses
    import json

    from src_model.checkpoint import load_model
    from src_model.cli import main
    from src_model.postprocess import DEFAULT_INSTANCES

    out = tmp_path / "default.json"
    assert main(["evaluate", "--data", str(glas_dir), "--ids", "train_2", "--postprocess", "default",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["postprocess"] == dataclasses.asdict(DEFAULT_INSTANCES)
    direct = drain(evaluate_model(load_model(), glas_dir, ids=["train_2"], postprocess=DEFAULT_INSTANCES))
    assert report["per_image"][0]["f1"] == direct["per_image"][0]["f1"]
    assert report["per_image"][0]["dice"] == direct["per_image"][0]["dice"]

    flags = tmp_path / "flags.json"
    assert main(["evaluate", "--data", str(glas_dir), "--ids", "train_2", "--min-object-size", "1600",
                 "--split-glands", "16", "--fill-lumens", "--out", str(flags)]) == 0
    post = json.loads(flags.read_text())["postprocess"]
    assert (post["min_size"], post["split_h"], post["fill_holes"], post["lumen_holes"]) == (1600, 16.0, True, True)
    assert post["max_hole"] is None  # holes under --min-object-size, the old rule
    d = DEFAULT_INSTANCES  # the default spelled out with the flags scores the same
    assert main(["evaluate", "--data", str(glas_dir), "--ids", "train_2", "--min-object-size", str(d.min_size),
                 "--max-hole", str(d.max_hole), "--split-glands", str(d.split_h), "--out", str(flags), "--force"]) == 0
    spelled = json.loads(flags.read_text())
    assert spelled["postprocess"] == dataclasses.asdict(d) and spelled["per_image"] == report["per_image"]
    assert main(["evaluate", "--data", str(glas_dir), "--ids", "train_2", "--postprocess", "default",
                 "--split-glands", "16"]) == 2
    assert "--postprocess default sets the post-processing" in capsys.readouterr().err
