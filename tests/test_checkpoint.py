"""Checkpoints: self-describing, atomic, safe to load, clear errors for anything else."""
import os
import pickle

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
    with pytest.raises(CheckpointError, match="import-official"):
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
