"""Walk 20, the *Uncertainty and glands* panel: it names the model whose prediction it describes (after a model
change with edits not accepted, the new model's glands go to a side layer while the panel still describes the
layer being corrected), its CSV says what its columns are and which image and model a row is of, and "Wrote N
gland(s) to ..." does not stay under a table that changed since. A real, shown napari viewer (Xvfb)."""
from __future__ import annotations

import csv

import numpy as np
from _dock import open_dock

from napari_cdma._layers import ROLE_KEY

LONG = "GlaS testA_1 scanned 2026-11-30 ward 4 block B3 level 2 H&E"


def _settle(qtbot):
    from qtpy.QtWidgets import QApplication

    for _ in range(5):
        QApplication.processEvents()
        qtbot.wait(20)


def _predicted(viewer, name):
    """An image ``name`` with its uncertainty and (editable) prediction layers, three glands."""
    from src_model.gland_table import gland_table

    viewer.add_image(np.zeros((300, 400, 3), np.uint8), name=name, rgb=True)
    labels = np.zeros((300, 400), np.int32)
    labels[20:60, 30:90] = 1
    labels[150:260, 200:240] = 2
    labels[100:130, 300:390] = 3
    unc = viewer.add_image(np.linspace(0, 1, 300 * 400, dtype=np.float32).reshape(300, 400),
                           name=f"{name} uncertainty")
    lab = viewer.add_labels(labels, name=f"{name} prediction", metadata={ROLE_KEY: "prediction"})
    return unc, lab, gland_table(labels, np.asarray(unc.data))


def test_the_panel_names_the_model_of_the_prediction_it_describes(make_napari_viewer, qtbot):
    """With ``model_label`` the panel says, on one line that fits the 280 px dock, which model's prediction (and
    which layer) its legend, tint and table describe, the whole text in its tooltip; without it nothing is said."""
    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer)
    panel = dock.display_panel
    unc, lab, glands = _predicted(viewer, LONG)
    panel.show_result(LONG, unc, lab, (0.0, 1.0), glands, model_label="bundled")
    dock.show_widget(panel.legend_box)
    _settle(qtbot)
    line = panel.source_label
    assert line.isVisible()
    shown, tip = line.text(), line.toolTip()
    # the layer corrected said in words: its long name was cut before "prediction" (walk 21)
    assert shown == "Predicted by bundled", shown
    assert "bundled" in tip and f"'{LONG} prediction'" in tip and "correct" in tip, tip
    assert "\n" not in shown and line.fontMetrics().horizontalAdvance(shown) <= line.contentsRect().width(), \
        (shown, line.contentsRect().width())
    assert line.height() < 2 * line.fontMetrics().lineSpacing()  # one line
    assert dock.width() <= 300  # the dock kept its width
    assert "bundled" in panel.legend.toolTip()

    # another layer (a slide's numbered glands): named, a short name whole, a long one cut at its end
    unc2, lab2, glands2 = _predicted(viewer, "tA_2")
    lab2.metadata = {}
    panel.show_result("tA_2", unc2, lab2, (0.0, 1.0), glands2, model_label="v0003")
    _settle(qtbot)
    assert panel.source_label.text() == "Model v0003: 'tA_2 prediction'", panel.source_label.text()
    lab2.name = f"{LONG} glands (numbered)"
    panel.show_result("tA_2", unc2, lab2, (0.0, 1.0), glands2, model_label="bundled")
    _settle(qtbot)
    shown = panel.source_label.text()
    assert shown.startswith("Model bundled: 'GlaS testA_1 ") and shown.endswith("\u2026'"), shown  # the model whole

    # without a model label nothing is said (as before)
    panel.show_result(LONG, unc, lab, (0.0, 1.0), glands)
    _settle(qtbot)
    assert not panel.source_label.isVisible() and "bundled" not in panel.legend.toolTip()


def test_the_csv_names_its_columns_image_and_model(make_napari_viewer, tmp_path):
    """The CSV's box is four plainly named columns (left, top, width, height in pixels, as the dock writes boxes)
    instead of "bbox" = "y0 x0 y1 x1", and each row says its image and model."""
    viewer = make_napari_viewer(show=False)
    dock = open_dock(viewer)
    panel = dock.display_panel
    unc, lab, glands = _predicted(viewer, "testA_1")
    panel.show_result("testA_1", unc, lab, (0.0, 1.0), glands, model_label="bundled")
    with panel.export_csv(tmp_path / "glands.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames[:3] == ["id", "area", "mean_uncertainty"]  # the first columns as before
    assert "bbox" not in reader.fieldnames
    by_id = {int(r["id"]): r for r in rows}
    assert set(by_id) == {1, 2, 3}
    r = by_id[2]  # labels[150:260, 200:240]
    assert (r["box_left"], r["box_top"], r["box_width"], r["box_height"]) == ("200", "150", "40", "110")
    assert r["image"] == "testA_1" and r["model"] == "bundled"
    assert int(r["area"]) == 110 * 40

    # the model left unsaid: its column is empty, the image still named
    panel.show_result("testA_1", unc, lab, (0.0, 1.0), glands)
    with panel.export_csv(tmp_path / "glands2.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(r["image"] == "testA_1" and r["model"] == "" for r in rows)


def test_wrote_is_not_left_under_a_table_that_changed(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """"Wrote N gland(s) to ..." goes when the table is made again with other rows (a split or merge of glands, an
    accept, another image), and stays when it is made again the same."""
    from qtpy.QtWidgets import QFileDialog

    from src_model.gland_table import gland_table

    viewer = make_napari_viewer(show=False)
    dock = open_dock(viewer)
    panel = dock.display_panel
    unc, lab, glands = _predicted(viewer, "testA_1")
    panel.show_result("testA_1", unc, lab, (0.0, 1.0), glands)
    path = tmp_path / "glands.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(path), "CSV (*.csv)")))
    panel.export_button.click()
    assert path.exists() and panel.status.text().startswith("Wrote 3 gland(s)"), panel.status.text()

    panel.set_glands(gland_table(np.asarray(lab.data), np.asarray(unc.data)))  # the same rows again
    assert panel.status.text().startswith("Wrote 3 gland(s)")

    # a split: gland 2 painted in two (the live refresh after an edit pause)
    data = np.asarray(lab.data).copy()
    data[200:260, 200:240] = 4
    lab.data = data
    assert panel.refresh_glands() and len(panel.glands) == 4
    assert "Wrote" not in panel.status.text(), panel.status.text()
    assert "changed" in panel.status.text() and str(path) in panel.status.text(), panel.status.text()
    lab.data = np.where(data == 4, 2, data)  # undone: the file holds the table again
    assert panel.refresh_glands() and panel.status.text().startswith("Wrote 3 gland(s)"), panel.status.text()

    # split again and exported, then a merge made by an accept (set_glands): stale again
    lab.data = data
    assert panel.refresh_glands() and len(panel.glands) == 4
    panel.export_button.click()
    assert panel.status.text().startswith("Wrote 4 gland(s)")
    data[data == 4] = 2
    lab.data = data
    panel.set_glands(gland_table(data, np.asarray(unc.data)))
    assert "Wrote" not in panel.status.text() and "changed" in panel.status.text()

    # another image's table: nothing said of the first image's file
    unc2, lab2, glands2 = _predicted(viewer, "testA_2")
    panel.show_result("testA_2", unc2, lab2, (0.0, 1.0), glands2)
    assert panel.status.text() == ""
