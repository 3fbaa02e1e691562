"""Predict panel: choose image and model, run tiled prediction off the GUI thread, cancel.

A large image's prediction streams (:mod:`._predict_stream`): its labels and uncertainty layers
are added before the worker starts and filled as row bands finish, a bounded piece per timer
tick, so the event loop stays free whatever the image size. Cancel stops the worker after the
current tile (or finishing step) and hides the half-filled layers at once; they are removed when
the worker has stopped.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from magicgui.widgets import ComboBox, create_widget
from napari.layers import Image
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from src_model.checkpoint import BUNDLED_NAME as BUNDLED  # torch-free; re-exported for the dock

from ._gc import freeze_when_warm
from ._layers import (
    COMBO_CHARS,
    HASH_KEY,
    LayerInputError,
    input_from_layer,
    input_hw,
    is_derived,
    names_for,
    narrow_combo,
    not_input_note,
)
from ._layers import unwrap_layer as _unwrap
from ._predict_stream import (
    MODEL_REFUSED,
    WHOLE_IMAGE_PIXELS,
    Block,
    LiveLayers,
    Rows,
    Stage,
    pieces,
    predict_job,
    streams,
    warm_engine,
    warm_finished,
    warm_glyphs,
    warm_up,
)
from ._predict_stream import review_outputs as _review_outputs  # noqa: F401 - the dock's name for it, used by tests
from ._slide_view import SLIDE_KEY, STORE_KEY
from ._time_text import short_when
from ._widget_store import DETACHED_KEY, restored_text

CHOOSE_FILE = "Choose file..."
#: The live layers are updated every DRAIN_INTERVAL_MS, for at most DRAIN_BUDGET_S of GUI time per tick;
#: the uncertainty layer is redrawn at most every UNCERTAINTY_REFRESH_S.
DRAIN_INTERVAL_MS = 25
DRAIN_BUDGET_S = 0.02
UNCERTAINTY_REFRESH_S = 0.3
PROGRESS_REFRESH_S = 0.25
NO_IMAGE_TEXT = "No image to predict: open an H&E image (a whole slide: Whole slide panel)."
#: Predict's tooltip: what a click does, what it needs while it is disabled (:meth:`PredictPanel._update_predict`)
PREDICT_TIP = ("Segment the chosen image with the chosen model: its glands (an editable labels layer), uncertainty "
               "and review regions")
PREDICT_NEEDS_IMAGE = ("Needs an H&E image to predict: open one (RGB, single-scale; a whole slide is predicted in the "
                       "Whole slide panel)")
PREDICT_RUNNING = "A prediction is running: Cancel it or wait for it to end"
ENTROPY_TIP = ("Also add '<image> entropy': the entropy of the three branches' mean class probabilities (0 to 1, "
               "magma), another uncertainty map beside the uncertainty layer (the branches' mean entropy)")


@dataclass
class PredictResult:
    """What one Predict run produced, handed to the dock on the GUI thread.

    Attributes:
        image_name: name of the image layer predicted.
        image: the uint8 (H, W, 3) input.
        prediction: ``src_model.inference.Prediction``.
        ranked: ``[(score, (y0, x0, y1, x1))]`` review regions, highest first.
        model_label: the model choice shown to the user ("bundled", a version, a file).
        model_version: store version of the model, if it came from the store (else None).
        instances: one label per gland, int32 (H, W).
        uncertainty: the uncertainty map shown, float32 (H, W).
        display_range: its contrast limits (robust range over tissue).
        glands: per-gland rows (id, area, mean_uncertainty, ...).
        image_hash: the store's hash of ``image`` (``project.store.hash_image``).
        corrections: the store's accepted corrections of the image, read by the worker (None when
            the panel has no ``corrections_for``).
        live: the prediction's layers, which the dock adopts: for a large image, filled while it was
            predicted (``prediction`` is then None: the maps were never held whole); for a small one,
            added (or earlier ones updated) from the whole maps one per event-loop turn after the worker
            returned (:class:`LiveLayers` ``whole``). None only for a result made outside this panel.
    """

    image_name: str
    image: np.ndarray
    prediction: Any
    ranked: List[Tuple[float, Tuple[int, int, int, int]]]
    model_label: str
    model_version: Optional[str]
    instances: Optional[np.ndarray] = None
    uncertainty: Optional[np.ndarray] = None
    display_range: Tuple[float, float] = (0.0, 1.0)
    glands: List[Dict[str, Any]] = field(default_factory=list)
    image_hash: str = ""
    corrections: Optional[List[Any]] = None
    live: Optional[LiveLayers] = None


def unpredictable_note(viewer: Any) -> str:
    """Why the topmost shown image layer of the user's is not offered in Predict (:func:`predictable` false: a map, a
    mask, a small RGB image napari opened as a stack; :func:`~napari_cdma._layers.not_input_note`), or "" when there
    is none (walk 25: a 5 x 5 px RGB PNG opened as a stack left the dock saying only "No image to predict")."""
    for layer in reversed(list(viewer.layers)):
        if (isinstance(layer, Image) and layer.visible and not is_derived(layer) and not _of_slide_or_copy(layer)
                and not getattr(layer, "multiscale", False) and input_hw(layer) is None):
            return not_input_note(layer)
    return ""


def _of_slide_or_copy(layer: Any) -> bool:
    """A slide's layer (metadata ``cdma_slide`` / ``cdma_store``) or a copy detached at a store switch."""
    meta = getattr(layer, "metadata", None) or {}
    return bool(meta.get(SLIDE_KEY) or meta.get(STORE_KEY) or meta.get(DETACHED_KEY))


