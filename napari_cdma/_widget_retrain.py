"""Retrain panel: one-click background retraining (a separate process, polled by a QTimer),
live loss / ETA / cancel, promote-if-better result, model versions and roll back."""
from __future__ import annotations

import time

from typing import Any, Callable, Dict, List, Optional

from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QProgressBar, QPushButton,
                            QSpinBox, QVBoxLayout, QWidget)

from ._loss_plot import LossPlot
from ._messages import show_message

POLL_MS = 100
UI_REFRESH_S = 1.0
DEFAULT_STEPS = 120  # ~2.5 min on a 2-core CPU for 10 regions (benchmarks/results/retrain.md)


def _fmt_eta(seconds: Optional[float]) -> str:
    if seconds is None:
        return "ETA --"
    seconds = int(round(seconds))
    return f"ETA {seconds // 60}:{seconds % 60:02d}"


def _fmt_dice(value: Any) -> str:
    try:
        return f"{float(value):.3f}"
    except (TypeError, ValueError):
        return "n/a"


class RetrainPanel(QWidget):
    """Retrain button, progress, loss curve, result, model versions.

    The training itself runs in another process (``napari_cdma.project.retrain_job.RetrainJob``); this
    panel only calls its non-blocking ``poll()`` from a GUI-thread timer, so the viewer never waits.

    Args:
        get_store: returns the open ``ProjectStore``.
        parent: parent widget.

    Signals:
        model_changed(str): the store's current model changed (promotion, override, roll back).
        job_event(dict): every event polled from the job (for tests and scripting).
    """

    model_changed = Signal(str)
    job_event = Signal(dict)

    def __init__(self, get_store: Callable[[], Any], parent: Optional[QWidget] = None,
                 before_start: Optional[Callable[[Any], None]] = None) -> None:
        super().__init__(parent)
        self._get_store = get_store
        self._before_start = before_start  # e.g. add the open images to the store as unlabelled tissue
        self.job: Any = None
        self.state = "idle"  # idle | running | evaluating | done | cancelled | error
        self.last_done: Optional[Dict[str, Any]] = None
        self.last_record: Any = None
        self.last_message = ""
        self._quiet_polls = 0
        self.train_kwargs: Dict[str, Any] = {}  # extra RetrainJob.start arguments (tests, scripts)
        self._pending_progress: Optional[Dict[str, Any]] = None
        self._last_ui = 0.0

        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 100_000)
        self.steps_spin.setValue(DEFAULT_STEPS)
        self.steps_spin.setToolTip("Fine-tuning steps on the accepted regions + unlabelled tissue")
        self.retrain_button = QPushButton("Retrain")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.eta_label = QLabel(_fmt_eta(None))
        # fixed width: a changing ETA text must not re-layout the dock (a re-layout repaints the canvas)
        self.eta_label.setFixedWidth(self.eta_label.fontMetrics().horizontalAdvance("ETA 00:00:00") + 8)
        self.loss_plot = LossPlot()
        self.result_label = QLabel("")
        self.result_label.setWordWrap(True)
        self.keep_button = QPushButton("Keep new model anyway")
        self.keep_button.setVisible(False)
        self.version_list = QListWidget()
        self.version_list.setMaximumHeight(100)
        self.rollback_button = QPushButton("Roll back to selected")

        row = QHBoxLayout()
        row.addWidget(QLabel("Steps"))
        row.addWidget(self.steps_spin)
        row.addWidget(self.retrain_button)
        row.addWidget(self.cancel_button)
        prog = QHBoxLayout()
        prog.addWidget(self.progress, 1)
        prog.addWidget(self.eta_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addLayout(prog)
        layout.addWidget(self.loss_plot)
        layout.addWidget(self.result_label)
        layout.addWidget(self.keep_button)
        layout.addWidget(QLabel("Model versions (* current):"))
        layout.addWidget(self.version_list)
        layout.addWidget(self.rollback_button)

        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)
        self.retrain_button.clicked.connect(lambda: self.start())
        self.cancel_button.clicked.connect(self.cancel)
        self.keep_button.clicked.connect(self.keep_anyway)
        self.rollback_button.clicked.connect(lambda: self.roll_back())

    # ------------------------------------------------------------------ job
    @property
    def running(self) -> bool:
        """True while a retraining job is being polled."""
        return self.job is not None

    def _say(self, message: str, error: bool = False) -> None:
        self.last_message = message
        show_message(self.result_label, message, error)

    def start(self, steps: Optional[int] = None) -> bool:
        """Start retraining the store's current model in the background.

        Returns:
            True if the job started; False otherwise (the reason is shown).
        """
        if self.job is not None:
            self._say("Retraining is already running.", error=True)
            return False
        try:
            store = self._get_store()
            if not store.training_regions():
                self._say("Accept at least one corrected region (not held out) before retraining.",
                          error=True)
                return False
            if self._before_start is not None:
                self._before_start(store)
            from .project.retrain_job import RetrainJob  # noqa: PLC0415 - lazy: pulls in torch tooling

            self.job = RetrainJob.start(store.root, int(steps or self.steps_spin.value()), **self.train_kwargs)
        except Exception as exc:  # noqa: BLE001 - store / spawn errors become a message
            self.job = None
            self._say(f"Could not start retraining: {exc}", error=True)
            return False
        self.state = "running"
        self.last_done = None
        self.last_record = None
        self.loss_plot.clear()
        self.progress.setRange(0, 0)
        self.eta_label.setText(_fmt_eta(None))
        self.keep_button.setVisible(False)
        self.retrain_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._say(f"Retraining from {store.current_model_version} in the background...")
        self.timer.start()
        return True

    def cancel(self) -> None:
        """Ask the job to stop; the panel keeps polling until it reports "cancelled"."""
        if self.job is not None:
            self.job.cancel()
            self._say("Cancelling...")

    def poll(self) -> None:
        """Drain the job's pending events (never blocks); called by the timer every 100 ms."""
        if self.job is None:
            self.timer.stop()
            return
        try:
            events = self.job.poll()
        except Exception as exc:  # noqa: BLE001
            events = [{"event": "error", "message": str(exc)}]
        last_progress = None
        for ev in events:
            if ev.get("event") == "progress":
                loss = (ev.get("metrics") or {}).get("loss")
                if loss is not None:
                    self.loss_plot.add_point(int(ev.get("step") or 0), float(loss), repaint=False)
                last_progress = ev
            else:
                self._handle(ev)
            self.job_event.emit(dict(ev))
        now = time.monotonic()
        if last_progress is not None:
            self._pending_progress = last_progress
        if self._pending_progress is not None and self.job is not None and now - self._last_ui >= UI_REFRESH_S:
            # Any repaint in the window re-composes the whole window together with napari's GL
            # canvas (~20 ms with software GL); so progress, ETA and the loss curve refresh at most
            # once per UI_REFRESH_S, however many steps arrived (benchmarks/bench_responsiveness.py).
            self._show_progress(self._pending_progress)
            self.loss_plot.update()
            self._pending_progress = None
            self._last_ui = now
        if self.job is not None and not self.job.running and not events:
            # The process ended; give its last queued events a few polls to arrive.
            self._quiet_polls += 1
            if self._quiet_polls > 30:
                self._handle({"event": "error", "message": "the retraining process ended without a result"})
        else:
            self._quiet_polls = 0

    def _end_job(self) -> None:
        if self._pending_progress is not None:
            self._show_progress(self._pending_progress)
            self._pending_progress = None
        self.loss_plot.update()
        self.job = None
        self.timer.stop()
        self.retrain_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _show_progress(self, ev: Dict[str, Any]) -> None:
        total, step = int(ev.get("total") or 0), int(ev.get("step") or 0)
        if total:
            if self.progress.maximum() != total:
                self.progress.setRange(0, total)
            self.progress.setValue(min(step, total))
        text = _fmt_eta(ev.get("eta_s"))
        if self.eta_label.text() != text:
            self.eta_label.setText(text)

    def _handle(self, ev: Dict[str, Any]) -> None:
        kind = ev.get("event")
        if kind == "started":
            self._say(f"Retraining {ev.get('model_version', '')} on {ev.get('n_labelled', '?')} region(s) + "
                      f"{ev.get('n_unlabelled', '?')} unlabelled image(s); {ev.get('n_holdout', '?')} held out.")
        elif kind == "evaluating":
            self.state = "evaluating"
            self.progress.setRange(0, 0)
            self._say("Comparing new and old model on the held-out regions...")
        elif kind == "done":
            self._end_job()
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
            self._on_done(ev)
        elif kind == "cancelled":
            self._end_job()
            self.state = "cancelled"
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self._say("Retraining cancelled; the current model is unchanged.")
        elif kind == "error":
            self._end_job()
            self.state = "error"
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self._say(f"Retraining failed: {ev.get('message', 'unknown error')}", error=True)

    def _on_done(self, ev: Dict[str, Any]) -> None:
        from .project.retrain_job import finish  # noqa: PLC0415

        store = self._get_store()
        before = store.current_model_version
        try:
            record = finish(store, ev)
        except Exception as exc:  # noqa: BLE001
            self.state = "error"
            self._say(f"Could not register the new model: {exc}", error=True)
            return
        self.last_done = dict(ev)
        self.last_record = record
        self.state = "done"
        n = ev.get("n_holdout", "?")
        verdict = "promoted: it is now the current model" if record.promoted else \
            "not promoted: the current model stays"
        self._say(f"{record.version}: held-out Dice {_fmt_dice(ev.get('old_dice'))} -> "
                  f"{_fmt_dice(ev.get('new_dice'))} on {n} region(s); {verdict}.")
        self.keep_button.setVisible(not record.promoted)
        self.refresh_versions()
        if store.current_model_version != before:
            self.model_changed.emit(store.current_model_version)

    def keep_anyway(self) -> None:
        """Make the last, not promoted, model current anyway (the user's choice)."""
        if self.last_record is None:
            return
        self.keep_button.setVisible(False)
        self.set_current(self.last_record.version)

    # ------------------------------------------------------------- versions
    def refresh_versions(self) -> None:
        """Rebuild the version list from the store."""
        self.version_list.clear()
        try:
            store = self._get_store()
            models: List[Any] = list(store.models())
            current = store.current_model_version
        except Exception as exc:  # noqa: BLE001
            self._say(f"Cannot read the project store: {exc}", error=True)
            return
        rows = [("bundled", "shipped model", None)] + [
            (m.version, f"from {m.parent}{', promoted' if m.promoted else ''}",
             (m.metrics or {}).get("new_dice")) for m in models]
        for version, info, dice in rows:
            mark = "* " if version == current else "  "
            text = f"{mark}{version}  {info}" + (f"  held-out Dice {_fmt_dice(dice)}" if dice is not None else "")
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, version)
            self.version_list.addItem(item)

    def set_current(self, version: str) -> bool:
        """Make ``version`` the store's current model and announce it."""
        try:
            self._get_store().set_current(version)
        except Exception as exc:  # noqa: BLE001
            self._say(f"Could not switch to {version}: {exc}", error=True)
            return False
        self._say(f"Current model: {version}.")
        self.refresh_versions()
        self.model_changed.emit(version)
        return True

    def roll_back(self, version: Optional[str] = None) -> bool:
        """Make the selected (or given) version current: roll back or forward by hand."""
        if version is None:
            item = self.version_list.currentItem()
            if item is None:
                self._say("Select a model version first.", error=True)
                return False
            version = item.data(Qt.ItemDataRole.UserRole)
        return self.set_current(version)
