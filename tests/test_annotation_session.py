"""Simulated annotation sessions: region picking, ground-truth pasting, and one quick round end to end."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from src_model.simulate import paste_correction, random_regions, stain_shift, top_regions
from src_model.tiling import boxes_overlap as _overlaps

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "annotation_session.py"


@pytest.fixture(scope="module")
def predicted(glas_dir):
    """Two real test images, their expert masks and the bundled model's predictions and review regions."""
    import torch

    from src_model import load_checkpoint
    from src_model.data import load_pairs
    from src_model.inference import predict
    from src_model.uncertainty import review_regions

    torch.set_num_threads(1)
    model = load_checkpoint()
    out = {}
    for key, (img, gt) in zip(("testA_1", "testB_4"), load_pairs(glas_dir, ["testA_1", "testB_4"]), strict=True):
        pred = predict(model, img)
        out[key] = (img, gt, pred, review_regions(pred, img))
    return out


def _disjoint(picks):
    return all(not (a[0] == b[0] and _overlaps(a[2], b[2])) for i, a in enumerate(picks) for b in picks[i + 1:])


def test_ranked_picks_are_the_top_scores_over_images_and_skip_corrected_boxes(predicted):
    ranked = {k: v[3] for k, v in predicted.items()}
    first = top_regions(ranked, 5)
    assert len(first) == 5 and _disjoint(first)
    scores = [s for _, s, _ in first]
    assert scores == sorted(scores, reverse=True)
    # no candidate left out that overlaps nothing picked scores higher than the lowest pick
    picked = {(k, b) for k, _, b in first}
    for k, items in ranked.items():
        for s, b in items:
            if (k, tuple(b)) not in picked and not any(k == pk and _overlaps(b, pb) for pk, _, pb in first):
                assert s <= scores[-1]
    taken = {}
    for k, _, b in first:
        taken.setdefault(k, []).append(b)
    second = top_regions(ranked, 5, taken)
    assert second and _disjoint(second)
    assert not any(_overlaps(b, t) for k, _, b in second for t in taken.get(k, []))


def test_random_regions_have_the_ranked_sizes_fit_and_do_not_overlap(predicted):
    ranked = {k: v[3] for k, v in predicted.items()}
    picks = top_regions(ranked, 5)
    taken = {picks[0][0]: [picks[0][2]]}
    sizes = [(b[2] - b[0], b[3] - b[1]) for _, _, b in picks]
    shapes = {k: v[0].shape[:2] for k, v in predicted.items()}
    rand = random_regions(np.random.default_rng(3), sizes, shapes, taken)
    assert [(b[2] - b[0], b[3] - b[1]) for _, _, b in rand] == sizes
    assert _disjoint(rand)
    for k, _, (y0, x0, y1, x1) in rand:
        assert 0 <= y0 < y1 <= shapes[k][0] and 0 <= x0 < x1 <= shapes[k][1]
        assert not any(_overlaps((y0, x0, y1, x1), t) for t in taken.get(k, []))
    assert rand != random_regions(np.random.default_rng(4), sizes, shapes, taken)
    with pytest.raises(ValueError, match="no free place"):
        random_regions(np.random.default_rng(0), [(10_000, 10)], shapes)


def test_pasted_correction_is_truth_inside_the_regions_and_prediction_outside(predicted):
    from src_model.postprocess import instance_labels

    img, gt, pred, ranked = predicted["testA_1"]
    shown = instance_labels(pred) > 0
    boxes = [b for _, b in ranked[:3]]
    out = paste_correction(shown, gt, boxes)
    inside = np.zeros(gt.shape, bool)
    for y0, x0, y1, x1 in boxes:
        inside[y0:y1, x0:x1] = True
    assert np.array_equal(out[inside], (gt > 0)[inside])
    assert np.array_equal(out[~inside], shown[~inside])
    assert np.count_nonzero(shown[inside] != (gt > 0)[inside]) > 0  # the paste changed pixels: a real correction
    with pytest.raises(ValueError):
        paste_correction(shown[:-1], gt, boxes)


def test_stain_shift_is_one_fixed_transform_per_pixel(predicted):
    img = predicted["testB_4"][0]
    shifted = stain_shift(img, 0.3, 0)
    assert shifted.dtype == np.uint8 and shifted.shape == img.shape
    assert np.abs(shifted.astype(int) - img).mean() > 5
    assert np.array_equal(stain_shift(img[100:200, 50:300], 0.3, 0), shifted[100:200, 50:300])
    assert not np.array_equal(stain_shift(img, 0.3, 1), shifted)


