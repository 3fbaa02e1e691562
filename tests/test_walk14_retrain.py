"""Walk 14, Retrain panel (real napari viewer, real dock, real store and a real background retraining of a small
model): the per-image table names the images trained on that it has no row for (walk: testA_2, accepted whole
as r0003, was missing and nothing said why), and the progress bar shows only while a retraining runs (walk: an
idle bar read "0%", where Predict hides its bar when idle), its row kept so that nothing below it moves."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from _dock import open_dock
from PIL import Image
from qtpy.QtCore import QPoint

from napari_cdma.project.events import ImageScore
from napari_cdma.project.store import ProjectStore

FAST_TRAIN = dict(device="cpu", patch=64, batch_labelled=2, batch_unlabelled=2)


def _table(panel):
    """The per-image table's rows: an image's name (across both columns), then its [label, value] rows."""
    t = panel.image_table
    return [[t.item(i, 0).text()] if t.columnSpan(i, 0) == 2 else [t.item(i, j).text() for j in range(2)]
            for i in range(t.rowCount())]


def _walk_store(path, glas_dir, lite_checkpoint):
    """The walk's store: two regions of testA_1 and the whole of testA_2 accepted (r0001-r0003, none held out)."""
    store = ProjectStore.open(path)
    store.add_model(lite_checkpoint, parent=None, note="random lite", promoted=True)
    model = store.current_model_version
    for name, boxes in (("testA_1", [(128, 224, 256, 352), (300, 50, 451, 171)]), ("testA_2", [None])):
        source = glas_dir / "images" / f"{name}.png"
        image = np.asarray(Image.open(source).convert("RGB"))
        mask = (np.asarray(Image.open(glas_dir / "masks" / f"{name}.png")) > 0).astype(np.uint8)
        for box in boxes:
            y0, x0, y1, x1 = box or (0, 0, *image.shape[:2])
            store.accept_region(image, (y0, x0, y1, x1), mask[y0:y1, x0:x1], np.zeros((y1 - y0, x1 - x0), np.uint8),
                                model_version=model, source_path=source, image_name=name)
    assert [r.holdout for r in store.regions()] == [False, False, False]
    return store


def _dock_on(make_napari_viewer, qtbot, store):
    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer, store.root)
    dock.show_panel("Retrain")
    qtbot.wait(50)
    panel = dock.retrain_panel
    panel.train_kwargs = dict(FAST_TRAIN)
    return panel


