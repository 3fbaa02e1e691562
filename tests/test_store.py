"""ProjectStore on real GlaS crops and a real zarr store on disk."""
from __future__ import annotations

import errno
import json
import os
import shutil
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
        store.accept_region(image, (0, 0, 64, 64), m.astype(np.float32) + 0.5, m, model_version=BUNDLED)
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

        def failing_write(path, data, attributes=None):
            if path.name == "corrected":  # the image and the crop are written, the mask is not
                _enospc()
            real_write(path, data, attributes)

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
    assert store.whole_images() == []  # a context crop is never offered as a whole image
    with pytest.raises(ValueError, match="larger than"):
        store.add_unlabelled_image(image)
    monkeypatch.setattr(store_mod, "MAX_FULL_IMAGE_PIXELS", 50_000_000)
    small, small_mask = glas[1]
    _accept(store, small, small_mask, (0, 0, 64, 64))
    ((digest, whole),) = store.whole_images()
    assert digest == store_mod.hash_image(small) == store.regions()[-1].image_hash
    np.testing.assert_array_equal(whole, small)


def test_models_add_set_current_rollback_and_reopen(tmp_path, monkeypatch, lite_checkpoint):

    def _checkpoint(path: Path) -> Path:  # a real, loadable checkpoint (add_model loads it)
        shutil.copyfile(lite_checkpoint, path)
        return path

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
    with pytest.raises(StoreError, match="no such checkpoint"):
        store.add_model(tmp_path / "nothing.pt", parent=BUNDLED)

    monkeypatch.setattr(shutil, "copyfileobj", _enospc)
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


# ---------------------------------------------------------------------------- crash safety and integrity
REPO = Path(__file__).resolve().parents[1]


def _index(root: Path) -> dict:
    return json.loads((root / "index.json").read_text())


def test_kill_9_during_accept_model_add_and_withdraw(tmp_path, lite_checkpoint, glas):
    """A real writer process is killed with SIGKILL at random instants, 10 rounds (a few seconds).

    benchmarks/store_kill_rounds.py forks the writer (accept, accept on a new image, new version,
    add_model, withdraw in a loop; each write logged after it returned), kills it, reopens the store
    and checks: it opens, every write that returned is there and reads back identical, everything
    the index names reads back (nothing half-visible, no unnamed folder left) and a new accept works.
    """
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "store_kill_rounds.py"), "--rounds", "10",
                           "--seed", "1", "--max-delay", "0.3", "--workdir", str(tmp_path),
                           "--checkpoint", str(lite_checkpoint), "--out", ""],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    totals = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (totals["blocked"], totals["lost"], totals["half_visible"]) == (0, 0, 0)
    assert totals["writes_returned"] > 0 and totals["regions_in_store"] > 0
    # and, independently of the script: the store opens, reads back and takes a new accept
    store = ProjectStore.open(tmp_path / "store", create=False)
    for rec in store.regions(include_withdrawn=True):
        assert store.load_region(rec.region_id)[0].shape == (48, 48, 3)
    image, mask = glas[1]
    assert _accept(store, image, mask, (0, 0, 64, 64)).version == 1
    assert not (tmp_path / "store" / "intent.json").exists()


