"""The project store's Open and summary (pathologist walk under Xvfb): Open on a mistyped path created a new empty
store and switched to it; the summary kept "Reopened 2 stored image(s)" after both images were closed.

A real napari viewer (pytest-xvfb), real stores on disk, GlaS images. Only the Yes / No question is answered by
the test (``QMessageBox.question`` patched: a modal dialog would wait for a click).

The first two tests check the parts in ``napari_cdma/_widget_store.py``; the last three check the dock itself and
run once ``CdmaWidget.open_store`` takes ``create`` (the lines for ``napari_cdma/_widget.py`` are in the dockfix
helper's report); until then they are skipped, and say so.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest
from _dock import PLUGIN, open_dock, wait_settled
from qtpy.QtWidgets import QLabel, QMessageBox

from napari_cdma._time_text import short_when
from napari_cdma._widget import CdmaWidget
from napari_cdma._widget_store import StoreSummary, ask_create_store, open_or_ask, restore_layers, store_exists
from napari_cdma.project.store import INDEX_NAME, ProjectStore

WIRED = "create" in inspect.signature(CdmaWidget.open_store).parameters
needs_dock = pytest.mark.skipif(not WIRED, reason="CdmaWidget.open_store has no create argument yet: the "
                                "_widget.py lines of the dockfix report are not applied")


class Answers:
    """Stands in for the user at ``QMessageBox.question``: answers Yes or No, and keeps what was asked."""

    def __init__(self, monkeypatch, yes: bool) -> None:
        self.asked = []
        self.yes = yes
        monkeypatch.setattr(QMessageBox, "question", self)

    def __call__(self, parent, title, text, buttons=None, default=None):
        self.asked.append((title, text, default))
        return QMessageBox.StandardButton.Yes if self.yes else QMessageBox.StandardButton.No


def _accept_two_images(root, glas_dir):
    """A store holding one accepted region on each of two GlaS images."""
    from src_model.io import read_image, read_mask

    store = ProjectStore.open(root)
    for name in ("testA_2", "testB_4"):
        image = read_image(glas_dir / "images" / f"{name}.png")
        mask = read_mask(glas_dir / "masks" / f"{name}.png")[:64, :64]
        store.accept_region(image, (0, 0, 64, 64), mask, mask, model_version="bundled", image_name=name,
                            source_path=str(glas_dir / "images" / f"{name}.png"))
    return store


def test_open_asks_before_creating_a_store_and_creates_nothing_when_declined(qtbot, tmp_path, monkeypatch):
    typo = tmp_path / "walker7" / "projcet_typo"
    no = Answers(monkeypatch, yes=False)
    assert not store_exists(typo)
    assert open_or_ask(typo) is None
    assert not typo.exists() and not typo.parent.exists()  # nothing created, not even the parent folder
    (title, text, default), = no.asked
    assert f"Create a new project store at {typo}?" in text and "does not exist" in text
    assert default == QMessageBox.StandardButton.No  # Enter does not create one

    yes = Answers(monkeypatch, yes=True)
    store = open_or_ask(typo)
    assert store is not None and (typo / INDEX_NAME).is_file() and len(yes.asked) == 1
    assert store.regions() == [] and store.current_model_version == "bundled"

    # a store that exists opens without a question; code may create without asking, or refuse
    asked = Answers(monkeypatch, yes=False)
    assert open_or_ask(typo).root == store.root and asked.asked == []
    assert open_or_ask(tmp_path / "made by code", create=True) is not None and asked.asked == []
    assert open_or_ask(tmp_path / "never", create=False) is None and not (tmp_path / "never").exists()
    # an empty folder is not a store either: asked too
    (tmp_path / "empty").mkdir()
    assert not store_exists(tmp_path / "empty") and open_or_ask(tmp_path / "empty") is None
    assert len(asked.asked) == 1 and not any((tmp_path / "empty").iterdir())
    assert ask_create_store(None, tmp_path / "x") is False


def test_the_summary_counts_only_the_reopened_images_still_open(make_napari_viewer, tmp_path, glas_dir):
    store = _accept_two_images(tmp_path / "project", glas_dir)
    viewer = make_napari_viewer()
    names = restore_layers(viewer, store, {})
    images = sorted(names.values())
    assert images == ["testA_2", "testB_4"], [ly.name for ly in viewer.layers]
    label = QLabel()
    summary = StoreSummary(viewer, label)
    summary.set_store_text("2 accepted region(s) (0 held out) from 2 image(s)")
    summary.set_restored([images[0]], [images[1]])
    assert "Reopened 2; 1 needs Predict" in label.text(), label.text()  # in short; in full in the tooltip
    assert "Reopened 2 stored image(s)" in label.toolTip() and "1 of them had no stored prediction" in label.toolTip()

    viewer.layers[images[0]].name = "renamed by the user"  # followed by identity, not by name
    assert "Reopened 2 stored image(s)" in summary.details()
    viewer.layers.remove("renamed by the user")
    assert "Reopened 1; 1 needs Predict" in label.text(), label.text()
    assert "Reopened 1 stored image(s)" in label.toolTip(), label.toolTip()
    assert "1 of them had no stored prediction" in label.toolTip()
    viewer.layers.remove(images[1])
    said = label.text() + label.toolTip()
    assert "Reopened" not in said and "press Predict" not in said and "needs Predict" not in said, said
    assert label.text() == "2 accepted region(s) (0 held out) from 2 image(s)"  # a text of another form, as it is

    # what was restored of a prediction is said only while its image is open
    viewer.add_image(np.zeros((8, 8, 3), np.uint8), name="shown", rgb=True)
    summary.set_predictions({"shown": "v0002, 2026-11-30T10:00:00+00:00", "closed meanwhile": "v0001"})
    said = f"'shown' (v0002 at {short_when('2026-11-30T10:00:00+00:00')})"
    assert said in label.toolTip() and "closed meanwhile" not in label.toolTip(), label.toolTip()
    assert "1 prediction restored" in label.text(), label.text()
    viewer.layers.remove("shown")
    assert "Predictions restored" not in label.toolTip() and "restored" not in label.text()
    # a layer of no concern removed: the summary is not rewritten (a note appended by the dock stays)
    viewer.add_image(np.zeros((8, 8), np.uint8), name="other")
    label.setText(label.text() + "\nKept 400 edited pixel(s)")
    viewer.layers.remove("other")
    assert label.text().endswith("Kept 400 edited pixel(s)")


@needs_dock
def test_open_on_a_mistyped_path_asks_and_declined_keeps_the_open_store(make_napari_viewer, qtbot, tmp_path,
                                                                        monkeypatch, glas_dir):
    _accept_two_images(tmp_path / "project", glas_dir)
    viewer = make_napari_viewer()
    widget = open_dock(viewer, tmp_path / "project")
    before = [ly.name for ly in viewer.layers]
    summary = widget.store_label.text()
    assert summary.startswith("2 accepted regions, 2 images") and len(before) >= 2

    typo = tmp_path / "walker7" / "projcet_typo"
    no = Answers(monkeypatch, yes=False)
    widget.store_edit.setText(str(typo))
    open_button = next(b for b in widget.findChildren(type(widget.keep_edits_button)) if b.text() == "Open")
    open_button.click()
    wait_settled(widget)
    assert len(no.asked) == 1 and str(typo) in no.asked[0][1]
    assert not typo.exists() and not typo.parent.exists()
    assert widget.store.root == (tmp_path / "project").resolve()  # the old store stays open...
    assert widget.store_edit.text() == str(tmp_path / "project")  # ... and named
    assert [ly.name for ly in viewer.layers] == before
    text = widget.store_label.text()
    assert text.startswith("2 accepted regions,") and f"No project store created at {typo}" in text, text

    # said yes: created, and the dock switches to it
    Answers(monkeypatch, yes=True)
    open_button.click()  # the path field names the open store again: type the path again
    assert not typo.exists()
    widget.store_edit.setText(str(typo))
    open_button.click()
    wait_settled(widget)
    assert (typo / INDEX_NAME).is_file() and widget.store.root == typo.resolve()
    assert widget.store_label.text().startswith("0 accepted regions, 0 images"), widget.store_label.text()


@needs_dock
def test_the_empty_dock_asks_on_open_but_the_first_accept_still_creates_the_store(make_napari_viewer, qtbot,
                                                                                  tmp_path, monkeypatch):
    path = tmp_path / "new project"
    monkeypatch.setenv("NAPARI_CDMA_PROJECT", str(path))
    viewer = make_napari_viewer()
    widget = open_dock(viewer)
    assert widget.store_label.text().startswith("No project store there yet")
    no = Answers(monkeypatch, yes=False)
    open_button = next(b for b in widget.findChildren(type(widget.keep_edits_button)) if b.text() == "Open")
    open_button.click()
    assert len(no.asked) == 1 and not path.exists()
    assert f"No project store created at {path}. No store is open." in widget.store_label.text()
    # code that needs a store (the first Predict or Accept) creates it without asking
    assert widget.store.root == path.resolve() and len(no.asked) == 1
    assert widget.store_label.text().startswith("0 accepted regions, 0 images"), widget.store_label.text()


@needs_dock
def test_the_summary_stops_counting_reopened_images_once_closed(make_napari_viewer, qtbot, tmp_path, glas_dir):
    _accept_two_images(tmp_path / "project", glas_dir)
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "glas_testA_1")  # an image of another project, open before: not counted
    widget = open_dock(viewer, tmp_path / "project")
    text, tip = widget.store_label.text(), widget.store_label.toolTip()
    assert "Reopened 2; 2 need Predict" in text, text
    assert "Reopened 2 stored image(s)" in tip and "2 of them had no stored prediction" in tip, tip
    names = ["testA_2", "testB_4"]
    assert all(n in viewer.layers for n in names), [ly.name for ly in viewer.layers]
    viewer.layers.remove(names[0])
    qtbot.waitUntil(lambda: "Reopened 1 stored image(s)" in widget.store_label.toolTip(), timeout=5000)
    assert "Reopened 1; 1 needs Predict" in widget.store_label.text(), widget.store_label.text()
    viewer.layers.remove(names[1])
    qtbot.waitUntil(lambda: "Reopened" not in widget.store_label.text(), timeout=5000)
    text = widget.store_label.text()
    said = text + widget.store_label.toolTip()
    assert text.startswith("2 accepted regions,") and "press Predict" not in said and "Reopened" not in said, said
