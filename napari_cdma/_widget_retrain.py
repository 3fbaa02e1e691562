"""Retrain panel: one-click background retraining (a separate process, polled by a QTimer),
live loss / ETA / cancel, and the promote-if-better result (on enough held-out regions, and only if
the new model still agrees with the current one on uncorrected tissue) with "keep anyway"; a small
table shows each image's held-out Dice before -> after and the agreement, one image under the other
(its name, then a row per score), so that it reads whole in the dock's narrow default width; a line under it
names the images trained on that it has no row for (nothing of them held out or compared: e.g. an image accepted
whole). The progress bar shows only while a retraining runs (its row kept when hidden, so nothing below moves).

Held-out regions accepted unedited (the truth there is a model's own prediction: it scores 1.000 there by construction,
walk 22): the verdict says how many and from whose prediction, the Dice of the edited and the unedited ones apart, and,
with none edited, that the decision rests on confirmed regions only (the rule: retrain_job.rule_decision).

Retrain stays enabled with no store open or nothing accepted: a click says what is needed, where the
pathologist looks (the dock scrolls to this panel); its tooltip says it too, worked out when shown.

Nothing new: when the store's latest version was trained on the same accepted regions (none accepted, accepted again
or withdrawn since) with the same steps and CDMA terms, a press of Retrain says so, naming the version and when it
was trained, and starts nothing (a retraining took a minute or two for the same model in effect: walk); a second
press, while that is what the panel says, trains anyway."""
from __future__ import annotations

import re
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from qtpy.QtCore import QEvent, Qt, QTimer, Signal
from qtpy.QtGui import QFont, QFontMetrics, QPalette
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from src_model.recipes import FINETUNE_SEMI_SUPERVISED  # torch-free

from ._exit import join_at_exit
from ._loss_plot import LossPlot
from ._messages import show_message
from ._time_text import TIME_LEFT_WIDEST, time_left
from ._widget_versions import TipWhenShown, fmt_dice
from .project.events import Cancelled, Done, Evaluating, Failed, ImageScore, Progress, RetrainEvent, Started
from .project.store import DEFAULT_HOLDOUT_FRACTION, ModelRecord, ProjectStore, RegionRecord

if TYPE_CHECKING:
    from .project.retrain_job import RetrainJob  # imported when Retrain starts

POLL_MS = 100
#: progress, ETA and loss curve refresh at most this often: each refresh re-composes the whole window
#: with napari's GL canvas, which in software GL (Xvfb + Mesa) took 35-50 ms for a 1500 x 950 window
#: at load ~8 (7 ms at 800 x 600); the panel's own work per refresh is under 1 ms
#: (benchmarks/bench_responsiveness.py)
UI_REFRESH_S = 2.0
#: 0 = "auto": the fine-tuning recipe's steps for the amount of corrected pixels (src_model.recipes;
#: 10 regions of 256 px: its max_steps, sized for the 3-minute turnaround on a 2-core CPU)
DEFAULT_STEPS = 0
#: What the per-image table says above itself (its rows: an image's name, then its held-out regions and scores).
IMAGE_CAPTION = ("Per image: held-out Dice, current \u2192 new model; agreement with the current model on "
                 "uncorrected tissue (1 = unchanged).")
#: Table rows per image: its name, then held out, held-out Dice and agreement.
ROWS_PER_IMAGE = 4
RETRAIN_TIP = "Fine-tune the current model on the accepted regions, in the background"


#: A file extension dropped from an image's name in the table (the name then gets the row to itself).
_EXTENSION = re.compile(r"\.(png|jpe?g|tiff?|bmp|svs|ndpi|mrxs|scn|czi|webp)$", re.IGNORECASE)


def short_name(name: str) -> str:
    """An image's name as the per-image table shows it: without its file extension (``glas_testA_1.png`` ->
    ``glas_testA_1``), so that names differing only at their end read whole in the narrow dock."""
    return _EXTENSION.sub("", str(name)) or str(name)


def image_caption(version: str = "", parent: str = "") -> str:
    """What the per-image table says above itself: :data:`IMAGE_CAPTION`, or with the versions it compares named
    (``version``, retrained from ``parent``), so that it still reads as that retraining's after another model has
    become current (walk 26)."""
    if not (version and parent):
        return IMAGE_CAPTION
    return (f"{version}'s retraining, per image: held-out Dice, {parent} \u2192 {version}; agreement with {parent} "
            "on uncorrected tissue (1 = unchanged).")