def test_the_table_names_the_images_trained_on_that_it_has_no_row_for(
        make_napari_viewer, qtbot, tmp_path, glas_dir, lite_checkpoint):
    store = _walk_store(tmp_path / "store", glas_dir, lite_checkpoint)
    panel = _dock_on(make_napari_viewer, qtbot, store)
    panel.steps_spin.setValue(1)
    panel.retrain_button.click()
    assert panel.state == "running", panel.last_message
    qtbot.waitUntil(lambda: panel.state in ("done", "error"), timeout=240_000)
    assert panel.state == "done", panel.last_message

    # the table's rows as before: testA_1 (uncorrected tissue of it compared), nothing held out
    rows = {r.image: r for r in panel.last_done.per_image}
    assert "testA_2.png" not in rows and rows["testA_1.png"].n_holdout == 0  # the walk's case: testA_2 has no row
    agreement = rows["testA_1.png"].agreement
    assert _table(panel) == [["testA_1"], ["held out", "none"], ["held-out Dice", "n/a"],
                             ["agreement", f"{agreement:.3f}"]]
    # and a line under it says which image trained on has no row, and why
    note = panel.image_note
    assert note.isVisible() and panel.image_table.isVisible()
    assert note.text() == ("Not in the table: testA_2 (trained on; no region of it held out, no uncorrected tissue "
                           "of it compared).")
    assert note.mapTo(panel, QPoint(0, 0)).y() > panel.image_table.mapTo(panel, QPoint(0, 0)).y()
    assert note.toolTip() == "testA_2"  # the image's layer name (walk 22: the file's, "testA_2.png")

    first = panel.last_done.per_image
    # no row at all (e.g. only whole images accepted): the table is hidden, the line names every image trained on
    panel._handle(replace(panel.last_done, per_image=()))
    qtbot.waitUntil(lambda: panel.state != "registering", timeout=30_000)
    assert panel.state == "done" and not panel.image_table.isVisible()
    assert note.isVisible() and note.text() == (
        "No per-image score for testA_1, testA_2 (trained on; no region of them held out, no uncorrected tissue "
        "of them compared).")

    # every image trained on has a row: no line
    panel._handle(replace(panel.last_done, per_image=first + (
        ImageScore("testA_2.png", agreement=0.9),)))
    qtbot.waitUntil(lambda: panel.state != "registering", timeout=30_000)
    assert panel.state == "done" and panel.image_table.isVisible() and not note.isVisible()
    assert _table(panel)[4:] == [["testA_2"], ["held out", "none"], ["held-out Dice", "n/a"], ["agreement", "0.900"]]

    # a new retraining hides the line with the table
    panel._handle(replace(panel.last_done, per_image=()))
    qtbot.waitUntil(lambda: panel.state != "registering", timeout=30_000)
    assert note.isVisible()
    assert panel.start(steps=5000)
    assert not note.isVisible() and not panel.image_table.isVisible()
    panel.cancel()
    qtbot.waitUntil(lambda: panel.state in ("cancelled", "error"), timeout=120_000)


def test_the_progress_bar_shows_only_while_a_retraining_runs(
        make_napari_viewer, qtbot, tmp_path, glas_dir, lite_checkpoint):
    store = _walk_store(tmp_path / "store", glas_dir, lite_checkpoint)
    panel = _dock_on(make_napari_viewer, qtbot, store)

    def below() -> int:  # where the loss curve under the progress row sits: it must not move
        return panel.loss_plot.mapTo(panel, QPoint(0, 0)).y()

    # idle: no "0%" bar (Predict hides its bar when idle too); its row is kept, the ETA beside it in place
    assert panel.progress.isHidden() and not panel.progress.isVisible()
    idle_y, eta_x = below(), panel.eta_label.x()

    assert panel.start(steps=5000), panel.last_message
    assert panel.state == "running" and panel.progress.isVisible()  # shown while it runs
    qtbot.wait(50)
    assert below() == idle_y and panel.eta_label.x() == eta_x  # nothing moved when it appeared
    qtbot.waitUntil(lambda: len(panel.loss_plot.values) > 0, timeout=120_000)
    assert panel.progress.isVisible()
    panel.cancel_button.click()
    qtbot.waitUntil(lambda: panel.state in ("cancelled", "error"), timeout=120_000)
    assert panel.state == "cancelled", panel.last_message
    assert panel.progress.isHidden()  # the result line says how it ended
    qtbot.wait(50)
    assert below() == idle_y and panel.eta_label.x() == eta_x

    # a run that ends with a new model: the bar stays until the model is registered, then goes
    panel.steps_spin.setValue(1)
    panel.retrain_button.click()
    assert panel.progress.isVisible()
    seen = []
    panel.job_event.connect(lambda ev: seen.append((ev.kind, panel.progress.isVisible())))
    qtbot.waitUntil(lambda: panel.state in ("done", "error"), timeout=240_000)
    assert panel.state == "done", panel.last_message
    assert seen and seen[-1] == ("done", True)  # registering: still shown, at its end
    qtbot.wait(50)
    assert panel.progress.isHidden() and below() == idle_y

    # a run that cannot start leaves none
    opened = panel._get_store()  # the dock's own ProjectStore of the folder
    for region in opened.regions():
        opened.withdraw(region.region_id)
    assert not panel.start() and panel.progress.isHidden()
