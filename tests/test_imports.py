"""Import cost: the package, its I/O, its checkpoint names and ``cdma --help`` never load torch.

Each check runs a fresh interpreter, since this test process has long imported torch.
"""
import subprocess
import sys

import pytest


def run_python(code: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_importing_the_engine_does_not_import_torch():
    run_python(
        "import sys\n"
        "import src_model, src_model.io, src_model.cli, src_model.checkpoint, src_model.fileio, "
        "src_model.runtime, src_model.tiling, src_model.tissue, src_model.config\n"
        "from src_model.io import MAX_PIXELS\n"
        "from src_model.checkpoint import BUNDLED_NAME, CheckpointError, bundled_model_path\n"
        "assert src_model.__version__ and BUNDLED_NAME == 'bundled' and bundled_model_path().name\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "src_model.MTNet  # the lazy attribute loads the model (and torch) on first use\n"
        "assert 'torch' in sys.modules\n")


@pytest.mark.parametrize("argv", [["--help"], ["predict", "--help"], ["evaluate", "--help"]])
def test_cdma_help_does_not_import_torch(argv):
    proc = run_python(
        "import sys\n"
        "from src_model.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n")
    assert "usage: cdma" in proc.stdout


def test_predict_help_tells_the_inference_tile_from_the_review_size():
    out = run_python("from src_model.cli import main\nmain(['predict', '--help'])").stdout
    assert "--tile" in out and "--review-size" in out and "--overlap" in out


def test_the_contrast_of_a_reopened_map_imports_no_torch():
    """A reopened prediction's uncertainty and disagreement layers get their contrast on the GUI thread
    (``_layers.robust_range``): that must not import torch there (0.7 s of a frozen viewer)."""
    run_python(
        "import sys\n"
        "import numpy as np\n"
        "from napari_cdma._layers import robust_range\n"
        "rng = np.random.default_rng(0)\n"
        "lo, hi = robust_range(rng.random((64, 64)) * 0.05, rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))\n"
        "assert 0 <= lo < hi <= 0.05\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n")
