"""Model versions panel: the project's models, which one is current, roll back (or forward)."""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

from qtpy.QtCore import QEvent, QObject, Qt, Signal
from qtpy.QtWidgets import QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

from ._messages import show_message
from ._widget_review import readable_list
from .project.store import BUNDLED, ModelRecord, ProjectStore


def fmt_dice(value: Optional[float]) -> str:
    """A Dice score for display, or "n/a" when there is none."""
    return "n/a" if value is None else f"{float(value):.3f}"


def held_out_score(m: ModelRecord) -> Tuple[str, str]:
    """``(short, whole)``: a version's held-out Dice as its row says it, and in words for its tooltip (empty without
    a score). With held-out regions accepted unedited (``metrics["holdout_split"]``: the truth there is a model's own
    prediction) the row says the edited regions' Dice and the unedited ones' (the no-regression check) apart, not
    the pooled one; a version without a split says the pooled held-out Dice, as before."""
    from .project.retrain_job import HoldoutSplit, plural  # torch-free

    metrics = m.metrics or {}
    pooled = metrics.get("new_dice")
    split = HoldoutSplit.from_json(metrics.get("holdout_split"))
    if split is None or not split.unedited.n:
        return (f"held-out Dice {fmt_dice(pooled)}", "") if pooled is not None else ("", "")
    e, u = split.edited, split.unedited
    short, whole = [], []
    # both: "edited 0.850, unedited 0.990" (with "Dice" in it, some 260 px: more than the 280 px dock's list has)
    if e.scored:
        short.append(f"edited {fmt_dice(e.new_dice)}" if u.scored else f"edited Dice {fmt_dice(e.new_dice)}")
        whole.append(f"held-out Dice {fmt_dice(e.new_dice)} on the {plural(e.n, 'edited held-out region')} "
                     f"({m.parent}: {fmt_dice(e.old_dice)})")
    if u.scored:
        short.append(f"unedited {fmt_dice(u.new_dice)}" if short else f"unedited Dice {fmt_dice(u.new_dice)}")
        whole.append(f"{fmt_dice(u.new_dice)} on the {plural(u.n, 'held-out region')} accepted unedited "
                     f"({m.parent}: {fmt_dice(u.old_dice)}), the check that it did not get worse on confirmed "
                     f"tissue (their truth is a model's own prediction)")
    if not whole:
        return "", ""
    if pooled is not None:
        whole.append(f"pooled over all {e.n + u.n}: {fmt_dice(pooled)}")
    said = "; ".join(whole)
    return ", ".join(short), said[0].upper() + said[1:] + "."


def version_rows(models: List[ModelRecord], current: str) -> List[Tuple[str, str, str]]:
    """``(version, text, tooltip)`` rows of the version list, the shipped model first; ``*`` marks the current one.

    Each retrained version says whether the promotion rule (or the user, on registering) promoted it, as the
    Predict chooser does; one that was not but is current was made so by hand. Its held-out Dice
    (:func:`held_out_score`) is short in the row, in words in the tooltip (the row, then what the Dice is of)."""
    def status(m: ModelRecord) -> str:
        if m.promoted:
            return "promoted"
        return "not promoted, made current by hand" if m.version == current else "not promoted"

    rows = [(BUNDLED, "shipped model", ("", ""))] + [
        (m.version, f"from {m.parent}, {status(m)}", held_out_score(m)) for m in models]
    out = []
    for version, info, (score, said) in rows:
        # the score right after the version: a long row wraps, its end is the least important part
        mark = "* " if version == current else "  "
        text = f"{mark}{version}{'  ' + score if score else ''}  ({info})"
        out.append((version, text, f"{text}\n{said}" if said else text))
    return out