def test_interrupted_write_and_orphan_folders_are_repaired_on_open(tmp_path, glas):
    (image, mask), (image2, mask2) = glas
    root = tmp_path / "st"
    store = ProjectStore.open(root)
    _accept(store, image, mask, _boxes(1)[0])
    old_index = (root / "index.json").read_bytes()
    _accept(store, image2, mask2, _boxes(2)[1])  # r0002 and a second stored image
    new_index = _index(root)
    records = store.regions()

    # A kill after the intent was written and the image placed, before the region was placed and
    # the index committed: roll forward.
    os.rename(root / "regions" / "r0002", root / ".staging" / "killed")
    (root / "index.json").write_bytes(old_index)
    key = hash_image(image2)
    (root / "intent.json").write_text(json.dumps({
        "what": "accepting region r0002 v1", "index": new_index,
        "moves": [[".staging/gone", f"images/{key}"], [".staging/killed", "regions/r0002"]]}))
    reopened = ProjectStore.open(root)
    assert any("finished an interrupted write" in note for note in reopened.repairs)
    assert reopened.regions() == records and not (root / "intent.json").exists()
    np.testing.assert_array_equal(reopened.load_region("r0002")[1], mask2[0:64, 100:164])

    # An intent whose staged data is gone: roll back; what it had placed goes to quarantine/.
    (root / "regions" / "r0003" / "v0001").mkdir(parents=True)
    (root / "intent.json").write_text(json.dumps({
        "what": "accepting region r0003 v1", "index": _index(root),
        "moves": [[".staging/lost", "images/" + "e" * 64], [".staging/placed", "regions/r0003"]]}))
    # An orphan an older version left behind (renamed into place, index never written), incomplete.
    (root / "images" / ("f" * 64)).mkdir()
    reopened = ProjectStore.open(root)
    assert any("undid an interrupted write" in note for note in reopened.repairs)
    assert not (root / "regions" / "r0003").exists() and not (root / "images" / ("f" * 64)).exists()
    assert len(list((root / "quarantine").glob("*/regions/r0003"))) == 1
    assert reopened.regions() == records

    # An orphan that appears while the store is open (another process crashed) never blocks an accept
    # that gets its id: it is moved aside, the accept succeeds.
    (root / "regions" / "r0003" / "v0001").mkdir(parents=True)
    (root / "regions" / "r0003" / "v0001" / "zarr.json").write_text("{")
    rec = _accept(reopened, image, mask, _boxes(3)[2])
    assert rec.region_id == "r0003"
    np.testing.assert_array_equal(reopened.load_region("r0003")[1], mask[0:64, 200:264])
    assert len(list((root / "quarantine").glob("*/regions/r0003"))) == 2


def test_old_index_restored_over_newer_files_is_repaired(tmp_path, glas, lite_checkpoint):
    (image, mask), (image2, mask2) = glas
    root = tmp_path / "st"
    store = ProjectStore.open(root)
    _accept(store, image, mask, _boxes(1)[0])
    backup = (root / "index.json").read_bytes()  # the backup: one region, no model
    for box in _boxes(5)[1:]:
        _accept(store, image, mask, box)  # r0002..r0005 (r0005 held out)
    _accept(store, image2, mask2, (0, 0, 64, 64))  # r0006, a second image
    _accept(store, image, mask, _boxes(1)[0], model_version="v0001")  # r0001 v2
    store.add_model(lite_checkpoint, parent=BUNDLED, promoted=True, metrics={"new_dice": 0.5})
    store.withdraw("r0002")
    before = (store.regions(include_withdrawn=True), store.region_versions("r0001"), store.models())

    (root / "index.json").write_bytes(backup)
    reopened = ProjectStore.open(root)
    assert (reopened.regions(include_withdrawn=True), reopened.region_versions("r0001"), reopened.models()) == before
    assert [r.region_id for r in reopened.holdout_regions()] == ["r0005"]
    assert len(reopened.unlabelled_images()) == 2
    assert any(note.startswith("adopted region r0006") for note in reopened.repairs)
    np.testing.assert_array_equal(reopened.load_region("r0006")[1], mask2[:64, :64])
    assert reopened.model_path("v0001").is_file()
    assert reopened.current_model_version == BUNDLED  # the pointer is not guessed back; the repair says so
    assert _accept(reopened, image2, mask2, (100, 100, 164, 164)).region_id == "r0007"
    assert not (root / "quarantine").exists()


