"""The dock's scroll anchor (napari_cdma._scroll_anchor): a control the pathologist just used stays where it is on
screen when a panel above it grows or shrinks (walk: the Whole slide panel's buttons moved 274 px down when the
Display panel showed the slide's gland table at the end of a job)."""
from __future__ import annotations

from qtpy.QtCore import QPoint, Qt
from qtpy.QtWidgets import QApplication, QLabel, QPushButton, QScrollArea, QVBoxLayout, QWidget

from napari_cdma._scroll_anchor import ScrollAnchor


def _column(qtbot):
    """A scroll area of 300 px over a column: a box above, a button, a long filler below; scrolled to 100 px."""
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    content = QWidget()
    layout = QVBoxLayout(content)
    above = QLabel("a panel above")
    above.setFixedHeight(120)
    button = QPushButton("Predict view")
    filler = QLabel("below")
    filler.setFixedHeight(900)
    for w in (above, button, filler):
        layout.addWidget(w)
    scroll.setWidget(content)
    scroll.resize(300, 300)
    qtbot.addWidget(scroll)
    scroll.show()
    qtbot.waitExposed(scroll)
    scroll.verticalScrollBar().setValue(100)
    _turn(qtbot)
    return scroll, above, button


def _turn(qtbot, n=4):
    for _ in range(n):
        QApplication.processEvents()
        qtbot.wait(10)


def _y(scroll, widget):
    return widget.mapTo(scroll.viewport(), QPoint(0, 0)).y()


def test_the_clicked_button_stays_put_when_the_panel_above_grows_or_shrinks(qtbot):
    scroll, above, button = _column(qtbot)
    anchor = ScrollAnchor(scroll)
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)  # the click gives it the focus
    _turn(qtbot)
    assert anchor.anchor is button
    at = _y(scroll, button)
    for height in (394, 60, 220):  # the panel above grows by 274 px, then shrinks, then grows again
        above.setFixedHeight(height)
        _turn(qtbot)
        assert _y(scroll, button) == at, height
    assert anchor.adjustments == 3


def test_without_the_anchor_the_button_moves_and_the_anchor_leaves_the_users_own_scrolling_alone(qtbot):
    scroll, above, button = _column(qtbot)
    at = _y(scroll, button)
    above.setFixedHeight(394)
    _turn(qtbot)
    assert _y(scroll, button) == at + 274  # what the pathologist saw before
    anchor = ScrollAnchor(scroll)
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    _turn(qtbot)
    scroll.verticalScrollBar().setValue(300)  # the user scrolls: the new place is the one kept
    _turn(qtbot)
    at = _y(scroll, button)
    above.setFixedHeight(200)
    _turn(qtbot)
    assert _y(scroll, button) == at and anchor.adjustments == 1


def test_nothing_moves_without_an_anchor_or_for_an_anchor_out_of_view(qtbot):
    scroll, above, button = _column(qtbot)
    anchor = ScrollAnchor(scroll)
    bar = scroll.verticalScrollBar()
    before = bar.value()
    above.setFixedHeight(300)  # nothing in the column has the focus: plain layout, no scrolling
    _turn(qtbot)
    assert bar.value() == before and anchor.adjustments == 0
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    _turn(qtbot)
    bar.setValue(bar.maximum())  # the button scrolled out of view above the viewport
    _turn(qtbot)
    assert _y(scroll, button) < 0
    top = bar.value()
    above.setFixedHeight(150)
    _turn(qtbot)
    assert anchor.adjustments == 0 and bar.value() <= top


def test_in_the_dock_the_slide_panels_buttons_stay_put_when_the_display_panel_grows(make_napari_viewer, qtbot,
                                                                                       tmp_path, predicted_slide):
    """A real viewer with a predicted slide: Predict view pressed in the Whole slide panel; when the job ends the
    Display panel above shows the slide's legend and gland table (it grew by 274 px in the walk) and the Predict
    view button stays where it was clicked."""
    from _dock import slide_in_dock

    _, dock, panel = slide_in_dock(make_napari_viewer, qtbot, predicted_slide, tmp_path / "project")
    _turn(qtbot, 10)
    scroll = dock._scroll
    scroll.ensureWidgetVisible(panel.predict_button, 0, 100)
    _turn(qtbot)
    display = dock.display_panel
    height = display.height()
    at = _y(scroll, panel.predict_button)
    assert 0 <= at < scroll.viewport().height()
    panel.predict_button.click()  # pressed, released, clicked (under Xvfb a synthetic mouse click on the inactive
    # window also scrolled the dock, by Qt's own doing: not what this test is about)
    _turn(qtbot)
    assert panel.running and dock._anchor.anchor is panel.predict_button
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    qtbot.waitUntil(lambda: display.height() != height, timeout=10_000)  # the gland table came in above
    _turn(qtbot, 10)
    assert _y(scroll, panel.predict_button) == at, (display.height(), height)
