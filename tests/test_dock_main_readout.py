"""The value under the cursor reads whole in the 280 px dock of napari's default window (pathologist walk 7: "Under
cursor: uncertainty 0.0901, gland 1" needed 274 px of a 225 px label and the gland number was cut). A real, shown
napari viewer (Xvfb) at its default size, the dock's own readout fed by napari's cursor."""
from __future__ import annotations

import numpy as np
from _dock import open_dock

from napari_cdma._widget_display import READOUT_TITLE, readout_label, readout_text


def _settle(qtbot):
    from qtpy.QtWidgets import QApplication

    for _ in range(5):
        QApplication.processEvents()
        qtbot.wait(20)


def _fits(label, text):
    """Each line of ``text`` is no wider than the label, and the label is tall enough for all of them."""
    fm = label.fontMetrics()
    lines = text.split("\n")
    widths = [fm.horizontalAdvance(line) for line in lines]
    room = label.contentsRect().width()
    return max(widths) <= room and label.contentsRect().height() >= len(lines) * fm.lineSpacing() - fm.leading(), \
        (widths, room, label.contentsRect().height(), fm.lineSpacing())


def test_the_readout_shows_the_gland_number_whole_at_the_default_window(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    dock = open_dock(viewer)
    panel = dock.display_panel
    unc = viewer.add_image(np.full((400, 600), 0.0901, np.float32), name="u")
    labels = np.zeros((400, 600), np.int32)
    labels[100:200, 100:300] = 99999  # the widest gland number a slide's table gives
    lab = viewer.add_labels(labels, name="p")
    panel.show_result("he", unc, lab, (0.0, 1.0), [{"id": 99999, "area": 20000, "mean_uncertainty": 0.0901,
                                                    "bbox": (100, 100, 200, 300)}])
    dock.show_widget(panel.readout)
    _settle(qtbot)
    assert window.width() < 1200 and dock.width() <= 300  # napari's default window and the dock's width
    readout = panel.readout
    assert readout.isVisible() and readout.toolTip()
    viewer.cursor.position = (150.0, 200.0)  # napari's cursor: the panel's handler writes the readout
    _settle(qtbot)
    text = readout.text()
    assert text == "Under cursor:\nuncertainty 0.090, gland 99999", text
    ok, why = _fits(readout, text)
    assert ok, why
    # the widest values (a slide's "0.902, gland 105" was cut after "g") fit too, and the height never changes
    height = readout.height()
    for parts in (["uncertainty 0.999", "gland 99999"], ["uncertainty 0.902", "gland 105"], []):
        readout.setText(readout_text(parts))
        _settle(qtbot)
        ok, why = _fits(readout, readout.text())
        assert ok, (parts, why)
        assert readout.height() == height
    # before: one line, wider than the label
    assert readout.fontMetrics().horizontalAdvance("Under cursor: uncertainty 0.0901, gland 1") > \
        readout.contentsRect().width()
    # off the layers: "-" on the values' line
    viewer.cursor.position = (1000.0, 1000.0)
    _settle(qtbot)
    assert readout.text() == f"{READOUT_TITLE}\n-"


def test_the_readout_label_keeps_its_height(qtbot):
    """:func:`readout_label` (the Whole slide panel may use it): two lines whatever the values, no word wrap."""
    label = readout_label()
    qtbot.addWidget(label)
    assert not label.wordWrap() and label.text().count("\n") == 1
    hint = label.sizeHint().height()
    label.setText(readout_text(["uncertainty 0.500", "gland 3"]))
    assert label.sizeHint().height() == hint


def test_a_slide_stores_uncertainty_reads_in_uncertainty_units(make_napari_viewer):
    """A slide store's uncertainty layer keeps 255 x the value (uint8): the dock's readout, which shows a numbered
    slide's glands in its table, gives the value as the legend does (0.902, not 230.000)."""
    viewer = make_napari_viewer()
    panel = open_dock(viewer).display_panel
    unc = viewer.add_image(np.full((40, 60), 230, np.uint8), name="s uncertainty")
    labels = np.zeros((40, 60), np.uint32)
    labels[10:20, 10:30] = 105
    lab = viewer.add_labels(labels, name="s glands (numbered)")
    panel.show_result("s", unc, lab, (0.1, 0.95), [])
    assert panel.value_text((15.0, 15.0)) == "Under cursor:\nuncertainty 0.902, gland 105"
