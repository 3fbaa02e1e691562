"""The ``cdma`` command line, run as a real subprocess."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from src_model.checkpoint import read_checkpoint
from src_model.io import read_image
from src_model.tissue import tissue_mask
from src_model.uncertainty import rank_tiles, tile_score


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
    for name in ("disagreement", "uncertainty"):
        arr = np.load(pred_dir / f"testA_1_{name}.npy")
        assert arr.dtype == np.float16 and arr.shape == (522, 775) and 0 <= arr.min() and arr.max() <= 1
    summary = json.loads((pred_dir / "testA_1_summary.json").read_text())
    scores = [t["score"] for t in summary["review_grid_by_uncertainty"]]
    assert scores == sorted(scores, reverse=True)
    assert "testA_1_uncertainty.npy" in summary["outputs"] and 0 <= summary["mean_uncertainty"] <= 1

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


# ----------------------------------------------------------------------------- strict inputs (issue 10)
# Many CLI calls per subprocess: a fresh interpreter runs ``main(argv)`` for each case and reports
# the exit status, stderr, whether an exception escaped (a traceback) and whether torch got imported.
RUNNER = r"""
import contextlib, io, json, sys, traceback
cases = json.loads(sys.argv[1])
out = []
for case in cases:
    if case.get("mem_available") is not None:
        import src_model.stream as stream
        stream.available_memory = lambda: case["mem_available"]
    err = io.StringIO()
    tb = None
    with contextlib.redirect_stderr(err):
        try:
            from src_model.cli import main
            rc = main(case["argv"])
        except SystemExit as exc:
            rc = exc.code
        except BaseException:
            rc, tb = None, traceback.format_exc()
    out.append({"rc": rc, "stderr": err.getvalue(), "traceback": tb, "torch": "torch" in sys.modules})
