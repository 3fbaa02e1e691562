"""ProjectStore on real GlaS crops and a real zarr store on disk."""
from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest

from napari_cdma.project import store as store_mod
from napari_cdma.project.store import (
    BUNDLED,
    STORE_FORMAT_VERSION,
    ProjectStore,
    StoreError,
    StoreVersionError,
    hash_image,
)
from src_model.io import read_image, read_mask


@pytest.fixture(scope="module")
def glas(glas_dir):
    """Two real GlaS images with their instance masks."""
    return [(read_image(glas_dir / "images" / f"{n}.png"), read_mask(glas_dir / "masks" / f"{n}.png"))
            for n in ("testA_1", "testA_2")]


def _boxes(n, size=64):
    return [(y, x, y + size, x + size) for y in (0, 100, 200) for x in range(0, 700, 100)][:n]


def _accept(store, image, mask, box, model_version=BUNDLED, user="pathologist"):
    y0, x0, y1, x1 = box
    crop_mask = mask[y0:y1, x0:x1]
    return store.accept_region(image, box, crop_mask, (crop_mask > 0).astype(np.uint8)[::-1],
                               model_version=model_version, user=user, source_path="testA_1.png")


def _snapshot(root: Path):
    """Every file under the store with its bytes (staging excluded: it is scratch space)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".staging" not in p.parts and p.name != ".lock"}


def test_accept_version_withdraw_holdout_and_reopen(tmp_path, glas):
    image, mask = glas[0]
    store = ProjectStore.open(tmp_path / "st")
    assert store.holdout_fraction == 0.2
    records = [_accept(store, image, mask, box) for box in _boxes(10)]
    assert [r.region_id for r in records] == [f"r{i:04d}" for i in range(1, 11)]
    # the documented rule: region n (0-based) is held out when n % 5 == 4 for f = 0.2
    assert [r.region_id for r in store.holdout_regions()] == ["r0005", "r0010"]
    assert len(store.training_regions()) == 8
    r1 = records[0]
    assert r1.version == 1 and r1.image_hash == hash_image(image) and r1.bbox == _boxes(1)[0]
    assert r1.user == "pathologist" and r1.model_version == BUNDLED and r1.created.endswith("+00:00")

    # accepting the same box again is a new version; the old one stays readable
    box = _boxes(1)[0]
    edited = mask[box[0]:box[2], box[1]:box[3]].copy()
    edited[:10] = 7
    v2 = store.accept_region(image, box, edited, np.zeros_like(edited), model_version="v0001", user="other")
    assert (v2.region_id, v2.version, v2.n_versions, v2.holdout) == ("r0001", 2, 2, False)
    crop1, corr1, pred1 = store.load_region("r0001", 1)
    crop2, corr2, _ = store.load_region("r0001")
    np.testing.assert_array_equal(crop1, image[box[0]:box[2], box[1]:box[3]])
    np.testing.assert_array_equal(corr1, mask[box[0]:box[2], box[1]:box[3]])
    np.testing.assert_array_equal(corr2, edited)
    assert [r.user for r in store.region_versions("r0001")] == ["pathologist", "other"]

    # a held-out region keeps its flag across versions
    hbox = _boxes(5)[4]
    again = _accept(store, image, mask, hbox)
    assert (again.region_id, again.version, again.holdout) == ("r0005", 2, True)

    # withdraw: kept on disk, out of training and validation
    store.withdraw("r0005")
    store.withdraw("r0002")
    assert "r0005" not in [r.region_id for r in store.regions()]
    assert [r.region_id for r in store.holdout_regions()] == ["r0010"]
    assert "r0002" not in [r.region_id for r in store.training_regions()]
    assert {r.region_id for r in store.regions(include_withdrawn=True) if r.withdrawn} == {"r0002", "r0005"}
    assert store.load_region("r0002")[0].shape == (64, 64, 3)
    # the same box as a withdrawn region starts a new region
    fresh = _accept(store, image, mask, _boxes(2)[1])
    assert fresh.region_id == "r0011" and fresh.version == 1

    # the source image is kept once, as unlabelled tissue
    other_image, _ = glas[1]
    h = store.add_unlabelled_image(other_image, source_path="testA_2.png")
    assert h == hash_image(other_image) and store.add_unlabelled_image(other_image) == h
    images = store.unlabelled_images()
    assert len(images) == 2 and any(np.array_equal(im, image) for im in images)

    # reopening restores everything
    before = (store.regions(include_withdrawn=True), store.region_versions("r0001"), store.holdout_fraction)
    reopened = ProjectStore.open(tmp_path / "st", create=False)
    after = (reopened.regions(include_withdrawn=True), reopened.region_versions("r0001"),
             reopened.holdout_fraction)
    assert after == before
    np.testing.assert_array_equal(reopened.load_region("r0001", 1)[1], corr1)


def test_holdout_fraction_is_fixed_at_creation(tmp_path, glas):
    image, mask = glas[0]
    store = ProjectStore.open(tmp_path / "st", holdout_fraction=0.5)
    flags = [_accept(store, image, mask, box).holdout for box in _boxes(4)]
    assert flags == [False, True, False, True]
    assert ProjectStore.open(tmp_path / "st", holdout_fraction=0.1).holdout_fraction == 0.5


def test_bad_input_is_refused_with_clear_errors(tmp_path, glas):
    image, mask = glas[0]
    store = ProjectStore.open(tmp_path / "st")
    m = mask[:64, :64]
    with pytest.raises(ValueError, match="outside"):
        store.accept_region(image, (500, 0, 600, 64), m, m, model_version=BUNDLED)
    with pytest.raises(ValueError, match="empty"):
        store.accept_region(image, (10, 10, 10, 74), m, m, model_version=BUNDLED)
    with pytest.raises(ValueError, match="shape"):
        store.accept_region(image, (0, 0, 64, 64), mask[:32, :64], m, model_version=BUNDLED)
    with pytest.raises(ValueError, match="integer"):
        store.accept_region(image, (0, 0, 64, 64), m.astype(np.float32), m, model_version=BUNDLED)
    with pytest.raises(ValueError, match="uint8 RGB"):
        store.accept_region(image[..., 0], (0, 0, 64, 64), m, m, model_version=BUNDLED)
    assert store.regions() == []
    with pytest.raises(KeyError, match="r0042"):
        store.withdraw("r0042")


def test_newer_store_is_refused_untouched(tmp_path, glas):
    image, mask = glas[0]
    root = tmp_path / "st"
    store = ProjectStore.open(root)
    _accept(store, image, mask, _boxes(1)[0])
    meta = json.loads((root / "zarr.json").read_text())
    meta["attributes"]["format_version"] = STORE_FORMAT_VERSION + 1
    (root / "zarr.json").write_text(json.dumps(meta))
    before = _snapshot(root)
    with pytest.raises(StoreVersionError, match="newer napari-cdma"):
        ProjectStore.open(root)
    assert _snapshot(root) == before


def test_non_store_directories_are_refused(tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"not a store")
    with pytest.raises(StoreError, match="not a napari-cdma store"):
        ProjectStore.open(other)
    assert sorted(p.name for p in other.iterdir()) == ["holiday.jpg"]
    import zarr

    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w", attributes={"whatever": 1})
    with pytest.raises(StoreError, match="not a napari-cdma store"):
        ProjectStore.open(tmp_path / "foreign.zarr")
    with pytest.raises(StoreError, match="no napari-cdma store"):
        ProjectStore.open(tmp_path / "missing", create=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        ProjectStore.open(tmp_path / "file")


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("fail_at", ["pixels", "index"])
def test_disk_full_leaves_the_store_as_it_was(tmp_path, glas, monkeypatch, fail_at):
    image, mask = glas[0]
    root = tmp_path / "st"
    store = ProjectStore.open(root)
    box = _boxes(1)[0]
    _accept(store, image, mask, box)
    before = _snapshot(root)
    records = store.regions()

    if fail_at == "pixels":
        real_write = store_mod._write_array

        def failing_write(path, data):
            if path.name == "corrected":  # the image and the crop are written, the mask is not
                _enospc()
            real_write(path, data)

        monkeypatch.setattr(store_mod, "_write_array", failing_write)
    else:  # all pixels renamed into place, then the index cannot be written
        monkeypatch.setattr(store_mod, "_atomic_write_json", _enospc)

    with pytest.raises(StoreError, match="disk full"):
        _accept(store, image, mask, box)  # would be version 2
    with pytest.raises(StoreError, match="disk full"):
        _accept(store, glas[1][0], glas[1][1], box)  # would be a new region and a new image
    monkeypatch.undo()

    assert _snapshot(root) == before
    assert list((root / ".staging").iterdir()) == []
    assert store.regions() == records
    reopened = ProjectStore.open(root)
    assert reopened.regions() == records
    np.testing.assert_array_equal(reopened.load_region("r0001")[1], mask[box[0]:box[2], box[1]:box[3]])
    # and the store still works afterwards
    assert _accept(reopened, image, mask, box).version == 2


def test_large_source_keeps_a_context_crop(tmp_path, glas, monkeypatch):
    image, mask = glas[0]
    monkeypatch.setattr(store_mod, "MAX_FULL_IMAGE_PIXELS", 100_000)
    store = ProjectStore.open(tmp_path / "st")
    _accept(store, image, mask, (300, 300, 364, 364))
    (context,) = store.unlabelled_images()
    m = store_mod.CONTEXT_MARGIN
    np.testing.assert_array_equal(context, image[300 - m:364 + m, 300 - m:364 + m])
    with pytest.raises(ValueError, match="larger than"):
        store.add_unlabelled_image(image)


def _checkpoint(path: Path) -> Path:
    # A checkpoint-shaped archive: the store copies files and never loads them.
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", path.name)
    return path


def test_models_add_set_current_rollback_and_reopen(tmp_path, monkeypatch):
    root = tmp_path / "st"
    store = ProjectStore.open(root)
    assert store.current_model_version == BUNDLED and store.models() == []
    a = store.add_model(_checkpoint(tmp_path / "a.pt"), parent=BUNDLED, note="first", promoted=True)
    b = store.add_model(_checkpoint(tmp_path / "b.pt"), parent="v0001",
                        metrics={"old_dice": 0.7, "new_dice": 0.6, "n_holdout": 2})
    assert (a.version, a.path, b.version, b.parent) == ("v0001", "models/v0001.pt", "v0002", "v0001")
    assert store.current_model_version == "v0001"
    assert store.current_model_path() == root / "models" / "v0001.pt"
    assert (root / "models" / "v0002.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    store.set_current("v0002")
    assert store.current_model_version == "v0002"
    store.set_current("v0001")  # rollback
    with pytest.raises(KeyError, match="v0009"):
        store.set_current("v0009")
    with pytest.raises(ValueError, match="not a checkpoint"):
        store.add_model(tmp_path / "nothing.pt", parent=BUNDLED)

    monkeypatch.setattr(store_mod.shutil, "copyfileobj", _enospc)
    before = _snapshot(root)
    with pytest.raises(StoreError, match="disk full"):
        store.add_model(_checkpoint(tmp_path / "c.pt"), parent="v0002", promoted=True)
    monkeypatch.undo()
    assert _snapshot(root) == before

    reopened = ProjectStore.open(root)
    assert reopened.models() == store.models() and len(reopened.models()) == 2
    assert reopened.models()[1].metrics["new_dice"] == 0.6
    assert reopened.current_model_version == "v0001"
    reopened.set_current(BUNDLED)
    assert ProjectStore.open(root).current_model_version == BUNDLED