def test_missing_or_damaged_files_raise_store_error_naming_them(tmp_path, glas, lite_checkpoint, caplog):
    image, mask = glas[0]
    root = tmp_path / "st"
    store = ProjectStore.open(root)
    for box in _boxes(3):
        _accept(store, image, mask, box)
    chunk = Path("corrected", "c", "0", "0")
    (root / "regions" / "r0001" / "v0001" / chunk).unlink()  # a missing chunk would read as background
    with pytest.raises(StoreError, match=r"region r0001 v1: chunk file .*corrected/c/0/0 is missing"):
        store.load_region("r0001")
    garbage = np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8).tobytes()
    (root / "regions" / "r0002" / "v0001" / chunk).write_bytes(garbage)
    with pytest.raises(StoreError, match=r"region r0002 v1: chunk file .*corrected/c/0/0 is damaged") as err:
        store.load_region("r0002")
    assert "\n" not in str(err.value)
    # a chunk that decodes but holds other pixels: caught by the checksum
    (root / "regions" / "r0003" / "v0001" / "predicted").rename(root / "p3")
    (root / "regions" / "r0003" / "v0001" / "corrected").rename(root / "regions" / "r0003" / "v0001" / "predicted")
    (root / "p3").rename(root / "regions" / "r0003" / "v0001" / "corrected")
    with pytest.raises(StoreError, match=r"region r0003 v1: .*does not match its recorded checksum"):
        store.load_region("r0003")
    assert store.training_regions()  # listing still works; each region fails alone when read

    image_dir = root / "images" / hash_image(image)
    next(p for p in image_dir.rglob("c/*/*/*") if p.is_file()).unlink()
    with pytest.raises(StoreError, match=r"stored image .* is missing"):
        store.unlabelled_images()
    assert store.unlabelled_images(skip_damaged=True) == []
    assert "skipping a damaged image" in caplog.text

    store.add_model(lite_checkpoint, parent=BUNDLED)
    with (root / "models" / "v0001.pt").open("r+b") as f:
        f.seek(100)
        f.write(b"\x00" * 16)
    with pytest.raises(StoreError, match=r"model v0001: .*v0001.pt does not match its recorded checksum"):
        store.model_path("v0001")


@pytest.mark.parametrize("edit", ["region_id", "version_path", "model_path"])
def test_index_entries_cannot_leave_the_store(tmp_path, glas, lite_checkpoint, edit):
    image, mask = glas[0]
    root = tmp_path / "st"
    store = ProjectStore.open(root)
    _accept(store, image, mask, _boxes(1)[0])
    store.add_model(lite_checkpoint, parent=BUNDLED)
    index = _index(root)
    if edit == "region_id":
        region = index["regions"].pop("r0001")
        region["versions"][0]["path"] = "regions/../../escape/v0001"
        index["regions"]["../../escape"] = region
        message = "region id '../../escape' is not of the form r0001"
    elif edit == "version_path":
        index["regions"]["r0001"]["versions"][0]["path"] = "regions/r0001/../../../escape"
        message = "region r0001 version 1 has path"
    else:
        index["models"][0]["path"] = "../escape.pt"
        message = "model entry 'v0001' has an invalid version or path"
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(StoreError, match=message):
        ProjectStore.open(root)
    with pytest.raises(StoreError, match=message):
        _accept(store, image, mask, _boxes(1)[0])  # the open store re-reads the index before a write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["st"]


def test_a_symlink_out_of_the_store_is_refused(tmp_path, glas):
    image, mask = glas[0]
    root = tmp_path / "st"
    store = ProjectStore.open(root)
    _accept(store, image, mask, _boxes(1)[0])
    os.rename(root / "regions" / "r0001", tmp_path / "outside")
    os.symlink(tmp_path / "outside", root / "regions" / "r0001")
    with pytest.raises(StoreError, match="leaves the store"):
        store.load_region("r0001")
    # the next write's recovery moves the link (never its target) to quarantine/; nothing is written outside
    assert _accept(store, image, mask, _boxes(1)[0]).version == 2
    assert sorted(p.name for p in (tmp_path / "outside").iterdir()) == ["v0001", "zarr.json"]
    assert any(p.is_symlink() for p in (root / "quarantine").glob("*/regions/r0001"))
    with pytest.raises(StoreError, match="region r0001 v1: .* is missing"):
        store.load_region("r0001", 1)


