"""Checkpoints: self-describing, atomic, safe to load, clear errors for anything else."""
import fractions
import os
import pickle

import numpy as np
import pytest
import torch

from src_model import build_model, load_checkpoint
from src_model.checkpoint import FORMAT_VERSION, CheckpointError, read_checkpoint, save_checkpoint
from src_model.fileio import atomic_write_bytes


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model("lite")


def test_roundtrip_is_self_describing_and_identical(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.pt", model, step=7, provenance={"user": "tester"})
    data = read_checkpoint(path)
    assert data["format_version"] == FORMAT_VERSION and data["model"] == "MTNet"
    assert data["config"] == model.config.to_dict() and data["step"] == 7
    assert data["provenance"]["user"] == "tester" and "saved_at" in data["provenance"]
    loaded = load_checkpoint(path)
    assert not loaded.training
    x = torch.rand(1, 3, 64, 64)
    model.eval()
    for a, b in zip(model(x), loaded(x), strict=True):
        assert torch.equal(a, b)


def test_loading_never_executes_code_from_the_file(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "napari-cdma-checkpoint", "x": Evil()}, f)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)
    assert not marker.exists()
    torch.save({"format": "napari-cdma-checkpoint", "obj": Evil()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_corrupt_files_get_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.pt", model)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="m.pt"):
        load_checkpoint(path)


def test_foreign_and_newer_checkpoints(tmp_path, model):
    official_like = tmp_path / "official.pt"
    torch.save({"decoder1.conv4.bias": torch.zeros(2)}, official_like)
    with pytest.raises(CheckpointError, match="bare state_dict.*not an official CDMA MTNet.*missing"):
        load_checkpoint(official_like)
    newer = tmp_path / "newer.pt"
    save_checkpoint(newer, model)
    data = read_checkpoint(newer)
    data["format_version"] = FORMAT_VERSION + 1
    torch.save(data, newer)
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(newer)
    mismatched = tmp_path / "mismatch.pt"
    data["format_version"] = FORMAT_VERSION
    data["config"] = build_model("lite", decoder_channels=32).config.to_dict()
    torch.save(data, mismatched)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(mismatched)
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "missing.pt")


def test_failed_write_leaves_previous_file_intact(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.pt", model, step=1)
    before = path.read_bytes()

    def disk_full(f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write_bytes(path, disk_full)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left behind


def test_refuses_to_overwrite_when_asked(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.pt", model)
    with pytest.raises(FileExistsError):
        save_checkpoint(path, model, overwrite=False)


def test_random_bytes_are_not_a_torch_file_and_get_no_unsafe_advice(foreign_checkpoint, tmp_path):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(foreign_checkpoint)
    msg = str(info.value)
    assert "foreign.pt: not a napari-cdma checkpoint (not a zip / torch file)" in msg
    assert "weights_only" not in msg and "import-official" not in msg
    npz = tmp_path / "arrays.npz"  # a zip, but not a torch file
    np.savez(npz, w=np.zeros(3))
    with pytest.raises(CheckpointError, match=r"arrays.npz: not a readable checkpoint \(a zip file without data.pkl"):
        load_checkpoint(npz)


def test_pickled_objects_are_refused_without_unsafe_advice(tmp_path):
    path = tmp_path / "objects.pt"
    torch.save({"format": "napari-cdma-checkpoint", "obj": fractions.Fraction(1, 3)}, path)  # not weights
    with pytest.raises(CheckpointError, match="objects.pt: not a readable checkpoint: refused") as info:
        load_checkpoint(path)
    assert "weights_only" not in str(info.value)


def test_bare_state_dicts_say_what_they_are_and_how_to_import(tmp_path, model, reference_dir):
    from test_official_fixture import official_state_dict_by_rule

    own = tmp_path / "own.pt"
    torch.save(model.state_dict(), own)
    with pytest.raises(CheckpointError, match="own.pt: a bare state_dict.*'lite' preset.*save_checkpoint") as info:
        load_checkpoint(own)
    assert "import-official" not in str(info.value)  # the advice that would fail is not given
    nested = tmp_path / "nested.pt"
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, nested)
    with pytest.raises(CheckpointError, match="bare state_dict.*under the key 'state_dict'"):
        load_checkpoint(nested)
    official = tmp_path / "official.pth"
    torch.save(official_state_dict_by_rule(reference_dir), official)
    with pytest.raises(CheckpointError, match=r"official CDMA MTNet.*cdma import-official .*official\.pth --out"):
        load_checkpoint(official)


@pytest.mark.parametrize("version, pattern", [("1", "unreadable format_version '1'"), (None, "unreadable"),
                                              (0, "unreadable"), (True, "unreadable"), (FORMAT_VERSION + 1, "newer")])
def test_format_version_must_be_a_known_integer(tmp_path, model, version, pattern):
    path = save_checkpoint(tmp_path / "v.pt", model)
    data = read_checkpoint(path)
    data["format_version"] = version
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=pattern) as info:
        load_checkpoint(path)
    if pattern == "unreadable":
        assert "newer" not in str(info.value)


def test_compressed_tensor_is_refused_before_torch_reads_it(tmp_path, monkeypatch):
    import zipfile

    src = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(16 * 2**20)}, src)  # 64 MiB of zeros, stored as torch stores it
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bomb, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info), compress_type=zipfile.ZIP_DEFLATED)
    src.unlink()
    assert bomb.stat().st_size < 2**20

    def no_load(*args, **kwargs):
        raise AssertionError("torch.load reached")

    monkeypatch.setattr(torch, "load", no_load)
    with pytest.raises(CheckpointError, match=r"bomb.pt: refused: entry .*data/0 expands .* to 64 MiB"):
        load_checkpoint(bomb)


def test_declared_size_beyond_the_limit_is_refused_before_loading(tmp_path, model, monkeypatch):
    from src_model import checkpoint

    path = save_checkpoint(tmp_path / "m.pt", model)
    monkeypatch.setattr(checkpoint, "MAX_CHECKPOINT_BYTES", 2**20)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load reached"))
    with pytest.raises(CheckpointError, match=r"m.pt: refused: declares \d+ MiB"):
        load_checkpoint(path)


@pytest.mark.parametrize("field, value", [("decoder_channels", 800000), ("layers", [3, 4, 10**6, 3]),
                                          ("num_classes", 10**7), ("branches", ["cbam"] * 1000),
                                          ("aspp_channels", "64"), ("widths", [24, 48, 96])])
def test_configs_beyond_limits_are_refused_before_building(tmp_path, model, monkeypatch, field, value):
    from src_model import model as model_pkg

    path = save_checkpoint(tmp_path / "m.pt", model)
    data = read_checkpoint(path)
    data["config"][field] = value
    torch.save(data, path)
    monkeypatch.setattr(model_pkg.MTNet, "__init__", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(CheckpointError, match=f"m.pt: unusable model config: {field}="):
        load_checkpoint(path)


def test_weights_are_checked_against_the_config_on_the_meta_device(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.pt", model)
    data = read_checkpoint(path)
    data["config"]["decoder_channels"] = 2048  # within limits, but not these weights
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"do not fit the stored config \(.*of another shape"):
        load_checkpoint(path)
