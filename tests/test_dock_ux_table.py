"""The retrain's per-image before / after table reads whole in the dock at napari's default window size (pathologist
walk: its four columns were elided to a few letters each in the ~280 px dock). A real napari viewer (Xvfb), the
real dock, a real project store with a small random model registered as a retrain's result.
"""
from __future__ import annotations

from _dock import open_dock
from qtpy.QtCore import QPoint, Qt
from qtpy.QtGui import QFontMetrics
from qtpy.QtWidgets import QApplication, QStyle

from napari_cdma.project.events import Done, ImageScore

LONG = "a_rather_long_image_file_name_from_the_scanner_0001.png"


def _settle(qtbot, n=10):
    for _ in range(n):
        QApplication.processEvents()
        qtbot.wait(20)


def _cells(table):
    """(row, column, item, width) of each cell shown: a spanned cell is as wide as its columns together."""
    out = []
    for i in range(table.rowCount()):
        for j in range(table.columnCount()):
            item = table.item(i, j)
            if item is None:
                continue
            span = table.columnSpan(i, j)
            out.append((i, j, item, sum(table.columnWidth(j + k) for k in range(span))))
    return out


def test_the_per_image_scores_read_whole_in_the_default_dock(make_napari_viewer, qtbot, tmp_path, lite_checkpoint):
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    dock = open_dock(viewer, tmp_path / "project")
    dock.store.add_model(lite_checkpoint, parent="bundled", promoted=True)
    panel = dock.retrain_panel
    rows = (ImageScore("testA_1.png", n_holdout=2, old_dice=0.861, new_dice=0.902, agreement=0.981),
            ImageScore("testB_4.png", agreement=0.973),
            ImageScore(LONG, n_holdout=1, agreement=0.99),  # held out, too little gland to score
            ImageScore("testA_12.png", n_holdout=12, old_dice=0.7, new_dice=0.75, agreement=0.9))
    done = Done(checkpoint=str(lite_checkpoint), parent_model="v0001", steps_done=3, n_holdout=15, old_dice=0.8,
                new_dice=0.85, better=True, agreement=0.97, min_agreement=0.95, agreement_crops=4, per_image=rows)
    panel._handle(done)  # as a finished job's last event: the model is registered, then the table shown
    qtbot.waitUntil(lambda: panel.state == "done", timeout=30_000)
    dock.show_widget(panel.image_table)
    _settle(qtbot)
    assert window.width() < 1200  # napari's default window
    table = panel.image_table
    assert table.isVisible() and panel.image_caption.isVisible()

    # nothing of the table is cut on the right of the dock, and no column runs past the table
    port = dock._scroll.viewport()
    assert table.mapTo(port, QPoint(table.width(), 0)).x() <= port.width()
    assert sum(table.columnWidth(j) for j in range(table.columnCount())) <= table.viewport().width()

    # each cell's text is whole: its width within its cell (less the view's text margins), one line high
    margin = table.style().pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin, None, table) + 1
    seen = []
    for i, _j, item, width in _cells(table):
        metrics = QFontMetrics(item.font().resolve(table.font()))
        text = item.text()
        seen.append(text)
        assert metrics.horizontalAdvance(text) <= width - 2 * margin, (text, metrics.horizontalAdvance(text), width)
        assert table.rowHeight(i) >= metrics.height()
    # each name has its row to itself, without its extension; the held-out count is a row of its own
    assert ["testA_1", "held out", "2 regions", "held-out Dice", "0.861 \u2192 0.902", "agreement", "0.981"] == seen[:7]
    assert "testB_4" in seen and "too little gland" in seen and "testA_12" in seen and "12 regions" in seen
    elided = [t for t in seen if "\u2026" in t]
    assert len(elided) == 1 and elided[0].startswith("a_r"), elided  # only the name wider than the dock is elided

    # the long name, wider than the dock: elided in its middle as a last resort, the whole file name in the tooltip
    stem = LONG[:-len(".png")]
    long_item = next(item for _, _, item, _ in _cells(table) if item.toolTip() == LONG)
    assert long_item.text() != stem and "\u2026" in long_item.text()
    assert long_item.text().startswith("a_r") and long_item.text().endswith("0001")

    # a wider dock shows the long name whole
    table.setFixedWidth(QFontMetrics(long_item.font().resolve(table.font())).horizontalAdvance(
        stem) + 4 * margin + 2 * table.frameWidth() + 40)
    _settle(qtbot, 3)
    assert long_item.text() == stem
    assert Qt.TextElideMode.ElideMiddle == table.textElideMode()