def test_labels_that_do_not_fit_the_store_are_refused(tmp_path, glas):
    image, _ = glas[0]
    store = ProjectStore.open(tmp_path / "st")
    box = (0, 0, 32, 32)
    ok = np.zeros((32, 32), np.uint8)
    cases = [(np.full((32, 32), -1, np.int16), "negative labels"),
             (np.full((32, 32), 2 ** 32, np.uint64), "does not fit the store's uint32 labels"),
             (np.full((32, 32), 2.5), "non-integer values"),
             (np.full((32, 32), np.nan), "NaN")]
    for labels, message in cases:
        with pytest.raises(ValueError, match=message):
            store.accept_region(image, box, labels, ok, model_version=BUNDLED)
        with pytest.raises(ValueError, match=message):
            store.accept_region(image, box, ok, labels, model_version=BUNDLED)
    assert store.regions() == []
    top = np.full((32, 32), 2 ** 32 - 1, np.int64)
    store.accept_region(image, box, top, np.full((32, 32), 3.0), model_version=BUNDLED)
    _, corrected, predicted = store.load_region("r0001")
    assert corrected.dtype == np.uint32 and int(corrected.max()) == 2 ** 32 - 1
    assert predicted.dtype == np.uint8 and int(predicted.max()) == 3


def test_read_only_store_opens_for_reading_and_says_read_only(tmp_path, glas, monkeypatch, lite_checkpoint):
    """Writes to a read-only store fail with a StoreError that says "read-only".

    As a normal user the store folder is made read-only with chmod. Tests run as root in CI, where
    chmod does not stop writes; there os.open is patched to fail with EROFS (read-only file system)
    for any write under the store, which is what the store's lock and writes see on a read-only mount.
    """
    image, mask = glas[0]
    root = tmp_path / "st"
    store = ProjectStore.open(root)
    _accept(store, image, mask, _boxes(1)[0])
    dirs = [root] + [p for p in root.rglob("*") if p.is_dir()]
    if os.geteuid() != 0:
        for d in dirs:
            d.chmod(0o555)
        (root / ".lock").chmod(0o444)
    else:
        real_open = os.open
        writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT

        def read_only_open(path, flags, *args, **kwargs):
            if flags & writing and str(path).startswith(str(root)):
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", read_only_open)
    try:
        ro = ProjectStore.open(root)
        assert ro.read_only and [r.region_id for r in ro.regions()] == ["r0001"]
        assert ro.load_region("r0001")[0].shape == (64, 64, 3)
        for write in (lambda: _accept(ro, image, mask, _boxes(2)[1]), lambda: ro.withdraw("r0001"),
                      lambda: ro.set_current(BUNDLED), lambda: ro.add_model(lite_checkpoint, parent=BUNDLED)):
            with pytest.raises(StoreError, match="read-only") as err:
                write()
            assert "\n" not in str(err.value)
    finally:
        monkeypatch.undo()
        for d in dirs:
            d.chmod(0o755)
    assert [r.region_id for r in ProjectStore.open(root).regions()] == ["r0001"]


def test_add_model_refuses_files_that_cannot_be_loaded(tmp_path, lite_checkpoint):
    import torch

    from src_model.checkpoint import read_checkpoint

    root = tmp_path / "st"
    store = ProjectStore.open(root)
    npz = tmp_path / "weights.npz"
    np.savez(npz, w=np.zeros(3))

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    pickled = tmp_path / "pickle.pt"
    torch.save({"format": "napari-cdma-checkpoint", "payload": Evil()}, pickled)

    data = read_checkpoint(lite_checkpoint)
    name = next(k for k, v in data["state_dict"].items() if v.ndim == 4)
    data["state_dict"][name] = torch.zeros(tuple(s + 1 for s in data["state_dict"][name].shape))
    misfit = tmp_path / "misfit.pt"
    torch.save(data, misfit)

    for path, reason in [(npz, "not a readable checkpoint"), (pickled, "not a readable checkpoint"),
                         (misfit, "weights do not fit the stored config")]:
        with pytest.raises(StoreError, match=f"cannot become a model version: .*{reason}") as err:
            store.add_model(path, parent=BUNDLED, promoted=True)
        assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert not marker.exists()
    assert store.models() == [] and store.current_model_version == BUNDLED
    assert list((root / "models").iterdir()) == [] and list((root / ".staging").iterdir()) == []
    assert store.add_model(lite_checkpoint, parent=BUNDLED, promoted=True).version == "v0001"


