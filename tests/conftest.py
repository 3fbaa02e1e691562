"""Shared test fixtures: the checked-in test data and small models.

``make_napari_viewer`` comes from napari's pytest plugin (entry point ``pytest11: napari``), loaded
automatically once napari is installed.

Test data lives in ``tests/data`` (see the README in each folder) and is served only through the
``glas_dir`` and ``reference_dir`` fixtures below. Missing data is a failure, never a skip.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# The dock freezes the process's long-lived objects out of the garbage collector's reach once it has warmed
# up (napari_cdma/_gc.py). napari's viewer fixture finds leaked viewers with a collection, which cannot see
# frozen objects, so the suite runs with the freeze off; tests/test_gc_freeze.py turns it on and undoes it.
os.environ.setdefault("NAPARI_CDMA_GC_FREEZE", "0")

DATA = Path(__file__).resolve().parent / "data"
GLAS_FILES = ("split.csv", "images/testA_1.png", "masks/testA_1.png")
REFERENCE_FILES = ("official_mtnet_fixture.npz", "official_mtnet_resnet50_keys.tsv")


def _require(folder: Path, names) -> Path:
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        pytest.fail(f"test data missing under {folder}: {', '.join(missing)} "
                    "(tests/data is part of the repository; restore it from git)", pytrace=False)
    return folder


@pytest.fixture(scope="session")
def glas_dir() -> Path:
    """The checked-in GlaS subset: images/, masks/, split.csv (tests/data/glas/README.md)."""
    import csv

    folder = _require(DATA / "glas", GLAS_FILES)
    with (folder / "split.csv").open(newline="") as f:
        ids = [row["id"] for row in csv.DictReader(f)]
    return _require(folder, [f"{sub}/{i}.png" for i in ids for sub in ("images", "masks")])


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """Outputs and state-dict keys of the official CDMA implementation (tests/data/reference/README.md)."""
    return _require(DATA / "reference", REFERENCE_FILES)


@pytest.fixture(scope="session")
def lite_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised ``lite`` model saved as a napari-cdma checkpoint (CPU, seed 0)."""
    import torch

    import src_model
    from src_model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "lite_random.pt"
    # str(): save_checkpoint's default provenance keeps torch.__version__ as a TorchVersion object,
    # which weights_only loading refuses (reported to the engine owner); a plain str loads.
    save_checkpoint(path, src_model.build_model("lite"),
                    provenance={"note": "random test model", "torch": str(torch.__version__)})
    return path


@pytest.fixture
def foreign_checkpoint(tmp_path) -> Path:
    """A file named like a checkpoint that holds random bytes."""
    import numpy as np

    path = tmp_path / "foreign.pt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


@pytest.fixture(autouse=True)
def _project_in_tmp(monkeypatch, tmp_path):
    """Every test's default project store lies in its own tmp folder: Predict and Accept create the store
    named by $NAPARI_CDMA_PROJECT (default ~/napari-cdma-project), which a test must never touch. A test
    that names its own folder sets the variable again."""
    monkeypatch.setenv("NAPARI_CDMA_PROJECT", str(tmp_path / "default-project"))


@pytest.fixture(scope="module")
def mosaic(glas_dir):
    """A 640 x 768 slide tiled from the GlaS images (tests/_slides.py); modules may define their own."""
    from _slides import glas_mosaic

    return glas_mosaic(glas_dir, 640, 768)


@pytest.fixture
def slide_path(tmp_path, mosaic):
    """``mosaic`` as a 3-level pyramidal TIFF."""
    from _slides import write_pyramidal_tiff

    return write_pyramidal_tiff(tmp_path / "case.tif", mosaic, levels=3)


@pytest.fixture
def predicted_slide(tmp_path, slide_path):
    """``cdma predict-slide`` of the whole 640 x 768 test slide (``slide_path``), chunks of 256 px (6 chunks), into
    the store the Whole slide panel uses for it."""
    from src_model.progress import drain
    from src_model.slide_predict import predict_slide

    path = tmp_path / "case.cdma.zarr"
    drain(predict_slide(slide_path, path, chunk=256))
    return path
