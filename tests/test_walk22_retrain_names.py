"""Walk 22: the Retrain panel's per-image table names an image as the rest of the dock does, by its layer while it
is open (it said "glas_testA_1", the file, beside the layer "GlaS testA_1 (H&E)"); a closed image by its file.
Real napari viewer, real dock, real store and a real background retraining of a small model."""
from __future__ import annotations

import numpy as np
from _dock import open_dock
from PIL import Image

from napari_cdma.project.events import ImageScore
from napari_cdma.project.store import ProjectStore, hash_image

FAST_TRAIN = dict(device="cpu", patch=64, batch_labelled=2, batch_unlabelled=2)
LAYER = "GlaS testA_1 (H&E)"


def test_the_retrain_table_names_images_by_their_layers(make_napari_viewer, qtbot, tmp_path, glas_dir,
                                                        lite_checkpoint):
    store = ProjectStore.open(tmp_path / "store")
    store.add_model(lite_checkpoint, parent=None, note="random lite", promoted=True)
    model = store.current_model_version
    for name, layer_name, box in (("testA_1", LAYER, (128, 224, 256, 352)), ("testA_2", "testA_2", None)):
        source = glas_dir / "images" / f"{name}.png"
        image = np.asarray(Image.open(source).convert("RGB"))
        mask = (np.asarray(Image.open(glas_dir / "masks" / f"{name}.png")) > 0).astype(np.uint8)
        y0, x0, y1, x1 = box or (0, 0, *image.shape[:2])
        store.accept_region(image, (y0, x0, y1, x1), mask[y0:y1, x0:x1], np.zeros((y1 - y0, x1 - x0), np.uint8),
                            model_version=model, source_path=source, image_name=layer_name)
    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer, store.root)  # the stored images come back under the names they had on screen
    assert LAYER in viewer.layers and "testA_2" in viewer.layers
    viewer.layers.remove("testA_2")  # closed: named by its file
    panel = dock.retrain_panel
    panel.train_kwargs = dict(FAST_TRAIN)
    panel.steps_spin.setValue(1)
    panel.retrain_button.click()
    assert panel.state == "running", panel.last_message
    qtbot.waitUntil(lambda: panel.state in ("done", "error"), timeout=240_000)
    assert panel.state == "done", panel.last_message

    assert {r.image for r in panel.last_done.per_image} == {"testA_1.png"}  # the worker's own names: the files
    assert {r.image_hash for r in panel.last_done.per_image} == {store.regions()[0].image_hash}  # and hashes
    table = panel.image_table
    assert table.item(0, 0).text() == LAYER and table.item(0, 0).toolTip() == LAYER
    assert panel.image_note.text().startswith("Not in the table: testA_2.png (not open) (trained on;"), \
        panel.image_note.text()


def test_two_images_with_one_file_name_are_each_named_by_their_own_layer(make_napari_viewer, qtbot, tmp_path,
                                                                         glas_dir):
    """Review: the table mapped the worker's name (the file's) back to an image by looping over the stored regions,
    so two images from files of one name (two folders) were both named by the first one's layer. A row carries its
    image's hash now and is named from it."""
    store = ProjectStore.open(tmp_path / "store")
    hashes = []
    for name, folder, layer_name in (("testA_1", "left", "Left slide"), ("testA_2", "right", "Right slide")):
        image = np.asarray(Image.open(glas_dir / "images" / f"{name}.png").convert("RGB"))
        (tmp_path / folder).mkdir()
        source = tmp_path / folder / "img.png"
        Image.fromarray(image).save(source)
        mask = (np.asarray(Image.open(glas_dir / "masks" / f"{name}.png")) > 0).astype(np.uint8)
        store.accept_region(image, (0, 0, *image.shape[:2]), mask, np.zeros(image.shape[:2], np.uint8),
                            model_version=store.current_model_version, source_path=source, image_name=layer_name)
        hashes.append(hash_image(image))
    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer, store.root)
    assert "Left slide" in viewer.layers and "Right slide" in viewer.layers
    panel = dock.retrain_panel
    rows = tuple(ImageScore("img.png", n_holdout=1, old_dice=0.8, new_dice=0.9, agreement=0.99, image_hash=h)
                 for h in hashes)
    panel._show_images(rows, trained_on=panel._image_names(store, store.regions()))
    table = panel.image_table
    assert [table.item(r, 0).toolTip() for r in (0, 4)] == ["Left slide", "Right slide"]
    assert not panel.image_note.isVisibleTo(panel)  # both trained on, both in the table
    # a row without a hash (a worker from before it sent one) keeps the worker's name
    panel._show_images((ImageScore("img.png", n_holdout=1, agreement=0.99),), trained_on=[])
    assert table.item(0, 0).toolTip() == "img.png"