class TipWhenShown(QObject):
    """Sets a widget's tooltip from ``tip()`` each time the tooltip is about to show (so it says what is
    needed now, without the panel being told of every change of the store)."""

    def __init__(self, widget: QWidget, tip: Callable[[], str]) -> None:
        super().__init__(widget)
        self._tip = tip
        widget.setToolTip(tip())
        widget.installEventFilter(self)

    def eventFilter(self, obj: Any, event: Any) -> bool:
        if event.type() == QEvent.Type.ToolTip:
            obj.setToolTip(self._tip())
        return False


ROLLBACK_TIP = "Make the version selected in the list the current model (roll back, or forward)"


class VersionsPanel(QWidget):
    """The list of model versions and a roll-back button.

    Args:
        get_store: returns the open ``ProjectStore``.
        parent: parent widget.

    Signals:
        model_changed(str): the user made another version current.
    """

    model_changed = Signal(str)

    def __init__(self, get_store: Callable[[], ProjectStore], parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._get_store = get_store
        self.last_message = ""
        self.version_list = QListWidget()
        self.version_list.setMaximumHeight(100)
        readable_list(self.version_list)
        self.rollback_button = QPushButton("Roll back to selected")
        # enabled with no store open: a click says a store is needed, in this panel (the dock scrolls to it)
        TipWhenShown(self.rollback_button, self.rollback_tip)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Model versions (* current):"))
        layout.addWidget(self.version_list)
        layout.addWidget(self.rollback_button)
        layout.addWidget(self.status)
        self.rollback_button.clicked.connect(lambda: self.roll_back())
        self.version_list.currentRowChanged.connect(lambda _row: self._refresh_tip())

    def _say(self, message: str, error: bool = False) -> None:
        self.last_message = message
        show_message(self.status, message, error)

    def refresh(self) -> None:
        """Rebuild the list from the store."""
        self.version_list.clear()
        try:
            store = self._get_store()
            rows = version_rows(store.models(), store.current_model_version)
        except Exception as exc:
            self._say(f"Cannot read the project store: {exc}", error=True)
            return
        for version, text, tip in rows:
            item = QListWidgetItem(text)
            item.setToolTip(tip)
            item.setData(Qt.ItemDataRole.UserRole, version)
            self.version_list.addItem(item)
        self._refresh_tip()

    def _refresh_tip(self) -> None:
        """Set Roll back's tooltip to what it needs now (:meth:`rollback_tip`), not only on a hover: the one set with
        no store open said "Needs a project store" after one was opened (walk 24, as Retrain's)."""
        tip = self.rollback_tip()
        if self.rollback_button.toolTip() != tip:
            self.rollback_button.setToolTip(tip)

    def set_current(self, version: str) -> bool:
        """Make ``version`` the store's current model and announce it; True when it is current (already
        current: said so, and nothing is predicted again)."""
        try:
            if self._get_store().current_model_version == version:
                self._say(f"{version} is already the current model.")
                return True
            self._get_store().set_current(version)
        except Exception as exc:
            self._say(f"Could not switch to {version}: {exc}", error=True)
            return False
        self._say(f"Current model: {version}.")
        self.refresh()
        self.model_changed.emit(version)
        return True

    def rollback_tip(self) -> str:
        """Roll back's tooltip: what it does, and what it needs first when it cannot act now."""
        try:
            self._get_store()
        except Exception:  # no store open
            return f"{ROLLBACK_TIP}.\nNeeds a project store: open one, or predict and accept a region first."
        if self.version_list.currentItem() is None:
            return f"{ROLLBACK_TIP}.\nSelect a version in the list first."
        return ROLLBACK_TIP

    def roll_back(self, version: Optional[str] = None) -> bool:
        """Make the selected (or given) version current: roll back or forward by hand."""
        if version is None:
            item = self.version_list.currentItem()
            if item is None:
                try:  # an empty list because no store is open: say that (re-walk)
                    self._get_store()
                except Exception as exc:
                    self._say(f"Cannot roll back: {exc}", error=True)
                    return False
                self._say("Select a model version first.", error=True)
                return False
            version = item.data(Qt.ItemDataRole.UserRole)
        return self.set_current(version)