def predictable(layer: Any) -> bool:
    """Whether the Predict chooser lists ``layer``: a single-scale image layer, RGB or uint8 / uint16 greyscale
    (:func:`~napari_cdma._layers.input_hw`: the engine replicates grey; walk 24: a grey image was silently not
    offered), that is neither the plugin's own (:func:`~napari_cdma._layers.is_derived`, or a copy of one detached at
    a store switch) nor a slide's (the reader's slide, its prediction store's layers, the Whole slide panel's live
    layers: metadata ``cdma_slide`` / ``cdma_store``; a slide is predicted in the Whole slide panel). Other checks
    (the pixel limit) are :func:`~napari_cdma._layers.image_from_layer`'s, with a message when Predict is pressed."""
    return isinstance(layer, Image) and not is_derived(layer) and input_hw(layer) is not None \
        and not _of_slide_or_copy(layer)


#: An uncertainty display range narrower than this is a flat map (the engine's constant map gives (v, v + 1e-6))
FLAT_RANGE = 1e-4


def flat_warning(extra: Dict[str, Any]) -> str:
    """A short warning for the status line when a prediction is flat: its uncertainty display range collapsed (no
    doubt anywhere) and no gland found, as a 16-bit image clipped to white gave (walk 24: "0.000 ... 0.000", an empty
    gland table, presented as a prediction); "" otherwise."""
    lo, hi = extra.get("display_range") or (0.0, 1.0)
    if hi - lo >= FLAT_RANGE or extra.get("glands"):
        return ""
    return "Warning: no gland and no doubt anywhere (flat uncertainty): no tissue seen; check the image."


def closed_prediction_note(name: str, edits: int, kept: bool, stored: bool) -> str:
    """What the Predict status line says of image ``name`` once its prediction layer was closed (walk 26: it kept
    saying "predicted with bundled at 17:56"): what became of the layer's ``edits`` (pixels not accepted; -1 unknown),
    kept in the project store (``kept``) or gone with the layer, and how to see its glands again: the store's Open
    brings back its latest prediction (``stored``), kept edits included; Predict makes a new one, which becomes the
    store's latest (kept edits are then no longer there)."""
    line = f"'{name}': its prediction layer was closed"
    if edits > 0 and kept:
        return (f"{line}; its {edits} edited pixel(s) not accepted are kept in the project store. Press Open (Project "
                "store) to bring it back with them; Predict again would replace them with a new prediction.")
    if edits > 0:
        line += f", and with it {edits} edited pixel(s) not accepted (no store kept them)"
    elif edits < 0:
        line += " (its edits not accepted, if any, went with it)"
    if stored:
        return f"{line}. Press Open (Project store) to bring back its latest prediction, or Predict again."
    return f"{line}. Predict again to see its glands."


#: An error longer than this is said short on screen (the whole in the tooltip)
SCREEN_CHARS = 160


def short_message(message: str, limit: int = SCREEN_CHARS) -> str:
    """An error said short for the status line: whole when short, else its first ``limit`` characters cut at a word,
    pointing to the tooltip, which holds it whole (walk 24: a foreign checkpoint's error ran to some 560
    characters)."""
    if len(message) <= limit:
        return message
    cut = message[:limit].rsplit(" ", 1)[0].rstrip(",;:(")
    return f"{cut} ... (the whole message in the tooltip)"


#: Delay from the dock's creation to the start of the warm-up threads (:func:`_start_warm_up`).
WARM_DELAY_MS = 1000
#: How often the dock checks whether the warm-up threads have finished before it loads the glyphs.
GLYPHS_POLL_MS = 250


def _start_warm_up() -> None:
    warm_up()
    warm_engine()