print(json.dumps(out))
"""


def run_cases(*argvs, mem_available=None):
    cases = [{"argv": [str(a) for a in argv], "mem_available": mem_available} for argv in argvs]
    proc = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(cases)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_refused(result, *needles, rc=2):
    """Exit ``rc``, exactly one line on stderr containing every needle, no traceback."""
    assert result["traceback"] is None, result["traceback"]
    assert result["rc"] == rc, result
    lines = result["stderr"].strip().splitlines()
    assert len(lines) == 1, result["stderr"]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_every_numeric_option_is_range_checked_before_any_work(tmp_path, glas_dir):
    img = glas_dir / "images" / "testA_1.png"
    train = ["train", "--data", glas_dir, "--out", tmp_path / "t"]
    predict = ["predict", img, "--out", tmp_path / "p"]
    evaluate = ["evaluate", "--data", glas_dir, "--out", tmp_path / "e.json"]
    cases = {
        "--steps": [*train, "--steps", 0], "--steps ": [*train, "--steps", -5],
        "--patch": [*train, "--patch", 0], "--batch": [*train, "--batch", -1], "--seed": [*train, "--seed", -1],
        "--device": [*train, "--device", "bogus"], "--labelled-fraction": [*train, "--labelled-fraction", "nan"],
        "--labelled-fraction ": [*train, "--labelled-fraction", 0],
        "--tile": [*predict, "--tile", -5], "--tile ": [*predict, "--tile", 0], "--overlap": [*predict, "--overlap", 1],
        "--overlap ": [*predict, "--overlap", "nan"], "--review-size": [*predict, "--review-size", 0],
        "--review-size ": [*predict, "--review-size", -5], "--page": [*predict, "--page", -1],
        "--series": [*predict, "--series", "x"], "--branch": [*predict, "--branch", 4],
        "--min-object-size": [*evaluate, "--min-object-size", -1],
        "--split-glands": [*evaluate, "--split-glands", "inf"],
        "--branch  ": [*evaluate, "--branch", "0"],
    }
    results = run_cases(*cases.values())
    for (option, argv), result in zip(cases.items(), results, strict=True):
        assert_refused(result, option.strip(), "cdma " + str(argv[0]))
        assert not result["torch"], f"{option}: torch was imported before the option was checked"
    assert not (tmp_path / "t").exists() and not (tmp_path / "p").exists() and not (tmp_path / "e.json").exists()


def _write_tiffs(tmp_path, glas_dir):
    import tifffile

    from src_model.io import read_image

    rgb = read_image(glas_dir / "images" / "testA_1.png")[:120, :160]
    pages = tmp_path / "pages.tif"  # three grey pages, no tifffile metadata: one series of 3 pages
    with tifffile.TiffWriter(pages) as w:
        for c in range(3):
            w.write(rgb[..., c], metadata=None)
    two = tmp_path / "two_series.tif"
    tifffile.imwrite(two, rgb, photometric="rgb")
    tifffile.imwrite(two, rgb[:50, :70, 0], append=True)
    return rgb, pages, two


def test_predict_refuses_ambiguous_inputs_before_any_work(tmp_path, glas_dir, lite_checkpoint):
    rgb, pages, two = _write_tiffs(tmp_path, glas_dir)
    (tmp_path / "sub").mkdir()
    same_stem = tmp_path / "sub" / "testA_1.tif"
    import tifffile

    tifffile.imwrite(same_stem, rgb, photometric="rgb")
    out = tmp_path / "out"
    model = ["--model", lite_checkpoint, "--out", out]
    img = glas_dir / "images" / "testA_1.png"
    random_ckpt = tmp_path / "random.pt"
    random_ckpt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    results = run_cases(
        ["predict", img, same_stem, *model],  # same stem: refused, nothing written
        ["predict", img, img, *model],  # the same file twice
        ["predict", img, pages, *model],  # a 3-page grey TIFF is not one RGB image
        ["predict", two, *model],  # 2 series: refused, not the first silently
        ["predict", two, "--series", 2, *model],
        ["predict", pages, "--page", 3, *model],
        ["predict", img, "--page", 1, *model],  # --page on a PNG
        ["predict", img, "--model", random_ckpt, "--out", out],
        ["predict", tmp_path / "missing.png", *model],
        ["predict", img, "--model", lite_checkpoint, "--out", lite_checkpoint],  # --out is a file
        ["predict", img, "--model", lite_checkpoint, "--out", lite_checkpoint / "sub"],  # cannot be created
    )
    assert_refused(results[0], "testA_1.png", "testA_1.tif", "same", "rename")
    assert_refused(results[1], "testA_1.png", "twice")
    assert_refused(results[2], "pages.tif", "3 pages", "--page N")
    assert_refused(results[3], "two_series.tif", "2 image series", "--series N")
    assert_refused(results[4], "two_series.tif", "--series 2", "out of range")
    assert_refused(results[5], "pages.tif", "--page 3", "out of range")
    assert_refused(results[6], "testA_1.png", "--page 1", "TIFF files only")
    assert_refused(results[7], "random.pt", "not a napari-cdma checkpoint (not a zip / torch file)")
    assert "weights_only" not in results[7]["stderr"]
    assert_refused(results[8], "missing.png", "does not exist")
    assert_refused(results[9], "lite_random.pt", "not a folder")
    assert_refused(results[10], "lite_random.pt/sub", "cannot write")  # said before the work, naming --out
    assert not out.exists()


def test_predict_picks_a_page_or_series_and_writes_float16_maps(tmp_path, glas_dir, lite_checkpoint):
    rgb, pages, two = _write_tiffs(tmp_path, glas_dir)
    out = tmp_path / "out"
    results = run_cases(["predict", pages, "--page", 1, "--model", lite_checkpoint, "--out", out, "--tile", 64,
                         "--review-size", 32, "--branches"],
                        ["predict", two, "--series", 1, "--model", lite_checkpoint, "--out", out / "s"])
    assert [r["rc"] for r in results] == [0, 0], results
    for name in ("disagreement", "entropy", "uncertainty", "probability"):
        arr = np.load(out / f"pages_{name}.npy")
        assert arr.dtype == np.float16 and arr.shape == (120, 160) and 0 <= arr.min() and arr.max() <= 1
    assert np.load(out / "pages_branch_probs.npy").shape == (3, 120, 160)
    mask = np.array(Image.open(out / "pages_mask.png"))
    assert mask.shape == (120, 160) and set(np.unique(mask)) <= {0, 255}
    summary = json.loads((out / "pages_summary.json").read_text())
    review = summary["review_grid_by_uncertainty"]
    assert summary["page"] == 1 and summary["size"] == [120, 160] and len(review) == 10
    assert all(b[2] - b[0] <= 32 for b in (t["bbox"] for t in review))
    # the review squares follow the written uncertainty map: the 10 best squares of the 32 px grid
    unc = np.load(out / "pages_uncertainty.npy").astype(np.float32)
    tissue = tissue_mask(read_image(pages, page=1))
    for t in review:
        y0, x0, y1, x1 = t["bbox"]
        assert t["score"] == pytest.approx(tile_score(unc[y0:y1, x0:x1], tissue[y0:y1, x0:x1]), abs=1e-3)
    best = rank_tiles(unc, tissue, 32)
    assert [t["score"] for t in review] == pytest.approx([sc for sc, _ in best[:10]], abs=1e-3)
    assert np.array(Image.open(out / "s" / "two_series_mask.png")).shape == (50, 70)
    assert not list(out.glob(".*partial"))


def test_predict_refuses_an_image_too_large_for_memory_up_front(tmp_path, glas_dir, lite_checkpoint):
    out = tmp_path / "out"
    [result] = run_cases(["predict", glas_dir / "images" / "testA_1.png", "--model", lite_checkpoint, "--out", out],
                         mem_available=200 * 2**20)
    assert_refused(result, "testA_1.png", "needs about", "GB of memory", "available")
    assert not out.exists()


def test_evaluate_and_train_name_the_file_and_create_nothing(tmp_path, glas_dir, lite_checkpoint):
    from src_model.io import read_image, read_mask

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    Image.fromarray(read_image(glas_dir / "images" / "testA_1.png")).save(data / "images" / "testA_1.png")
    Image.fromarray(read_mask(glas_dir / "masks" / "testA_1.png")[:500].astype(np.uint8)).save(
        data / "masks" / "testA_1.png")
    (data / "split.csv").write_text("id,split,subset\ntestA_1,test,testA\n")
    binary = tmp_path / "binary"
    binary.mkdir()
    (binary / "split.csv").write_bytes(np.random.default_rng(1).integers(0, 256, 512, dtype=np.uint8).tobytes())
    nul = tmp_path / "nul"
    nul.mkdir()
    (nul / "split.csv").write_bytes(b"id,split\nx\x00y,train\n")
    runs = tmp_path / "runs"
    results = run_cases(
        ["evaluate", "--data", data, "--model", lite_checkpoint, "--split", "test"],
        ["evaluate", "--data", binary, "--model", lite_checkpoint],
        ["train", "--data", binary, "--out", runs / "a"],
        ["train", "--data", nul, "--out", runs / "b"],
        ["train", "--data", tmp_path / "no_such_data", "--out", runs / "c"],
        ["train", "--data", glas_dir, "--out", runs / "d", "--resume"],
        ["train", "--data", glas_dir, "--out", runs / "e", "--init", tmp_path / "no_such.pt"],
    )
    assert_refused(results[0], "masks/testA_1.png", "500 x 775", "522 x 775")
    assert_refused(results[1], "binary/split.csv")
    assert_refused(results[2], "binary/split.csv")
    assert_refused(results[3], "nul/split.csv")
    assert_refused(results[4], "no_such_data", "no such data folder")
    assert_refused(results[5], "last.pt", "resume")
    assert_refused(results[6], "no_such.pt")
    assert not runs.exists()


def test_checkpoint_errors_through_the_cli(tmp_path, glas_dir):
    import src_model
    from src_model.checkpoint import save_checkpoint

    model = src_model.build_model("lite")
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    good = save_checkpoint(tmp_path / "good.pt", model)
    data = read_checkpoint(good)
    data["format_version"] = "1"
    torch.save(data, tmp_path / "strver.pt")
    data["format_version"] = 1
    data["config"] = dict(data["config"], decoder_channels=800000)
    torch.save(data, tmp_path / "wide.pt")
    img = glas_dir / "images" / "testA_1.png"
    results = run_cases(*(["predict", img, "--model", tmp_path / name, "--out", tmp_path / "o"]
                          for name in ("bare.pt", "strver.pt", "wide.pt")),
                        ["import-official", bare, "--out", tmp_path / "x.pt"])
    assert_refused(results[0], "bare.pt", "bare state_dict", "'lite' preset", "save_checkpoint")
    assert "import-official" not in results[0]["stderr"]
    assert_refused(results[1], "strver.pt", "unreadable format_version '1'")
    assert "newer" not in results[1]["stderr"]
    assert_refused(results[2], "wide.pt", "decoder_channels=800000")
    assert_refused(results[3], "bare.pt", "not an official MTNet state_dict")
    assert not (tmp_path / "o").exists() and not (tmp_path / "x.pt").exists()


# ----------------------------------------------------------------------------- fine-tuning and retrain
def test_train_init_fine_tunes_with_the_named_recipe(tmp_path, glas_dir):
    for recipe in ("default", "plain"):
        out = tmp_path / recipe
        args = ["train", "--data", glas_dir, "--labelled-ids", "train_1", "--init", "--steps", 2, "--patch", 64,
                "--batch", 1, "--out", out, "--progress", "json"]
        # the default recipe fine-tunes supervised-only (FINETUNE_SEMI_SUPERVISED); --semi-supervised adds CDMA's terms
        cdma(*args, *([] if recipe == "default" else ["--recipe", recipe, "--semi-supervised"]))
        prov = read_checkpoint(out / "final.pt")["provenance"]
        assert prov["recipe"]["name"] == recipe and prov["init"] == "bundled"
        assert prov["semi_supervised"] is (recipe == "plain")
    from src_model.recipes import RECIPES

    assert read_checkpoint(tmp_path / "default" / "final.pt")["provenance"]["recipe"] == RECIPES["default"].to_dict()


def _store_with_regions(root, glas_dir):
    """A real project store: a random lite model as current, 5 accepted GlaS regions (the 5th held out)."""
    from napari_cdma.project.store import ProjectStore
    from src_model import build_model
    from src_model.checkpoint import save_checkpoint
    from src_model.io import read_mask

    store = ProjectStore.open(root)
    torch.manual_seed(0)
    ckpt = save_checkpoint(root.parent / "init.pt", build_model("lite"), provenance={"torch": str(torch.__version__)})
    store.add_model(ckpt, parent=None, note="random lite", promoted=True)
    boxes = [(40, 50, 136, 150), (200, 300, 264, 428), (100, 400, 228, 500), (300, 120, 380, 200),
             (330, 420, 430, 520)]
    for i, (y0, x0, y1, x1) in enumerate(boxes):
        name = ("testA_1", "testA_2", "testB_4")[i % 3]
        image, mask = read_image(glas_dir / "images" / f"{name}.png"), read_mask(glas_dir / "masks" / f"{name}.png")
        gt = mask[y0:y1, x0:x1]
        store.accept_region(image, (y0, x0, y1, x1), gt, np.zeros_like(gt), model_version=store.current_model_version,
                            source_path=f"{name}.png")
    return store


def test_retrain_runs_the_dock_worker_on_a_store_and_registers_a_version(tmp_path, glas_dir):
    from napari_cdma.project.store import ProjectStore

    root = tmp_path / "store"
    _store_with_regions(root, glas_dir)
    proc = cdma("retrain", root, "--steps", 2, "--promote", "no", "--device", "cpu", "--progress", "json")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [e["step"] for e in events if e["event"] == "progress"] == [1, 2]
    done = events[-1]
    assert done["event"] == "done" and done["version"] == "v0002" and done["promoted"] is False
    assert done["recipe"] == "default" and done["parent_model"] == "v0001" and done["n_holdout"] == 1
    assert 0 <= done["agreement"] <= 1 and "the user's choice" in done["decision"]
    assert {r["image"] for r in done["per_image"]} == {"testA_1.png", "testA_2.png", "testB_4.png"}
    store = ProjectStore.open(root)
    assert [m.version for m in store.models()] == ["v0001", "v0002"] and store.current_model_version == "v0001"
    assert store.models()[1].metrics["per_image"] == done["per_image"]
    # text progress: the per-image table goes to stderr; --promote yes makes it current
    proc = cdma("retrain", root, "--steps", 1, "--promote", "yes", "--device", "cpu", "--recipe", "plain")
    assert "testA_1.png" in proc.stderr and "promoted" in proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["version"] == "v0003"
    assert ProjectStore.open(root).current_model_version == "v0003"


def test_retrain_bad_input_is_one_line_and_changes_nothing(tmp_path):
    from napari_cdma.project.store import ProjectStore

    proc = cdma("retrain", tmp_path / "nowhere", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "no such project store" in proc.stderr
    ProjectStore.open(tmp_path / "empty")  # a store with nothing accepted yet
    proc = cdma("retrain", tmp_path / "empty", "--device", "cpu", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "no accepted regions" in proc.stderr
    assert ProjectStore.open(tmp_path / "empty").models() == []
    proc = cdma("retrain", tmp_path / "empty", "--recipe", "nope", check=False)
    assert proc.returncode == 2 and "nope" in proc.stderr


def test_retrain_help_lists_the_recipes_without_loading_torch():
    code = ("import sys\nfrom src_model.cli import main\ntry:\n    main(['retrain', '--help'])\n"
            "except SystemExit as exc:\n    assert exc.code == 0\nassert 'torch' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from src_model.recipes import RECIPES

    assert "usage: cdma retrain" in proc.stdout and all(name in proc.stdout for name in RECIPES)
    assert "--promote" in proc.stdout