def test_quick_session_runs_end_to_end_and_resumes(glas_dir, tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--quick", "--starts", "bundled", "--data", str(glas_dir),
           "--out", str(tmp_path), "--work", str(tmp_path / "work")]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    records = {(r["row"], r["round"]): r for r in
               (json.loads(p.read_text()) for p in (tmp_path / "annotation_session" / "records").glob("*.json"))}
    assert set(records) == {(row, rnd) for row in ("ranked_cdma", "random_cdma", "ranked_sup") for rnd in (0, 1)}
    ranked, rand = records[("ranked_cdma", 1)], records[("random_cdma", 1)]
    assert len(ranked["regions"]) == 2 and ranked["corrected_area_px"] == sum(p["area"] for p in ranked["regions"]) > 0
    assert sorted(p["area"] for p in rand["regions"]) == sorted(p["area"] for p in ranked["regions"])
    assert records[("ranked_cdma", 0)]["session"] == records[("random_cdma", 0)]["session"]  # one start, one model
    assert ranked["model_version"] == "v0001" and ranked["train"]["steps_done"] == 2
    assert not set(ranked["session_ids"]) & set(ranked["untouched_ids"])
    # how the round's model differs from the one it replaced, for calibrating the promotion's check
    change = ranked["vs_parent"]
    assert set(change) == {"session", "untouched"} and set(change["session"]) == set(ranked["session_ids"])
    assert all(0.0 <= v["dice"] <= 1.0 and 0 <= v["glands_kept"] <= v["glands_old"] for part in change.values()
               for v in part.values())
    detail = ranked["train"]["agreement_detail"]  # what the retrain worker's check computed
    assert detail["pooled"] == ranked["train"]["agreement"] and detail["crops"] >= 1
    assert "vs_parent" not in records[("ranked_cdma", 0)]
    summary = json.loads((tmp_path / "annotation_session.json").read_text())
    assert len(summary["records"]) == 6
    report = (tmp_path / "annotation_session.md").read_text()
    assert "| bundled | ranked_cdma | 1 |" in report and "### No-regression check" in report
    assert (tmp_path / "annotation_session_quick_default.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0 and again.stderr.count(": done") == 3, again.stderr[-3000:]


def test_missing_data_is_one_line_and_exit_2(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--data", str(tmp_path / "nothing")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1 and "no GlaS data" in run.stderr


def test_threshold_choice_refuses_what_forgot_and_counts_both_kinds():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import annotation_session as session
    finally:
        sys.path.remove(str(SCRIPT.parent))
    values, forgot = [0.99, 0.97, 0.90, 0.96, 0.80], [False, False, True, False, True]
    t, right = session.choose_threshold(values, forgot)
    assert right == 5 and 0.90 < t <= 0.96  # separable: everything right, the highest such threshold
    assert session.confusion(values, forgot, t) == "promotes 0 / 2 that forgot, 3 / 3 that did not"
    assert session.confusion(values, forgot, 0.95) == "promotes 0 / 2 that forgot, 3 / 3 that did not"
    assert session.confusion(values, forgot, 0.98) == "promotes 0 / 2 that forgot, 1 / 3 that did not"
    t, right = session.choose_threshold([0.9, 0.95], [False, True])  # not separable: one must be wrong
    assert right == 1


def test_the_committed_10_percent_model_loads_safely_and_is_the_ten_cpu_start():
    """The ``ten_cpu`` start is the committed 10 % model (the GPU one was never committed and was lost): it loads
    weights only, is the lite preset, and its provenance says it was trained on 10 % of the labels, seed 0."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import annotation_session

    from src_model import load_checkpoint
    from src_model.checkpoint import read_checkpoint

    path = annotation_session.start_checkpoint("ten_cpu")
    assert path == ROOT / "benchmarks" / "models" / "cdma10_seed0.pt" and path.is_file()
    assert annotation_session.start_checkpoint("bundled") != path
    model = load_checkpoint(path)
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    prov = read_checkpoint(path)["provenance"]
    assert prov["row"] == "cdma10" and len(prov["labelled_ids"]) == 8, prov
    assert not any(i.startswith("test") for i in prov["labelled_ids"] + prov["unlabelled_ids"])
