"""Walk 24: an Open that fails says the store open before stays open, and keeps its path and summary.

Typing a file's path and pressing Open left the bad path in the box and replaced the store summary by the error, as if
no store were open, while the open store's regions were still listed; an empty path was read as the working folder.
Real dock, real napari viewer under Xvfb, real store on disk.
"""
from __future__ import annotations

from _dock import open_dock


def test_a_failed_open_keeps_the_open_store_said(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    dock = open_dock(viewer, tmp_path / "project")
    store = dock.store
    summary = dock.store_label.text()
    assert "accepted region" in summary, summary
    bad = tmp_path / "notastore"
    bad.write_text("not a store")

    assert dock.open_store(bad, quiet=True) is None
    said = dock.store_label.text()
    assert dock.store is store
    assert dock.store_edit.text() == str(store.root)
    assert f"Cannot open project store {bad}" in said and f"{store.root} stays open." in said, said
    assert "accepted region" in said, said  # the summary of the open store is still there

    assert dock.open_store("", quiet=True) is None
    said = dock.store_label.text()
    assert "path is empty" in said and f"{store.root} stays open." in said, said
    assert dock.store_edit.text() == str(store.root)
    assert not (tmp_path / "zarr.json").exists()


def test_an_empty_path_is_not_the_working_folder(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    viewer = make_napari_viewer()
    dock = open_dock(viewer)
    dock._store = None
    assert dock.open_store("", quiet=True) is None
    assert "path is empty" in dock.store_label.text(), dock.store_label.text()
    assert not any(tmp_path.iterdir())  # nothing created in the working folder
