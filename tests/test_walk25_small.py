"""Pathologist walk 25, the smaller findings: the Retrain table named an open, predicted image with no region by its
hash ("image 85b854a489" for testB_5); a refused checkpoint stayed chosen as the model, so the next Predict failed
again; the store's error joined two sentences without a full stop ("... choose an empty or new folder /tmp/x stays
open.").

Real napari viewer and dock (Xvfb), real project stores, GlaS images from tests/data, the bundled model.
"""
from __future__ import annotations

import numpy as np
from _dock import open_dock, predict_and_wait
from PIL import Image

from napari_cdma.project.events import ImageScore
from napari_cdma.project.store import ProjectStore


def _glas(glas_dir, name):
    return np.asarray(Image.open(glas_dir / "images" / f"{name}.png").convert("RGB"))


def test_the_retrain_table_names_an_open_image_without_a_region_by_its_layer(make_napari_viewer, qtbot, tmp_path,
                                                                               glas_dir):
    store = ProjectStore.open(tmp_path / "store")
    image = _glas(glas_dir, "testA_1")
    mask = (np.asarray(Image.open(glas_dir / "masks" / "testA_1.png")) > 0).astype(np.uint8)
    store.accept_region(image, (0, 0, 128, 128), mask[:128, :128], np.zeros((128, 128), np.uint8),
                        model_version=store.current_model_version, source_path=glas_dir / "images" / "testA_1.png",
                        image_name="testA_1")
    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer, store.root)
    viewer.add_image(_glas(glas_dir, "testB_4"), rgb=True, name="testB_4")
    predict_and_wait(qtbot, dock, "testB_4")
    digest = dock.states["testB_4"].image_hash
    assert digest and digest not in {r.image_hash for r in store.regions(include_withdrawn=True)}
    panel = dock.retrain_panel
    # the worker's rows: the region's image by its file, the unlabelled one (agreement only) by its hash
    rows = (ImageScore("testA_1.png", n_holdout=0, agreement=0.85, image_hash=store.regions()[0].image_hash),
            ImageScore(f"image {digest[:10]}", n_holdout=0, agreement=0.99, image_hash=digest))
    panel._show_images(rows, trained_on=panel._image_names(store, store.regions()))
    table = panel.image_table
    names = [table.item(r, 0).toolTip() for r in range(0, table.rowCount(), 4)]
    assert names == ["testA_1", "testB_4"], names  # walk 25: "image 85b854a489"
    viewer.layers.remove("testB_4")  # closed: the worker's name, not "... (not open)" of a hash
    panel._show_images(rows, trained_on=panel._image_names(store, store.regions()))
    assert table.item(4, 0).toolTip() == f"image {digest[:10]}"


def test_a_refused_model_file_is_not_left_chosen(make_napari_viewer, qtbot, tmp_path, glas_dir):
    """Walk 25: after "Cannot use this model" the refused file stayed chosen and the next Predict failed again. Now
    the chooser goes back to the model chosen before (here another file), and the status says both."""
    import shutil

    import torch

    from src_model.checkpoint import bundled_model_path

    viewer = make_napari_viewer(show=True)
    widget = open_dock(viewer)
    viewer.add_image(_glas(glas_dir, "testA_2"), rgb=True, name="testA_2")
    panel = widget.predict_panel
    good = tmp_path / "good.pt"
    shutil.copy(bundled_model_path(), good)
    bad = tmp_path / "random_state.pt"
    torch.save({"conv.weight": torch.randn(8, 3, 3, 3), "fc.bias": torch.zeros(2)}, bad)
    panel.set_model_file(str(good))
    panel.set_model_file(str(bad))
    assert panel.model_choice() == ("file", str(bad))
    assert widget.predict("testA_2")
    qtbot.waitUntil(lambda: not panel.running and "random_state.pt" in panel.status.text(), timeout=60_000)
    text = panel.status.text()
    assert "random_state.pt was not loaded" in text and "still good.pt" in text, text
    assert "Cannot use this model" in panel.status.toolTip()
    assert panel.model_choice() == ("file", str(good))  # walk 25: the refused file stayed chosen
    assert panel.model_combo.currentText() == "good.pt"
    assert panel._find(("file", str(bad))) < 0  # not offered again; "Choose file..." can pick it again
    predict_and_wait(qtbot, widget, "testA_2")  # the next Predict works
    assert widget.states["testA_2"] is not None

    # chosen after the default model: back to it
    panel.set_model_versions([], current="bundled")
    panel.set_model_file(str(bad))
    assert widget.predict("testA_2")
    qtbot.waitUntil(lambda: not panel.running and "random_state.pt" in panel.status.text(), timeout=60_000)
    assert panel.model_choice() == ("version", "bundled"), panel.status.text()
    assert "still bundled" in panel.status.text()


def test_a_failed_open_says_the_error_and_the_open_store_as_two_sentences(make_napari_viewer, tmp_path):
    """Walk 25: "... not empty; choose an empty or new folder /tmp/walk25/store1 stays open." Now a full stop ends
    the error before the open store is named, with a store open and without."""
    viewer = make_napari_viewer()
    dock = open_dock(viewer, tmp_path / "store1")
    store = dock.store
    folder = tmp_path / "notastore"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a store")
    assert dock.open_store(folder, quiet=True) is None
    said = dock.store_label.text()
    assert f"choose an empty or new folder. {store.root} stays open." in said, said
    dock._store = None
    assert dock.open_store(folder, quiet=True) is None
    said = dock.store_label.text()
    assert said.endswith("choose an empty or new folder."), said
