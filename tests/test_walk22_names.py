"""Findings of pathologist walk 22 in the Review and Display panels: an image was named three ways (its layer
"GlaS testA_1 (H&E)" in the layer list and status lines, its file "glas_testA_1.png" in the accepted-region list, and
for testA_2 "testA_2" in the CSV beside "testA_2.png" in the list); a withdrawn region's row said "[withdrawn 06:31 by
root]" and the status line under it "withdrawn 2026-12-03 06:31 UTC by root"; overlapping accepted regions were stored
silently (a rectangle inside an image accepted whole became a region of its own, and withdrawing a region left its
tissue in training through the whole image's region); Export CSV... suggested the process's working folder.

A real napari viewer (pytest-xvfb), the real dock, GlaS images opened from files, a real project store on disk holding
a prediction of each image (no model).
"""
from __future__ import annotations

import csv
import datetime
import getpass
import shutil

import numpy as np
from _dock import open_dock
from qtpy.QtWidgets import QApplication

from napari_cdma.project.store import ProjectStore, hash_image

FIRST, SECOND = "testA_1", "testA_2"
#: the first image's layer is named apart from its file, as the sample's ("GlaS testA_1 (H&E)" from glas_testA_1.png)
FIRST_LAYER = "GlaS testA_1 (H&E)"
RANKED = [(0.9, (0, 0, 64, 64)), (0.8, (128, 128, 192, 192)), (0.7, (256, 256, 320, 320))]


def _turn(qtbot, n=6):
    for _ in range(n):
        QApplication.processEvents()
        qtbot.wait(10)


def _open(make_napari_viewer, qtbot, tmp_path, glas_dir):
    """Both images opened from their files (copied into tmp_path), a prediction of each in the store."""
    from src_model.io import read_image, read_mask

    files, layers = {}, {FIRST: FIRST_LAYER, SECOND: SECOND}
    store = ProjectStore.open(tmp_path / "project")
    for name in (FIRST, SECOND):
        files[name] = tmp_path / "images" / f"{name}.png"
        files[name].parent.mkdir(exist_ok=True)
        shutil.copy(glas_dir / "images" / f"{name}.png", files[name])
        image = read_image(files[name])
        store.add_unlabelled_image(image)
        labels = np.asarray(read_mask(glas_dir / "masks" / f"{name}.png"), dtype=np.int32)
        uncertainty = np.random.default_rng(0).random(labels.shape).astype(np.float32)
        store.save_prediction(hash_image(image), labels, uncertainty, model_version="bundled",
                              image_name=layers[name], ranked=RANKED, display_range=(0.0, 1.0))
    viewer = make_napari_viewer(show=True)
    for name in (FIRST, SECOND):
        viewer.add_image(read_image(files[name]), name=layers[name], rgb=True,
                         metadata={"source_path": str(files[name])})
    dock = open_dock(viewer, tmp_path / "project")
    _turn(qtbot)
    return viewer, dock, files


def _choose(viewer, dock, qtbot, name):
    dock.predict_panel.image_choice.value = viewer.layers[name]
    _turn(qtbot)


def _rows(review):
    return [(review.region_list.item(i).text(), review.region_list.item(i).toolTip())
            for i in range(review.region_list.count())]


def test_an_image_has_one_name_in_the_region_list_its_status_lines_and_the_csv(make_napari_viewer, qtbot, tmp_path,
                                                                                glas_dir):
    viewer, dock, files = _open(make_napari_viewer, qtbot, tmp_path, glas_dir)
    review, display = dock.review_panel, dock.display_panel
    _choose(viewer, dock, qtbot, FIRST_LAYER)
    first = review.accept_whole_image()
    assert first is not None, review.last_message
    assert first.source_path == str(files[FIRST])  # the store knows its file; the list names its layer
    assert f"of '{FIRST_LAYER}'" in review.last_message
    _choose(viewer, dock, qtbot, SECOND)
    second = review.accept((0, 0, 64, 64))
    assert second is not None, review.last_message
    _turn(qtbot)

    rows = dict(zip((first.region_id, second.region_id), _rows(review), strict=True))
    for region_id, name, file in ((first.region_id, FIRST_LAYER, "testA_1.png"),
                                  (second.region_id, SECOND, "testA_2.png")):
        text, tip = rows[region_id]
        # before: "r0001  testA_1.png  ..." beside the layer "GlaS testA_1 (H&E)", "testA_2.png" beside "testA_2"
        assert f"{region_id}  {name}  " in text and file not in text, text
        assert name in tip and file not in tip, tip

    # the CSV's image column: the same name as the list and the layer
    assert display.image_name == SECOND
    with display.export_csv(tmp_path / "glands.csv").open(newline="") as f:
        images = {row["image"] for row in csv.DictReader(f)}
    assert images == {SECOND}

    # closed, an image is named by its stored source, said not open, in the row and the status line
    viewer.layers.remove(viewer.layers[SECOND])
    _turn(qtbot)
    rows = dict(zip((first.region_id, second.region_id), _rows(review), strict=True))
    assert f"{second.region_id}  testA_2.png (not open)  " in rows[second.region_id][0], rows
    assert f"{first.region_id}  {FIRST_LAYER}  " in rows[first.region_id][0], rows
    assert review.show_region(second.region_id) is None
    assert "(testA_2.png) is not open" in review.last_message, review.last_message