def no_holdout_note(fraction: float) -> str:
    """What the table says when no image has a held-out region (its Dice rows are all n/a)."""
    from .project.retrain_job import holdout_every  # the verdict says the store's rule in the same words

    return (f"No held-out region yet: {holdout_every(fraction)} is held out, so the held-out Dice reads n/a "
            "until then.")


def unscored_note(names: Sequence[str], table_shown: bool) -> str:
    """The line under the per-image table naming the images trained on that it has no row for (none of their
    regions held out, none of their uncorrected tissue compared: e.g. an image accepted whole), so that an image
    missing from it does not read as one left out of the training (walk)."""
    one = len(names) == 1
    return (f"{'Not in the table' if table_shown else 'No per-image score for'}"
            f"{':' if table_shown else ''} {', '.join(short_name(n) for n in names)} (trained on; no region of "
            f"{'it' if one else 'them'} held out, no uncorrected tissue of {'it' if one else 'them'} compared).")


def image_rows(rows: Sequence[ImageScore]) -> List[Tuple[str, Tuple[str, str], Tuple[str, str], Tuple[str, str]]]:
    """What the per-image table shows of each image: its name (no file extension), then ``(label, value)`` of how
    many of its regions are held out, of its held-out Dice, current -> new model, and of its agreement with the
    current model on uncorrected tissue."""
    out = []
    for r in rows:
        held = f"{r.n_holdout} region{'s' if r.n_holdout != 1 else ''}" if r.n_holdout else "none"
        if r.n_holdout and r.old_dice is None:  # not scored: too little gland (the worker's MIN_HOLDOUT_GLAND_PX)
            dice = "too little gland"
        elif r.n_holdout:
            dice = f"{fmt_dice(r.old_dice)} \u2192 {fmt_dice(r.new_dice)}"
        else:
            dice = fmt_dice(None)
        out.append((short_name(r.image), ("held out", held), ("held-out Dice", dice),
                    ("agreement", fmt_dice(r.agreement))))
    return out


def _fmt_eta(seconds: Optional[float]) -> str:
    """The retraining's estimated time left, as a duration (:func:`~._time_text.time_left`): "ETA 11:46" read as a
    clock time (walk 24)."""
    return time_left(seconds)


