"""Reopening a store without decoding what is already open (issue 9): the store lists its whole images
by hash and shape from their metadata only, and the dock's restore decodes only the images it adds and
reads the accepted corrections in a part that changes no layer (real zarr stores on disk, GlaS training
images, real napari viewer under Xvfb)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from _dock import PLUGIN, WIDGET
from PIL import Image

from napari_cdma import _widget_store
from napari_cdma._layers import HASH_KEY, names_for
from napari_cdma.project import store_io
from napari_cdma.project.store import ProjectStore, StoreError

TRAIN = ("train_1", "train_2", "train_3")
BOX = (40, 60, 168, 188)


def _image(glas_dir, name):
    return np.asarray(Image.open(glas_dir / "images" / f"{name}.png").convert("RGB"))


def _store(tmp_path, glas_dir):
    """train_1 and train_2 with one accepted region each (their glands in BOX), train_3 kept unlabelled."""
    project = ProjectStore.open(tmp_path / "project")
    for name in TRAIN[:2]:
        image = _image(glas_dir, name)
        mask = np.asarray(Image.open(glas_dir / "masks" / f"{name}.png"))
        y0, x0, y1, x1 = BOX
        project.accept_region(image, BOX, mask[y0:y1, x0:x1], np.zeros((y1 - y0, x1 - x0), np.uint8),
                              model_version="bundled", source_path=str(glas_dir / "images" / f"{name}.png"),
                              image_name=name)
    project.add_unlabelled_image(_image(glas_dir, TRAIN[2]))
    return project


def _garble(path):
    """Overwrite every chunk file of the zarr array at ``path`` with bytes no codec decodes."""
    for chunk in (path / "c").rglob("*"):
        if chunk.is_file():
            chunk.write_bytes(b"\x00garbled" * 64)


def test_the_listing_gives_hash_and_shape_without_decoding_pixels(tmp_path, glas_dir):
    project = _store(tmp_path, glas_dir)
    stored = dict(project.whole_images())
    listed = project.list_whole_images()
    assert {i.image_hash: i.shape for i in listed} == {d: im.shape for d, im in stored.items()}
    assert all(not i.damaged for i in listed)

    garbled, no_meta, no_chunk = (project.root / "images" / i.key for i in listed)
    _garble(garbled)  # its bytes are damaged: only reading them tells
    (no_meta / "zarr.json").unlink()
    next(p for p in (no_chunk / "c").rglob("*") if p.is_file()).unlink()

    again = ProjectStore.open(tmp_path / "project").list_whole_images()
    assert [i.image_hash for i in again] == [i.image_hash for i in listed]
    assert again[0].shape == listed[0].shape and again[0].damaged == ""  # listed from its metadata
    assert "zarr.json" in again[1].damaged and again[1].shape == ()
    assert "missing" in again[2].damaged and again[2].shape == ()
    with pytest.raises(StoreError, match="damaged"):
        project.load_image(again[0].key)
    assert project.whole_images(skip_damaged=True) == []  # each of the three is damaged when read


def test_reopening_decodes_only_the_stored_image_it_adds(make_napari_viewer, tmp_path, glas_dir, monkeypatch):
    """train_1 is open as the dock restored it (hash in its metadata), train_2 as the user opened it (no
    hash): neither is decoded from the store; train_3 is not open and is the one image read."""
    project = _store(tmp_path, glas_dir)
    digests = {name: d for name in TRAIN for d, im in project.whole_images()
               if np.array_equal(im, _image(glas_dir, name))}
    viewer = make_napari_viewer()
    viewer.add_image(_image(glas_dir, "train_1"), name="mine 1", rgb=True,
                     metadata={HASH_KEY: digests["train_1"]})
    viewer.add_image(_image(glas_dir, "train_2"), name="mine 2", rgb=True)

    reads = _count_reads(monkeypatch, project.root)
    names = _widget_store.restore_layers(viewer, project, _widget_store.open_image_hashes(viewer))
    assert reads.count("images") == 1  # train_3 only
    assert reads.count("regions") == 2 * 3  # crop, corrected and predicted of each region
    assert names[digests["train_1"]] == "mine 1" and names[digests["train_2"]] == "mine 2"
    added = viewer.layers[names[digests["train_3"]]]
    assert np.array_equal(added.data, _image(glas_dir, "train_3")) and not added.visible
    y0, x0, y1, x1 = BOX
    for name, layer in (("train_1", "mine 1"), ("train_2", "mine 2")):
        mask = np.asarray(Image.open(glas_dir / "masks" / f"{name}.png"))
        expected = np.zeros(mask.shape, np.int32)
        expected[y0:y1, x0:x1] = mask[y0:y1, x0:x1]
        assert np.array_equal(viewer.layers[names_for(layer)["corrections"]].data, expected)
        assert len(viewer.layers[names_for(layer)["accepted"]].data) == 1


def _count_reads(monkeypatch, root):
    """The top folder (images, regions, predictions) of every array the store reads and verifies."""
    reads = []
    real = store_io.read_array_verified

    def counted(path, expected, what):
        reads.append(path.relative_to(root).parts[0])
        return real(path, expected, what)

    monkeypatch.setattr(store_io, "read_array_verified", counted)
    return reads


def test_the_dock_reopening_a_store_whose_images_are_open_decodes_none_of_them(make_napari_viewer, qtbot, tmp_path,
                                                                              glas_dir, monkeypatch):
    project = _store(tmp_path, glas_dir)
    viewer = make_napari_viewer()
    for name in TRAIN:  # as the user opened them: no hash known
        viewer.add_image(_image(glas_dir, name), name=name, rgb=True)
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    reads = _count_reads(monkeypatch, project.root)
    assert dock.open_store(project.root) is not None
    qtbot.waitUntil(dock.settled, timeout=60_000)
    assert "images" not in reads and "regions" in reads
    assert sorted(ly.name for ly in viewer.layers if type(ly).__name__ == "Image") == sorted(TRAIN)
    for name in TRAIN[:2]:
        assert viewer.layers[names_for(name)["corrections"]].data.any()


def test_reading_on_a_worker_thread_then_stepping_restores_what_one_call_does(make_napari_viewer, tmp_path,
                                                                              glas_dir):
    project = _store(tmp_path, glas_dir)
    one = make_napari_viewer()
    names = _widget_store.restore_layers(one, project, _widget_store.open_image_hashes(one))

    other = make_napari_viewer()
    job = _widget_store.Restore(other, project, _widget_store.open_image_hashes(other))
    worker = threading.Thread(target=job.read)
    worker.start()
    worker.join(60)
    assert not worker.is_alive() and len(other.layers) == 0  # reading adds no layer
    steps = sum(1 for _ in job.steps())
    assert steps == 3 + 2 * 2  # one per image added, two (boxes, corrections) per image with regions
    assert job.names == names
    assert [ly.name for ly in other.layers] == [ly.name for ly in one.layers]
    for a, b in zip(one.layers, other.layers, strict=True):
        assert type(a) is type(b) and a.visible == b.visible
        assert np.array_equal(np.asarray(a.data), np.asarray(b.data))