def test_retrain_worker_skips_a_damaged_region_with_a_warning(tmp_path, glas, caplog):
    from napari_cdma.project.events import Cancelled, Started
    from napari_cdma.project.retrain_worker import run

    image, mask = glas[0]
    root = tmp_path / "st"
    store = ProjectStore.open(root)
    for box in _boxes(3):
        _accept(store, image, mask, box)
    (root / "regions" / "r0002" / "v0001" / "corrected" / "c" / "0" / "0").unlink()
    events = []
    # cancel at once: run() stops right after the Started event, before loading or training a model
    code = run({"store": str(root), "steps": 1, "out_dir": str(tmp_path / "out"), "device": "cpu"},
               events.append, lambda: True)
    assert code == 0 and isinstance(events[0], Started) and isinstance(events[-1], Cancelled)
    assert events[0].n_labelled == 2
    assert "skipping damaged region r0002: region r0002 v1: chunk file" in caplog.text


def test_a_missing_index_is_rebuilt_and_an_interrupted_creation_redone(tmp_path, glas, lite_checkpoint):
    image, mask = glas[0]
    root = tmp_path / "st"
    store = ProjectStore.open(root, holdout_fraction=0.5)
    for box in _boxes(3):
        _accept(store, image, mask, box)
    store.add_model(lite_checkpoint, parent=BUNDLED)
    store.withdraw("r0003")
    before = (store.regions(include_withdrawn=True), store.models())
    (root / "index.json").unlink()
    reopened = ProjectStore.open(root)
    assert (reopened.regions(include_withdrawn=True), reopened.models()) == before
    assert reopened.holdout_fraction == 0.5 and len(reopened.unlabelled_images()) == 1
    assert any("was missing" in note for note in reopened.repairs)
    assert _accept(reopened, image, mask, _boxes(4)[3]).region_id == "r0004"

    # killed while creating a store: a half-written zarr.json and nothing else
    fresh = tmp_path / "new"
    (fresh / "regions").mkdir(parents=True)
    (fresh / "zarr.json").write_text('{"zarr_form')
    created = ProjectStore.open(fresh, holdout_fraction=0.25)
    assert created.holdout_fraction == 0.25 and created.regions() == []
    assert _accept(created, image, mask, _boxes(1)[0]).region_id == "r0001"


def test_an_orphan_left_by_an_older_version_is_adopted(tmp_path, glas):
    """The issue's case: an older napari-cdma renamed regions/r0002 into place and was killed before
    its index was written (its folders carry no checksums); every later accept of r0002 failed."""
    image, mask = glas[0]
    root = tmp_path / "st"
    store = ProjectStore.open(root)
    _accept(store, image, mask, _boxes(1)[0])
    backup = (root / "index.json").read_bytes()
    _accept(store, image, mask, _boxes(2)[1])
    record = store.regions()[1]
    for meta in (root / "regions" / "r0002" / "zarr.json", root / "regions" / "r0002" / "v0001" / "zarr.json"):
        data = json.loads(meta.read_text())
        data["attributes"].pop("checksums", None)
        if meta.parent.name == "r0002":
            data["attributes"] = {"region_id": "r0002"}  # what older versions wrote
        meta.write_text(json.dumps(data))
    (root / "index.json").write_bytes(backup)
    reopened = ProjectStore.open(root)
    assert reopened.regions()[1] == record
    np.testing.assert_array_equal(reopened.load_region("r0002")[1], mask[0:64, 100:164])
    assert set(_index(root)["regions"]["r0002"]["versions"][0]["checksums"]) == {"crop", "corrected", "predicted"}
    assert _accept(reopened, image, mask, _boxes(3)[2]).region_id == "r0003"