class RetrainPanel(QWidget):
    """Retrain button, progress, loss curve, result.

    The training itself runs in another process (``napari_cdma.project.retrain_job.RetrainJob``); this
    panel only calls its non-blocking ``poll()`` from a GUI-thread timer, so the viewer never waits.

    Args:
        get_store: returns the open ``ProjectStore``.
        parent: parent widget.

    Signals:
        model_changed(str): the store's current model changed (promotion or "keep anyway"); a change made
            elsewhere comes in by :meth:`model_now_current`.
        model_added(str): a retrained version was registered in the store (promoted or not).
        job_event(RetrainEvent): every event polled from the job (for tests and scripting).
    """

    model_changed = Signal(str)
    model_added = Signal(str)
    job_event = Signal(object)
    #: (Done event, record or None, error message, the current model before): a finished job's model registered
    #: (from a worker thread)
    _registered = Signal(object, object, str, str)

    def __init__(self, get_store: Callable[[], ProjectStore], parent: Optional[QWidget] = None,
                 before_start: Optional[Callable[[ProjectStore], None]] = None) -> None:
        super().__init__(parent)
        self._get_store = get_store
        self._before_start = before_start  # e.g. add the open images to the store as unlabelled tissue
        #: how the dock names a region's image (set by the dock: the review panel's naming, the image's layer name
        #: while it is open; walk 22: the table said "glas_testA_1" beside the layer "GlaS testA_1 (H&E)"); the table
        #: names an image by it through one of the image's regions (:meth:`image_name`); None: the worker's names
        self.image_text: Optional[Callable[[RegionRecord], str]] = None
        #: the name of the open image layer showing the image of a store hash, None when none is open (set by the
        #: dock: the review panel's :meth:`~._widget_review.ReviewPanel.open_image_name`); names an image that has
        #: no region (walk 25: "image 85b854a489" for the open "testB_5")
        self.open_name: Optional[Callable[[str], Optional[str]]] = None
        self.job: Optional["RetrainJob"] = None
        self.state = "idle"  # idle | running | evaluating | registering | done | cancelled | error
        self.last_done: Optional[Done] = None
        self.last_record: Optional[ModelRecord] = None
        self.last_message = ""
        self._quiet_polls = 0
        self.train_kwargs: Dict[str, Any] = {}  # extra RetrainJob.start arguments (tests, scripts)
        self._pending_progress: Optional[Progress] = None
        self._last_ui = 0.0
        #: the images the running job trains on (hash, name as the worker gives it), read when it starts
        self._trained_on: Optional[List[Tuple[str, str]]] = None
        #: set while the panel says there is nothing new since the latest version: what it said that of (the next
        #: press of Retrain in the same state trains anyway)
        self._nothing_new_said: Optional[str] = None
        #: the last job's verdict as said, (whole, on screen), and the version the result line presents as the
        #: current model: a change of the current model made elsewhere rewrites the line (walk 26: after Keep anyway
        #: and a roll back to bundled it still said "Current model: v0001 (kept by hand).")
        self._verdict: Optional[Tuple[str, str]] = None
        self._says_current: Optional[str] = None

        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(0, 100_000)
        self.steps_spin.setSpecialValueText("auto")
        self.steps_spin.setValue(DEFAULT_STEPS)
        self.steps_spin.setToolTip("Fine-tuning steps on the accepted regions + unlabelled tissue "
                                   "(auto: the recipe's, by the amount of corrected pixels)")
        self.semi_check = QCheckBox("CDMA terms")
        self.semi_check.setChecked(FINETUNE_SEMI_SUPERVISED)
        self.semi_check.setToolTip("Add CDMA's semi-supervised terms on the unlabelled tissue (about twice as slow). "
                                   "Off by default: in simulated annotation sessions, fine-tuning on the corrections "
                                   "with distillation towards the current model did as well in half the time.")
        self.retrain_button = QPushButton("Retrain")
        TipWhenShown(self.retrain_button, self.retrain_tip)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        # shown only while a retraining runs (started to registered): idle, a bar at "0%" said nothing (walk; the
        # Predict panel hides its bar too); its row is kept, so that the ETA beside it and the loss curve, result and
        # table below it do not move when a run starts and ends
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        policy = self.progress.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        self.progress.setSizePolicy(policy)
        self.progress.setVisible(False)
        self.eta_label = QLabel(_fmt_eta(None))
        # fixed width: a changing ETA text must not re-layout the dock (a re-layout repaints the canvas)
        metrics = self.eta_label.fontMetrics()
        self.eta_label.setFixedWidth(max(metrics.horizontalAdvance(t) for t in TIME_LEFT_WIDEST) + 8)
        self.eta_label.setToolTip("Estimated time left in this retraining")
        self.loss_plot = LossPlot()
        self.result_label = QLabel("")
        self.result_label.setWordWrap(True)
        self.keep_button = QPushButton("Keep new model anyway")
        self.keep_button.setVisible(False)
        # one image under the other (its name, then its scores), two columns: label and value; a four-column row
        # per image was cut in the dock's default width (walk). A name has its row to itself, without its file
        # extension (a short name was elided behind its held-out count: walk); only a name wider than the dock is
        # elided, in its middle (whole in its tooltip); the values wrap rather than be cut if narrower still.
        self.image_caption = QLabel(IMAGE_CAPTION)
        self.image_caption.setWordWrap(True)
        self.image_table = QTableWidget(0, 2)
        self.image_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.image_table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.image_table.verticalHeader().setVisible(False)
        self.image_table.horizontalHeader().setVisible(False)
        self.image_table.setShowGrid(False)
        self.image_table.setWordWrap(True)
        self.image_table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.image_table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        header = self.image_table.horizontalHeader()
        header.setMinimumSectionSize(30)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Fixed)  # as wide as its labels (_show_images)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.image_table.setToolTip(IMAGE_CAPTION)
        self.image_table.viewport().installEventFilter(self)
        self.image_caption.setVisible(False)
        self.image_table.setVisible(False)
        # under the table: the images trained on that have no row (nothing of them held out or compared), by name
        self.image_note = QLabel("")
        self.image_note.setWordWrap(True)
        self.image_note.setVisible(False)

        # short rows, not one: one row was wider than the dock beside a default-sized canvas
        steps = QHBoxLayout()
        steps.addWidget(QLabel("Steps"))
        steps.addWidget(self.steps_spin, 1)
        row = QHBoxLayout()
        row.addWidget(self.retrain_button)
        row.addWidget(self.cancel_button)
        prog = QHBoxLayout()
        prog.addWidget(self.progress, 1)
        prog.addWidget(self.eta_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(steps)
        layout.addWidget(self.semi_check)
        layout.addLayout(row)
        layout.addLayout(prog)
        layout.addWidget(self.loss_plot)
        layout.addWidget(self.result_label)
        layout.addWidget(self.image_caption)
        layout.addWidget(self.image_table)
        layout.addWidget(self.image_note)
        layout.addWidget(self.keep_button)

        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)
        self.retrain_button.clicked.connect(lambda: self.start())
        self.cancel_button.clicked.connect(self.cancel)
        self.keep_button.clicked.connect(self.keep_anyway)
        self._registered.connect(self._show_done)

    # ------------------------------------------------------------------ job
    @property
    def running(self) -> bool:
        """True while a retraining job is being polled."""
        return self.job is not None

    def _say(self, message: str, error: bool = False, short: Optional[str] = None) -> None:
        """Say ``message`` in the result line; with ``short``, that on screen and ``message`` whole in its tooltip
        (``last_message`` is always the whole message)."""
        self.last_message = message
        self._nothing_new_said = None  # anything said since: a press checks again
        show_message(self.result_label, message if short is None else short, error)
        self.result_label.setToolTip("" if short is None else message)

    def start(self, steps: Optional[int] = None, force: bool = False) -> bool:
        """Start retraining the store's current model in the background.

        With nothing new since the store's latest version (:func:`~napari_cdma.project.retrain_job.nothing_new`:
        the same accepted regions and settings) the first call says so and starts nothing; a second one, while the
        panel still says it and nothing changed, starts (as does ``force``).

        Returns:
            True if the job started; False otherwise (the reason is shown).
        """
        if self.job is not None or self.state == "registering":
            self._say("Retraining is already running.", error=True)
            return False
        try:
            store = self._get_store()
            if not store.training_regions():
                self._say("Accept at least one corrected region (not held out) before retraining.",
                          error=True)
                return False
            chosen = int(steps or self.steps_spin.value())
            options = {"semi_supervised": self.semi_check.isChecked(), **self.train_kwargs}
            if not force and self._nothing_new_first(store, chosen, options):
                return False
            if self._before_start is not None:
                self._before_start(store)
            from .project.retrain_job import RetrainJob

            trained_on = self._image_names(store, store.training_regions())
            self.job = RetrainJob.start(store.root, chosen or None, **options)
        except Exception as exc:
            self.job = None
            self._say(f"Could not start retraining: {exc}", error=True)
            return False
        self.state = "running"
        self._trained_on = trained_on
        self._pending_progress = None
        self._last_ui = 0.0
        self.last_done = None
        self.last_record = None
        self._verdict = self._says_current = None
        self.loss_plot.clear()
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.eta_label.setText(_fmt_eta(None))
        self.keep_button.setVisible(False)
        self.image_table.setVisible(False)
        self.image_caption.setVisible(False)
        self.image_note.setVisible(False)
        self.retrain_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.refresh_tip()
        self._say(f"Retraining from {store.current_model_version} in the background...")
        self.timer.start()
        return True

    @staticmethod
    def _nothing_new(store: ProjectStore, steps: int, options: Dict[str, Any]) -> Tuple[Optional[Any], str]:
        """``(NothingNew or None, key)``: the store's latest version when a job started now with ``steps`` and
        ``options`` would train on what it was trained on; ``key`` names that state (the version and the basis)."""
        import json

        from .project.retrain_job import nothing_new, store_basis

        basis = store_basis(store, recipe=options.get("recipe"), steps=steps or None,
                            semi_supervised=bool(options.get("semi_supervised", FINETUNE_SEMI_SUPERVISED)),
                            seed=int(options.get("seed", 0)))
        same = nothing_new(store, basis)
        return same, json.dumps([same.version if same else None, basis], sort_keys=True)

    def _nothing_new_first(self, store: ProjectStore, steps: int, options: Dict[str, Any]) -> bool:
        """True, having said so, when there is nothing new since the store's latest version and the panel did not
        just say that of this very state (then the press trains anyway: False)."""
        from ._time_text import short_when

        same, key = self._nothing_new(store, steps, options)
        if same is None or self._nothing_new_said == key:
            return False
        said = same.since(short_when(same.created))
        self._say(f"{said[0].upper()}{said[1:]}: accept or withdraw a region first, or press Retrain again to "
                  f"train anyway.")
        self._nothing_new_said = key
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
        events: List[RetrainEvent] = self.job.poll()
        for ev in events:
            if isinstance(ev, Progress):
                loss = ev.metrics.get("loss")
                if loss is not None:
                    self.loss_plot.add_point(ev.step, float(loss), repaint=False)
                # pending at once: a final event in the same batch shows it (_end_job)
                self._pending_progress = ev
            else:
                self._handle(ev)
            self.job_event.emit(ev)
        now = time.monotonic()
        if self._pending_progress is not None and self.job is not None and now - self._last_ui >= UI_REFRESH_S:
            # Any repaint in the window re-composes the whole window together with napari's GL
            # canvas (see UI_REFRESH_S); so progress, ETA and the loss curve refresh at most once
            # per UI_REFRESH_S, however many steps arrived.
            self._show_progress(self._pending_progress)
            self.loss_plot.update()
            self._pending_progress = None
            self._last_ui = now
        if self.job is not None and not self.job.running and not events:
            # The process ended; give its last queued events a few polls to arrive.
            self._quiet_polls += 1
            if self._quiet_polls > 30:
                self._handle(Failed(message="the retraining process ended without a result"))
        else:
            self._quiet_polls = 0

    def _end_job(self) -> None:
        if self._pending_progress is not None:
            self._show_progress(self._pending_progress)
            self._pending_progress = None
        self.loss_plot.update()
        self.job = None
        self.timer.stop()
        self.eta_label.setText(_fmt_eta(None))  # no job, no time left (a cancelled run's ETA is stale)
        self.retrain_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.refresh_tip()

    def _show_progress(self, ev: Progress) -> None:
        if ev.total:
            if self.progress.maximum() != ev.total:
                self.progress.setRange(0, ev.total)
            self.progress.setValue(min(ev.step, ev.total))
        text = _fmt_eta(ev.eta_s)
        if self.eta_label.text() != text:
            self.eta_label.setText(text)

    def _handle(self, ev: RetrainEvent) -> None:
        if isinstance(ev, Started):
            from .project.retrain_job import plural

            # the unlabelled stream is the store's uncorrected images only (not the corrected crops)
            self._say(f"Retraining {ev.model_version} on {plural(ev.n_labelled, 'corrected region')} + "
                      f"{plural(ev.n_unlabelled, 'unlabelled image')}; {ev.n_holdout} held out.")
        elif isinstance(ev, Evaluating):
            self.state = "evaluating"
            self.progress.setRange(0, 0)
            self._say("Comparing new and old model on the held-out regions and on uncorrected tissue...")
        elif isinstance(ev, Done):
            self._end_job()
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
            self._on_done(ev)
        elif isinstance(ev, Cancelled):
            self._end_job()
            self.state = "cancelled"
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.progress.setVisible(False)  # idle: the result line says how it ended
            self._say("Retraining cancelled; the current model is unchanged.")
        elif isinstance(ev, Failed):
            self._end_job()
            self.state = "error"
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.progress.setVisible(False)
            self._say(f"Retraining failed: {ev.message}", error=True)

    def _on_done(self, ev: Done) -> None:
        """Register the new model in the store (checked by loading it as the plugin will: a few hundred ms
        of torch work) on a worker thread; :meth:`_show_done` shows the outcome on the GUI thread."""
        from .project.retrain_job import finish

        store = self._get_store()
        self.state = "registering"
        self.retrain_button.setEnabled(False)
        self._say("Registering the new model in the project...")
        before = store.current_model_version

        def register() -> None:
            record, error = None, ""
            try:
                record = finish(store, ev)
            except Exception as exc:
                error = str(exc)
            try:
                self._registered.emit(ev, record, error, before)
            except RuntimeError:  # the panel was closed meanwhile
                pass

        thread = threading.Thread(target=register, name="napari-cdma register model", daemon=True)
        thread.start()
        join_at_exit(thread)  # the new version registered in full before Python exits (napari_cdma._exit)

    def _show_done(self, ev: Done, record: Optional[ModelRecord], error: str, before: str) -> None:
        from .project.retrain_job import (
            KEEP_DESPITE_LOWER,
            HeldOutTrend,
            HoldoutSplit,
            Why,
            held_out_text,
            plural,
            verdict_short,
        )

        self.retrain_button.setEnabled(True)
        self.progress.setVisible(False)  # registered (or not): the result line says how it ended
        trained_on, self._trained_on = self._trained_on, None
        if record is None:
            self.state = "error"
            self._say(f"Could not register the new model: {error}", error=True)
            return
        store = self._get_store()
        self.last_done = ev
        self.last_record = record
        self.state = "done"
        # the rule's own reason, so that a decision resting on one or two regions says so
        reason = (record.metrics or {}).get("decision") or (
            "it is now the current model" if record.promoted else "the current model stays")
        # the held-out regions accepted unedited apart from the edited ones (the rule's reason says what they mean)
        split = HoldoutSplit.from_json((record.metrics or {}).get("holdout_split"))
        held_out = held_out_text(ev, split)
        # "crops" is the engine's word: a pathologist reads samples of the images (walk 20)
        agreement = "" if ev.agreement is None else (f"; agreement on uncorrected tissue {fmt_dice(ev.agreement)} "
                                                     f"(in {plural(ev.agreement_crops, 'sample')} of your images)")
        # the message says the held-out part and the agreement first: the reason does not say them again
        head = held_out.split(": ")[0] + ": "
        reason = reason[len(head):] if reason.startswith(head) else reason
        if agreement:
            reason = re.sub(r"agreement with the current model [0-9.]+ < ([0-9.]+)", r"agreement below \1", reason)
        # the verdict first (walk 20: it came after the held-out and agreement numbers, at the end of a long text);
        # no Dice printed over too little gland: the words say why (the worker's Done.message)
        # on screen a few short lines, each figure once; the whole verdict in the tooltip (walk 23: some 19 lines in
        # the 280 px dock, the held-out Dice said twice)
        # the short why from the rule's code (finish keeps it with the version), not from the reason's words
        metrics = record.metrics or {}
        why = Why(metrics["decision_code"]) if metrics.get("decision_code") in {w.value for w in Why} else None
        keep = bool(metrics.get("keep_anyway"))
        # which way the held-out score went, said when the decision is left to the user (walk 26: a fall of 0.045
        # read only as "too little held out to decide", under an invitation to keep the model)
        trend = HeldOutTrend.of(ev, split) if keep and not record.promoted else None
        went = ""
        if trend is not None and (trend.fell or trend.rose):
            went = f" ({record.version} scored {'lower' if trend.fell else 'higher'} on {trend.regions()})"
        if trend is not None and trend.fell:
            reason = reason.replace("Keep new model anyway if you trust it", KEEP_DESPITE_LOWER)
        verdict = "promoted" if record.promoted else "not promoted"
        self._say(f"{record.version}: {verdict}; {held_out}{went}{agreement}; {reason}.",
                  short=verdict_short(record.version, record.promoted, why, held_out, keep, trend))
        self._verdict = (self.last_message, self.result_label.text())
        self._says_current = store.current_model_version
        self._show_images(ev.per_image, trained_on, (record.version, ev.parent_model or record.parent or ""))
        self.keep_button.setVisible(not record.promoted)
        self.model_added.emit(record.version)
        if store.current_model_version != before:
            self.model_changed.emit(store.current_model_version)

    @staticmethod
    def _image_names(store: ProjectStore, regions: Sequence[Any]) -> List[Tuple[str, str]]:
        """The images of ``regions`` (in order of first acceptance): their hashes and names as the worker names them
        in its per-image rows."""
        from .project.retrain_worker import _image_name

        records = store.regions()
        return list(dict.fromkeys((r.image_hash, _image_name(records, r.image_hash)) for r in regions))

    def _namer(self) -> Callable[[str, str], str]:
        """``(image hash, the worker's name) -> the name the dock gives that image`` (:attr:`image_text` of the
        image's first region in the store; an image without a region by its open layer), the worker's name without
        a hash, a naming, or an open layer or a region of that image."""
        text = self.image_text
        firsts: Dict[str, RegionRecord] = {}
        if text is not None:
            try:
                firsts = {r.image_hash: r for r in reversed(self._get_store().regions(include_withdrawn=True))}
            except Exception:  # no store open (closed meanwhile): the worker's names
                firsts = {}

        def name(image_hash: str, fallback: str) -> str:
            if text is None or not image_hash:
                return fallback
            record = firsts.get(image_hash)
            if record is None:  # an image with no region (unlabelled tissue, agreement only): its open layer's name
                return (self.open_name(image_hash) if self.open_name is not None else None) or fallback
            return text(record)

        return name

    def image_name(self, image_hash: str, name: str) -> str:
        """The name the table gives the image of ``image_hash`` (the worker named it ``name``): as the dock names it
        (:attr:`image_text`), else ``name``."""
        return self._namer()(image_hash, name)

    def _show_images(self, rows: Sequence[ImageScore], trained_on: Optional[Sequence[Tuple[str, str]]] = None,
                     versions: Tuple[str, str] = ("", "")) -> None:
        """Fill the per-image table: each image's name (bold, across both columns, no file extension: the row is the
        name's alone), then its held-out regions and scores under it. When no image has a held-out region, the
        caption says why every Dice reads n/a; the line under it names the images trained on (``trained_on``, the
        job's, (hash, name); default: the store's now) that have no row. ``versions``: (the new model, the model it was
        retrained from), named in the caption (:func:`image_caption`)."""
        names = self._namer()
        # an image has a row by its hash; a row without one (an older worker's) by the worker's name
        listed_hashes = {score.image_hash for score in rows if score.image_hash}
        listed_files = {score.image for score in rows if not score.image_hash}
        rows = [replace(score, image=names(score.image_hash, score.image)) for score in rows]
        table = self.image_table
        table.clearSpans()
        table.clearContents()
        images = image_rows(rows)
        per = ROWS_PER_IMAGE
        table.setRowCount(per * len(images))
        for i, (score, (name, *pairs)) in enumerate(zip(rows, images, strict=True)):  # image_rows: one per score
            full = score.image  # the whole name (two images may share one without their extensions)
            head = QTableWidgetItem(name)  # elided in its middle only if the dock is too narrow for it (_fit_names)
            head.setData(Qt.ItemDataRole.UserRole, name)
            head.setToolTip(full)
            font = QFont(table.font())  # the table's font (napari's style sets its size), in bold
            font.setBold(True)
            head.setFont(font)
            table.setItem(per * i, 0, head)
            table.setSpan(per * i, 0, 1, 2)
            for k, (label, value) in enumerate(pairs, start=1):
                for j, text in enumerate((label, value)):
                    item = QTableWidgetItem(text)
                    item.setToolTip(f"{full}: {label} {value}")
                    if j == 0:
                        item.setForeground(table.palette().color(QPalette.ColorRole.PlaceholderText))
                    table.setItem(per * i + k, j, item)
        # the labels' column as wide as they are (not as the names, which span both columns), the values the rest
        labels = [label for _, *pairs in images for label, _ in pairs]
        pad = 2 * table.style().pixelMetric(table.style().PixelMetric.PM_FocusFrameHMargin) + 8
        table.setColumnWidth(0, max((table.fontMetrics().horizontalAdvance(t) for t in labels), default=40) + pad)
        self._fit_names()
        table.resizeRowsToContents()
        # as tall as its rows, up to about three images (then it scrolls)
        shown = sum(table.rowHeight(r) for r in range(min(table.rowCount(), 3 * per)))
        table.setFixedHeight(shown + 2 * table.frameWidth())
        table.setVisible(bool(images))
        caption = image_caption(*versions)
        table.setToolTip(caption)
        if images and not any(r.n_holdout for r in rows):
            try:
                fraction = self._get_store().holdout_fraction
            except Exception:  # the store closed meanwhile: the store's default rule
                fraction = DEFAULT_HOLDOUT_FRACTION
            caption += "\n" + no_holdout_note(fraction)
        self.image_caption.setText(caption)
        self.image_caption.setVisible(bool(images))
        if trained_on is None:
            try:
                store = self._get_store()
                trained_on = self._image_names(store, store.training_regions())
            except Exception:  # the store closed meanwhile: no line
                trained_on = []
        listed = {r.image for r in rows}
        missing = [name for name in (names(h, n) for h, n in trained_on
                                     if h not in listed_hashes and n not in listed_files) if name not in listed]
        self.image_note.setText(unscored_note(missing, bool(images)) if missing else "")
        self.image_note.setToolTip(", ".join(missing))
        self.image_note.setVisible(bool(missing))

    def _fit_names(self) -> None:
        """Each image's name row in one line of the table's width: whole if it fits (it has the row to itself),
        else elided in its middle as a last resort (the whole name is in the tooltip)."""
        table = self.image_table
        width = table.viewport().width() - 2 * table.style().pixelMetric(
            table.style().PixelMetric.PM_FocusFrameHMargin) - 4
        if width <= 20:  # not laid out yet: fitted when it is (eventFilter)
            return
        for row in range(0, table.rowCount(), ROWS_PER_IMAGE):
            item = table.item(row, 0)
            if item is None or not item.data(Qt.ItemDataRole.UserRole):
                continue
            name = item.data(Qt.ItemDataRole.UserRole)
            metrics = QFontMetrics(item.font())
            shown = metrics.elidedText(name, Qt.TextElideMode.ElideMiddle, max(20, width))
            if item.text() != shown:
                item.setText(shown)

    def eventFilter(self, obj: Any, event: Any) -> bool:
        """The per-image table was resized (the dock widened or narrowed): its names are fitted again."""
        if obj is self.image_table.viewport() and event.type() == QEvent.Type.Resize:
            self._fit_names()
        return False

    def refresh_tip(self) -> None:
        """Set Retrain's tooltip to what it needs or does now (:meth:`retrain_tip`). Called when the store or its
        regions change and when a run starts or ends: the tip was recomputed only on a hover event, so the one set when
        the dock was made, with no store, still said "Needs a project store" with one open (walk 24)."""
        tip = self.retrain_tip()
        if self.retrain_button.toolTip() != tip:
            self.retrain_button.setToolTip(tip)

    def retrain_tip(self) -> str:
        """Retrain's tooltip: what it does, and what it needs first when it cannot start now."""
        if self.job is not None or self.state == "registering":
            return f"{RETRAIN_TIP} (running: Cancel stops it)"
        try:
            store = self._get_store()
            ready = bool(store.training_regions())
        except Exception:  # no store open (the dock's store getter says so when clicked)
            return f"{RETRAIN_TIP}.\nNeeds a project store: open one, or predict and accept a region first."
        if not ready:
            return f"{RETRAIN_TIP}.\nNeeds at least one accepted region that is not held out."
        try:
            same, _ = self._nothing_new(store, int(self.steps_spin.value()),
                                        {"semi_supervised": self.semi_check.isChecked(), **self.train_kwargs})
        except Exception:  # the tip stands without it
            same = None
        if same is not None:
            from ._time_text import short_when

            said = same.since(short_when(same.created))
            return (f"{RETRAIN_TIP}.\n{said[0].upper()}{said[1:]}: a press says so; a second press trains "
                    f"anyway.")
        return RETRAIN_TIP

    def model_now_current(self, version: str) -> None:
        """``version`` became the store's current model (Roll back in the Versions panel, Keep new model anyway, a
        promotion): the result line follows it, so that the dock gives one answer to "which model is current" (walk
        26: after Keep anyway and a roll back to bundled it still said "Current model: v0001 (kept by hand).").

        - the retrained version: *Keep new model anyway* goes (walk 20: it stayed, and a click predicted again); a
          verdict that offered it says instead that the version "has been made current by hand since" (walk 21); a
          promoted one's verdict is true again and is said again;
        - another version: the line says it is current, and that the retrained version's result is below (its
          verdict whole in the tooltip; Keep stays as it was: the retrained model can still be kept).

        A version the line already presents as current changes nothing (Keep's own "kept by hand" stays)."""
        record = self.last_record
        if record is not None and version == record.version:
            self.keep_button.setVisible(False)
        if record is None or self._verdict is None or self.running or self.state == "registering":
            return  # no verdict of this panel's to correct (a running job's line is about that job)
        if version == self._says_current:
            return
        self._says_current = version
        full, short = self._verdict
        if version == record.version:
            if record.promoted:
                self._say(full, short=short if short != full else None)
                return
            # the verdict said "not promoted ... Keep new model anyway ..." (walk 21: it stayed so)
            said = re.split(r"; Keep new model anyway", full)[0].rstrip(" ;.")
            since = f"{version} has been made current by hand since."
            self._say(f"{said}. {since}", short=short.rsplit("\n", 1)[0] + "\n" + since if short != full else None)
            return
        now = (f"Rolled back to {version}, now the current model" if self._rolled_back(version, record) else
               f"Current model: {version}")
        kept = "; Keep new model anyway makes it current" if self.keep_button.isVisibleTo(self) else ""
        short = (f"{now} (chosen in Model versions).\nBelow: {record.version}'s retraining result; "
                 f"{record.version} is not current{kept}.")
        self._say(f"{short} {record.version}'s verdict: {full}".replace("\n", " "), short=short)

    def _rolled_back(self, version: str, record: ModelRecord) -> bool:
        """True when ``version`` is the shipped model or one the retrained ``record`` descends from."""
        from .project.store import BUNDLED

        if version == BUNDLED:
            return True
        try:
            parents = {m.version: m.parent for m in self._get_store().models()}
        except Exception:  # the store closed meanwhile: say "Current"
            return False
        seen, parent = set(), record.parent
        while parent and parent not in seen:
            if parent == version:
                return True
            seen.add(parent)
            parent = parents.get(parent)
        return False

    def keep_anyway(self) -> bool:
        """Make the last, not promoted, model current anyway (the user's choice); False, with nothing done, when it
        already is the current model (made current elsewhere)."""
        if self.last_record is None:
            return False
        version = self.last_record.version
        try:
            store = self._get_store()
            if store.current_model_version == version:
                self.keep_button.setVisible(False)
                self._say(f"{version} is already the current model.")
                return False
            store.set_current(version)
        except Exception as exc:
            self._say(f"Could not switch to {version}: {exc}", error=True)
            return False
        self.keep_button.setVisible(False)
        self._say(f"Current model: {version} (kept by hand).")
        self._says_current = version
        self.model_changed.emit(version)
        return True
