"""The ``cdma`` command line, run as a real subprocess."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from src_model.checkpoint import read_checkpoint


def cdma(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "src_model.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"cdma {args} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc


@pytest.mark.parametrize("sub", ["train", "predict", "evaluate", "import-official"])
def test_every_subcommand_has_help(sub):
    out = cdma(sub, "--help").stdout
    assert "usage: cdma " + sub in out


def test_bad_input_gives_one_line_reason_and_nonzero_exit(tmp_path, lite_checkpoint, glas_dir):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    proc = cdma("predict", bad, "--model", lite_checkpoint, "--out", tmp_path / "o", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken.png" in lines[0]
    proc = cdma("predict", glas_dir / "images" / "testA_1.png", "--model", bad, "--out", tmp_path / "o", check=False)
    assert proc.returncode == 2 and "broken.png" in proc.stderr
    proc = cdma("train", "--data", tmp_path, "--out", tmp_path / "t", check=False)
    assert proc.returncode == 2 and "split.csv" in proc.stderr
    proc = cdma("train", "--data", glas_dir, "--labelled-ids", "nope_1", "--out", tmp_path / "t", check=False)
    assert proc.returncode == 2 and "nope_1" in proc.stderr


def test_train_predict_evaluate_roundtrip(tmp_path, glas_dir):
    out = tmp_path / "run"
    proc = cdma("train", "--data", glas_dir, "--labelled-ids", "train_1,train_2", "--steps", 2, "--patch", 64,
                "--batch", 1, "--out", out, "--progress", "json")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [e["step"] for e in events if e["event"] == "progress"] == [1, 2]
    assert events[-1]["event"] == "done"
    ckpt = read_checkpoint(out / "final.pt")
    assert ckpt["provenance"]["labelled_ids"] == ["train_1", "train_2"]
    split = json.loads((out / "split.json").read_text())
    # every other training id of split.csv (tests/data/glas: train_1, 2, 3, 5, 10) is unlabelled
    assert sorted(split["unlabelled"]) == ["train_10", "train_3", "train_5"]
    # refuses to overwrite a finished run
    again = cdma("train", "--data", glas_dir, "--labelled-ids", "train_1", "--steps", 1, "--out", out, check=False)
    assert again.returncode == 2 and "exists" in again.stderr

    pred_dir = tmp_path / "pred"
    cdma("predict", glas_dir / "images" / "testA_1.png", "--model", out / "final.pt", "--out", pred_dir)
    mask = np.array(Image.open(pred_dir / "testA_1_mask.png"))
    assert mask.shape == (522, 775) and set(np.unique(mask)) <= {0, 255}
    dis = np.load(pred_dir / "testA_1_disagreement.npy")
    assert dis.shape == (522, 775) and 0 <= dis.min() and dis.max() <= 1
    summary = json.loads((pred_dir / "testA_1_summary.json").read_text())
    scores = [t["score"] for t in summary["review_tiles"]]
    assert scores == sorted(scores, reverse=True)

    report_path = tmp_path / "eval.json"
    proc = cdma("evaluate", "--data", glas_dir, "--model", out / "final.pt", "--ids", "testA_1,testB_4",
                "--out", report_path)
    assert "testA" in proc.stdout and "testB" in proc.stdout
    report = json.loads(report_path.read_text())
    assert {r["id"] for r in report["per_image"]} == {"testA_1", "testB_4"}
    assert 0 <= report["summary"]["all"]["dice"] <= 1


def test_import_official_converts_a_state_dict(tmp_path, reference_dir):
    from test_official_fixture import official_state_dict_by_rule

    src = tmp_path / "official.pth"
    torch.save(official_state_dict_by_rule(reference_dir), src)
    dst = tmp_path / "ours.pt"
    cdma("import-official", src, "--out", dst)
    data = read_checkpoint(dst)
    assert data["config"]["block"] == "bottleneck" and data["provenance"]["imported_from"] == str(src)
    assert "decoder1.bn3.weight" not in data["state_dict"]
    proc = cdma("import-official", src, "--out", dst, check=False)
    assert proc.returncode == 2 and "exists" in proc.stderr
    junk = tmp_path / "junk.pth"
    torch.save({"fc.weight": torch.zeros(2)}, junk)
    proc = cdma("import-official", junk, "--out", tmp_path / "x.pt", check=False)
    assert proc.returncode == 2 and "not an official" in proc.stderr