def test_latest_prediction_is_kept_replaced_verified_and_repaired(tmp_path, glas, monkeypatch):
    """One latest prediction per image: saved, read back (labels exact, uncertainty as float16),
    replaced without touching accepted regions, checked against its checksums, and repaired like any write."""
    (image, mask), _ = glas
    root = tmp_path / "st"
    store = ProjectStore.open(root)
    _accept(store, image, mask, _boxes(1)[0])
    regions_before = {k: v for k, v in _snapshot(root).items() if k.startswith("regions")}
    digest = hash_image(image)
    unc = np.random.default_rng(0).random(mask.shape).astype(np.float32) * 0.1
    rec = store.save_prediction(digest, mask, unc, model_version=BUNDLED, model_sha256=store.model_checksum(BUNDLED),
                                image_name="testA_1", ranked=[(0.5, (0, 0, 64, 64))], display_range=(0.01, 0.09))
    assert (rec.number, rec.shape, rec.model_version, rec.image_name) == (1, mask.shape, BUNDLED, "testA_1")
    assert rec.model_sha256.startswith("sha256:") and rec.ranked == [(0.5, (0, 0, 64, 64))]
    labels, back = store.load_prediction(digest)
    np.testing.assert_array_equal(labels, mask)
    assert back.dtype == np.float16
    np.testing.assert_allclose(back, unc, atol=1e-4)

    # a new prediction of the image replaces it; regions are untouched; one folder per image
    rec2 = store.save_prediction(digest, mask[::-1], unc, model_version="v0001")
    assert rec2.number == 2 and store.latest_prediction(digest) == rec2
    assert [p.name for p in (root / "predictions").iterdir()] == [f"{digest}_p0002"]
    assert {k: v for k, v in _snapshot(root).items() if k.startswith("regions")} == regions_before
    reopened = ProjectStore.open(root)
    assert reopened.predictions() == [rec2] and reopened.latest_prediction("0" * 64) is None
    np.testing.assert_array_equal(reopened.load_prediction(digest)[0], mask[::-1])

    # a kill after the new folder was staged and the intent written, before the index: rolled
    # forward; the folder of the prediction it replaces is removed (a cache, not quarantined)
    old_index = (root / "index.json").read_bytes()
    rec3 = reopened.save_prediction(digest, mask, unc, model_version="v0001")
    new_index = _index(root)
    os.rename(root / rec3.path, root / ".staging" / "killed")
    shutil.copytree(tmp_path / "st" / ".staging" / "killed", root / rec2.path)  # as if not yet removed
    (root / "index.json").write_bytes(old_index)
    (root / "intent.json").write_text(json.dumps({"what": "saving a prediction", "index": new_index,
                                                  "moves": [[".staging/killed", rec3.path]]}))
    again = ProjectStore.open(root)
    assert again.latest_prediction(digest) == rec3
    assert [p.name for p in (root / "predictions").iterdir()] == [f"{digest}_p0003"]
    assert not (root / "quarantine").exists()

    # damage is named, never read back as background
    chunk = next(p for p in (root / rec3.path / "labels").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.unlink()
    with pytest.raises(StoreError, match="latest prediction of image"):
        again.load_prediction(digest)

    # edits not accepted, kept on request with the prediction
    assert again.load_prediction_edits(digest) is None
    edited = mask.copy()
    edited[:10, :10] = 7
    rec4 = again.save_prediction(digest, mask, unc, model_version="v0001", edited=edited)
    assert rec4.edited and not rec3.edited
    np.testing.assert_array_equal(ProjectStore.open(root).load_prediction_edits(digest), edited)

    # the branches' disagreement, kept with it when given (float16), verified like the rest
    assert again.load_prediction_disagreement(digest) is None and not rec4.disagreement
    jsd = unc * 0.5
    rec5 = again.save_prediction(digest, mask, unc, model_version="v0001", disagreement=jsd)
    assert rec5.disagreement and ProjectStore.open(root).latest_prediction(digest).disagreement
    kept = ProjectStore.open(root).load_prediction_disagreement(digest)
    assert kept.dtype == np.float16
    np.testing.assert_allclose(kept, jsd, atol=1e-4)
    chunk = next(p for p in (root / rec5.path / "disagreement").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[:-1] + bytes([chunk.read_bytes()[-1] ^ 1]))
    with pytest.raises(StoreError, match="branch disagreement of image"):
        again.load_prediction_disagreement(digest)
    with pytest.raises(ValueError, match="disagreement has shape"):
        again.save_prediction(digest, mask, unc, model_version=BUNDLED, disagreement=jsd[1:])

    # refused: a bad hash, mismatched shapes, an image larger than the store keeps whole
    with pytest.raises(ValueError, match="64 hex"):
        again.save_prediction("nothex", mask, unc, model_version=BUNDLED)
    with pytest.raises(ValueError, match="uncertainty has shape"):
        again.save_prediction(digest, mask, unc[1:], model_version=BUNDLED)
    monkeypatch.setattr(store_mod, "MAX_FULL_IMAGE_PIXELS", 100)
    with pytest.raises(ValueError, match="larger than"):
        again.save_prediction(digest, mask, unc, model_version=BUNDLED)

    # an index entry naming a path outside its place is refused
    index = _index(root)
    index["predictions"][digest]["path"] = "regions/r0001"
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(StoreError, match="prediction entry"):
        ProjectStore.open(root)


def test_a_store_written_before_predictions_were_kept_opens_and_takes_one(tmp_path, glas):
    (image, mask), _ = glas
    root = tmp_path / "st"
    _accept(ProjectStore.open(root), image, mask, _boxes(1)[0])
    index = _index(root)
    assert "predictions" not in index  # created on the first save only
    store = ProjectStore.open(root)
    assert store.predictions() == [] and store.latest_prediction(hash_image(image)) is None
    store.save_prediction(hash_image(image), mask, np.zeros(mask.shape, np.float32), model_version=BUNDLED)
    assert len(ProjectStore.open(root).predictions()) == 1


def test_large_labels_are_stored_band_by_band_exactly(tmp_path):
    """A prediction's uint16 gland labels above 255 are kept as uint32, cast a band of chunks at a time
    (no whole-image uint32 copy at the hand-over): the file reads back exact, and its checksum is the
    one of the whole cast array."""
    from napari_cdma.project import store_io

    rows = 2 * store_io.CHUNK + 37  # three bands, the last partial
    labels = np.random.default_rng(1).integers(0, 700, (rows, 300)).astype(np.uint16)
    assert store_io.checksum(labels, np.uint32) == store_io.checksum(labels.astype(np.uint32))
    assert store_io.checksum(labels[:, ::2], np.uint32) == store_io.checksum(labels[:, ::2].astype(np.uint32))
    store = ProjectStore.open(tmp_path / "st")
    digest = "ab" * 32
    unc = np.zeros(labels.shape, np.float32)
    store.save_prediction(digest, labels, unc, model_version=BUNDLED, model_sha256=store.model_checksum(BUNDLED))
    back, _ = ProjectStore.open(tmp_path / "st").load_prediction(digest)
    assert back.dtype == np.uint32
    np.testing.assert_array_equal(back, labels)


def test_slide_images_are_the_images_of_slide_windows_only(tmp_path):
    """A region accepted in a slide window marks its image (and version) as a slide's; a store written before
    the mark is read by its provenance (a slide file, no layer name); tissue also accepted as an image layer
    or predicted as one is not a slide's only."""
    store = ProjectStore.open(tmp_path / "s")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (96, 96, 3), dtype=np.uint8) for _ in range(4)]
    m = np.zeros((32, 32), np.uint8)
    m[4:20, 4:20] = 1
    marked = store.accept_region(images[0], (0, 0, 32, 32), m, m, model_version=BUNDLED,
                                 source_path=str(tmp_path / "case.svs"), source_kind=store_mod.SLIDE_SOURCE)
    legacy = store.accept_region(images[1], (0, 0, 32, 32), m, m, model_version=BUNDLED,
                                 source_path=str(tmp_path / "old.ndpi"))
    store.accept_region(images[2], (0, 0, 32, 32), m, m, model_version=BUNDLED,
                        source_path=str(tmp_path / "image.tif"), image_name="image")
    both = store.accept_region(images[3], (0, 0, 32, 32), m, m, model_version=BUNDLED,
                               source_path=str(tmp_path / "case2.svs"), source_kind=store_mod.SLIDE_SOURCE)
    assert store.slide_images() == {marked.image_hash, legacy.image_hash, both.image_hash}
    # the same tissue predicted as an image layer: shown as an image again on reopen
    store.save_prediction(both.image_hash, np.zeros((96, 96), np.int32), np.zeros((96, 96), np.float32),
                          model_version=BUNDLED)
    assert store.slide_images() == {marked.image_hash, legacy.image_hash}
    # withdrawn windows still mark their image; the mark survives reopening the store
    store.withdraw(marked.region_id)
    assert ProjectStore.open(tmp_path / "s").slide_images() == {marked.image_hash, legacy.image_hash}


