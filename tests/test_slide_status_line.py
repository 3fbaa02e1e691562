"""The Whole slide panel's status lines keep their height (pathologist walk): at a job's first message the status line
appeared and wrapped over 3-4 lines, and the numbered glands' line grew as the numbering went on, pushing the lists
and buttons below them down by 40-49 px. Now each is two lines high from the start, a longer message cut with an
ellipsis and read whole in the line's tooltip, so nothing below them moves when a job starts, runs or ends.

A real napari viewer shown on Xvfb, a real slide file and its prediction store, the real dock and project store.
"""
from __future__ import annotations

from _dock import slide_in_dock
from qtpy.QtCore import QPoint
from qtpy.QtWidgets import QApplication

from napari_cdma._widget_slide import STATUS_LINES, StatusLine

#: a message as long as the panel's longest (a failed job's, with the store's path and the error), and two lines
LONG = ("Could not accept the window: the project store /data/projects/colon-biopsies-2026/cdma-project-store is "
        "read-only (another napari holds it for retraining); the edit window stays open: accept it again once the "
        "retraining has ended.\nThe slide's prediction store is unchanged.")

CONTROLS = ("predict_button", "cancel_button", "edit_button", "accept_button", "tile_list", "window_list",
            "withdraw_button", "export_button")


def _turn(qtbot, n=3):
    for _ in range(n):
        QApplication.processEvents()
        qtbot.wait(10)


def _slide_panel(make_napari_viewer, qtbot, tmp_path, predicted_slide):
    """A shown viewer with a predicted slide (its legend and readout shown from the start) and the dock on a project
    store; the panel idle, its content shown."""
    viewer, dock, panel = slide_in_dock(make_napari_viewer, qtbot, predicted_slide, tmp_path / "project")
    _turn(qtbot, 5)
    return viewer, dock, panel


def _ys(dock, panel):
    """Where the panel's controls and the Retrain box below it are in the dock's scrolled content (y, px)."""
    inner = dock._scroll.widget()
    out = {name: getattr(panel, name).mapTo(inner, QPoint(0, 0)).y() for name in CONTROLS}
    out["Retrain box"] = dock._boxes["Retrain"].mapTo(inner, QPoint(0, 0)).y()
    return out


def _fixed(label):
    """The line is as high as its STATUS_LINES lines of text, whatever it says."""
    metrics = label.fontMetrics()
    lines = metrics.height() + (STATUS_LINES - 1) * metrics.lineSpacing()
    return label.height() == label.sizeHint().height() <= lines + 4


def test_the_controls_stay_put_when_a_job_starts_runs_and_ends(make_napari_viewer, qtbot, tmp_path, predicted_slide):
    viewer, dock, panel = _slide_panel(make_napari_viewer, qtbot, tmp_path, predicted_slide)
    assert panel.legend.isVisible()  # shown before any job: only the status lines could move the controls
    before = _ys(dock, panel)
    for start in (panel.predict_view, panel.edit_window):
        assert start() is True, panel.last_message
        _turn(qtbot)
        assert panel.running and panel.status.text()
        assert _ys(dock, panel) == before, panel.status.text()  # the job started: nothing moved (before: 40 px)
        qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
        _turn(qtbot, 5)
        assert panel.status.text().startswith(("Predicted", "Edit window of")), panel.last_message
        assert _ys(dock, panel) == before, panel.status.text()  # it ended: nothing moved
    assert panel.window is not None, panel.last_message
    assert _fixed(panel.status) and _fixed(panel.number_status)


def test_a_long_message_keeps_the_lines_height_and_is_read_whole_in_its_tooltip(make_napari_viewer, qtbot,
                                                                                 tmp_path, predicted_slide):
    viewer, dock, panel = _slide_panel(make_napari_viewer, qtbot, tmp_path, predicted_slide)
    before = _ys(dock, panel)
    width = (dock.width(), dock.minimumSizeHint().width())
    for label, say in ((panel.status, panel._say), (panel.number_status, panel.number_status.setText)):
        say(LONG)  # as a job's end says it (the numbered glands' line is written as such)
        _turn(qtbot)
        assert _ys(dock, panel) == before  # before: the wrapped lines pushed the controls down
        assert _fixed(label), label.height()
        shown = label.shown_text().split("\n")
        assert len(shown) == STATUS_LINES and shown[-1].endswith("\u2026")  # cut, on its lines
        assert LONG.startswith(shown[0]) and sum(map(len, shown)) < len(LONG)
        assert all(label.fontMetrics().horizontalAdvance(line) <= label.contentsRect().width() for line in shown)
        assert label.text() == LONG and label.toolTip() == LONG  # the whole message, on its two lines
    assert (dock.width(), dock.minimumSizeHint().width()) == width  # a long message never widens the dock
    # a message that fits is shown whole
    panel.withdraw_window()  # nothing selected: the status line says so
    assert panel.status.text() == "Select an accepted window to withdraw."
    assert " ".join(panel.status.shown_text().split()) == panel.status.text() and _fixed(panel.status)


def test_a_wider_line_shows_more_of_the_message(qtbot):
    """The cut follows the line's width (the dock resized): wider, more of the message shows, on as many lines."""
    line = StatusLine(LONG)
    qtbot.addWidget(line)
    line.resize(200, line.sizeHint().height())
    line.show()
    _turn(qtbot)
    narrow = line.shown_text()
    line.resize(600, line.sizeHint().height())
    _turn(qtbot)
    assert len(line.shown_text()) > len(narrow) and narrow.endswith("\u2026")
    assert len(line.shown_text().split("\n")) == len(narrow.split("\n")) == STATUS_LINES
    assert line.sizeHint().height() == line.minimumSizeHint().height() and line.minimumSizeHint().width() == 0
    line.setText("")
    assert line.shown_text() == "" and line.sizeHint().height() == line.minimumSizeHint().height() > 0


def _ink_runs(label):
    """(first row, rows) of each band of rows with text drawn on the label's grab, top to bottom, and whether the
    bottom row holds ink (text cut by the label's edge)."""
    img = label.grab().toImage()
    ground = img.pixelColor(0, 0).lightness()
    inked = [any(abs(img.pixelColor(x, y).lightness() - ground) > 60 for x in range(img.width()))
             for y in range(img.height())]
    runs, start = [], None
    for y, ink in enumerate([*inked, False]):
        if ink and start is None:
            start = y
        elif not ink and start is not None:
            runs.append((start, y - start))
            start = None
    return runs, inked[-1]


def test_both_lines_of_a_long_message_are_drawn_whole(make_napari_viewer, qtbot, tmp_path, predicted_slide):
    """In the docked panel, under napari's style sheet, the second line of a message is drawn as tall as the first,
    not cut through by the line's lower edge (pathologist walk: only the first line of 'Predicted 1 new chunk(s) ...'
    could be read)."""
    _, _, panel = _slide_panel(make_napari_viewer, qtbot, tmp_path, predicted_slide)
    for line in (panel.status, panel.number_status):
        line.setText("Predicted 1 new chunk(s) of the slide under the view; 1 of 12 chunks of the slide are done.")
        _turn(qtbot)
        assert line.shown_text().count("\n") == 1, line.shown_text()
        runs, cut = _ink_runs(line)
        assert len(runs) == 2 and not cut, (runs, cut, line.height())
        (_, first), (_, second) = runs
        assert second >= first - 1, (runs, line.height())
