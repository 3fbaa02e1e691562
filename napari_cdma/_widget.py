"""The napari-cdma dock: project store, Predict, review / correct / accept, Retrain, versions.

The dock is a composite of small panels (``_widget_predict``, ``_widget_display``,
``_widget_review``, ``_widget_retrain``, ``_widget_versions``); it owns the project store and the
per-image state they share, and wires them: a prediction fills the layers, the legend, the gland
table and the review list; a new current model re-runs Predict; the store summary, the accepted
regions and their layers follow every accept, withdraw, retrain and reopen.

Corrections are never lost: a prediction is written over the image's prediction layer only when
that layer holds no edit the store does not have (an edit made inside an accepted box after it was
accepted counts); otherwise it goes to a new layer named after the model ("<image> prediction
(v0003)") and the status line says so. Accepted corrections stay on screen: every prediction of the
current model has the store's accepted masks of its image pasted inside their boxes, and the accepted
boxes are kept above the prediction layers.

Trying a version (any model other than the store's current one and the one that made the image's
prediction layer) shows that model's own prediction, nothing pasted, in its own "(version)" layer: the
image's prediction layer and its accepted corrections are not touched.

The review list belongs to the image chosen in Predict (the image on screen): choosing another image
shows that image's regions, or none, and the list empties when the image layer is removed.

The store keeps the latest prediction of each image (written to the image's own prediction layer
while a store is open): the model's labels, the uncertainty map, the model version and the time, with
the image itself, saved off the GUI thread. Reopening the store shows them again as the image's
prediction and uncertainty layers (accepted corrections pasted over them, as after Predict), ready
for review and Accept; the store summary names the model that made each one and says when that is
no longer the current model. Edits not accepted are not kept unless the user presses "Keep
unaccepted edits" (then they come back on reopen, still not accepted); the summary says so.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Deque, Dict, Generator, Iterator, List, Optional, Sequence, Set, Tuple

import napari.viewer
import numpy as np
from qtpy.QtCore import QEvent, QSize, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QApplication,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from ._exit import install as _install_exit_hook
from ._layers import (
    IMAGE_KEY,
    ROLE_KEY,
    Reviewed,
    ids_like,
    image_from_layer,
    is_derived,
    names_for,
    not_yet_accepted,
    paste_corrections,
    raise_overlays,
    show_accepted,
    show_prediction,
    show_reviewed,
    side_suffix,
    source_path,
    uncertainty_values,
    unsaved_edits,
    unwrap_layer,
)
from ._messages import show_message
from ._scroll_anchor import ScrollAnchor
from ._shapes_keepalive import keep_removed_shapes_visuals
from ._widget_display import LIVE_GLANDS_PIXELS, DisplayPanel
from ._widget_predict import BUNDLED, PredictPanel, PredictResult
from ._widget_retrain import RetrainPanel
from ._widget_review import (
    SLIDE_META_KEYS,
    ReviewPanel,
    focus_owner,
    of_a_slide,
    scene_camera,
    show_review_outlines,
    slide_on_screen,
)
from ._widget_slide import SlidePanel
from ._widget_store import (
    Restore,
    StoreSummary,
    open_image_hashes,
    open_or_ask,
    read_restore,
    redundant_copies,
    regions_by_image,
    store_overlays,
    stored_name,
    stored_prediction_steps,
    untag_prediction,
    untag_store_overlay,
)
from ._widget_versions import VersionsPanel
from .project.store import MAX_FULL_IMAGE_PIXELS, PredictionRecord, ProjectStore, RegionRecord, StoreError

logger = logging.getLogger(__name__)
_install_exit_hook()  # running workers quit before Python's teardown when a script exits (napari_cdma._exit)

#: The last latest-prediction save started by any dock of this process (each save waits for the one
#: before it, so the last prediction made is the one kept; opening a store waits for it).
_last_saver: Optional[threading.Thread] = None
#: Delay from the last step of a large image's hand-over to its save (and to the creation of the store the
#: first prediction makes, on the GUI thread: 50-60 ms of GUI time): the store's writer (zarr) holds the GIL
#: for long stretches, and the GUI thread, which gives the GIL up at each OpenGL and Qt call of a redraw,
#: waited for it at each: with the save started at the hand-over the event loop stalled 126-386 ms in the
#: 2 s after it, 58 ms without a save (6000 x 6000 image, load 3-4). Started after the hand-over's redraws,
#: it slows only the redraws a user asks for meanwhile.
SAVE_DELAY_MS = 300

PROJECT_ENV = "NAPARI_CDMA_PROJECT"
KEEP_TIP = ("Keep in the project store the edits of each prediction layer that are not accepted yet, so that they "
            "come back when the store is reopened (they are not used for training until accepted)")
#: The dock's width when it opens (px): beside napari's layer list in its default window (about 1089 px
#: wide) the canvas keeps about 500 px.
DOCK_WIDTH = 280


def slide_display_note(slide_name: str) -> str:
    """What the Uncertainty and glands panel says while the whole slide ``slide_name`` hides the image chosen."""
    return (f"The whole slide '{slide_name}' is on screen: its uncertainty and glands are in the Whole slide panel "
            "(hide or close it to see the image's here).")


def default_project_path() -> Path:
    """Project store used when none is chosen: ``$NAPARI_CDMA_PROJECT`` or ~/napari-cdma-project."""
    return Path(os.environ.get(PROJECT_ENV) or Path.home() / "napari-cdma-project")


class EditHistory:
    """What the dock has seen of a prediction layer's edits: napari's undo items its paint events carried (newest
    last) and those undone since, to tell an undo or a redo from another redraw of the layer without napari's
    private history; ``blind`` once the layer's data was replaced (napari keeps its undo history, whose items then
    no longer match the data: every redraw is then counted in full)."""

    #: items kept, as napari's Labels keeps (its undo history's length)
    LIMIT = 100

    def __init__(self) -> None:
        self.done: Deque[List[Any]] = deque(maxlen=self.LIMIT)
        self.undone: List[List[Any]] = []
        self.blind = False

    def painted(self, item: Sequence[Any]) -> None:
        """A new edit (napari drops what was undone, as here)."""
        self.done.append(list(item))
        self.undone.clear()

    def moved(self, data: Any) -> Tuple[int, Optional[List[Any]]]:
        """After a redraw of the layer: (-1, item) if the newest edit was undone (its first change holds what it
        replaced again), (1, item) if the newest undone one was redone (its last change holds what it wrote), else
        (0, None). Reads the data at those pixels only."""
        if self.done and self.done[-1] and _holds(data, self.done[-1][0], before=True):
            item = self.done.pop()
            self.undone.append(item)
            return -1, item
        if self.undone and self.undone[-1] and _holds(data, self.undone[-1][-1], before=False):
            item = self.undone.pop()
            self.done.append(item)
            return 1, item
        return 0, None


def _holds(data: Any, atom: Any, before: bool) -> bool:
    """Whether a Labels layer's ``data`` holds, at the pixels one of napari's edit atoms changed, the values from
    before it (``before``) or those it wrote."""
    try:
        if hasattr(atom, "slice_key"):  # a mask-based edit (brush, eraser, fill, polygon)
            region = np.asarray(data[tuple(atom.slice_key)])
            values = region if atom.mask is None else region[np.asarray(atom.mask, bool)]
            want = atom.old_values if before else atom.new_value
        else:  # (indices, values before, values after): Labels.data_setitem
            indices, old, new = atom
            values = np.asarray(data[tuple(indices)])
            want = old if before else new
        return bool(np.array_equal(values, np.broadcast_to(np.asarray(want), values.shape)))
    except (TypeError, ValueError, IndexError, AttributeError):
        return False


@dataclass
class ImageState:
    """What the dock remembers about a predicted image.

    Attributes:
        image: uint8 (H, W, 3) model input.
        original_labels: the model's labels (one per gland) before any user edit (H, W), as
            written to the image's prediction layer.
        model_version: project model version that predicted it (None for a checkpoint file).
        image_hash: the store's hash of ``image``.
        others: predictions written to other layers (the prediction layer held unaccepted edits, or
            a version was tried): layer name -> (original labels, model version).
        model_label: the model choice that made the prediction layer ("bundled", "v0002", a file).
        ranked: the review regions of the latest prediction, most uncertain first.
        reviewed: per prediction layer, what it held in each box when the box was accepted or the
            store's corrections were pasted into it (:func:`~napari_cdma._layers.unsaved_edits`).
        unsaved_px: per prediction layer, its pixels :meth:`unsaved` counts, kept up to date edit by edit
            (:meth:`edit_delta`, :meth:`note_reviewed`) so that no edit walks the whole layer; a layer not in it
            is counted in full when asked (the dock's :meth:`CdmaWidget._unsaved_count`).
        kept: prediction layers whose edits not accepted are kept in the store as they are now (*Keep unaccepted
            edits* kept them, or the store gave them back at a reopen): nothing for Keep, or a close, to write
            again until the layer is edited (walk: Keep stayed enabled after keeping, and every close rewrote them).
    """

    image: np.ndarray
    original_labels: np.ndarray
    model_version: Optional[str]
    image_hash: str = ""
    others: Dict[str, Tuple[np.ndarray, Optional[str]]] = field(default_factory=dict)
    model_label: str = ""
    ranked: List[Tuple[float, Tuple[int, int, int, int]]] = field(default_factory=list)
    reviewed: Dict[str, List[Reviewed]] = field(default_factory=dict)
    unsaved_px: Dict[str, int] = field(default_factory=dict)
    kept: Set[str] = field(default_factory=set)

    @property
    def model_name(self) -> str:
        """How the dock names the model behind the prediction layer ("bundled", "v0002", a file): its version, else
        its label (a checkpoint file's name; labels of older stores may carry the chooser's "(current)")."""
        return str(self.model_version) if self.model_version else self.model_label  # not "v0001 (current)"

    def original_for(self, layer_name: str) -> Tuple[np.ndarray, Optional[str]]:
        """The model's labels and version behind a prediction layer (the main one by default)."""
        return self.others.get(layer_name, (self.original_labels, self.model_version))

    def note_reviewed(self, layer_name: str, bbox: Tuple[int, int, int, int], inside: Optional[np.ndarray],
                      data: np.ndarray) -> None:
        """Remember what a prediction layer holds in ``bbox`` now that it is accepted (the store has it); its count
        of unsaved pixels follows, counted in the box only."""
        y0, x0, y1, x1 = bbox
        data = np.asarray(data)
        counted = layer_name in self.unsaved_px
        before = self._unsafe_in(layer_name, bbox, data) if counted else None
        self.reviewed.setdefault(layer_name, []).append(
            (tuple(bbox), None if inside is None else np.array(inside, bool), np.array(data[y0:y1, x0:x1])))
        if counted:
            after = self._unsafe_in(layer_name, bbox, data)
            if before is None or after is None:
                self.unsaved_px.pop(layer_name, None)  # counted in full when next asked
            else:
                self.unsaved_px[layer_name] += after - before

    def unsaved(self, layer_name: str, data: np.ndarray) -> int:
        """Pixels of a prediction layer that the store does not have and overwriting it would lose."""
        return unsaved_edits(data, self.original_for(layer_name)[0], self.reviewed.get(layer_name, []))

    def safe_box(self, layer_name: str, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """What a prediction layer may hold in a box without anything to lose there, as :meth:`unsaved` sees it:
        the model's labels, or inside a box accepted or pasted since what the layer held then (a later one wins)."""
        original = self.original_for(layer_name)[0]
        h, w = original.shape[:2]
        out = np.array(original[y0:y1, x0:x1])
        for (by0, bx0, by1, bx1), inside, crop in self.reviewed.get(layer_name, []):
            crop = np.asarray(crop)
            if crop.shape != (by1 - by0, bx1 - bx0) or by1 > h or bx1 > w:  # skipped by unsaved_edits too
                continue
            iy0, ix0, iy1, ix1 = max(y0, by0), max(x0, bx0), min(y1, by1), min(x1, bx1)
            if iy0 >= iy1 or ix0 >= ix1:
                continue
            src = crop[iy0 - by0:iy1 - by0, ix0 - bx0:ix1 - bx0]
            dst = out[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]  # a view: written in place
            if inside is None:
                dst[...] = src
            else:
                m = np.asarray(inside, bool)[iy0 - by0:iy1 - by0, ix0 - bx0:ix1 - bx0]
                dst[m] = src[m]
        return out

    def _unsafe_in(self, layer_name: str, bbox: Tuple[int, int, int, int], data: np.ndarray) -> Optional[int]:
        """:meth:`unsaved` counted inside ``bbox`` only (None when the layer is not the model's shape)."""
        original = self.original_for(layer_name)[0]
        if np.shape(data) != original.shape:
            return None
        h, w = original.shape[:2]
        y0, x0, y1, x1 = max(0, bbox[0]), max(0, bbox[1]), min(h, bbox[2]), min(w, bbox[3])
        if y0 >= y1 or x0 >= x1:
            return 0
        return int(np.count_nonzero(np.asarray(data[y0:y1, x0:x1]) != self.safe_box(layer_name, y0, x0, y1, x1)))

    def edit_delta(self, layer_name: str, atoms: Sequence[Any]) -> Optional[int]:
        """How much napari's edit ``atoms`` (a Labels layer's undo item: what a paint event carries) changed
        :meth:`unsaved` of a prediction layer, counted over the pixels they changed only, from the values each
        atom records before and after it; None when they are not what napari 0.5+ records for a 2-D layer (then
        count the layer in full)."""
        original = self.original_for(layer_name)[0]
        if original.ndim != 2:
            return None
        h, w = original.shape
        total = 0
        try:
            for atom in atoms:
                if hasattr(atom, "slice_key"):  # a mask-based edit: brush, eraser, fill, polygon
                    if len(atom.slice_key) != 2:
                        return None
                    (y0, y1, sy), (x0, x1, sx) = (k.indices(n) for k, n in zip(atom.slice_key, (h, w), strict=True))
                    if sy != 1 or sx != 1:
                        return None
                    safe = self.safe_box(layer_name, y0, x0, y1, x1)
                    if atom.mask is not None:
                        safe = safe[np.asarray(atom.mask, bool)]
                    old = np.asarray(atom.old_values)
                else:  # (indices, values before, values after): Labels.data_setitem
                    indices, old, new_values = atom
                    if len(indices) != 2:
                        return None
                    ys, xs = (np.asarray(i, np.intp).ravel() for i in indices)
                    if not ys.size:
                        continue
                    y0, x0 = int(ys.min()), int(xs.min())
                    safe = self.safe_box(layer_name, y0, x0, int(ys.max()) + 1, int(xs.max()) + 1)[ys - y0, xs - x0]
                    old = np.asarray(old)
                new = np.asarray(atom.new_value if hasattr(atom, "slice_key") else new_values)
                if old.shape != safe.shape:
                    return None
                total += (int(np.count_nonzero(np.broadcast_to(new, safe.shape) != safe))
                          - int(np.count_nonzero(old != safe)))
        except (TypeError, ValueError, IndexError, AttributeError):
            return None
        return total


class CdmaWidget(QWidget):
    """CDMA segmentation dock widget.

    Args:
        napari_viewer: the viewer (injected by napari).
        store_path: project store directory (default: :func:`default_project_path`; opened at
            start only if it already exists, otherwise created on first use).
        parent: parent widget.
    """

    #: (image name, error message or "") when a latest prediction was saved in the store (emitted
    #: from the saving thread, delivered on the GUI thread)
    prediction_saved = Signal(str, str)

    def __init__(self, napari_viewer: napari.viewer.Viewer, store_path: Optional[os.PathLike] = None,
                 parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        keep_removed_shapes_visuals(napari_viewer)  # removing a Shapes layer can crash napari 0.9 (see the module)
        self._store: Optional[ProjectStore] = None
        #: image name -> what the store summary says about its prediction restored from the store
        self.restored_predictions: Dict[str, str] = {}
        #: what a store switch did to the previous store's layers (and a Predict it cancelled), said in the Predict
        #: status line after the line about the image chosen once the new store's layers are shown
        self._switch_note = ""
        self.states: Dict[str, ImageState] = {}
        self.image_names: Dict[str, str] = {}  # store image hash -> image layer name
        self.last_image: Optional[str] = None
        #: the image to predict again once the run in progress has stopped (a new current model came meanwhile)
        self._refresh_after_predict: Optional[str] = None
        self._turns: List[Any] = []  # GUI work left of a large image's hand-over, one step per event-loop turn
        #: a large image's save (and the store's creation, when its first prediction makes it), left at its
        #: hand-over for :meth:`_start_deferred_save`, or a flush
        self._pending_save: Optional[Any] = None
        self._restoring: Optional[Restore] = None  # a reopened store's layers being read or added
        #: a layer is being removed (napari's "removing" event until the dock's "removed" handler): the Predict
        #: chooser moving to another image meanwhile does not add that image's review layers (walk: deleting every
        #: layer of a reopened store re-added "<image> review tiles" of a hidden image the chooser moved to)
        self._removing = False
        #: review-overlay layers (names) the user removed while their image stayed open: following the image again
        #: does not bring them back (a new Predict of the image does)
        self._dismissed: set = set()
        #: the Uncertainty and glands panel gave way for a whole slide on screen (:meth:`_display_follows_screen`):
        #: the image chosen in Predict is described again once no slide is
        self._display_gave_way = False
        #: prediction layer (its unique id: the dock's viewer hands out a new proxy of a layer at each look-up) ->
        #: what the dock has seen of its edits (:meth:`_track`: they are counted as they are made)
        self._histories: Dict[Any, EditHistory] = {}
        #: accepted-corrections layers (unique ids) painted or given new data since they were added: only those may
        #: hold the user's edits when another store is opened (:meth:`_leave_store` reads the store for them only)
        self._touched_corrections: set = set()
        self.destroyed.connect(lambda *_: setattr(self, "_restoring", None))  # the viewer closed: stop restoring

        self.store_edit = QLineEdit(str(store_path or default_project_path()))
        self.store_edit.setToolTip("Folder of the project store: corrections and model versions")
        browse = QPushButton("...")
        browse.setMaximumWidth(30)
        open_button = QPushButton("Open")
        self.store_label = QLabel("")
        self.store_label.setWordWrap(True)
        self.store_label.setToolTip("Edits made in a prediction layer are kept in the store only when you press "
                                    "'Keep unaccepted edits' (not used for training) or accept them (used for "
                                    "training).")
        #: the summary follows the layers: a reopened image closed is no longer counted (walk)
        self.summary = StoreSummary(self.viewer, self.store_label)

        self.predict_panel = PredictPanel(self.viewer, self._model_path_for)
        # the Predict status line of a chosen image restored from the store names its model and time
        self.predict_panel.described_for = self._restored_note
        # walk 22: for 2 s of a reopen the restored prediction was on screen while the line said "not predicted yet"
        self.predict_panel.restoring = self._being_restored
        self.predict_panel.corrections_for = self._accepted_corrections  # read in the predict worker
        self.display_panel = DisplayPanel(self.viewer)
        self.predict_panel.fill_for = self.display_panel.fill_check.isChecked
        self.predict_panel.settled_for = self.handed_over
        self.review_panel = ReviewPanel(self.viewer, lambda: self.store, self.states.get,
                                        image_label=self._region_image_label)
        # an open store only: Retrain and Roll back must not create one (the first Predict or Accept does)
        self.retrain_panel = RetrainPanel(self._open_store_only, before_start=self._add_open_images)
        self.retrain_panel.image_text = self._retrain_image_text
        self.versions_panel = VersionsPanel(self._open_store_only)
        self.slide_panel = SlidePanel(self.viewer, lambda: self.store, self._slide_model)

        store_row = QHBoxLayout()
        store_row.addWidget(self.store_edit, 1)
        store_row.addWidget(browse)
        store_row.addWidget(open_button)
        project_box = QGroupBox("Project store")
        pl = QVBoxLayout(project_box)
        pl.addLayout(store_row)
        pl.addWidget(self.store_label)
        self.keep_edits_button = QPushButton("Keep unaccepted edits")
        self._update_keep_button()
        pl.addWidget(self.keep_edits_button)

        inner = QWidget()
        col = QVBoxLayout(inner)
        self._boxes: Dict[str, QGroupBox] = {}  # panel title -> its box in the scrolled dock
        col.addWidget(project_box)
        for title, panel in (("Predict", self.predict_panel), ("Uncertainty and glands", self.display_panel),
                             ("Review, correct, accept", self.review_panel), ("Whole slide", self.slide_panel),
                             ("Retrain", self.retrain_panel), ("Model versions", self.versions_panel)):
            box = QGroupBox(title)
            QVBoxLayout(box).addWidget(panel)
            col.addWidget(box)
            self._boxes[title] = box
        col.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # content follows dock width
        scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self._scroll = scroll  # its content's minimum width is the dock's (minimumSizeHint)
        # the control last pressed stays put on screen when a panel above it grows or shrinks (walk: the Display
        # panel's slide gland table pushed the Whole slide panel's buttons 274 px down at the end of a job)
        self._anchor = ScrollAnchor(scroll)

        browse.clicked.connect(self._browse_store)
        # asks before creating a store where there is none (a mistyped path made a new empty store: walk)
        open_button.clicked.connect(lambda: self.open_store(self.store_edit.text(), create=None))
        self.keep_edits_button.clicked.connect(lambda *_: self.keep_edits())  # not its "checked" flag
        # the Retrain box sits far down the dock: its progress, ETA and loss curve are scrolled into view when
        # it starts (walk: they were out of sight)
        self.retrain_panel.retrain_button.clicked.connect(lambda: self.show_panel("Retrain"))
        # and its verdict when the new model is registered (re-walk: below the visible part of the dock)
        self.retrain_panel.model_added.connect(lambda _v: self.show_widget(self.retrain_panel.result_label,
                                                                           self.retrain_panel.keep_button))
        self.versions_panel.rollback_button.clicked.connect(lambda: self.show_panel("Model versions"))
        self.predict_panel.finished.connect(self._on_predicted)
        self.predict_panel.idle.connect(self._on_predict_idle)
        self.predict_panel.cancel_button.clicked.connect(lambda: setattr(self, "_refresh_after_predict", None))
        self.predict_panel.image_choice.changed.connect(self._follow_image)
        # after the panel's own handler (connected first) has shown the region on its image
        self.review_panel.region_list.itemClicked.connect(lambda _item: self._choose_shown_region_image())
        self.viewer.layers.events.removing.connect(self._on_layer_removing)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.retrain_panel.model_changed.connect(self._on_model_changed)
        self.retrain_panel.model_added.connect(lambda _v: self._sync_from_store())
        self.versions_panel.model_changed.connect(self._on_model_changed)
        self.review_panel.regions_changed.connect(self._sync_from_store)
        self.review_panel.regions_changed.connect(self._refresh_glands)
        self.slide_panel.regions_changed.connect(self._sync_from_store)
        self.slide_panel.glands_numbered.connect(self._show_slide_glands)  # a slide's glands: the table lists them
        if callable(getattr(self.slide_panel, "sync", None)):  # an accept or withdraw here reaches the slide now
            self.review_panel.regions_changed.connect(self.slide_panel.sync)
        self.prediction_saved.connect(self._on_prediction_saved)

        if Path(self.store_edit.text()).expanduser().is_dir():
            self.open_store(self.store_edit.text(), quiet=True)
        else:  # said, not left blank (pathologist walk)
            self.store_label.setText("No project store there yet: the first Predict or Accept creates it "
                                     "(or choose another folder and press Open; it asks before creating one).")

    def showEvent(self, event: Any) -> None:
        """The first time the dock shows, the view is fitted again: docking it narrows the canvas, which
        napari does not refit, so an image opened before it was cropped (pathologist walk)."""
        super().showEvent(event)
        if not getattr(self, "_shown_once", False):
            self._shown_once = True
            if len(self.viewer.layers) and not self.states:
                QTimer.singleShot(0, self._fit_view)

    def keep_edits_at_close(self, image: str) -> Dict[str, int]:
        """As *Keep unaccepted edits* for ``image`` alone, when a store is open and its prediction layer holds
        edits not accepted; returns what was kept (image name -> pixels). Called as the image or its prediction
        layer is about to be removed (:meth:`_on_layer_removing`): the viewer closing removes every layer, and
        177 edited pixels were gone after a close (pathologist re-walk). Whichever of the two goes first keeps
        the edits, once. A failure is logged: the removal goes on."""
        state, main = self.states.get(image), names_for(image)["prediction"]
        if self._store is None or state is None or not state.image_hash or main not in self.viewer.layers:
            return {}
        try:
            if not self._needs_keep(state, self.viewer.layers[main]):
                return {}
            kept = self.keep_edits([image])
        except Exception:  # a removal must not fail; the edits' layer is going, so say why loudly
            logger.exception("could not keep the unaccepted edits of '%s' as it closed", image)
            return {}
        if kept:
            logger.info("'%s' is closing: kept %d edited px", image, kept.get(image, 0))
        return kept

    def minimumSizeHint(self) -> QSize:
        """As narrow as the panels allow (they wrap and stack for a narrow dock), no narrower: the scroll area
        has no horizontal scrollbar, so a narrower dock would clip them."""
        scroll = self._scroll
        if not scroll.widget().isVisible():  # not laid out in the viewer's style yet: its sizes are not those
            return super().minimumSizeHint()
        width = (scroll.widget().minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width()
                 + 2 * scroll.frameWidth())
        return QSize(width, super().minimumSizeHint().height())

    def sizeHint(self) -> QSize:
        """DOCK_WIDTH wide, or the minimum if wider (napari opens a dock at its size hint): at napari's default
        window the canvas keeps about 500 px beside the dock and the layer list; the user can widen the dock."""
        return QSize(max(self.minimumSizeHint().width(), DOCK_WIDTH), super().sizeHint().height())

    # ------------------------------------------------------------------ store
    def show_panel(self, title: str) -> None:
        """Scroll the dock so that the panel of that title (its box's top) is in view."""
        box = self._boxes.get(title)
        if box is not None:
            self.show_widget(box)

    def show_widget(self, widget: QWidget, until: Optional[QWidget] = None) -> None:
        """Scroll the dock so that ``widget`` (its top, when taller than the view) is in view, and down to
        ``until`` (a widget below it, when shown) as far as both fit, in the next event-loop turn, once the
        layouts have taken the widgets' new sizes (walk 20: a retrain's verdict, set just before, was still one
        line high, and the dock showed that line at its bottom edge with *Keep new model anyway* out of view)."""
        self._anchor.release()  # nothing kept in place against this scroll (napari_cdma._scroll_anchor)

        def scroll() -> None:
            QApplication.sendPostedEvents(None, QEvent.Type.LayoutRequest)
            if until is not None and until.isVisible():
                self._scroll.ensureWidgetVisible(until, 0, 0)
            self._scroll.ensureWidgetVisible(widget, 0, 0)

        QTimer.singleShot(0, scroll)

    def _open_store_only(self) -> ProjectStore:
        """The open project store; a RuntimeError saying what to do when none is open (nothing is created)."""
        if self._store is None:
            raise RuntimeError("no project store is open: accept a corrected region first (the first Predict or "
                               "Accept creates the store), or open one above")
        return self._store

    @property
    def store(self) -> ProjectStore:
        """The open project store, opening (creating) the one named in the path field if needed."""
        if self._store is None:
            self.open_store(self.store_edit.text())
            if self._store is None:
                raise RuntimeError(self.store_label.text())
        return self._store

    def _add_open_images(self, store: ProjectStore) -> None:
        """Keep every predicted image as unlabelled tissue for the semi-supervised retraining.

        The store skips images it already holds (by content hash) and refuses slide-sized ones,
        whose tissue around accepted regions it keeps anyway.
        """
        for state in self.states.values():
            try:
                store.add_unlabelled_image(state.image)
            except ValueError:
                pass

    def open_store(self, path: os.PathLike, quiet: bool = False, select_current: bool = True,
                   create: Optional[bool] = True) -> Optional[ProjectStore]:
        """Open (or create) a project store and show its regions, versions and current model.

        Args:
            path: store directory.
            quiet: do not pop up an error notification if it cannot be opened.
            select_current: select the store's current model in the Predict chooser (False keeps
                the user's choice: a store created to keep a prediction just made).
            create: where there is no store: True creates one (code: the first Predict or Accept), None asks the
                user first (Open, Browse), False creates none.

        Returns:
            The ``ProjectStore``, or None if it could not be opened or was not created (the reason is shown; the
            store open before stays open).
        """
        path = Path(path).expanduser()
        try:
            store = open_or_ask(path, self, create=create)
        except Exception as exc:
            self.store_label.setText(f"Cannot open project store {path}: {exc}")
            if not quiet:
                from napari.utils.notifications import show_error

                show_error(self.store_label.text())
            return None
        if store is None:  # none there and not created: nothing written, the open store stays open
            if self._store is not None:
                self.store_edit.setText(str(self._store.root))
            self.summary.set_declined(path, self._store.root if self._store is not None else None)
            return None
        previous = self._store
        switched = previous is not None and Path(previous.root).resolve() != Path(store.root).resolve()
        cancelled = self._stop_predict(previous, store) if switched else None
        self.flush_prediction_saves(30.0)  # a prediction still being written (to this store or the previous one)
        self._switch_note = ""
        if switched:  # before the switch: an edited corrections layer is told from the previous store's regions
            detached = self._leave_store(previous)
            if cancelled:  # the status line says both
                self.predict_panel.say_cancelled(f"{cancelled} {detached}" if detached else cancelled)
            # said after what the status line says of the image chosen, once the new store's layers are shown
            self._switch_note = f"{cancelled} {detached}".strip() if cancelled else detached
        self._store = store
        self.store_edit.setText(str(path))
        self.restored_predictions.clear()
        self.summary.clear()
        self._sync_from_store(select_current=select_current)
        if switched:
            self._relist_review(previous)
        self._start_restore(store)
        return store

    def _stop_predict(self, previous: ProjectStore, store: ProjectStore) -> Optional[str]:
        """Another store is being opened: a Predict whose result has not been handed over yet is cancelled (it read
        ``previous``'s accepted corrections to paste them in: handed over after the switch, it became the new
        store's prediction with them, and the new store's Accept stored them as its own); nothing edited is lost,
        the user presses Predict again for ``store``. One handed over whose last steps are left for later
        event-loop turns is ``previous``'s: those steps are done now, before its layers are detached. Returns what
        the Predict panel's status line says of a cancel, None when none was cancelled."""
        panel = self.predict_panel
        self._refresh_after_predict = None  # a re-run asked for a model of the previous store
        if self._turns:
            turns, self._turns = self._turns, []
            for image_name, step in turns:
                if image_name in self.viewer.layers:
                    step()
            self._start_deferred_save()  # done by the flush that follows
        if not panel.result_pending():
            return None
        note = (f"Predict of '{panel.running_name}' cancelled: the project store {store.root} was opened while it "
                f"ran (it would have shown the accepted corrections of {previous.root}). Press Predict to predict "
                "it for this store.")
        panel.cancel(note)
        return note

    def _leave_store(self, previous: ProjectStore) -> str:
        """Another store is being opened: close the layers that show ``previous``'s accepted regions and accepted
        corrections (walk: they stayed on the canvas, the new store's summary saying 0 regions). The images stay,
        unchanged; the prediction layers too, as the user's own, no longer the images' predictions, their edits not
        accepted kept in ``previous`` first (:meth:`_detach_predictions`); an accepted-corrections layer
        the user edited stays too, as a plain labels layer named after ``previous``
        (:func:`~napari_cdma._widget_store.untag_store_overlay`). The reopen of the new store draws its own
        regions over the images it knows. Only metadata is read, and the previous store's regions of a corrections
        layer painted or redrawn since it was added (:attr:`_touched_corrections`): cheap on the GUI thread, but for
        the edits kept (written as *Keep unaccepted edits* writes them). Returns what the Predict panel's status line
        says of the layers detached ("" if none)."""
        self._restoring = None  # a reopen of the previous store still adding layers stops here
        edited, kept = self._keep_before_leaving()  # first: keeping reads the store again and redraws its overlays
        for layer in store_overlays(self.viewer):
            meta = layer.metadata or {}
            image = meta.get(IMAGE_KEY)
            if (meta.get(ROLE_KEY) == "corrections" and image is not None
                    and layer.unique_id in self._touched_corrections and self._corrections_edits(image, layer)):
                untag_store_overlay(layer, previous.root)
                continue
            self.viewer.layers.remove(layer)
            self._dismissed.discard(layer.name)  # removed by the dock, not by the user: may be made again
            self._touched_corrections.discard(layer.unique_id)
        self.review_panel.forget_shown()  # the frame of a region shown is of a region of ``previous``
        return self._detach_predictions(previous, edited, kept)

    def _keep_before_leaving(self) -> Tuple[List[str], Dict[str, int]]:
        """Keep the edits not accepted of each image's prediction layer in the store being left (as *Keep unaccepted
        edits*, as at a close: :meth:`keep_edits_at_close`), so that reopening it shows them. Returns the images whose
        prediction layer holds such edits, and image name -> pixels kept. A failure is logged: the switch goes on,
        the edits stay in their layer."""
        layers = self.viewer.layers
        edited = [name for name, state in self.states.items() if state.image_hash and (
            (main := names_for(name)["prediction"]) in layers and self._needs_keep(state, layers[main]))]
        if not edited:
            return [], {}
        try:
            return edited, self.keep_edits(edited)
        except Exception:
            logger.exception("could not keep the unaccepted edits of %s in the store being left", edited)
            return edited, {}

    def _detach_predictions(self, previous: ProjectStore, edited: List[str], kept: Dict[str, int]) -> str:
        """Another store is being opened: each image's prediction layers (its own and those written aside) are the
        previous store's (its latest prediction, with its accepted corrections pasted in, made or restored while it
        was open). They stay, their pixels and edits unchanged, as plain labels layers of the user's named
        "<layer>, from <old store>" (:func:`~napari_cdma._widget_store.untag_prediction`), and the dock forgets
        them: the new store's Accept, Keep unaccepted edits and review list do not use them (walk: store A's
        corrections went into store B as if accepted there), and the new store's reopen shows its own latest
        prediction of the image, if it has one (else Predict makes one, with the new store's corrections). Each
        image's review tiles (of that prediction) go. The Predict panel's status line says what was renamed, and
        where the edits of the images ``edited`` are (``kept``: those :meth:`_keep_before_leaving` kept); returns
        it ("" when nothing was renamed)."""
        layers = self.viewer.layers
        renamed: List[str] = []
        moved: List[str] = []  # drawn regions not accepted
        for name, state in list(self.states.items()):
            for layer_name in [names_for(name)["prediction"], *state.others]:
                if layer_name in layers and (layers[layer_name].metadata or {}).get(IMAGE_KEY) == name:
                    renamed.append(untag_prediction(layers[layer_name], previous.root, layers, state.image_hash))
            # its maps too (uncertainty, disagreement, ...): shown on, they looked like the new store's (re-walk);
            # the uncertainty as the model made it, tinted in the previous store's regions too (the dock no longer
            # follows that store's accepts and withdrawals for it)
            for role, layer_name in names_for(name).items():
                if role not in ("prediction", "tiles", "accepted", "corrections", "drawn") and layer_name in layers \
                        and (layers[layer_name].metadata or {}).get(IMAGE_KEY) == name:
                    show_reviewed(layers[layer_name], {})
                    untag_prediction(layers[layer_name], previous.root, layers, state.image_hash, role)
            # its rectangles not accepted were drawn over the store left's corrections: accepted in the new store
            # they stored its uncorrected prediction (walk 17)
            drawn = names_for(name)["drawn"]
            if drawn in layers and len(layers[drawn].data):
                moved.append(untag_prediction(layers[drawn], previous.root, layers, state.image_hash, "drawn"))
            self.display_panel.forget(name)
            tiles = names_for(name)["tiles"]
            if tiles in layers:
                layers.remove(tiles)
                self._dismissed.discard(tiles)  # removed by the dock: made again for the new store's prediction
            del self.states[name]
            self.restored_predictions.pop(name, None)
            self.predict_panel.predicted.pop(name, None)  # its prediction is the previous store's, detached
        self._update_keep_button()
        if not renamed and not moved:
            return ""
        message = (f"Prediction layer(s) of {previous.root} renamed " + ", ".join(f"'{n}'" for n in renamed)
                   + ": your own labels now, not used by the new store's Accept, Keep unaccepted edits or review list."
                   if renamed else "")
        if moved:
            message += (" Rectangles drawn and not accepted hidden, as " + ", ".join(f"'{n}'" for n in moved)
                        + ": Accept drawn no longer takes them.")
        message = message.strip()
        if kept:
            message += (" The edits not accepted of " + ", ".join(f"'{n}'" for n in kept)
                        + f" were kept in {previous.root}: reopening it shows them.")
        lost = [n for n in edited if n not in kept]
        if lost:
            message += (" The edits not accepted of " + ", ".join(f"'{n}'" for n in lost) + " could not be kept in "
                        f"{previous.root}: they are only in the renamed layer.")
        self.predict_panel.last_message = message
        show_message(self.predict_panel.status, message)
        return message

    def _relist_review(self, previous: ProjectStore) -> None:
        """The review list and each image's review-tiles layer after a store switch: the regions of the predictions on
        screen not accepted in the store now open (those accepted in ``previous`` only are listed again), and a
        status saying which store it is listed for; the list is emptied, saying why, when the image listed has no
        prediction on screen."""
        layers, review = self.viewer.layers, self.review_panel
        regions = regions_by_image(self.store.regions())
        for name, state in self.states.items():
            tiles = names_for(name)["tiles"]
            if tiles in layers and name in layers:
                boxes = [r.bbox for r in regions.get(state.image_hash, [])]
                show_review_outlines(self.viewer, name, not_yet_accepted(state.ranked, boxes))
        chosen = getattr(self.predict_panel.image_layer, "name", None)
        name = review.image_name or chosen
        state = self.states.get(name) if name is not None else None
        where = f"Listed for the project store {self.store.root} (the regions accepted in {previous.root} " \
                "count only there)."
        if state is not None and name in layers and names_for(name)["prediction"] in layers:
            boxes = [r.bbox for r in regions.get(state.image_hash, [])]
            review.set_tiles(name, not_yet_accepted(state.ranked, boxes))
            message = f"{review.last_message} {where}"
        else:
            review.clear_tiles(name)
            message = f"Project store {self.store.root} opened: {review.last_message}"
        review.last_message = message
        show_message(review.status, message)

    def _start_restore(self, store: ProjectStore) -> None:
        """Show the store's images, accepted regions and latest predictions: the stored pixels are read on
        a worker thread, the layers added one per event-loop turn (:class:`Restore`); :meth:`settled` is
        False until they are all shown."""
        from ._workers import create_worker

        try:
            job = Restore(self.viewer, store, open_image_hashes(self.viewer))
        except Exception as exc:  # the store opened; a damaged image must not stop the dock
            self._end_restore(store, None, exc)
            return
        self._restoring = job
        # a module-level function and slots that hold no job: napari keeps every finished worker, with its
        # function and slots, and the job holds the layers it found open (napari_cdma/_workers.py)
        worker = create_worker(read_restore, job)
        worker.returned.connect(self._on_restore_read)
        worker.errored.connect(self._on_restore_failed)
        worker.start()

    def _being_restored(self, name: str) -> bool:
        """Whether the image ``name`` is one a reopen is bringing back now (its layers not all shown yet)."""
        return self._restoring is not None and name in self._restoring.names.values()

    def _on_restore_read(self, job: Restore) -> None:
        if job is self._restoring:  # else another store was opened meanwhile
            self._restore_turn(job.store, job, self._restore_steps(job.store, job))

    def _on_restore_failed(self, exc: BaseException) -> None:
        job = self._restoring
        if job is not None:
            self._end_restore(job.store, job, exc)

    def _restore_steps(self, store: ProjectStore, job: Restore
                       ) -> Generator[None, None, Tuple[List[str], List[str]]]:
        """The GUI steps of a reopen, one layer each: the stored images, accepted boxes and corrections
        (:meth:`Restore.steps`), then the latest predictions (:meth:`_restored_layers`); returns the names of the
        images restored and of those of them without a prediction."""
        yield from job.steps()
        return (yield from self._restored_layers(store, job.known, job.names))

    def _restore_turn(self, store: ProjectStore, job: Restore, steps: Any) -> None:
        """Add one layer of a reopened store, then leave the next to a later event-loop turn."""
        if self._restoring is not job:  # another store was opened meanwhile
            return
        try:
            next(steps)
        except StopIteration as done:
            self._end_restore(store, job, counts=done.value)
            return
        except Exception as exc:
            self._end_restore(store, job, exc)
            return
        QTimer.singleShot(0, lambda: self._restore_turn(store, job, steps))

    def _end_restore(self, store: ProjectStore, job: Optional[Restore], exc: Optional[BaseException] = None,
                     counts: Tuple[List[str], List[str]] = ([], [])) -> None:
        """The store's layers are all shown (or could not be, ``exc``): say so under the store summary;
        ``counts``: the names of the images restored, and of those without a prediction."""
        if self._restoring is not job:  # another store was opened meanwhile
            return
        self._restoring = None
        restored, without = counts
        if exc is None:
            self._sync_from_store(layers=False)  # the restore drew the boxes and corrections: not read again
        else:
            self.summary.set_note(f"Could not show the stored images: {exc}")
        if restored or self.restored_predictions:
            self._focus_restored(restored)
            # the dock fills (regions, versions) and napari's layer controls widen for the restored labels after
            # the image was shown: fit it again (an image open before the reopen was cropped: walk)
            self._fit_view()
        note, self._switch_note = self._switch_note, ""
        self.predict_panel.say_chosen(note)
        # counted over the images still open: closing one updates the summary (StoreSummary)
        self.summary.set_restored([n for n in restored if n not in without], without)
        self.summary.set_windows(self._slide_windows(store))

    def _focus_restored(self, restored: List[str]) -> None:
        """After a reopen or a store switch, the image chosen in Predict (else the first image restored) is the one on
        screen, with its layers; the other images overlapping it are hidden with theirs until chosen
        (:meth:`ReviewPanel.focus`). Walk: images open before the store was opened, and their restored predictions,
        were all shown at once, stacked at the origin."""
        layers = self.viewer.layers
        chosen = getattr(self.predict_panel.image_layer, "name", None)
        name = chosen if chosen in layers else next((n for n in restored if n in layers), None)
        if name is None or self._removing:
            return
        review = self.review_panel
        hidden = review.focus(name)
        review.focus_note(name, hidden, append=True)

    @staticmethod
    def _slide_windows(store: ProjectStore) -> int:
        """How many live regions of the store are windows of whole slides (not shown as images on reopen)."""
        try:
            slides = store.slide_images()
            return sum(1 for r in store.regions() if r.image_hash in slides)
        except Exception:  # the note is informative only
            return 0

    # ------------------------------------------------------------------ latest predictions
    def flush_prediction_saves(self, timeout: Optional[float] = None) -> bool:
        """Wait until the predictions being written to a store are written (a save left for the end of a
        hand-over starts now); False on timeout."""
        pending, self._pending_save = self._pending_save, None
        if pending is not None:
            pending()
        saver = _last_saver
        if saver is not None:
            saver.join(timeout)
            if saver.is_alive():
                return False
        return True

    def _save_latest_prediction(self, result: PredictResult, labels: np.ndarray, uncertainty: Any,
                                pasted: bool, defer: bool = False) -> None:
        """Keep a prediction written to the image's own prediction layer as the image's latest
        prediction in the store, with the image (off the GUI thread; saves run one after another,
        in order, so the last prediction made is the one kept). ``defer``: all of it, the store's creation
        included, is done by :meth:`_start_deferred_save` at the end of the hand-over (or by a flush)."""
        if not result.image_hash or uncertainty is None:
            return
        if defer:
            self._pending_save = lambda: self._save_latest_prediction(result, labels, uncertainty, pasted)
            return
        h, w = np.shape(labels)[:2]
        if h * w > MAX_FULL_IMAGE_PIXELS:  # the store keeps slide-sized images by their regions only
            return
        store = self._store if self._store is not None else self._create_named_store(result.image_name)
        if store is None or store.read_only:
            return
        name, image, digest = result.image_name, result.image, result.image_hash
        version = str(result.model_version) if result.model_version is not None else ""
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        source = source_path(layer) if layer is not None else None
        ranked, display_range, label = list(result.ranked), tuple(result.display_range), result.model_label
        jsd = getattr(result.prediction, "disagreement", None)  # a streamed image has none
        global _last_saver
        previous = _last_saver

        def save() -> None:
            if previous is not None:
                previous.join()
            message = ""
            try:
                store.add_unlabelled_image(image, source_path=source)
                store.save_prediction(digest, labels, uncertainty, model_version=version,
                                      model_sha256=store.model_checksum(version) if version else "",
                                      model_label=label, image_name=name, source_path=source,
                                      ranked=ranked, display_range=display_range, pasted=pasted,
                                      disagreement=jsd)
            except Exception as exc:  # a full disk, a read-only store: the prediction stays on screen
                message = str(exc)
                logger.warning("could not keep the prediction of %s in the store: %s", name, exc)
            try:
                self.prediction_saved.emit(name, message)
            except RuntimeError:  # the dock was closed meanwhile
                pass

        _last_saver = threading.Thread(target=save, name=f"napari-cdma save prediction {name}")
        _last_saver.start()

    def _start_deferred_save(self) -> None:
        """Do the save left by the last large image handed over (if any) in :data:`SAVE_DELAY_MS`, after the
        hand-over's redraws."""
        if self._pending_save is None:
            return

        def start() -> None:
            pending, self._pending_save = self._pending_save, None
            if pending is not None:  # else a flush did it
                pending()

        timer = QTimer(self)  # a child: it does not fire once the dock is gone (its save is then not made)
        timer.setSingleShot(True)
        timer.timeout.connect(start)
        timer.timeout.connect(timer.deleteLater)
        timer.start(SAVE_DELAY_MS)

    def _create_named_store(self, image_name: str) -> Optional[ProjectStore]:
        """The store of the path field, created now (as the first Accept creates it) when that folder
        does not exist yet or is empty, so that a new project keeps its first prediction; None when no
        folder is named, or it exists but did not open (its reason is in the store line)."""
        text = self.store_edit.text().strip()
        if not text:
            return None
        path = Path(text).expanduser()
        if path.exists() and not (path.is_dir() and not any(path.iterdir())):
            return None  # not opened when the dock started or when Open was pressed: not created here
        store = self.open_store(path, quiet=True, select_current=False)  # never overwrites a store
        if store is None:
            self._on_prediction_saved(image_name, self.store_label.text())
        return store

    def keep_edits(self, images: Optional[Sequence[str]] = None) -> Dict[str, int]:
        """Keep the unaccepted edits of each image's prediction layer (of ``images`` only, when given) with its
        latest prediction in the store (reopening the store shows them again). Returns image name -> edited
        pixels kept."""
        store = self._store
        if store is None:
            self.store_label.setText("Open a project store first: edits are kept in it.")
            return {}
        self.flush_prediction_saves()
        kept: Dict[str, int] = {}
        problems: List[str] = []
        for name, state in list(self.states.items()):
            names = names_for(name)
            if names["prediction"] not in self.viewer.layers or not state.image_hash \
                    or (images is not None and name not in images):
                continue
            if names["prediction"] in state.kept:  # kept as they are already
                continue
            data = np.asarray(self.viewer.layers[names["prediction"]].data)
            edits = state.unsaved(names["prediction"], data) if data.shape == state.original_labels.shape else 0
            if not edits:
                continue
            record = store.latest_prediction(state.image_hash)
            if record is None or tuple(record.shape) != data.shape \
                    or (record.model_version or None) != state.model_version:
                problems.append(f"'{name}': the store does not hold the prediction behind its layer (predict it "
                                "again with the store open)")
                continue
            umap = self.viewer.layers[names["uncertainty"]] if names["uncertainty"] in self.viewer.layers else None
            try:
                unc = np.asarray(uncertainty_values(umap)) if umap is not None and not umap.multiscale \
                    and np.shape(umap.data) == data.shape else store.load_prediction(state.image_hash)[1]
                store.save_prediction(state.image_hash, state.original_labels, unc,
                                      model_version=record.model_version, model_sha256=record.model_sha256,
                                      model_label=record.model_label, image_name=name,
                                      source_path=record.source_path, ranked=record.ranked,
                                      display_range=record.display_range, pasted=record.pasted, edited=data,
                                      disagreement=store.load_prediction_disagreement(state.image_hash),
                                      covered=[(r.region_id, r.version) for r in store.regions()
                                               if r.image_hash == state.image_hash], created=record.created)
            except Exception as exc:
                problems.append(f"'{name}': {exc}")
                continue
            kept[name] = int(edits)
            state.kept.add(names["prediction"])
        self._sync_from_store()
        said = [f"Kept {n} edited pixel(s) of '{k}' in the store (not accepted: not used for training)."
                for k, n in kept.items()] or ["No prediction layer holds edits that are not accepted or kept."]
        if problems:
            said.append("Not kept: " + "; ".join(problems) + ".")
        self.store_label.setText(self.store_label.text() + "\n" + " ".join(said))
        return kept

    def _on_prediction_saved(self, name: str, message: str) -> None:
        if message:
            self.predict_panel.last_message = (f"{self.predict_panel.last_message} The prediction of '{name}' "
                                               f"could not be kept in the project store: {message}").strip()
            self.predict_panel.show_status(self.predict_panel.last_message)

    def _stale_note(self, store: ProjectStore, record: PredictionRecord) -> str:
        """Why a stored prediction may not be what the current model predicts now ("" if it is)."""
        current = store.current_model_version
        if not record.model_version:
            return f"made by the file {record.model_label}, not a model of the project"
        if record.model_version != current:
            return f"stale: the current model is {current}"
        try:
            now = store.model_checksum(record.model_version)
        except Exception:  # an unreadable model file: say nothing rather than guess
            now = ""
        if record.model_sha256 and now and now != record.model_sha256:
            return f"stale: the {record.model_version} model file changed since"
        return ""

    def _restore_predictions(self, store: ProjectStore, names: Dict[str, str], shown: List[str]) -> Iterator[None]:
        """Show the store's latest prediction of each shown image whose prediction layer is not open, one
        layer per step; ``shown`` gets the names of the images whose prediction was shown."""
        layers = self.viewer.layers
        first: Optional[str] = None
        for digest, name in names.items():
            record = store.latest_prediction(digest)
            if record is None or name not in layers or names_for(name)["prediction"] in layers:
                continue  # a prediction layer already open may hold edits: never replaced
            image_layer = layers[name]
            try:
                image = image_from_layer(image_layer, pixel_limit=MAX_FULL_IMAGE_PIXELS)
            except Exception:  # not model input any more (another layer under that name)
                continue
            if tuple(image.shape[:2]) != tuple(record.shape):
                continue
            try:
                labels, uncertainty = store.load_prediction(digest)
            except (StoreError, KeyError) as exc:
                self.restored_predictions[name] = f"not restored ({exc})"
                continue
            labels = labels.astype(np.int32)
            edited, kept, jsd, safe = None, "", None, []
            try:
                jsd = store.load_prediction_disagreement(digest)
            except StoreError as exc:  # the prediction is still shown, without its disagreement layer
                logger.warning("not restoring the disagreement of %s: %s", name, exc)
            if record.edited:
                try:
                    edited = store.load_prediction_edits(digest)
                    kept = "; kept edits, not accepted"
                except StoreError as exc:
                    kept = f"; its kept edits could not be read ({exc})"
            # Kept edits hold the regions accepted before they were kept, and any edit made in such a box
            # since: only regions accepted later are pasted over them. The earlier ones are safe as the
            # store has them, so an edit made in their box after Accept still counts as not accepted.
            covered = set(record.covered) if edited is not None else None
            accepted = self._accepted_regions(digest, covered) if record.pasted else []
            on_screen = labels.copy() if edited is None else edited.astype(np.int32)
            if covered:  # what the store has in those boxes, in the ids the layer gave it (pasted: fresh or joined ids)
                safe = [(box, None, ids_like(corrected, on_screen[box[0]:box[2], box[1]:box[3]]))
                        for box, corrected, _ in self._accepted_regions(digest, covered, inside=True)]
            corrections = [(bbox, corrected) for bbox, corrected, _ in accepted]
            n_pasted = self._paste_restored(on_screen, labels, accepted)
            visible = bool(image_layer.visible)
            made: Dict[str, Any] = {}
            yield from stored_prediction_steps(self.viewer, name, on_screen, uncertainty, record.display_range, made,
                                               fill=self.display_panel.fill_check.isChecked(), visible=visible,
                                               disagreement=jsd, image=image)
            if name not in layers or made["prediction"] not in layers:  # closed meanwhile
                continue
            # logged, not said in the store summary: it states what is, not what each switch did (13 lines: walk)
            self._drop_redundant_copies(store, digest, made)
            main = made["prediction"].name
            pasted = safe + (self._pasted_boxes(made["prediction"].data, corrections) if n_pasted else [])
            # without kept edits the layer is the stored prediction with the corrections pasted (reviewed): nothing
            # unsaved; kept edits are counted (in full) when the Keep button is next updated
            self.states[name] = ImageState(image=image, original_labels=labels,
                                           model_version=record.model_version or None, image_hash=digest,
                                           model_label=record.model_label, ranked=list(record.ranked),
                                           reviewed={main: pasted}, unsaved_px={} if edited is not None else {main: 0},
                                           kept={main} if edited is not None else set())
            self.image_names[digest] = name
            if n_pasted or safe:  # the layer shows the accepted corrections itself
                self._hide_corrections(name)
            raise_overlays(self.viewer, name)  # the accepted boxes and corrections restored above it
            stale = self._stale_note(store, record)
            self.restored_predictions[name] = f"{record.model_version or record.model_label}, " \
                                              f"{record.created}{kept}{'; ' + stale if stale else ''}"
            shown.append(name)
            if first is None or (visible and not layers[first].visible):
                first = name  # the panels show the restored image on screen, else the first one
        chosen = getattr(self.predict_panel.image_layer, "name", None)
        focus = chosen if chosen in shown else first
        if focus is not None and focus in self.states:
            yield from self._show_restored(focus)

    def _restored_note(self, name: str) -> Optional[str]:
        """"<model>, <time>[; ...]" of image ``name``'s prediction restored from the store (None if none)."""
        note = self.restored_predictions.get(name)
        return note if note and not note.startswith("not restored") else None

    def _drop_redundant_copies(self, store: ProjectStore, digest: str, made: Dict[str, Any]) -> List[str]:
        """Close the layers detached from ``store`` when it was left ("..., from <store>") of the image ``digest``
        that hold exactly what the store just brought back in ``made`` (role -> restored layer): a switch A -> B -> A
        left A's copy beside A's restored prediction, and each further switch added one (walk). A copy holding
        anything the store does not (edited since, edits that could not be kept) stays, and so does one that could not
        be compared or closed: nothing here stops the restore of the store's other layers (walk: a large image's
        multiscale copy). Returns the names closed."""
        closed: List[str] = []
        try:
            redundant = redundant_copies(self.viewer, store.root, digest, made)
        except Exception as exc:  # keeping a copy loses nothing
            logger.warning("could not compare the detached copies of %s with the restored prediction: %s", digest, exc)
            return closed
        for layer in redundant:
            try:
                if layer in self.viewer.layers:
                    name = layer.name
                    self.viewer.layers.remove(layer)
                    closed.append(name)
            except Exception as exc:
                logger.warning("could not close the detached copy %s: %s", getattr(layer, "name", layer), exc)
        if closed:
            logger.info("closed %d hidden copy(ies) holding what %s restored: %s", len(closed), store.root, closed)
        return closed

    def _review_overlays(self, name: str, state: ImageState) -> List[Tuple[float, Tuple[int, int, int, int]]]:
        """An image's review tiles and accepted boxes layers (made when its restored prediction is
        first shown: one restored image at a time, not all of them at reopen; not those the user removed,
        :attr:`_dismissed`); its regions not accepted yet."""
        from src_model.progress import drain  # torch-free

        return drain(self._review_overlay_steps(name, state, skip=self._dismissed))

    def _review_overlay_steps(self, name: str, state: ImageState, skip: Any = ()
                              ) -> Generator[None, None, List[Tuple[float, Tuple[int, int, int, int]]]]:
        """:meth:`_review_overlays`, yielding after each layer it adds (none named in ``skip``)."""
        names = names_for(name)
        boxes = self._accepted_boxes(state.image_hash)
        ranked = not_yet_accepted(state.ranked, boxes)
        added = False
        if names["tiles"] not in self.viewer.layers and names["tiles"] not in skip:
            show_review_outlines(self.viewer, name, ranked)
            added = True
            yield
        if names["accepted"] not in self.viewer.layers and names["accepted"] not in skip:
            # made now, so that an accept never adds a layer
            show_accepted(self.viewer, name, boxes)
            added = True
            yield
        if added:
            raise_overlays(self.viewer, name)
            if names["prediction"] in self.viewer.layers:  # the brush stays on the prediction layer
                self.viewer.layers.selection.active = self.viewer.layers[names["prediction"]]
        return ranked

    def _show_restored(self, name: str) -> Iterator[None]:
        """The display and review panels show a restored prediction (as after Predict); steps as
        :meth:`_restore_predictions`'s."""
        state = self.states[name]
        names = names_for(name)
        ranked = yield from self._review_overlay_steps(name, state)
        if names["prediction"] not in self.viewer.layers or names["uncertainty"] not in self.viewer.layers:
            return  # closed meanwhile
        labels, umap = self.viewer.layers[names["prediction"]], self.viewer.layers[names["uncertainty"]]
        record_range = tuple(umap.contrast_limits)
        glands = self._glands_of(labels, umap, [])
        self.last_image = name
        self.display_panel.show_result(name, umap, labels, record_range, glands, model_label=state.model_name)
        self._untint_reviewed(name)
        self.review_panel.image_name = None
        self.review_panel.set_tiles(name, ranked)

    def _restored_layers(self, store: ProjectStore, known: Dict[str, str], names: Dict[str, str]
                         ) -> Generator[None, None, Tuple[List[str], List[str]]]:
        """Name the restored images as they were named and show their latest predictions (one layer per
        step); returns the names of the images added and of those that came back without a prediction."""
        renamed = False
        for digest in set(names) - set(known):
            shown = names[digest]
            names[digest] = self._restore_name(store, digest, shown)
            renamed |= names[digest] != shown
        if renamed:  # the choosers list layers by the names they had when added
            self.predict_panel.image_choice.reset_choices()
            self.review_panel.labels_choice.reset_choices()
        self.image_names.update(names)
        added = set(names) - set(known)
        shown: List[str] = []
        try:
            yield from self._restore_predictions(store, names, shown)
        except Exception as exc:  # the images and regions are shown; a prediction must not stop the dock
            logger.warning("could not show the stored predictions: %s", exc)
        return [names[d] for d in added], [names[d] for d in added if names[d] not in shown]

    def _restore_name(self, store: ProjectStore, digest: str, shown: str) -> str:
        """Give a restored image the name it had on screen when its regions were accepted.

        The store records that name with each region; the image and the layers restored with it
        (accepted boxes, corrections) are renamed from ``shown`` unless the name is taken.
        """
        wanted = stored_name(store, digest)
        layers = self.viewer.layers
        if not wanted or wanted == shown or wanted in layers or shown not in layers:
            return shown
        old, new = names_for(shown), names_for(wanted)
        for layer in list(layers):
            meta = layer.metadata or {}
            if meta.get(IMAGE_KEY) == shown:
                role = next((k for k, v in old.items() if v == layer.name), None)
                if role is not None and new[role] not in layers:
                    layer.name = new[role]
                layer.metadata[IMAGE_KEY] = wanted
        layers[shown].name = wanted
        return wanted

    def _sync_from_store(self, select_current: bool = False, layers: bool = True) -> None:
        """Refresh everything shown from the store: models, regions, versions, summary, boxes.

        Args:
            select_current: select the store's current model in the Predict chooser (on open and
                when it changed); otherwise the user's choice (e.g. a version being tried) stays.
            layers: also redraw each image's accepted boxes and corrections from the store (False when
                they were just drawn from it: the end of a reopen, :class:`Restore`).
        """
        self._update_keep_button()
        store = self._store
        if store is None:
            return
        try:
            store.refresh()  # the retraining process or another napari may have written to it
        except Exception as exc:
            self.store_label.setText(f"Cannot read the project store {store.root}: {exc}")
            return
        models = store.models()
        current = store.current_model_version
        notes = {m.version: "current" if m.version == current else ("promoted" if m.promoted else "not promoted")
                 for m in models}
        self.predict_panel.set_model_versions([m.version for m in models],
                                              current=current if select_current else None, notes=notes)
        self.review_panel.refresh_regions()
        self.versions_panel.refresh()
        regions = store.regions()
        by_image = regions_by_image(regions)
        held = sum(r.holdout for r in regions)
        summary = (f"{len(regions)} accepted region(s) ({held} held out) from {len(by_image)} "
                   f"image(s), {len(models)} trained version(s); current model: {current}")
        self.summary.set_predictions(self.restored_predictions)  # said while their images are open
        self.summary.set_store_text(summary)
        if not layers:
            return
        for digest, name in self.image_names.items():
            boxes = [r.bbox for r in by_image.get(digest, [])]
            if name in self.viewer.layers and (boxes or names_for(name)["accepted"] in self.viewer.layers):
                show_accepted(self.viewer, name, boxes)
            self._refresh_corrections(name, by_image.get(digest, []))
            self._untint_reviewed(name, by_image.get(digest, []))
            state = self.states.get(name)
            if state is not None and state.ranked and name == self.review_panel.image_name:
                self.review_panel.bring_back(name, not_yet_accepted(state.ranked, boxes))

    def _untint_reviewed(self, image_name: str, regions: Optional[List[RegionRecord]] = None) -> None:
        """Show an image's uncertainty layer without its tint inside the store's live regions of the image
        (``regions``, default: read from the store), and with it again where a region was withdrawn: reviewed tissue
        must not look as uncertain as what is left to review (walk 17). The model's map stays as it was
        (:func:`~._layers.show_reviewed`); a whole slide (the Whole slide panel's) is left tinted."""
        layer_name = names_for(image_name)["uncertainty"]
        if layer_name not in self.viewer.layers or image_name not in self.viewer.layers:
            return
        if regions is None:
            digest = next((d for d, n in self.image_names.items() if n == image_name), None)
            regions = [r for r in self._store.regions() if r.image_hash == digest] \
                if self._store is not None and digest else []
        layer = self.viewer.layers[layer_name]
        shape = tuple(layer.level_shapes[0]) if layer.multiscale else np.shape(layer.data)
        if tuple(shape) != tuple(np.shape(self.viewer.layers[image_name].data)[:2]):
            return  # not this image's map (another image under the name)
        show_reviewed(layer, {r.region_id: r.bbox for r in regions})

    def _hide_corrections(self, image_name: str) -> None:
        """Hide an image's "accepted corrections" layer (added on reopen) once its prediction layer shows
        the corrections pasted: two labels layers drawn over each other doubled every outline."""
        layer_name = names_for(image_name)["corrections"]
        if layer_name in self.viewer.layers:
            self.viewer.layers[layer_name].visible = False

    def _refresh_corrections(self, image_name: str, regions: List[RegionRecord]) -> None:
        """Redraw an image's "accepted corrections" layer (shown on reopen) from the store's live regions,
        so that it follows later accepts and withdrawals."""
        layer_name = names_for(image_name)["corrections"]
        if layer_name not in self.viewer.layers or self._store is None:
            return
        layer = self.viewer.layers[layer_name]
        data = self._corrections_data(np.shape(layer.data), regions)
        if not np.array_equal(data, layer.data):
            layer.data = data

    def _corrections_data(self, shape: Tuple[int, ...], regions: List[RegionRecord]) -> np.ndarray:
        """What an image's "accepted corrections" layer shows: the store's corrected masks of ``regions``."""
        data = np.zeros(shape, np.int32)
        for r in sorted(regions, key=lambda r: r.region_id):
            y0, x0, y1, x1 = r.bbox
            try:
                mask = self._store.load_region(r.region_id)[1]
            except Exception:  # a damaged region: its box is still shown, its pixels cannot be
                continue
            if mask.shape == data[y0:y1, x0:x1].shape:
                data[y0:y1, x0:x1] = mask
        return data

    def _refresh_glands(self) -> None:
        """Rebuild the gland table from the shown prediction layer: an accept may have split or merged
        glands (:func:`~napari_cdma._widget_review.separate_glands`)."""
        display = self.display_panel
        labels, umap = display.labels_layer, display.uncertainty_layer
        if labels is None or umap is None or labels not in self.viewer.layers or umap not in self.viewer.layers:
            return
        glands = self._glands_of(labels, umap)
        if glands is not None:
            display.set_glands(glands)

    @staticmethod
    def _glands_of(labels: Any, umap: Any, default: Optional[List[Dict[str, Any]]] = None
                   ) -> Optional[List[Dict[str, Any]]]:
        """The gland table of a prediction layer over its uncertainty layer; ``default`` when the layers no
        longer match (another image under the same name)."""
        from src_model.gland_table import gland_table  # not via src_model.uncertainty: that imports torch

        try:
            return gland_table(np.asarray(labels.data), np.asarray(uncertainty_values(umap)))
        except ValueError:
            return default

    @classmethod
    def _shown_glands(cls, layers: Dict[str, Any], glands: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """The gland table of a prediction layer the store's corrections were pasted into (new ids, or a gland
        joined across a box's edge: the worker's table, made before, lists neither them nor what they covered),
        else ``glands``.
        Not for a large image (its maps are a pyramid; its table stays the worker's, blockwise)."""
        labels, umap = layers["prediction"], layers["uncertainty"]
        return glands if getattr(umap, "multiscale", False) else cls._glands_of(labels, umap, glands)

    def _retrain_image_text(self, name: str) -> str:
        """The name an image the retrain worker names ``name`` (its file name, :func:`retrain_worker._image_name`) has
        in the dock: its layer's while open, as the accepted-region list names it (walk 22: the retrain table said
        "glas_testA_1" beside the layer "GlaS testA_1 (H&E)")."""
        if self._store is None:
            return name
        from .project.retrain_worker import _image_name

        records = self._store.regions()
        firsts = {r.image_hash: r for r in reversed(records)}  # one record per image
        for image_hash, record in firsts.items():
            if _image_name(records, image_hash) == name:
                return self.review_panel.image_text(record)
        return name

    def _region_image_label(self, record: RegionRecord) -> str:
        """A region's image: its source file name, else the image layer's name, else its hash."""
        if record.source_path:
            return Path(record.source_path).name
        return self.image_names.get(record.image_hash) or f"image {record.image_hash[:8]}"

    def _browse_store(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Project store folder", self.store_edit.text())
        if path:
            self.open_store(path, create=None)

    def _show_slide_glands(self, name: str) -> None:
        """The gland table of a slide's numbered glands (boxes in level-0 = world pixels: a row's click goes there)."""
        panel, layers = self.slide_panel, self.viewer.layers
        unc, numbered = f"{name} uncertainty", f"{name} glands (numbered)"
        if unc not in layers or numbered not in layers or name not in panel.gland_rows:
            return
        lo, hi, _ = panel.ranges.get(str(layers[numbered].metadata.get("cdma_store")), (0.0, 1.0, 0))
        self.display_panel.show_result(name, layers[unc], layers[numbered], (lo, hi), panel.gland_rows[name])

    def _slide_model(self) -> Tuple[str, Optional[str], str]:
        """The Predict panel's model for the slide panel: (checkpoint path, project version or None, label)."""
        choice = self.predict_panel.model_choice()
        version = str(choice[1]) if choice[0] == "version" else None
        return self._model_path_for(choice), version, self.predict_panel.model_combo.currentText()

    def _model_path_for(self, choice: Tuple[str, Any]) -> str:
        kind, value = choice
        if kind == "file":
            return str(value)
        if self._store is not None:
            return str(self._store.model_path(str(value)))
        if value == BUNDLED:
            from src_model.checkpoint import bundled_model_path

            return str(bundled_model_path())
        return str(self.store.model_path(str(value)))

    # ---------------------------------------------------------------- predict
    def predict(self, image_name: Optional[str] = None) -> bool:
        """Run Predict on ``image_name`` (default: the chosen image) with the chosen model."""
        if image_name is not None:
            self.predict_panel.set_image(image_name)
        return self.predict_panel.predict()

    def _accepted_boxes(self, image_hash: str) -> List[Tuple[int, int, int, int]]:
        if self._store is None or not image_hash:
            return []
        return [r.bbox for r in self._store.regions() if r.image_hash == image_hash]

    def _accepted_corrections(self, image_hash: str) -> List[Tuple[Tuple[int, int, int, int], np.ndarray]]:
        """The store's corrected masks of an image: latest version of each live region, oldest first."""
        return [(box, corrected) for box, corrected, _ in self._accepted_regions(image_hash)]

    def _accepted_regions(self, image_hash: str, covered: Optional[Sequence[Tuple[str, int]]] = None,
                          inside: bool = False) -> List[Tuple[Tuple[int, int, int, int], np.ndarray, np.ndarray]]:
        """``(box, corrected, predicted)`` of each live region of an image (latest version), oldest first;
        with ``covered`` (``(region_id, version)`` pairs) only those not in it, or, with ``inside``, in it."""
        if self._store is None or not image_hash:
            return []
        out = []
        for r in sorted((r for r in self._store.regions() if r.image_hash == image_hash
                         and (covered is None or ((r.region_id, r.version) in covered) == inside)),
                        key=lambda r: r.region_id):
            try:
                _, corrected, predicted = self._store.load_region(r.region_id)
            except Exception:  # a damaged region: its box is still shown, its pixels cannot be
                continue
            out.append((tuple(r.bbox), corrected, predicted))
        return out

    @staticmethod
    def _paste_restored(on_screen: np.ndarray, labels: np.ndarray,
                        accepted: List[Tuple[Tuple[int, int, int, int], np.ndarray, np.ndarray]]) -> int:
        """Write the accepted corrections into a restored prediction layer's labels (in place), with the
        ids the user saw when accepting them; returns how many were written.

        A correction accepted over this very prediction (the model's labels in its box are the ones it
        corrected) holds the layer's own ids: written as they are, a gland that crosses the box keeps
        one id, as before the store was closed. One accepted over another prediction (another model)
        is pasted as a new prediction shows it (:func:`~napari_cdma._layers.paste_corrections`): a gland
        continued across the box's edge takes that gland's id, the others new ids above the labels'.
        """
        h, w = on_screen.shape[:2]
        pasted = 0
        for (y0, x0, y1, x1), corrected, predicted in accepted:
            corrected = np.asarray(corrected)
            if corrected.shape != (y1 - y0, x1 - x0) or y1 > h or x1 > w:
                continue
            if np.shape(predicted) == corrected.shape and np.array_equal(labels[y0:y1, x0:x1], predicted):
                on_screen[y0:y1, x0:x1] = corrected
                pasted += 1
            else:
                pasted += paste_corrections(on_screen, [((y0, x0, y1, x1), corrected)])
        return pasted

    def _is_trial(self, result: PredictResult, state: Optional[ImageState]) -> bool:
        """True when ``result`` comes from a model being tried: neither the store's current model nor
        the one that made the image's prediction layer."""
        current = self._store.current_model_version if self._store is not None else BUNDLED
        if result.model_version is not None and str(result.model_version) == str(current):
            return False
        if state is not None and names_for(result.image_name)["prediction"] in self.viewer.layers:
            # a version by its name; a checkpoint file (no version) by its entry in the chooser
            if state.model_version is not None or result.model_version is not None:
                return state.model_version != result.model_version
            return state.model_label != result.model_label
        return True

    def _target_layer(self, result: PredictResult, state: Optional[ImageState], trial: bool
                      ) -> Tuple[str, int, str]:
        """The Labels layer a new prediction may be written to, the edits that forced another one,
        and the name a foreign layer was moved to ("" if none).

        The image's prediction layer, unless it holds edits the store does not have (they would be
        lost) or the prediction is a trial: then a layer named after the model, never one holding
        edits of its own. A prediction layer the dock knows nothing about (another image had the
        name) is kept under a new name rather than overwritten.
        """
        layers = self.viewer.layers
        main = names_for(result.image_name)["prediction"]
        if main not in layers:
            return main, 0, ""
        if state is None:
            if not np.any(np.asarray(layers[main].data)):
                return main, 0, ""
            kept, k = f"{main} (kept)", 1
            while kept in layers:
                k += 1
                kept = f"{main} (kept {k})"
            layers[main].name = kept
            return main, 0, kept
        edits = state.unsaved(main, layers[main].data)
        if not edits and not trial:
            return main, 0, ""
        tag = result.model_version or result.model_label
        name, k = f"{main} ({tag})", 1
        while name in layers and (name not in state.others or state.unsaved(name, layers[name].data)):
            k += 1
            name = f"{main} ({tag}, {k})"
        return name, edits, ""

    @staticmethod
    def _pasted_boxes(labels: np.ndarray, corrections: List[Tuple[Tuple[int, int, int, int], np.ndarray]]
                      ) -> List[Reviewed]:
        """What a prediction layer holds in the boxes the store's corrections were pasted into."""
        h, w = labels.shape[:2]
        out: List[Reviewed] = []
        for (y0, x0, y1, x1), mask in corrections:
            if np.shape(mask) == (y1 - y0, x1 - x0) and y1 <= h and x1 <= w:  # as paste_corrections
                out.append(((y0, x0, y1, x1), None, np.array(labels[y0:y1, x0:x1])))
        return out

    def _on_predicted(self, result: PredictResult) -> None:
        name = result.image_name
        self._undismiss(name)  # its overlays made anew
        state = self.states.get(name)
        if state is not None and (state.image.shape != result.image.shape or (
                state.image_hash and result.image_hash and state.image_hash != result.image_hash)):
            state = None  # another image under the same layer name: its old prediction does not apply
        trial = self._is_trial(result, state)
        target, edits, kept = self._target_layer(result, state, trial)
        main = names_for(name)["prediction"]
        secondary = target != main
        if trial:  # the model's own prediction: the accepted corrections belong to the current model's layer
            corrections = []
        else:
            corrections = (result.corrections if result.corrections is not None
                           else self._accepted_corrections(result.image_hash))
        # The layer shows the accepted corrections over the new prediction (they are what the
        # pathologist signed off); the state keeps the model's own labels, which Accept stores as
        # "predicted" and against which unaccepted edits are found.
        # a large image's layers were filled as it was predicted, a small image's added one per turn after it
        if result.live is not None:
            layers = result.live.adopt(target, result.display_range, secondary=secondary)
            instances, n_pasted = result.live.paste(corrections)
        else:
            instances = result.instances if result.instances is not None else result.prediction.labels
            instances = np.array(instances, dtype=np.int32, copy=True)
            shown = instances.copy()
            n_pasted = paste_corrections(shown, corrections)
            layers = show_prediction(self.viewer, name, result.prediction, instances=shown,
                                     uncertainty=result.uncertainty, display_range=result.display_range,
                                     labels_name=target, entropy=self.predict_panel.entropy_check.isChecked(),
                                     branches=self.predict_panel.branches_check.isChecked(),
                                     fill=self.display_panel.fill_check.isChecked())
        pasted = self._pasted_boxes(layers["prediction"].data, corrections) if n_pasted else []
        if n_pasted and not secondary:
            self._hide_corrections(name)
        # regions already accepted are reviewed: "look here next" skips them. A side prediction (a version
        # tried, or one written aside to keep edits) leaves the tint, legend, gland table and review list
        # with the image's own prediction layer, which is the one the pathologist corrects
        own = list(state.ranked) if secondary and state is not None else list(result.ranked)
        ranked = not_yet_accepted(own, self._accepted_boxes(result.image_hash))
        # the layers below, each a few hundred ms of GUI time (a Shapes layer's first redraw over a second
        # on a busy 2-core machine), come one per event-loop turn after a large image's prediction
        later = [lambda: show_review_outlines(self.viewer, name, ranked)]
        if result.live is not None:  # the model's labels copied off the GUI thread: the layer is editable after it
            later.insert(0, result.live.finish_copy)
        notes = []
        was_restored = False
        if secondary:
            self._hide_side_layers(name, state, keep=target)  # the latest side prediction shown (outlines piled up)
            # the image's line names the model of the layer corrected, not the one tried aside (walk 23: chosen
            # again, testA_2 read "predicted with bundled", the version tried, over v0001's layer)
            before = self.predict_panel.predicted_before.get(name)
            if before is not None:
                self.predict_panel.predicted[name] = before
            else:  # restored from the store, or made before the dock knew it: said from the store or the state
                self.predict_panel.predicted.pop(name, None)
            # shown again when a side layer hidden earlier is reused (the model tried again: walk)
            layers["prediction"].visible = main not in self.viewer.layers or self.viewer.layers[main].visible
            # the new layer holds the model's labels and the corrections pasted (reviewed): nothing unsaved
            self.states[name] = replace(state, others={**state.others, target: (instances, result.model_version)},
                                        reviewed={**state.reviewed, target: pasted},
                                        unsaved_px={**state.unsaved_px, target: 0})
            side = f"'{side_suffix(name, target).strip()}' layer"  # "'(v0001)' layer": the whole name is long
            if trial:
                current = self._store.current_model_version if self._store is not None else BUNDLED
                notes.append((f"Trying {result.model_label}: its own prediction is in the layer '{target}', "
                              f"without the accepted corrections; '{main}' is unchanged and the current model "
                              f"stays {current}.",
                              f"Trying {result.model_label}: its glands in the {side}; current model still "
                              f"{current}."))
            if edits and trial:  # said once (the note above names the layer)
                notes.append((f"'{main}' holds {edits} edited pixel(s) not accepted yet, kept as they are.",
                              f"Your {edits} unaccepted edited pixel(s) are kept."))
            elif edits:
                notes.append((f"{result.model_label}'s prediction is in the new layer '{target}': '{main}' holds "
                              f"{edits} edited pixel(s) not accepted yet, kept as they are.",
                              f"Its glands: new {side}; your {edits} unaccepted edited pixel(s) are kept."))
        else:
            self._save_latest_prediction(result, instances, result.live.uncertainty if result.live is not None
                                         else np.asarray(uncertainty_values(layers["uncertainty"])), pasted=not trial,
                                         defer=result.live is not None)
            was_restored = self.restored_predictions.pop(name, None) is not None
            others = {k: v for k, v in state.others.items() if k in self.viewer.layers} if state is not None else {}
            reviewed = {k: v for k, v in state.reviewed.items() if k in others} if state is not None else {}
            unsaved = {k: v for k, v in state.unsaved_px.items() if k in others} if state is not None else {}
            self.states[name] = ImageState(image=result.image, original_labels=instances,
                                           model_version=result.model_version, image_hash=result.image_hash,
                                           others=others, model_label=result.model_label,
                                           ranked=list(result.ranked), reviewed={**reviewed, target: pasted},
                                           unsaved_px={**unsaved, target: 0})
            if kept:
                note = f"The layer '{main}' did not hold this image's prediction: it was kept as '{kept}'."
                notes.append((note, note))
            shown_aside = [other for other in others if self.viewer.layers[other].visible]
            if shown_aside:  # the glands on screen are this model's alone (walk 22: a tried version's outlines
                # stayed over the new current model's after a roll back)
                self._hide_side_layers(name, self.states[name])
                notes.append((f"Other versions' layers of '{name}' are hidden: {', '.join(shown_aside)}.",
                              "Other versions' layers hidden."))
        if result.image_hash:
            self.image_names[result.image_hash] = name
            # created here, empty or not, so that later accepts never add a layer
            accepted = self._accepted_boxes(result.image_hash)
            later.append(lambda: show_accepted(self.viewer, name, accepted))
            later.append(lambda: self._untint_reviewed(name))  # a new map replaced the untinted copy
        self.last_image = name
        self._update_keep_button()
        # the gland table (hundreds of rows for a large image) in a turn of its own too
        if not secondary:
            later.insert(0, lambda: self.display_panel.show_result(
                name, layers["uncertainty"], layers["prediction"], result.display_range,
                self._shown_glands(layers, result.glands) if n_pasted else result.glands,
                model_label=result.model_label))
        self.review_panel.set_tiles(name, ranked)
        later.append(lambda: raise_overlays(self.viewer, name))
        if n_pasted:
            notes.append((f"The layer shows {n_pasted} accepted correction(s) from the project inside their "
                          "boxes (red).", f"{n_pasted} accepted correction(s) shown in their red boxes."))
        if notes:  # on screen the short notes (walk 20: ten lines in the 280 px dock), each in full in the tooltip
            line = self.predict_panel.predicted_line(name)
            self.predict_panel.last_message = " ".join([line] + [full for full, _ in notes])
            self.predict_panel.show_status(" ".join([line] + [short for _, short in notes]),
                                           self.predict_panel.last_message)
        # the image's own prediction layer is the one to paint (ready for brush / fill / eraser); a version
        # being tried, or a prediction written aside, must not take the brush
        paint = main if secondary else layers["prediction"]
        later.append(lambda: self._select(paint))
        if state is None:
            later.append(self._fit_view)
        if result.live is not None:
            self._in_turns(name, later)
        else:
            for step in later:
                step()
        if self.summary.restored_count()[1] or (not secondary and was_restored):  # the note says "press Predict"
            self.summary.set_restored(())
            self._sync_from_store()  # the reopen note has been acted on
        # the store line says what is so now, not what an earlier Open did (walk: "No project store created at ..."
        # stayed after a later Predict): with a store open, what it holds; with none, the declined Open as it is now
        if self._store is not None:
            self.summary.drop_declined()
        else:
            self.summary.rewrite()

    def _select(self, layer: Any) -> None:
        """Make ``layer`` (or the layer of that name) the viewer's active layer, if it is still there."""
        if isinstance(layer, str):
            layer = self.viewer.layers[layer] if layer in self.viewer.layers else None
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.selection.active = layer

    def _in_turns(self, image_name: str, steps: List[Any]) -> None:
        """Run ``steps`` one per event-loop turn (the canvas redraws between them); those of an image
        closed meanwhile are dropped."""
        self._turns.extend((image_name, step) for step in steps)
        QTimer.singleShot(0, self._next_turn)

    def _next_turn(self) -> None:
        if not self._turns:
            return
        image_name, step = self._turns.pop(0)
        try:
            if image_name in self.viewer.layers:
                step()
        finally:
            if self._turns:
                QTimer.singleShot(0, self._next_turn)
            else:  # the hand-over is over: its save may start
                self._start_deferred_save()

    def handed_over(self) -> bool:
        """True when no GUI work of a prediction's hand-over or of a reopened store is left for later
        event-loop turns (the Predict panel is idle from then on)."""
        return not self._turns and self._restoring is None

    def settled(self) -> bool:
        """:meth:`handed_over`, and a large image's save has been started (it starts :data:`SAVE_DELAY_MS` after
        its hand-over)."""
        return self.handed_over() and self._pending_save is None

    def _on_layer_inserted(self, event: Any) -> None:
        """The first layer opened with the dock docked: napari fits the view to it, then its layer controls widen
        and narrow the canvas, which it does not refit (a slide opened so was cropped: walk); fitted again."""
        layer = getattr(event, "value", None)
        if len(self.viewer.layers) == 1 and not is_derived(layer):
            QTimer.singleShot(0, self._fit_view)
        if layer is not None:  # a slide shown or hidden: the Uncertainty and glands panel follows the screen
            layer.events.visible.connect(self._screen_changed)
        self._screen_changed()
        if (getattr(layer, "metadata", None) or {}).get(ROLE_KEY) == "corrections":
            # painted or redrawn since added: a store switch then checks it for edits (:meth:`_leave_store`)
            key = layer.unique_id
            for emitter in (layer.events.paint, layer.events.data):
                emitter.connect(lambda _e=None, k=key: self._touched_corrections.add(k))

    def _on_layer_removing(self, event: Any = None) -> None:
        """A layer is about to be removed. An image the dock predicted, or its prediction layer, first has the
        edits not accepted kept in the open store (:meth:`keep_edits_at_close`): closing the viewer removes every
        layer, and deleting a prediction layer by mistake would lose them too."""
        self._removing = True
        try:
            layer = self.viewer.layers[int(event.index)]
        except (AttributeError, IndexError, TypeError, ValueError):
            return
        image = layer.name if layer.name in self.states else (getattr(layer, "metadata", None) or {}).get(IMAGE_KEY)
        if image in self.states and layer.name in (image, names_for(image)["prediction"]):
            self.keep_edits_at_close(image)

    def _on_layer_removed(self, event: Any) -> None:
        """The reviewed image was closed: the review list follows the image Predict now shows (or empties). An image
        closed: its display layers follow it in the next event-loop turn (:meth:`_close_derived`). A review overlay
        the user closed while its image stays open is not brought back by following the image (:attr:`_dismissed`)."""
        try:
            self._layer_removed(getattr(event, "value", None))
        finally:
            self._removing = False

    def _layer_removed(self, layer: Any) -> None:
        self._forget_closed_images()
        self._screen_changed()
        if layer is not None:  # the edits it can undo go with it
            self._histories.pop(getattr(layer, "unique_id", None), None)
            self._touched_corrections.discard(getattr(layer, "unique_id", None))
        self._update_keep_button()
        meta = (getattr(layer, "metadata", None) or {}) if layer is not None else {}
        if meta.get(ROLE_KEY) in ("tiles", "accepted") and meta.get(IMAGE_KEY) in self.viewer.layers:
            self._dismissed.add(layer.name)
        if layer is not None and not is_derived(layer) and not any(meta.get(k) for k in SLIDE_META_KEYS):
            name = layer.name
            if any((ly.metadata or {}).get(IMAGE_KEY) == name for ly in self.viewer.layers):
                QTimer.singleShot(0, lambda: self._close_derived(name))
        if layer is not None and not is_derived(layer) and layer.name == self.review_panel.image_name:
            self.review_panel.image_name = None
            self._follow_image(self.predict_panel.image_layer)

    def _undismiss(self, image_name: str) -> None:
        """An image's review overlays may be made again (:attr:`_dismissed` names exactly its "review tiles" and
        "accepted" layers; not those of another image whose name starts with this one's and a space)."""
        names = names_for(image_name)
        self._dismissed -= {names["tiles"], names["accepted"]}

    def _close_derived(self, image_name: str) -> List[str]:
        """An image layer was closed: close the layers shown over it that mean nothing without it (uncertainty,
        disagreement, entropy and branch maps, review and accepted boxes, the framed gland or region) and its
        accepted-corrections layer unless it was edited (the store keeps those corrections: reopening shows them).
        Its prediction layers stay (they may be corrected still, and hold the edits not accepted); the Predict
        panel's status line names them and how many of their pixels are edits not accepted. Nothing is closed while
        the image is open again under that name or being predicted, nor any whole slide's layer. Returns the names
        of the layers left open."""
        layers = self.viewer.layers
        if image_name in layers or self.predict_panel.running_name == image_name:
            return []
        self._undismiss(image_name)
        state = self.states.get(image_name)
        closed: List[str] = []
        kept: List[Tuple[str, int]] = []
        for layer in [ly for ly in layers if (ly.metadata or {}).get(IMAGE_KEY) == image_name]:
            meta = layer.metadata or {}
            if any(meta.get(k) for k in SLIDE_META_KEYS):
                continue
            role = meta.get(ROLE_KEY)
            if role == "prediction":
                kept.append((layer.name, state.unsaved(layer.name, np.asarray(layer.data)) if state is not None
                             else -1))
                continue
            if role == "corrections":
                edits = self._corrections_edits(image_name, layer)
                if edits:
                    kept.append((layer.name, edits))
                    continue
            layers.remove(layer)
            closed.append(layer.name)
        if closed:
            message = f"'{image_name}' closed, and {len(closed)} layer(s) shown over it"
            if kept:
                message += "; still open: " + ", ".join(
                    f"'{n}' ({e} edited px not accepted: accept them, or press Keep unaccepted edits)" if e > 0 else
                    f"'{n}' (no edits)" if e == 0 else f"'{n}'" for n, e in kept)
            self.predict_panel.last_message = message + "."
            show_message(self.predict_panel.status, self.predict_panel.last_message)
        return [n for n, _ in kept]

    def _corrections_edits(self, image_name: str, layer: Any) -> int:
        """Pixels of an image's "accepted corrections" layer that differ from the store's live regions (-1: unknown,
        no store open or the image not known to it)."""
        digest = next((d for d, n in self.image_names.items() if n == image_name), None)
        if self._store is None or digest is None:
            return -1
        try:
            regions = regions_by_image(self._store.regions()).get(digest, [])
        except Exception:
            return -1
        expected = self._corrections_data(np.shape(layer.data), regions)
        return int(np.count_nonzero(np.asarray(layer.data) != expected))

    def _forget_closed_images(self) -> None:
        """Drop the state of each image whose image layer and prediction layer are both closed: it holds the
        image and its predicted labels (tens of MB for a large image), and nothing on screen uses it any more."""
        layers = self.viewer.layers
        for name in [n for n in self.states if n not in layers and names_for(n)["prediction"] not in layers]:
            del self.states[name]
            self.restored_predictions.pop(name, None)

    def _update_keep_button(self) -> None:
        """*Keep unaccepted edits* is enabled only when it can keep something: a store is open and an image's
        prediction layer holds edits not accepted (pixels :meth:`ImageState.unsaved` counts; its tooltip says what
        is missing). The edits are counted as they are made (:meth:`_track`): this walks no layer, but the first
        time a layer is counted (one reopened from the store)."""
        layers = self.viewer.layers
        has_store = self._store is not None
        shown = [(state, layers[main]) for name, state in self.states.items()
                 if state.image_hash and (main := names_for(name)["prediction"]) in layers]
        for _, layer in shown:
            self._track(layer)
        edits = has_store and any(self._needs_keep(state, layer) for state, layer in shown)
        self.keep_edits_button.setEnabled(edits)
        if edits:
            tip = KEEP_TIP
        elif not has_store:
            tip = KEEP_TIP + " (open a project store first)"
        elif not shown:
            tip = KEEP_TIP + " (no prediction layer to keep edits of: predict an image first)"
        elif any(layer.name in state.kept and self._unsaved_count(state, layer) > 0 for state, layer in shown):
            tip = KEEP_TIP + " (the edits not accepted are kept in the store already: edit again to keep more)"
        else:
            tip = KEEP_TIP + (" (no edits to keep: paint, fill or erase in an image's prediction layer first; "
                              "edits accepted are in the store already)")
        if self.keep_edits_button.toolTip() != tip:
            self.keep_edits_button.setToolTip(tip)

    def _needs_keep(self, state: ImageState, layer: Any) -> bool:
        """Whether a prediction layer holds edits not accepted that the store does not keep as they are now."""
        return layer.name not in state.kept and self._unsaved_count(state, layer) > 0

    def _unsaved_count(self, state: ImageState, layer: Any) -> int:
        """The pixels of a prediction layer that Keep unaccepted edits would keep (0 when the layer is not the
        model's shape: Keep skips it), counted in full only if not counted yet."""
        if np.shape(layer.data) != state.original_for(layer.name)[0].shape:
            return 0
        count = state.unsaved_px.get(layer.name)
        if count is None:
            count = state.unsaved_px[layer.name] = state.unsaved(layer.name, np.asarray(layer.data))
        return count

    def _track(self, layer: Any) -> None:
        """Count the edits of a prediction layer as they are made: napari's paint event (a stroke, fill or erase
        done) and its undo and redo (seen at the redraw they cause: :class:`EditHistory`) are counted over the
        pixels they changed (:meth:`ImageState.edit_delta`), not by walking the layer."""
        if layer.unique_id in self._histories:
            return
        self._histories[layer.unique_id] = EditHistory()
        layer.events.paint.connect(self._on_prediction_painted)
        layer.events.set_data.connect(self._on_prediction_redrawn)
        layer.events.data.connect(self._on_prediction_replaced)

    def _prediction_state(self, layer: Any) -> Optional[ImageState]:
        """The state of the image whose prediction layer ``layer`` is (its own or a side one), if the dock has one
        and the layer is on screen under its name."""
        layers = self.viewer.layers
        image = (getattr(layer, "metadata", None) or {}).get(IMAGE_KEY)
        state = self.states.get(image) if image is not None else None
        if state is None or layer.name not in layers or layers[layer.name].unique_id != layer.unique_id:
            return None
        if layer.name != names_for(image)["prediction"] and layer.name not in state.others:
            return None
        return state

    def _count_edit(self, layer: Any, state: ImageState, delta: Optional[int]) -> None:
        """Add ``delta`` to the layer's count of unsaved pixels (None: counted in full when next asked; a layer not
        counted yet is counted in full when asked), and bring the Keep button up to date."""
        if layer.name in state.unsaved_px:
            if delta is None:
                del state.unsaved_px[layer.name]
            else:
                state.unsaved_px[layer.name] += delta
        self._update_keep_button()

    def _on_prediction_painted(self, event: Any) -> None:
        """A stroke, fill or erase done in a prediction layer: counted over the pixels it changed."""
        layer = event.source
        history = self._histories.get(layer.unique_id)
        if history is not None:
            history.painted(event.value)
        state = self._prediction_state(layer)
        if state is not None:
            state.kept.discard(layer.name)  # edited since it was kept
            counted = layer.name in state.unsaved_px
            self._count_edit(layer, state, state.edit_delta(layer.name, event.value) if counted else None)

    def _on_prediction_redrawn(self, event: Any) -> None:
        """A prediction layer redrawn: after an undo or redo, that edit is counted; after any other redraw the layer
        is counted in full (napari redraws a labels layer when it is shown again or its contours change, not at a
        paint stroke, zoom or pan)."""
        layer = event.source
        history = self._histories.get(layer.unique_id)
        if history is None:
            return
        # followed whether or not the layer is counted now, so that it stays in step with napari's history
        sign, item = (0, None) if history.blind else history.moved(layer.data)
        state = self._prediction_state(layer)
        if state is not None and item is not None:
            state.kept.discard(layer.name)  # an undo or redo: not the layer that was kept
        counted = state is not None and layer.name in state.unsaved_px
        if state is None or (not counted and item is None):
            return
        delta = None  # a redraw for another reason (shown again, contours, data written by code, an undo not
        if counted and item is not None:  # seen): counted in full now; none comes with a stroke, a zoom or a pan
            undone = state.edit_delta(layer.name, item)
            delta = None if undone is None else sign * undone
        self._count_edit(layer, state, delta)

    def _on_prediction_replaced(self, event: Any) -> None:
        """A prediction layer's data replaced (a Predict made without streaming, code): counted in full when next
        asked, and at each redraw from then on, undo or not (napari's undo history now holds edits of the data
        before)."""
        layer = event.source
        history = self._histories.get(layer.unique_id)
        if history is not None:
            history.blind = True
        state = self._prediction_state(layer)
        if state is not None:
            state.unsaved_px.pop(layer.name, None)
            state.kept.discard(layer.name)

    def _follow_image(self, layer: Any = None) -> None:
        """The review list follows the image chosen in Predict: its regions not accepted yet, or none. The image
        chosen is the one shown: the other images lying over it are hidden until chosen again
        (:meth:`ReviewPanel.focus`; not while layers are being removed)."""
        review = self.review_panel
        name = getattr(layer, "name", None)
        if name is not None and name == review.image_name:
            return
        hidden = review.focus(name) if name is not None and not self._removing else []
        state = self.states.get(name) if name is not None else None
        if state is not None and state.ranked and names_for(name)["prediction"] in self.viewer.layers:
            if name in self.restored_predictions:  # restored: its review layers are made when first shown
                if self._removing:  # not while layers are being removed (maybe all of them): next turn, if still so
                    QTimer.singleShot(0, lambda: self._overlays_later(name))
                else:
                    self._review_overlays(name, state)
            review.set_tiles(name, not_yet_accepted(state.ranked, self._accepted_boxes(state.image_hash)))
        else:
            review.clear_tiles(name)
        review.focus_note(name, hidden, append=True)
        if name is not None and not self._removing:
            self._show_chosen(name)

    def _choose_shown_region_image(self) -> None:
        """An accepted region's row clicked shows the region on its image (:meth:`ReviewPanel.show_region`); that
        image becomes the one chosen in Predict, so that the status line, the gland table, "Look here next" and the
        layer painted are its own (walk 22: a row of testA_2 showed testA_2 while Predict, the gland table and the
        active layer stayed testA_1's, hidden; Next then said no region was left "on this image")."""
        review = self.review_panel
        record = review.records.get(review.shown_region or "")
        layer = review.image_layer_of(record) if record is not None else None
        if layer is None or layer is self.predict_panel.image_layer:
            return
        self.predict_panel.set_image(layer.name)

    def _screen_changed(self, _event: Any = None) -> None:
        QTimer.singleShot(0, self._display_follows_screen)

    def _display_follows_screen(self) -> None:
        """While a whole slide is on screen (:func:`slide_on_screen`) the Uncertainty and glands panel describes no
        image hidden under it (walk: its legend, gland table and readout stayed those of the GlaS image, and a gland
        row drew that image's box over the slide): the image's are set aside; the slide's own (the Whole slide
        panel's numbered glands) stay. The slide hidden or closed, the image chosen in Predict is described again."""
        try:
            slide = slide_on_screen(self.viewer)
        except RuntimeError:  # the viewer is being closed
            return
        panel = self.display_panel
        if slide is not None:
            if self._give_way_to(slide):
                self._show_slide_glands(slide.name)  # the slide's own, when the Whole slide panel numbered them
            return
        if not self._display_gave_way:
            return
        self._display_gave_way = False
        if panel.image_name is None:
            panel.set_aside()  # the note about the slide goes
        chosen = self.predict_panel.image_layer
        if chosen is not None and chosen in self.viewer.layers and not self._removing:
            self._show_chosen(chosen.name)

    def _give_way_to(self, slide: Any) -> bool:
        """The Uncertainty and glands panel sets aside the image it describes for the whole slide on screen (its one
        line names the slide; with nothing described, the line and the dock's rows stay put). Returns whether the
        panel was not already showing the slide's own glands."""
        self._display_gave_way = True
        panel = self.display_panel
        if of_a_slide(panel.labels_layer):
            return False
        if panel.image_name is not None:
            panel.set_aside(slide_display_note(slide.name))
        return True

    def _show_chosen(self, name: str) -> None:
        """The legend, gland table and layer selection follow the image chosen in Predict, when it has a prediction
        (walk: after choosing testA_1 and pressing Next, the table still listed testA_2's glands and testA_2's hidden
        prediction stayed the selected layer, so the brush painted there). The selection moves to the image's
        prediction layer only from a layer of another image or a hidden one: the user's own layers stay selected."""
        names, layers = names_for(name), self.viewer.layers
        slide = slide_on_screen(self.viewer)
        if slide is not None:  # the image lies hidden under a whole slide: described once the slide is not
            self._give_way_to(slide)
            return
        if name not in self.states or names["prediction"] not in layers or names["uncertainty"] not in layers:
            if (name in layers and not is_derived(layers[name]) and not self.predict_panel.running
                    and self.display_panel.image_name != name):
                self.display_panel.set_aside()  # not another image's glands under an image without a prediction
            return
        labels, umap = layers[names["prediction"]], layers[names["uncertainty"]]
        active = layers.selection.active
        if active is None or not active.visible or focus_owner(active) not in (None, name):
            layers.selection.active = labels
        panel = self.display_panel
        if panel.image_name == name and unwrap_layer(panel.labels_layer) is unwrap_layer(labels):
            return
        glands = panel.table_of(name, labels)
        small = not getattr(umap, "multiscale", False) and int(np.prod(labels.data.shape)) <= LIVE_GLANDS_PIXELS
        if small:  # made again: it may have been painted since (a GlaS image: tens of ms)
            glands = self._glands_of(labels, umap, glands)
        state = self.states.get(name)
        panel.show_result(name, umap, labels, tuple(umap.contrast_limits), glands or [],
                          model_label=state.model_name if state is not None else "")

    def _overlays_later(self, name: str) -> None:
        """The review layers of a restored image the review list moved to while a layer was being removed, made
        now if it is still the one listed (a removal of every layer leaves none to make)."""
        state = self.states.get(name)
        if (state is not None and name == self.review_panel.image_name and name in self.viewer.layers
                and names_for(name)["prediction"] in self.viewer.layers):
            self._review_overlays(name, state)

    def _fit_view(self) -> None:
        """Show the whole image after its first prediction.

        The dock grows when the gland table and review list fill, which shrinks the canvas after
        the camera was set and crops the image; so the view is reset now and once more after the
        layout has settled, unless the user has moved the camera in between.
        """
        self.viewer.reset_view()
        camera = scene_camera(self.viewer)
        before = (tuple(camera.center), camera.zoom)

        def again() -> None:
            if (tuple(camera.center), camera.zoom) == before:
                self.viewer.reset_view()

        QTimer.singleShot(0, again)

    def layer_names(self, image_name: Optional[str] = None) -> Dict[str, str]:
        """Names of the layers derived from an image (default: the last predicted one)."""
        return names_for(image_name or self.last_image or "")

    def _on_model_changed(self, version: str) -> None:
        """A new current model: select it and refresh the predictions of the image on screen (into a new
        layer if its prediction layer holds edits not accepted yet)."""
        self.retrain_panel.model_now_current(version)  # Keep new model anyway goes once its version is current
        self._sync_from_store(select_current=True)
        image = self._image_to_refresh()
        for name, state in list(self.states.items()):  # the other images show their own layer's glands, said stale
            if name != image and name in self.viewer.layers:
                self._hide_side_layers(name, state)
        if image is not None:
            if not self.predict_panel.running and self._already_predicted_by(image, version):
                return
            if self.predict_panel.running:
                self._refresh_after_predict = image  # re-run once the current run has stopped
                self.predict_panel.cancel()
            else:
                self.predict(image)

    def _image_to_refresh(self) -> Optional[str]:
        """The image a new current model predicts again: the one chosen in Predict, which is the one on screen
        (walk 22: a roll back with testA_2 chosen and shown predicted the hidden testA_1, the last image predicted),
        if it has been predicted; else the last image predicted; None if neither is open."""
        chosen = self.predict_panel.image_layer
        name = getattr(chosen, "name", None)
        layers = self.viewer.layers
        if chosen is not None and chosen in layers and name in self.states and names_for(name)["prediction"] in layers:
            return name
        return self.last_image if self.last_image and self.last_image in layers else None

    def _already_predicted_by(self, image: str, version: str) -> bool:
        """When the image's own prediction layer (the one corrected) was made by ``version``, the model now
        current: nothing is predicted again (walk 20: a roll back to the model behind it added a copy of it,
        "<image> prediction (bundled)", beside it). Its side layers (another version's prediction) are hidden so
        that the glands on screen are the current model's, and the Predict status says so; True then."""
        state = self.states.get(image)
        main = names_for(image)["prediction"]
        if state is None or main not in self.viewer.layers or str(state.model_version) != str(version):
            return False
        self._hide_side_layers(image, state)
        self.viewer.layers[main].visible = True
        edits = state.unsaved(main, self.viewer.layers[main].data)
        held = f", with {edits} edited pixel(s) not accepted yet" if edits else ""
        label = state.model_name or version
        panel = self.predict_panel
        panel.last_message = (f"'{main}' is already {label}'s prediction{held}: nothing predicted again. Other "
                              f"versions' layers of '{image}' are hidden.")
        kept = f" (your {edits} unaccepted edited pixel(s) kept)" if edits else ""
        panel.show_status(f"{image}: the layer you correct is {label}'s{kept}; nothing predicted again, other "
                          "versions hidden.", panel.last_message)
        return True

    def _hide_side_layers(self, image: str, state: ImageState, keep: str = "") -> None:
        """Hide the image ``image``'s side prediction layers (other versions', or one written aside to keep edits) but
        ``keep``; hidden for good: not shown again when the image, hidden under another, is chosen again (walk 23:
        a version tried aside came back over the image after a roll back)."""
        remembered = self.review_panel.hidden_by_focus.get(image, set())  # what focus would show again
        for other in state.others:
            if other != keep and other in self.viewer.layers:
                self.viewer.layers[other].visible = False
                remembered.discard(self.viewer.layers[other].unique_id)

    def _on_predict_idle(self) -> None:
        image, self._refresh_after_predict = self._refresh_after_predict, None
        if image and image in self.viewer.layers:
            self.predict(image)
