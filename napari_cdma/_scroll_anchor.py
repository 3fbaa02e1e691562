"""Keep what the pathologist works with in place when the dock's content above it grows or shrinks.

The dock is one scrolled column of panels. When a panel above the one in use changes height (the Display panel
showing a slide's legend and gland table when a slide job ends: +274 px; a store summary growing by a line), every
control below it moved on screen: the Predict view button just clicked was no longer under the pointer (pathologist
walk). :class:`ScrollAnchor` keeps the widget that has the keyboard focus (a button takes it when clicked) at the
same place in the scroll area's viewport: after the content is resized, it scrolls by as much as that widget moved.
The anchor is the button last pressed in the content (a press, whether or not the window has the focus) or the widget
that takes the keyboard focus there.
"""
from __future__ import annotations

from typing import Any, Optional

from qtpy.QtCore import QEvent, QObject, QPoint, QTimer
from qtpy.QtWidgets import QAbstractButton, QApplication, QScrollArea, QWidget


class ScrollAnchor(QObject):
    """Anchors ``scroll``'s content on its focused widget (see the module's docstring)."""

    def __init__(self, scroll: QScrollArea) -> None:
        super().__init__(scroll)
        self.scroll = scroll
        self.anchor: Optional[QWidget] = None
        self._y: Optional[int] = None  # the anchor's last y in the viewport
        self._pending = False
        self.adjustments = 0  # how many times it scrolled to keep the anchor in place (for tests and probes)
        self.content = scroll.widget()
        self.content.installEventFilter(self)
        for button in self.content.findChildren(QAbstractButton):
            button.pressed.connect(lambda b=button: self._on_focus(None, b))
        scroll.verticalScrollBar().valueChanged.connect(self._remember)
        app = QApplication.instance()
        if app is not None:
            app.focusChanged.connect(self._on_focus)

    def _inside(self, widget: Optional[QWidget]) -> bool:
        try:
            return widget is not None and self.content.isAncestorOf(widget)
        except RuntimeError:  # the dock is being deleted
            return False

    def _viewport_y(self) -> Optional[int]:
        anchor = self.anchor
        if anchor is None or not self._inside(anchor) or not anchor.isVisible():
            return None
        return anchor.mapTo(self.scroll.viewport(), QPoint(0, 0)).y()

    def _on_focus(self, old: Any, new: Any) -> None:
        if self._inside(new):
            self.anchor = new
            self._remember()

    def _remember(self, *args: Any) -> None:
        if not self._pending:  # a scroll of ours, made while restoring, is not the user's
            self._y = self._viewport_y()

    def release(self) -> None:
        """Anchor nothing until the next press or focus: the dock itself scrolls to show something (a retrain's
        verdict), and keeping the button last pressed in place would scroll back (walk 21: the verdict scrolled
        into view was scrolled out again as it grew, to keep Retrain where it had been)."""
        self.anchor = None
        self._y = None

    def eventFilter(self, obj: Any, event: Any) -> bool:
        if obj is self.content and event.type() == QEvent.Type.Resize and not self._pending:
            self._pending = True
            QTimer.singleShot(0, self._restore)  # once the layout has placed the children
        return False

    def _restore(self) -> None:
        try:
            self._restore_now()
        except RuntimeError:  # the dock was deleted before this turn
            pass

    def _restore_now(self) -> None:
        try:
            now, before = self._viewport_y(), self._y
            if now is None or before is None or now == before:
                return
            bar = self.scroll.verticalScrollBar()
            if not 0 <= before < self.scroll.viewport().height():
                return  # it was not on screen: nothing the user was looking at moved
            target = min(bar.maximum(), max(bar.minimum(), bar.value() + now - before))
            if target != bar.value():
                bar.setValue(target)
                self.adjustments += 1
        finally:
            self._pending = False
            self._y = self._viewport_y()


__all__ = ["ScrollAnchor"]