class PredictPanel(QWidget):
    """Image and model choice, Predict / Cancel, progress.

    Args:
        viewer: the napari viewer.
        model_path_for: callback mapping a combo entry ``(kind, value)`` to a checkpoint path.
        parent: parent widget.

    Signals:
        finished(PredictResult): a run completed.
        failed(str): a run could not start or failed; the message was shown to the user.
        idle(): the worker of a run has stopped (finished, failed or cancelled).
    """

    finished = Signal(object)
    failed = Signal(str)
    idle = Signal()

    def __init__(self, viewer: Any, model_path_for: Callable[[Tuple[str, Any]], str],
                 parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._model_path_for = model_path_for
        self._worker = None
        #: (image name, image, model label, version, layer) of the running prediction, until its worker returns
        self._run_for: Optional[Tuple[str, np.ndarray, str, Optional[str], Any]] = None
        self._last_model_index = 0
        #: the chooser's entry before a model file was chosen: chosen again if that file is refused (walk 25)
        self._model_before: Optional[Tuple[str, Any]] = None
        #: the chooser's entry the running prediction uses
        self._run_model: Optional[Tuple[str, Any]] = None
        self.pixel_limit: Optional[int] = None  # None = the engine's MAX_PIXELS
        self.last_message = ""
        #: called in the worker with the image's store hash: the store's accepted corrections of it
        self.corrections_for: Optional[Callable[[str], List[Any]]] = None
        #: whether a new prediction of an image goes beside its prediction layer even from the current model (the
        #: layer holds edits not accepted: the dock's, :meth:`CdmaWidget._goes_aside`); its live layer is drawn as a
        #: "(version)" layer from the start
        self.goes_aside: Optional[Callable[[str], bool]] = None
        #: images larger than this (pixels) stream into live layers; smaller ones are shown whole at the end
        self.stream_pixels = WHOLE_IMAGE_PIXELS
        self._named: Any = None  # a layer the chooser does not list, named by set_image for the next predict
        #: whether a prediction's glands are drawn filled (the dock's "Fill glands"); None: outlines
        self.fill_for: Optional[Callable[[], bool]] = None
        self.settled_for: Optional[Callable[[], bool]] = None  # the dock's handed_over(): its hand-over is done
        self._live: Optional[LiveLayers] = None  # the layers of a running streamed prediction
        self._dropped: Optional[LiveLayers] = None  # a cancelled run's layers, removed once its worker stopped
        self._queue: deque = deque()  # Rows / Block pieces not yet copied into the live layers
        self._pending: Optional[Tuple[Any, ...]] = None  # a returned result waiting for the queue to drain
        self._cancelled = False
        #: what the status line says of a run cancelled by the dock (:meth:`cancel` ``note``), None for Cancel's own
        self._cancel_note: Optional[str] = None
        #: handed over, the dock's share of the hand-over (its later event-loop turns) not done yet
        self._settling = False
        #: the image being predicted (until the run ends: its hand-over included), None when idle
        self.running_name: Optional[str] = None
        #: image name -> (unique id of its image layer, model label, time.time()) of its last prediction made here,
        #: for the status line about the image chosen (:meth:`chosen_line`)
        self.predicted: Dict[str, Tuple[Any, str, float]] = {}
        #: what :attr:`predicted` held of an image before its last prediction (the dock puts it back when that
        #: prediction went to a side layer: the layer corrected is still the earlier model's)
        self.predicted_before: Dict[str, Optional[Tuple[Any, str, float]]] = {}
        #: the project's versions listed in the chooser and the store's current model (:meth:`set_model_versions`)
        self.versions: List[str] = []
        self.current_model = BUNDLED
        self._chosen_said = ""  # the status line :meth:`_on_chosen` last wrote
        self._done_said = ""  # the line a prediction's end wrote (:meth:`predicted_line`), before any note
        self._succeeded = False  # the run ending now handed a prediction over (its bar ends full)
        #: image name -> "<model>, <time>" of a prediction the dock restored from the project store (None: unknown)
        self.described_for: Optional[Callable[[str], Optional[str]]] = None
        #: whether the image of that name is being brought back from a project store now (set by the dock)
        self.restoring: Optional[Callable[[str], bool]] = None
        #: how the running prediction's image was converted for the model (:func:`conversion_note`), "" for uint8 RGB
        self._input_note = ""
        #: image name -> what the status line says after "predicted with ..." of its last prediction made here: the
        #: conversion of its input, a warning of a flat prediction (walk 24)
        self.notes: Dict[str, str] = {}
        #: image name -> what the status line says of it while its prediction layer is closed (the user deleted it:
        #: walk 26, the line kept saying "predicted with bundled at 17:56"); set by the dock (:meth:`say_closed`),
        #: dropped when the image is predicted again or closed
        self.closed_notes: Dict[str, str] = {}
        self._unc_dirty = False
        self._unc_refreshed = 0.0
        self._progress_shown = 0.0
        self._timer = QTimer(self)
        self._timer.setInterval(DRAIN_INTERVAL_MS)
        self._timer.timeout.connect(self._drain)

        # magicgui's layer chooser: follows the viewer's image layers by type (not by name), listing only
        # those Predict can take (see predictable); the plugin's own outputs (disagreement, entropy, ...)
        # are marked in their metadata and left out, as are a slide's layers (the Whole slide panel's).
        self.image_choice: ComboBox = create_widget(annotation=Image, label="Image",
                                                    options={"choices": self._image_layers})
        self.image_choice.native.setToolTip("H&E image layer to segment (RGB or 8/16-bit greyscale, single-scale; "
                                            "a whole slide is predicted in the Whole slide panel)")
        narrow_combo(self.image_choice.native, COMBO_CHARS)
        self.model_combo = QComboBox()
        self.model_combo.setToolTip("Model for prediction: the bundled one, a project version or a file")
        narrow_combo(self.model_combo, COMBO_CHARS)
        self.entropy_check = QCheckBox("entropy")
        self.entropy_check.setToolTip(ENTROPY_TIP)
        self.branches_check = QCheckBox("branches")
        self.branches_check.setToolTip("Also show each decoder branch's foreground probability")
        self.predict_button = QPushButton("Predict")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        # shown only while a prediction runs: idle, a bar at 0 % (or 100 %) says nothing the status line does not
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setVisible(False)
        #: said while the viewer holds no image Predict can take (none open, or only a whole slide)
        self.no_image_label = QLabel(NO_IMAGE_TEXT)
        self.no_image_label.setWordWrap(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        # a word-wrapped label's minimum width is its longest word's: a path or a list of keys in a message widened
        # the 280 px dock and cut every panel on the right (walk 24); a set minimum width overrides it
        self.status.setMinimumWidth(1)

        # a narrow dock (napari's default window): each field under its label, with the dock's whole width (beside
        # their labels the choosers elided "v0001 (not promoted)": walk)
        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapAllRows)
        form.addRow("Image", self.image_choice.native)
        form.addRow("Model", self.model_combo)
        extra = QHBoxLayout()
        extra.addWidget(self.entropy_check)
        extra.addWidget(self.branches_check)
        extra.addStretch(1)
        form.addRow("Also show", extra)
        buttons = QHBoxLayout()
        buttons.addWidget(self.predict_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(self.no_image_label)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)

        self.set_model_versions([])
        self.image_choice.changed.connect(self._on_chosen)
        self.predict_button.clicked.connect(lambda: self.predict())
        self.cancel_button.clicked.connect(lambda: self.cancel())  # not clicked(bool) as its note
        self.model_combo.activated.connect(self._on_model_activated)
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed,
                   viewer.layers.events.moved):
            ev.connect(self._refresh_images)
        self._refresh_images()
        # what a prediction imports (torch, the engine, napari's labels modules, zarr) is imported off the GUI
        # thread while the user chooses an image: imported at the click, it stalled the event loop repeatedly.
        # Started once the dock is on screen: started here, its imports (holding the GIL) kept the dock from
        # being painted for 3 s (benchmarks/results/startup.md)
        QTimer.singleShot(WARM_DELAY_MS, _start_warm_up)
        # then the objects alive (nearly all made by those imports) are frozen, out of the reach of Python's full
        # garbage collections, which took 250-400 ms of GUI time each (napari_cdma/_gc.py)
        self.freezer = freeze_when_warm(viewer, warm_finished, self)
        # and the glyphs a Shapes layer's first draw measures its font with, once those imports are done (a bound
        # method: not after the dock)
        #: when the glyphs were loaded (``time.perf_counter``), None until then
        self.glyphs_at: Optional[float] = None
        QTimer.singleShot(WARM_DELAY_MS, self._warm_glyphs)

    def _warm_glyphs(self) -> None:
        """Load the glyphs (:func:`warm_glyphs`) once the warm-up threads have finished, else try again in
        :data:`GLYPHS_POLL_MS`: run while the imports held the GIL, their 40-70 ms of GUI time stretched into a
        360-400 ms stall of the event loop (a busy 2-core machine)."""
        if not warm_finished():
            QTimer.singleShot(GLYPHS_POLL_MS, self._warm_glyphs)
            return
        warm_glyphs(self.viewer)
        self.glyphs_at = time.perf_counter()

    # ----------------------------------------------------------------- choices
    @property
    def running(self) -> bool:
        """True while a prediction runs (until its layers are filled and handed over)."""
        return self._worker is not None or self._pending is not None or self._settling

    def _image_layers(self, _widget: Any = None) -> List[Any]:
        return [ly for ly in self.viewer.layers if predictable(ly)]

    def show_status(self, text: str, full: Optional[str] = None) -> None:
        """Put ``text`` in the status line, with ``full`` (default: the text itself) in its tooltip: a long message
        is said short on screen and whole in the tooltip (walk 20: ten lines in the 280 px dock). Long unbreakable
        tokens (paths, key lists) are clipped at the dock's edge rather than widening it (walk 24: a foreign
        checkpoint's error cut every panel on the right): the label's minimum width is set, see ``__init__``."""
        self.status.setText(text)
        self.status.setToolTip(text if full is None else full)

    def _refresh_images(self, event: Any = None) -> None:
        self.image_choice.reset_choices()
        self.no_image_label.setVisible(not self.image_choice.choices)
        if not self.image_choice.choices:  # and why an image open is not offered, if one is (walk 25)
            why = unpredictable_note(self.viewer)
            self.no_image_label.setText(f"{NO_IMAGE_TEXT} {why}" if why else NO_IMAGE_TEXT)
        if not self.running:  # nothing to predict: the button is off (it only said so in red: walk)
            self._update_predict()
            said = self.status.text()
            if not self.image_choice.choices and said and (
                    said == self._chosen_said or (self._done_said and said.startswith(self._done_said))):
                self.show_status("")  # not "<image>: predicted ..." under "No image to predict" (re-walk)
        inserted = getattr(event, "value", None) if getattr(event, "type", "") == "inserted" else None
        # a newly opened image becomes the one to predict; not a hidden one (a reopened store's
        # other images come back hidden: Predict must not switch away from the image on screen)
        if inserted is not None and inserted in self.image_choice.choices and getattr(inserted, "visible", True):
            self.image_choice.value = inserted

    def chosen_line(self, layer: Any) -> str:
        """What the status line says of the image ``layer`` once it is chosen: whether it is predicted, with what and
        when ("testA_2: predicted with bundled at 07:41", "testA_2: not predicted yet"). Before, the line went on
        naming the image predicted last whichever image was chosen (pathologist walk)."""
        layer = _unwrap(layer)
        name = layer.name
        prediction = names_for(name)["prediction"]
        if self.restoring is not None and self.restoring(name):  # said again once the store's layers are all shown
            return f"{name}: looking for its prediction in the project store..."
        if prediction not in self.viewer.layers:
            return self.closed_notes.get(name) or f"{name}: not predicted yet."
        made = self.predicted.get(name)
        if made is not None and made[0] == getattr(layer, "unique_id", None):
            return self.predicted_line(name) + self.not_current_note(made[1])
        restored = self.described_for(name) if self.described_for is not None else None
        if restored:
            return f"{name}: predicted with {restored_text(restored)} (from the project store)."
        if (getattr(layer, "metadata", None) or {}).get(HASH_KEY):
            return f"{name}: predicted (from the project store)."
        return f"{name}: predicted (layer '{prediction}')."

    def not_current_note(self, model: str) -> str:
        """`` Current model: bundled; Predict refreshes it.`` when ``model`` (a version's name) is not the store's
        current model (walk 23: after a roll back an image chosen again read "predicted with v0001" and nothing said
        that v0001 was no longer current); "" otherwise, and for a checkpoint file."""
        current = self.current_model
        if model == current or (model != BUNDLED and model not in self.versions):
            return ""
        return f" Current model: {current}; Predict refreshes it."

    def predicted_line(self, name: str) -> str:
        """What the status line says of the image ``name`` predicted here (:attr:`predicted`): "testA_1: predicted
        with bundled at 00:45." The same words when its prediction ends and when it is chosen again (walk: the end of
        a run said "Predicted 'testA_2' with bundled.", the image chosen again "testA_2: predicted with bundled at
        00:45."); notes go after it. "<name>: predicted." when none was made here."""
        made = self.predicted.get(name)
        if made is None:
            return f"{name}: predicted."
        note = self.notes.get(name)
        return f"{name}: predicted with {made[1]} at {short_when(made[2])}." + (f" {note}" if note else "")

    def say_closed(self, name: str, note: Optional[str]) -> None:
        """Image ``name``'s prediction layer was closed: ``note`` is what the status line says of it (now, if it is
        the image chosen and no prediction runs; and whenever it is chosen again, :meth:`chosen_line`), until it is
        predicted again. None: nothing to say any more (the image itself was closed)."""
        if note is None:
            self.closed_notes.pop(name, None)
            return
        self.closed_notes[name] = note
        layer = self.image_layer
        if layer is not None and not self.running and getattr(_unwrap(layer), "name", None) == name:
            self._chosen_said = self.last_message = note
            self.show_status(note)

    def say_chosen(self, note: str = "") -> None:
        """The status line about the image chosen (:meth:`chosen_line`), then ``note``: said when a project store has
        been opened and its layers shown (walk: after a store switch the line named the renamed copies of the store
        left, and after a reopen "not predicted yet" of an image whose prediction it had just restored). Not while a
        prediction runs (the line says which image it predicts)."""
        layer = self.image_layer
        if layer is None or self.running:
            return
        message = f"{self.chosen_line(layer)} {note}".strip()
        self._chosen_said = self.last_message = message
        self.show_status(message)

    def _on_chosen(self, layer: Any = None) -> None:
        """The status line follows the image chosen (:meth:`chosen_line`); not while a prediction runs (the line
        says which image it predicts)."""
        if layer is None or self.running:
            return
        self._chosen_said = self.chosen_line(layer)
        self.show_status(self._chosen_said)

    def _update_predict(self, running: bool = False) -> None:
        """Predict is enabled when there is an image to predict and no run; its tooltip says what it needs
        when it is not (it was empty: walk)."""
        ready = not running and bool(self.image_choice.choices)
        self.predict_button.setEnabled(ready)
        self.predict_button.setToolTip(PREDICT_TIP if ready else PREDICT_RUNNING if running else
                                       f"{PREDICT_NEEDS_IMAGE}\n({PREDICT_TIP})")

    @property
    def image_layer(self) -> Any:
        """The chosen image layer (or the layer a script named with :meth:`set_image`), or None."""
        named = self._named
        if named is not None and named in self.viewer.layers:
            return named
        return self.image_choice.value

    def set_image(self, name: str) -> bool:
        """Select the image layer ``name``; True if the chooser offers it.

        A layer the chooser does not list (a slide's layer, the plugin's own, not RGB) is not selected
        there, but a script that names it gets it for its next :meth:`predict`, which then says why it
        cannot be predicted (rather than predicting the image the chooser shows)."""
        self._refresh_images()
        self._named = None
        if name not in self.viewer.layers:
            return False
        layer = self.viewer.layers[name]
        layer = _unwrap(layer)
        if layer in self.image_choice.choices:
            self.image_choice.value = layer
            return True
        self._named = layer
        return False

    def set_model_versions(self, versions: List[str], current: Optional[str] = None,
                           notes: Optional[Dict[str, str]] = None) -> None:
        """Rebuild the model combo: "bundled", every project version, chosen files, "Choose file...".

        Every version is listed, promoted or not: predicting with one only tries it, the store's
        current model changes only by promotion, "Keep anyway" or roll back.

        Args:
            versions: project model versions (excluding "bundled").
            current: entry to select (a version or "bundled"); keeps the selection if None.
            notes: text shown after a version ("current", "not promoted").
        """
        notes = notes or {}
        self.versions = [str(v) for v in versions]
        self.current_model = next((str(v) for v, note in notes.items() if note == "current"), BUNDLED)
        keep = self.model_combo.currentData() if current is None else None
        files = [self.model_combo.itemData(i) for i in range(self.model_combo.count())
                 if (self.model_combo.itemData(i) or ("",))[0] == "file"]
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItem(BUNDLED, ("version", BUNDLED))
        for v in versions:
            if str(v) != BUNDLED:
                note = notes.get(str(v))
                # "v0002 (not promoted)": short enough for the closed chooser in the narrow dock (was "project v0002")
                self.model_combo.addItem(str(v) + (f" ({note})" if note else ""), ("version", str(v)))
        for data in files:
            self.model_combo.addItem(Path(data[1]).name, data)
        self.model_combo.addItem(CHOOSE_FILE, ("choose", None))
        for i in range(self.model_combo.count()):  # whole in a tooltip: a narrow dock elides the text (walk)
            self.model_combo.setItemData(i, self.model_combo.itemText(i), Qt.ItemDataRole.ToolTipRole)
        target = ("version", str(current)) if current is not None else keep
        idx = self._find(target) if target else -1
        self.model_combo.setCurrentIndex(max(0, idx))
        self._last_model_index = self.model_combo.currentIndex()
        self.model_combo.blockSignals(False)

    def _find(self, data: Tuple[str, Any]) -> int:
        # QComboBox.findData does not compare Python tuples by value.
        for i in range(self.model_combo.count()):
            if tuple(self.model_combo.itemData(i) or ()) == tuple(data):
                return i
        return -1

    def set_model_file(self, path: str) -> None:
        """Add a checkpoint file to the model combo and select it (the entry chosen before it is kept: if the file
        is refused when a prediction loads it, that entry is chosen again, :meth:`_refuse_model_file`)."""
        data = ("file", str(path))
        before = self.model_combo.itemData(self._last_model_index)
        if before and before[0] != "choose" and tuple(before) != data:
            self._model_before = tuple(before)
        idx = self._find(data)
        if idx < 0:
            idx = self.model_combo.count() - 1  # before "Choose file..."
            self.model_combo.insertItem(idx, Path(path).name, data)
            self.model_combo.setItemData(idx, str(path), 3)  # Qt.ToolTipRole
        self.model_combo.setCurrentIndex(idx)
        self._last_model_index = idx

    def _on_model_activated(self, index: int) -> None:
        data = self.model_combo.itemData(index)
        if data and data[0] == "choose":
            path, _ = QFileDialog.getOpenFileName(self, "Choose a napari-cdma checkpoint", "",
                                                  "Checkpoints (*.pt *.pth);;All files (*)")
            if path:
                self.set_model_file(path)
            else:
                self.model_combo.setCurrentIndex(self._last_model_index)
        else:
            self._last_model_index = index

    def _refuse_model_file(self, path: str, error: str) -> str:
        """A model file a prediction could not load: its entry leaves the chooser, the model chosen before it is
        chosen again (else the store's current model), and the message says so before the error (walk 25: the
        refused file stayed chosen, so the next Predict failed again)."""
        idx = self._find(("file", path))
        if idx >= 0 and self.model_combo.currentIndex() == idx:  # still chosen (not changed while it ran)
            before = self._model_before
            self.model_combo.blockSignals(True)
            self.model_combo.removeItem(idx)
            back = self._find(before) if before else -1
            if back < 0:
                back = max(0, self._find(("version", self.current_model)))
            self.model_combo.setCurrentIndex(back)
            self._last_model_index = back
            self.model_combo.blockSignals(False)
        elif idx >= 0:
            self.model_combo.removeItem(idx)
            self._last_model_index = self.model_combo.currentIndex()
        chosen = self.model_combo.currentText()
        return f"{Path(path).name} was not loaded; the model is still {chosen}. {error}"

    def model_choice(self) -> Tuple[str, Any]:
        """The selected model entry as ``(kind, value)``; kind "version" or "file"."""
        data = self.model_combo.currentData()
        return data if data and data[0] != "choose" else ("version", BUNDLED)

    # ----------------------------------------------------------------- running
    def _fail(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.last_message = message
        self.show_status(short_message(message), message)
        show_error(message)
        self.failed.emit(message)

    def predict(self, layer: Any = None) -> bool:
        """Start a prediction of ``layer`` (default: the chosen image) in a worker thread.

        Returns:
            True if a run started; False if the input was refused (the reason is shown).
        """
        if self.running:
            self._fail("A prediction is already running; cancel it first.")
            return False
        if layer is None:
            layer = self.image_layer
        self._named = None  # named once, for this prediction
        try:
            image, self._input_note = input_from_layer(layer, self.pixel_limit)
        except LayerInputError as exc:
            self._fail(str(exc))
            return False
        choice = self.model_choice()
        self._run_model = tuple(choice)
        # the model's own name, not the chooser's note about it now ("v0001 (current)"): the label stays with the
        # prediction (status, legend, store, CSV) after another model is made current (walk 23: "Predicted by v0001
        # (current)" under "Current model: bundled")
        label = str(choice[1]) if choice[0] == "version" else self.model_combo.currentText()
        try:
            model_path = str(self._model_path_for(choice))
        except Exception as exc:
            self._fail(f"Cannot find the model '{label}': {exc}")
            return False

        from ._workers import create_worker

        name = layer.name
        version = str(choice[1]) if choice[0] == "version" else None
        self._queue.clear()
        self._pending = None
        self._cancelled = self._succeeded = False
        aside = version != self.current_model or (self.goes_aside is not None and self.goes_aside(name))
        self._live = LiveLayers(self.viewer, name, image.shape[:2], tried=aside) \
            if streams(image.shape, self.stream_pixels) else None
        # a large image's worker starts once its live layers are added (LiveLayers.started)
        worker = create_worker(predict_job, model_path, image, self._live.uncertainty if self._live else None,
                               branches=self.branches_check.isChecked(), corrections_for=self.corrections_for,
                               start=self._live.started if self._live else None)
        worker.yielded.connect(self._on_yielded)
        # what the result is for, kept here until the worker returns: a lambda holding it would live as long as the
        # viewer (napari keeps every finished worker and its slots: napari_cdma/_workers.py)
        self._run_for = (name, image, label, version, layer)
        self.running_name = name
        worker.returned.connect(self._on_worker_returned)
        worker.errored.connect(self._on_errored)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._update_predict(running=True)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)  # busy until the first tile batch reports
        self.progress.setVisible(True)
        self.show_status(f"Predicting '{name}' with {label}... {self._input_note}".strip())
        worker.start()
        self._timer.start()
        return True

    def result_pending(self) -> bool:
        """True while a run's result has not been handed to the dock yet (its worker runs, or its layers are being
        added): :meth:`cancel` then keeps it from the dock."""
        return not self._cancelled and (self._run_for is not None or self._pending is not None)

    def cancel(self, note: Optional[str] = None) -> None:
        """Stop the running prediction after the current tile (or finishing step); its half-filled
        layers are hidden and marked cancelled now, and removed once the worker has stopped. ``note``: what the
        status line says of it (the dock's reason) instead of "Prediction cancelled."."""
        if note is not None and self.result_pending():
            self.say_cancelled(note)
        if self._settling:  # handed over: the dock's last steps go on, the panel stops waiting for them
            self._settling = False
            self._timer.stop()
            if self._worker is None:  # else when its finished signal comes
                self._end_run()
        elif self._worker is not None:
            if self._cancel_note is None:
                self.show_status("Cancelling...")
            self._cancelled = True
            self._pending = None  # returned, its layers still being added: not handed over either
            self._worker.quit()
            self._drop_live()
        elif self._pending is not None:  # computed, layers still filling: drop it
            self._pending = None
            self._drop_live()
            self._on_aborted()
            self._end_run()

    def say_cancelled(self, note: str) -> None:
        """Say ``note`` in the status line for the run being cancelled, and again when its worker has stopped."""
        self._cancel_note = self.last_message = note
        self.show_status(note)

    def _drop_live(self) -> None:
        self._queue.clear()
        if self._live is not None:
            self._live.hide()
            self._dropped, self._live = self._live, None

    def _on_yielded(self, event: Any) -> None:
        if self._cancelled:  # the worker's last events before it stops are dropped
            return
        if isinstance(event, Stage):
            self._on_progress(event)
        elif isinstance(event, (Rows, Block)) and self._live is not None:
            self._queue.extend(pieces(event))

    def _on_progress(self, event: Any) -> None:
        total = int(getattr(event, "total", 0) or 0)
        step = int(getattr(event, "step", 0) or 0)
        now = time.perf_counter()
        # throttled: a progress bar repaints at once, and with it the whole window, canvas included
        if total > 0 and (now - self._progress_shown >= PROGRESS_REFRESH_S or self.progress.maximum() != total):
            self.progress.setRange(0, total)
            self.progress.setValue(min(step, total))
            self._progress_shown = now

    def _drain(self) -> None:
        """Copy queued pieces into the live layers for at most DRAIN_BUDGET_S (GUI thread)."""
        if self._settling:  # handed over: waiting for the dock's last steps of it
            if self._dock_settled():
                self._settling = False
                self._timer.stop()
                if self._worker is None:
                    self._end_run()
            return
        live = self._live
        if live is None:
            if self._pending is not None:
                self._complete()
            return
        if not live.alive():  # the user deleted a live layer: the prediction has nowhere to go
            self.cancel()
            return
        if self._pending is not None and not self._image_kept(self._pending[1], self._pending[5]):
            self._complete()  # the image was closed while its layers were added: they are dropped
            return
        if not live.build_step():  # still adding the layers, one per tick
            return
        t0 = time.perf_counter()
        while self._queue and time.perf_counter() - t0 < DRAIN_BUDGET_S:
            piece = self._queue.popleft()
            if isinstance(piece, Rows):
                live.write_labels(piece.r0, 0, piece.labels)
                self._unc_dirty = True
            else:
                live.write_labels(piece.y0, piece.x0, piece.labels)
        now = time.perf_counter()
        if self._unc_dirty and (now - self._unc_refreshed > UNCERTAINTY_REFRESH_S or not self._queue):
            live.refresh_uncertainty()
            self._unc_dirty, self._unc_refreshed = False, now
        # a small image's hand-over waits for all its layers (its review-region layers too, added here one per
        # turn and without taking the selection); a large one's, for its labels and uncertainty only
        if not self._queue and self._pending is not None and (live.whole is None or live.built):
            self._complete()

    def _on_worker_returned(self, result: Any) -> None:
        run_for, self._run_for = self._run_for, None
        if run_for is not None:
            self._on_returned(result, *run_for)

    def _on_returned(self, result: Any, name: str, image: np.ndarray, label: str,
                     version: Optional[str], layer: Any = None) -> None:
        if self._cancelled:  # cancelled while it returned
            return
        if result[0] == "error":
            self._drop_live()
            run_model, self._run_model = self._run_model, None
            if run_model is not None and run_model[0] == "file" and str(result[1]).startswith(MODEL_REFUSED):
                self._fail(self._refuse_model_file(str(run_model[1]), result[1]))
            else:
                self._fail(result[1])
            return
        self._pending = (result, name, image, label, version, layer)  # handed over once the layers are filled
        if self._live is None and self._image_kept(name, layer):
            # a small image's layers are added one per event-loop turn too (by _drain, as a large image's are
            # while it is predicted): made all in one turn they froze the viewer for about a second
            _, prediction, extra = result
            self._live = LiveLayers(self.viewer, name, image.shape[:2], whole=self._whole(prediction, extra, image))
        if self._live is None:  # the image was closed meanwhile: nothing to add
            self._complete()

    def _whole(self, prediction: Any, extra: Dict[str, Any], image: np.ndarray) -> Dict[str, Any]:
        """What a small image's layers show (:class:`LiveLayers` ``whole``), as ``show_prediction`` shows it."""
        labels = extra.get("instances")
        if labels is None:
            labels = prediction.labels
        umap = extra.get("uncertainty")
        if umap is None:
            umap = getattr(prediction, "uncertainty", None)
        if umap is None:
            umap = prediction.disagreement
        return dict(labels=labels, uncertainty=umap, display_range=extra.get("display_range") or (0.0, 1.0),
                    prediction=prediction, image=image, entropy=self.entropy_check.isChecked(),
                    branches=self.branches_check.isChecked(), fill=self._fill())

    def _fill(self) -> bool:
        """Whether new prediction layers are drawn filled: :attr:`fill_for` (the dock's "Fill glands" box), else
        outlines."""
        return bool(self.fill_for()) if self.fill_for is not None else False

    def _image_kept(self, name: str, layer: Any) -> bool:
        """True while the image layer ``layer`` a prediction was started on is still in the viewer under ``name``
        (not closed, nor replaced by another layer of that name)."""
        if name not in self.viewer.layers:
            return False
        if layer is None:
            return True
        return _unwrap(self.viewer.layers[name]) is _unwrap(layer)

    def _complete(self) -> None:
        (_, prediction, extra), name, image, label, version, layer = self._pending
        if not self._image_kept(name, layer):
            # closed or replaced while it was predicted: nothing is shown (its layers, if any, are removed)
            self._pending = None
            self._drop_live()
            self._timer.stop()
            self.last_message = (f"'{name}' was closed or replaced while it was predicted: nothing is shown "
                                 "(the prediction of a closed image is not kept).")
            self.show_status(self.last_message)
            if self._worker is None:
                self._end_run()
            return
        live, self._live, self._pending = self._live, None, None
        self._timer.stop()
        if name in self.viewer.layers and extra.get("image_hash"):
            # the image's store hash, so that opening a store does not hash it again on the GUI thread
            self.viewer.layers[name].metadata[HASH_KEY] = extra["image_hash"]
        shown = _unwrap(layer) if layer is not None else self.viewer.layers[name]
        self.closed_notes.pop(name, None)  # its prediction layer is made again
        self.predicted_before[name] = self.predicted.get(name)
        self.predicted[name] = (getattr(shown, "unique_id", None), label, time.time())
        self.notes[name] = " ".join(filter(None, (self._input_note, flat_warning(extra))))
        self._done_said = self.last_message = self.predicted_line(name)
        self._succeeded = True
        self.show_status(self.last_message)
        # the layers are handed over (live): filled while a large image was predicted, or made from a small image's
        # whole prediction one per event-loop turn
        self.finished.emit(PredictResult(name, image, prediction, model_label=label, model_version=version,
                                         live=live, **extra))
        if not self._dock_settled():  # the dock shows the rest in later event-loop turns: running until then
            self._settling = True
            self._timer.start()
        elif self._worker is None:  # the worker's finished signal came first
            self._end_run()

    def _dock_settled(self) -> bool:
        """False while the dock (:attr:`settled_for`) has steps of a hand-over left."""
        return bool(self.settled_for()) if self.settled_for is not None else True

    def _on_errored(self, exc: Exception) -> None:
        self._drop_live()
        self._fail(f"Prediction failed: {exc}")

    def _on_aborted(self) -> None:
        self.last_message = self._cancel_note or "Prediction cancelled."
        self.show_status(self.last_message)

    def _on_finished(self) -> None:
        self._worker = None
        self._run_for = None  # cancelled or failed: no result came
        if self._pending is None and not self._settling:
            self._drop_live()  # ended without a result (cancelled, or an error already reported)
            self._end_run()

    def _end_run(self) -> None:
        self._timer.stop()
        self.running_name = None
        self._cancelled = False
        self._cancel_note = None
        succeeded, self._succeeded = self._succeeded, False
        if self._dropped is not None:  # after the worker stopped: napari's removal runs the garbage collector
            dropped, self._dropped = self._dropped, None
            QTimer.singleShot(0, lambda: dropped.remove())  # a lambda: PyQt keeps bound methods only weakly
        self._update_predict()
        self.cancel_button.setEnabled(False)
        # QProgressBar repaints at once when its value changes, and with it the whole window, canvas included
        # (0.1-0.2 s of GUI time at the end of the hand-over on a busy 2-core machine): with updates off, the
        # bar is repainted at the next paint of the window instead
        self.progress.setUpdatesEnabled(False)
        try:
            if self.progress.maximum() == 0:
                self.progress.setRange(0, 1)
            self.progress.setValue(self.progress.maximum() if succeeded else 0)
        finally:
            self.progress.setUpdatesEnabled(True)
        self.progress.setVisible(False)  # idle: the status line says how the run ended
        self.idle.emit()
