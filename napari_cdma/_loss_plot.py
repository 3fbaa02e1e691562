"""A tiny live loss curve: one polyline drawn with QPainter (cheap enough for 10 Hz updates)."""
from __future__ import annotations

from typing import List, Optional

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

MAX_POINTS = 2000  # older points are thinned so drawing stays O(MAX_POINTS)


class LossPlot(QWidget):
    """Draws the training loss against the step, auto-scaled, with the last value as text.

    Args:
        parent: parent widget.
    """

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._steps: List[float] = []
        self._values: List[float] = []
        self.setMinimumHeight(70)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Training loss (supervised + CDMA consistency) per step")

    @property
    def values(self) -> List[float]:
        """Loss values plotted so far."""
        return list(self._values)

    def clear(self) -> None:
        """Remove all points."""
        self._steps.clear()
        self._values.clear()
        self.update()

    def add_point(self, step: float, value: float, repaint: bool = True) -> None:
        """Append one (step, loss) point and (unless ``repaint`` is False) schedule a repaint.

        Args:
            step: training step.
            value: loss value; non-finite values are ignored.
        """
        if value != value or value in (float("inf"), float("-inf")):
            return
        self._steps.append(float(step))
        self._values.append(float(value))
        if len(self._values) > MAX_POINTS:
            self._steps = self._steps[::2]
            self._values = self._values[::2]
        if repaint:
            self.update()

    def paintEvent(self, event) -> None:
        """Draw frame, polyline and the last value."""
        painter = QPainter(self)
        try:
            rect = self.rect().adjusted(4, 4, -4, -14)
            painter.setPen(QPen(QColor(110, 110, 110), 1))
            painter.drawRect(rect)
            if not self._values:
                painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, "loss")
                return
            lo, hi = min(self._values), max(self._values)
            span = (hi - lo) or 1.0
            s0, s1 = self._steps[0], self._steps[-1]
            sspan = (s1 - s0) or 1.0
            poly = QPolygonF()
            for s, v in zip(self._steps, self._values, strict=True):
                x = rect.left() + (s - s0) / sspan * rect.width()
                y = rect.bottom() - (v - lo) / span * rect.height()
                poly.append(QPointF(x, y))
            painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            painter.setPen(QPen(QColor(255, 170, 40), 1.5))
            painter.drawPolyline(poly)
            painter.setPen(QPen(QColor(200, 200, 200), 1))
            # fits a narrow dock (it was cut after "(min 0.2583": walk)
            painter.drawText(4, self.height() - 2, f"step {int(s1)}  loss {self._values[-1]:.3f}  min {lo:.3f}")
        finally:
            painter.end()