def test_the_withdrawn_status_line_says_the_time_as_the_row_does(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock, _ = _open(make_napari_viewer, qtbot, tmp_path, glas_dir)
    review = dock.review_panel
    _choose(viewer, dock, qtbot, FIRST_LAYER)
    record = review.accept((0, 0, 64, 64))
    assert record is not None, review.last_message
    assert review.withdraw(record.region_id), review.last_message
    review.show_withdrawn.setChecked(True)
    _turn(qtbot)
    withdrawn = review.records[record.region_id]
    when = datetime.datetime.fromisoformat(withdrawn.withdrawn_at).astimezone()
    user = getpass.getuser()
    (text, tip), = _rows(review)
    assert text.startswith(f"[withdrawn {when:%H:%M} by {user}]"), text
    assert f"Withdrawn {when:%Y-%m-%d %H:%M %Z} by {user}" in tip  # the tooltip keeps the full date
    assert review.show_region(record.region_id) is not None, review.last_message
    # the status line as the row: before, "withdrawn 2026-12-03 06:31 UTC by root" under "[withdrawn 06:31 by root]"
    assert f"withdrawn {when:%H:%M} by {user}" in review.last_message, review.last_message
    assert f"{when:%Y-%m-%d}" not in review.last_message, review.last_message


def test_overlapping_accepted_regions_are_said_when_stored_and_withdrawn(make_napari_viewer, qtbot, tmp_path,
                                                                        glas_dir):
    viewer, dock, _ = _open(make_napari_viewer, qtbot, tmp_path, glas_dir)
    review, store = dock.review_panel, dock.store
    _choose(viewer, dock, qtbot, FIRST_LAYER)
    alone = review.accept((0, 0, 64, 64))
    assert alone is not None and "train" not in review.last_message, review.last_message  # it overlaps nothing
    whole = review.accept_whole_image()
    assert whole is not None, review.last_message
    at = datetime.datetime.fromisoformat(alone.created).astimezone()
    # before: "Accepted whole image r0002 of ..., 775 x 522 px at x 0, y 0." and nothing about r0001 under it
    assert f"{whole.region_id} covers {alone.region_id} (accepted at {at:%H:%M}): both train" in review.last_message, \
        review.last_message
    inner = review.accept((128, 128, 192, 192), what="drawn rectangle")
    assert inner is not None, review.last_message
    at = datetime.datetime.fromisoformat(whole.created).astimezone()
    assert (f"{inner.region_id} lies inside {whole.region_id} (accepted whole at {at:%H:%M}): both train, each with "
            "the mask it was stored with") in review.last_message, review.last_message
    assert f"a reopened store shows {inner.region_id}'s where they overlap" in review.last_message
    # what is said is what the store does: each live region is a training pair of its own
    assert {r.region_id for r in store.training_regions()} == {alone.region_id, whole.region_id, inner.region_id}

    # withdrawn, the first region's tissue still trains through the whole image's region
    assert review.withdraw(alone.region_id), review.last_message
    assert (f"{whole.region_id} (accepted whole at {at:%H:%M}) still trains that tissue"
            in review.last_message), review.last_message
    assert alone.region_id not in {r.region_id for r in store.training_regions()}
    assert whole.region_id in {r.region_id for r in store.training_regions()}


def test_export_csv_suggests_the_store_folder_else_the_source_folder_else_home(make_napari_viewer, qtbot, tmp_path,
                                                                                glas_dir, monkeypatch):
    from pathlib import Path

    from qtpy.QtWidgets import QFileDialog

    from napari_cdma._widget_display import DisplayPanel

    viewer, dock, files = _open(make_napari_viewer, qtbot, tmp_path, glas_dir)
    _choose(viewer, dock, qtbot, SECOND)
    display = dock.display_panel
    assert display.glands
    asked = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda parent, title, default, *a, **k: asked.append(default) or ("", "")))
    display.export_button.click()
    # before: "testA_2 glands.csv" (the process's working folder)
    assert asked == [str(tmp_path / "project" / "testA_2 glands.csv")], asked

    # a panel with no store: the folder of the image's file, else home
    panel = DisplayPanel(viewer)
    panel.image_name = SECOND
    assert panel.export_folder() == files[SECOND].parent
    viewer.layers[SECOND].metadata["source_path"] = str(tmp_path / "gone" / "testA_2.png")
    assert panel.export_folder() == Path.home()


def test_a_slide_window_is_named_by_its_open_slide_layer(make_napari_viewer, qtbot, tmp_path, predicted_slide):
    from _dock import slide_in_dock
    from test_widget_slide import _accept, _edit

    from napari_cdma._widget_review import is_slide

    viewer, dock, panel = slide_in_dock(make_napari_viewer, qtbot, predicted_slide, tmp_path / "project")
    qtbot.waitUntil(lambda: panel.tile_list.count() > 0 and panel._reopening is None and not panel._steps,
                    timeout=120_000)
    panel.go_to(0)
    _turn(qtbot)
    assert _edit(qtbot, panel) is not None, panel.last_message
    record = _accept(qtbot, panel)
    assert record is not None, panel.last_message
    review = dock.review_panel
    review.refresh_regions()
    (slide,) = [ly for ly in viewer.layers if is_slide(ly)]
    # open: the slide's layer name, as the layer list says it (an image's rule; not its file, said not open)
    assert f"{record.region_id}  {slide.name}  " in review.region_text(record), review.region_text(record)
    assert "(not open)" not in review.region_text(record)
    viewer.layers.remove(slide)
    _turn(qtbot)
    assert "(not open)" in review.region_text(record), review.region_text(record)