def test_a_withdrawn_region_is_reinstated_with_its_history_kept(tmp_path, glas, monkeypatch):
    """Reinstating (un-withdrawing) a region: it counts again for training or validation as it did (its held-out
    mark and pixels unchanged), and its history keeps who withdrew and who reinstated it, when; the change survives
    reopening, a lost index and an older index restored from a backup. A disk full or an unwritable region record
    changes nothing; a region whose box was accepted again since is not reinstated beside it."""
    image, mask = glas[0]
    root = tmp_path / "st"
    store = ProjectStore.open(root)
    for box in _boxes(5):
        _accept(store, image, mask, box)  # r0001..r0005, r0005 held out
    pixels = [a.copy() for a in store.load_region("r0005")]
    backup_live = (root / "index.json").read_bytes()  # before any withdrawal
    store.withdraw("r0005", user="alice")
    store.withdraw("r0002", user="alice")
    backup_withdrawn = (root / "index.json").read_bytes()
    assert store.holdout_regions() == [] and "r0002" not in [r.region_id for r in store.training_regions()]
    withdrawn = store.regions(include_withdrawn=True)[4]
    assert withdrawn.withdrawn and withdrawn.withdrawn_by == "alice" and withdrawn.withdrawn_at

    record = store.reinstate("r0005", user="bob")
    assert not record.withdrawn and record.holdout and record.version == 1
    assert [r.region_id for r in store.holdout_regions()] == ["r0005"]  # validates again
    assert "r0002" not in [r.region_id for r in store.regions()]  # the other stays withdrawn
    for got, want in zip(store.load_region("r0005"), pixels, strict=True):
        np.testing.assert_array_equal(got, want)
    history = store.region_history("r0005")
    assert [(e["event"], e["by"]) for e in history] == [("accepted v1", "pathologist"), ("withdrawn", "alice"),
                                                          ("reinstated", "bob")]
    assert history[1]["at"] == withdrawn.withdrawn_at <= history[2]["at"]
    assert store.reinstate("r0005") == record  # not withdrawn: nothing to do, nothing written
    assert store.region_history("r0005") == history
    assert store.reinstate("r0002", user="bob").region_id == "r0002"
    store.withdraw("r0002", user="carol")  # withdrawn again: every event kept
    assert [e["event"] for e in store.region_history("r0002")] == ["accepted v1", "withdrawn", "reinstated",
                                                                   "withdrawn"]
    state = (store.regions(include_withdrawn=True), {r: store.region_history(r) for r in ("r0002", "r0005")})

    # reopened, its index lost, or an older index restored over the newer folders: the same regions and history
    assert (ProjectStore.open(root).regions(include_withdrawn=True),) == state[:1]
    for backup in (None, backup_live, backup_withdrawn):
        if backup is None:
            (root / "index.json").unlink()
        else:
            (root / "index.json").write_bytes(backup)
        again = ProjectStore.open(root)
        assert again.regions(include_withdrawn=True) == state[0], backup is None
        assert {r: again.region_history(r) for r in ("r0002", "r0005")} == state[1]
    store = again

    # the index cannot be written (disk full): still withdrawn, in the index and in the region's folder
    monkeypatch.setattr(store_mod, "_atomic_write_json", _enospc)
    with pytest.raises(StoreError, match="disk full"):
        store.reinstate("r0002")
    monkeypatch.undo()
    assert ProjectStore.open(root).regions(include_withdrawn=True) == state[0]
    # the region's folder record cannot be written: not reinstated (reopening would withdraw it again)
    monkeypatch.setattr(store_mod._io, "update_attributes", _enospc)
    with pytest.raises(StoreError, match="disk full"):
        store.reinstate("r0002")
    monkeypatch.undo()
    assert ProjectStore.open(root).regions(include_withdrawn=True) == state[0]

    # the box of a withdrawn region accepted again: that new region is live, the old one is not reinstated beside it
    twin = _accept(store, image, mask, _boxes(2)[1])
    assert twin.region_id == "r0006"
    with pytest.raises(ValueError, match="withdraw r0006 first"):
        store.reinstate("r0002")
    assert store.regions(include_withdrawn=True)[1].withdrawn
    store.withdraw("r0006")
    assert not store.reinstate("r0002").withdrawn
    with pytest.raises(KeyError, match="r0042"):
        store.reinstate("r0042")
