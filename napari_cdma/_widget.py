"""The napari-cdma dock: project store, Predict, review / correct / accept, Retrain, versions.

The dock is a composite of small panels (``_widget_predict``, ``_widget_display``,
``_widget_review``, ``_widget_retrain``, ``_widget_versions``) and of mixins (``_widget_restore``: opening a
store and restoring its layers; ``_widget_save``: the latest predictions and edits kept in it; ``_widget_edits``:
the viewer's layer events and the edits of prediction layers counted as made); it owns the project store and the
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
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

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
    Reviewed,
    is_derived,
    names_for,
    not_yet_accepted,
    paste_corrections,
    raise_overlays,
    show_accepted,
    show_prediction,
    show_reviewed,
    side_suffix,
    uncertainty_values,
    unwrap_layer,
)
from ._scroll_anchor import ScrollAnchor
from ._shapes_keepalive import keep_removed_shapes_visuals
from ._widget_display import LIVE_GLANDS_PIXELS, DisplayPanel
from ._widget_edits import KEEP_TIP as KEEP_TIP  # re-exported: tests import it from here
from ._widget_edits import EditHistory, EditTrackingMixin, ImageState
from ._widget_predict import BUNDLED, PredictPanel, PredictResult, closed_prediction_note, predictable
from ._widget_restore import StoreRestoreMixin
from ._widget_retrain import RetrainPanel
from ._widget_review import (
    ReviewPanel,
    covered_by,
    focus_owner,
    of_a_slide,
    scene_camera,
    show_review_outlines,
    slide_on_screen,
    top_image,
)
from ._widget_save import PredictionSaveMixin
from ._widget_slide import SlidePanel
from ._widget_store import Restore, StoreSummary, last_store, regions_by_image, remember_store
from ._widget_versions import VersionsPanel
from .project.store import ProjectStore, RegionRecord

logger = logging.getLogger(__name__)
_install_exit_hook()  # running workers quit before Python's teardown when a script exits (napari_cdma._exit)

PROJECT_ENV = "NAPARI_CDMA_PROJECT"
#: The dock's width when it opens (px): beside napari's layer list in its default window (about 1089 px
#: wide) the canvas keeps about 500 px.
DOCK_WIDTH = 280


def slide_display_note(slide_name: str) -> str:
    """What the Uncertainty and glands panel says while the whole slide ``slide_name`` hides the image chosen."""
    return (f"The whole slide '{slide_name}' is on screen: its uncertainty and glands are in the Whole slide panel "
            "(hide or close it to see the image's here).")


def default_project_path() -> Path:
    """Project store used when none is chosen: ``$NAPARI_CDMA_PROJECT``, else the store opened last in a dock
    (:func:`~napari_cdma._widget_store.last_store`, walk 26), else ~/napari-cdma-project."""
    return Path(os.environ.get(PROJECT_ENV) or last_store() or Path.home() / "napari-cdma-project")


class CdmaWidget(StoreRestoreMixin, PredictionSaveMixin, EditTrackingMixin, QWidget):
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
        #: an image's own prediction layer being removed (:meth:`_note_closing_prediction`): (its layer's unique id,
        #: the image, its edited pixels not accepted, whether the store kept them already)
        self._closing: Optional[Tuple[Any, str, int]] = None
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
        self.predict_panel.goes_aside = self._goes_aside
        self.display_panel = DisplayPanel(self.viewer)
        self.predict_panel.fill_for = self.display_panel.fill_check.isChecked
        self.predict_panel.settled_for = self.handed_over
        self.review_panel = ReviewPanel(self.viewer, lambda: self.store, self.states.get,
                                        image_label=self._region_image_label)
        self.review_panel.restoring = self._being_restored  # walk 24: "Predict ..." while a reopen looked for it
        # an open store only: Retrain and Roll back must not create one (the first Predict or Accept does)
        self.retrain_panel = RetrainPanel(self._open_store_only, before_start=self._add_open_images)
        self.retrain_panel.image_text = self.review_panel.image_text  # the table names images as the list does
        self.retrain_panel.open_name = self.review_panel.open_image_name
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
        # walk 24: an image switched from the layer list (a layer of it made active) is the one chosen
        self._own_selection, self._inserted_id = False, None
        self.viewer.layers.events.inserted.connect(self._note_inserted)
        self.viewer.layers.selection.events.active.connect(self._follow_active_layer)
        # walk 26: a layer dragged in the layer list is followed as an eye icon is (_follow_reorder); one drag (maybe
        # of several layers) is one "moving" per layer, then one "reordered"
        self._top_before: Optional[Tuple[str, Optional[str]]] = None
        self._reordering = False
        self.viewer.layers.events.moving.connect(self._note_top)
        self.viewer.layers.events.reordered.connect(self._follow_reorder)
        # after the panel's own handler (connected first) has shown the region on its image
        self.review_panel.region_list.itemClicked.connect(lambda _item: self._choose_shown_region_image())
        self.viewer.layers.events.removing.connect(self._note_closing_prediction)  # before its edits are kept
        self.viewer.layers.events.removing.connect(self._on_layer_removing)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.viewer.layers.events.removed.connect(self._say_prediction_closed)
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        for layer in self.viewer.layers:  # opened before the dock: their eye icons are followed too (walk 25)
            layer.events.visible.connect(self._screen_changed)
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

    def open_store(self, path: os.PathLike, quiet: bool = False, select_current: bool = True,
                   create: Optional[bool] = True) -> Optional[ProjectStore]:
        """:meth:`StoreRestoreMixin.open_store` (the same arguments, spelt out: callers and tests read them from the
        signature); a store opened is remembered for the next dock's path field
        (:func:`~napari_cdma._widget_store.remember_store`), unless ``$NAPARI_CDMA_PROJECT`` names the store to use."""
        store = super().open_store(path, quiet=quiet, select_current=select_current, create=create)
        if store is not None and not os.environ.get(PROJECT_ENV):
            remember_store(store.root)
        return store

    def showEvent(self, event: Any) -> None:
        """The first time the dock shows, the view is fitted again: docking it narrows the canvas, which
        napari does not refit, so an image opened before it was cropped (pathologist walk)."""
        super().showEvent(event)
        if not getattr(self, "_shown_once", False):
            self._shown_once = True
            if len(self.viewer.layers) and not self.states:
                QTimer.singleShot(0, self._fit_view)

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
            self.retrain_panel.refresh_tip()
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
        self.retrain_panel.refresh_tip()  # what Retrain needs now (walk 24: "Needs a project store" with one open)
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

    def _goes_aside(self, image_name: str) -> bool:
        """Whether a new prediction of ``image_name`` by the current model will go beside its prediction layer, as
        :meth:`_target_layer` decides at the hand-over: the layer holds edits the store does not have (review 18: its
        live layer was drawn in the current model's colours until then)."""
        state = self.states.get(image_name)
        main = names_for(image_name)["prediction"]
        if state is None or main not in self.viewer.layers:
            return False
        return self._unsaved_count(state, self.viewer.layers[main]) > 0

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
            self._own_selection = True
            try:
                self.viewer.layers.selection.active = layer
            finally:
                self._own_selection = False

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
        """:meth:`handed_over`, and a large image's save has been started (it starts
        :data:`~napari_cdma._widget_save.SAVE_DELAY_MS` after its hand-over)."""
        return self.handed_over() and self._pending_save is None

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

    def _screen_changed(self, event: Any = None) -> None:
        if getattr(event, "type", None) == "visible":
            self._follow_covering(getattr(event, "source", None))
        QTimer.singleShot(0, self._display_follows_screen)
        QTimer.singleShot(0, self._follow_shown_image)

    def _note_inserted(self, event: Any) -> None:
        """napari makes a layer just added the active one: that is not the user choosing its image."""
        self._inserted_id = getattr(getattr(event, "value", None), "unique_id", None)
        QTimer.singleShot(0, lambda: setattr(self, "_inserted_id", None))

    def _dock_busy(self) -> bool:
        return self._own_selection or self._removing or self._restoring is not None or bool(self._turns)

    def _follow_active_layer(self, event: Any = None) -> None:
        """A shown layer of an image (the image or a layer the dock made of it) made active in the layer list chooses
        that image in Predict (walk 24: the dock kept describing testA_2 over testA_1). The user's own layers, hidden
        layers and the dock's own selections change nothing."""
        from napari.layers import Shapes

        layer = getattr(event, "value", None)
        inserted, self._inserted_id = self._inserted_id, None
        if layer is None or self._dock_busy() or getattr(layer, "unique_id", None) == inserted:
            return
        if isinstance(layer, Shapes):  # the dock's frames and boxes (a row's "shown region" frame, made active as
            return  # napari adds it, chose its image mid-way through the row's own choosing: test_walk22_rollback)
        if getattr(layer, "visible", False):
            self._choose_image_of(focus_owner(layer))

    def _follow_shown_image(self) -> None:
        """The image chosen in Predict hidden (eye icons) with exactly one other image shown: that one is chosen. An
        image shown over it is followed only when the user turns its eye on (:meth:`_follow_covering`) or drags it
        above (:meth:`_follow_reorder`), not on any change of the screen: a prediction's layers coming in while
        another image lay over the chosen one switched the dock to that image mid-way through the prediction
        (tests/test_dock_walk_leftovers.py)."""
        try:
            layers = self.viewer.layers
            chosen = self.predict_panel.image_layer
        except RuntimeError:  # the viewer is being closed
            return
        if self._dock_busy() or chosen is None or chosen not in layers or chosen.visible:
            return
        shown = [ly for ly in layers if ly.visible and ly.name != chosen.name and predictable(ly)]
        if len(shown) == 1:
            self._choose_image_of(shown[0].name)

    def _follow_covering(self, layer: Any) -> None:
        """An image shown (its eye icon) over the image chosen in Predict, above it in the layer list and overlapping
        it (:func:`covered_by`), is chosen at once, as selecting it in the layer list does (walk 25: testB_5's image
        turned on over testB_1; the dock kept describing testB_1, hidden under it, and Accept whole image stored
        it). At once, so that a choice made right after it in Predict is the one that counts."""
        try:
            layers = self.viewer.layers
            chosen = self.predict_panel.image_layer
        except RuntimeError:  # the viewer is being closed
            return
        if (layer is None or self._dock_busy() or not getattr(layer, "visible", False) or not predictable(layer)
                or chosen is None or chosen is layer or chosen not in layers or not chosen.visible):
            return
        self._choose_image_of(covered_by(self.viewer, chosen))

    def _top_now(self) -> Optional[Tuple[str, Optional[str]]]:
        """(image chosen in Predict, the image on top over it: :func:`top_image`), or None while the dock is busy or
        predicting (a prediction's own layer moves switch nothing: 4ef81b5) or the image chosen is not shown."""
        try:
            layers = self.viewer.layers
            chosen = self.predict_panel.image_layer
        except RuntimeError:  # the viewer is being closed
            return None
        if (self._dock_busy() or self.predict_panel.running or chosen is None or chosen not in layers
                or not chosen.visible):
            return None
        return chosen.name, top_image(self.viewer, chosen, self.review_panel.hidden_by_focus)

    def _note_top(self, _event: Any = None) -> None:
        """Before a reorder of the layer list (its first layer moved): which image was on top."""
        if not self._reordering:
            self._reordering, self._top_before = True, self._top_now()

    def _follow_reorder(self, _event: Any = None) -> None:
        """A reorder of the layer list that put another image on top over the image chosen in Predict
        (:func:`top_image`: a shown image dragged above it, or it dragged under one; or the image the dock hid to show
        it, or its prediction, dragged back on top) chooses that image, as its eye icon turned on does
        (:meth:`_follow_covering`). A reorder that leaves the same image on top (the user's own layers moved, an image
        moved under it, the dock's overlays raised) switches nothing (walk 26: testA_2 dragged above testA_1; the dock
        kept describing testA_1)."""
        noted, before = self._reordering, self._top_before
        self._reordering, self._top_before = False, None
        after = self._top_now()
        if not noted or before is None or after is None or before[0] != after[0]:
            return
        chosen, top = after
        if top is not None and top not in (chosen, before[1]):
            self._choose_image_of(top)

    def _choose_image_of(self, name: Optional[str]) -> None:
        panel = self.predict_panel
        if not name or name not in self.viewer.layers or getattr(panel.image_layer, "name", None) == name:
            return
        if predictable(self.viewer.layers[name]):
            panel.set_image(name)

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

    def _note_closing_prediction(self, event: Any = None) -> None:
        """An image's own prediction layer is about to be removed while the image stays open: its edits not accepted
        are counted now, before :meth:`_on_layer_removing` keeps them in the store (for
        :meth:`_say_prediction_closed`)."""
        self._closing = None
        try:
            layer = self.viewer.layers[int(event.index)]
        except (AttributeError, IndexError, TypeError, ValueError):
            return
        image = (getattr(layer, "metadata", None) or {}).get(IMAGE_KEY)
        state = self.states.get(image) if image is not None else None
        if state is None or image not in self.viewer.layers or layer.name != names_for(image)["prediction"]:
            return
        try:
            edits = self._unsaved_count(state, layer)
        except Exception:  # a removal must not fail
            logger.exception("could not count the edits of '%s' as it closed", layer.name)
            edits = -1
        self._closing = (layer.unique_id, image, edits)

    def _say_prediction_closed(self, event: Any = None) -> None:
        """The image's own prediction layer was removed (walk 26: Predict still said "predicted with bundled at
        17:56"): the Predict status says so, what became of its edits not accepted (kept in the store, or gone with
        the layer) and how to get it back (:func:`closed_prediction_note`). An image closed drops what was said of
        its prediction layer."""
        layer = getattr(event, "value", None)
        closing, self._closing = self._closing, None
        if layer is not None and not is_derived(layer) and layer.name not in self.viewer.layers:
            self.predict_panel.say_closed(layer.name, None)
        if closing is None or closing[0] != getattr(layer, "unique_id", None):
            return
        _, image, edits = closing
        state = self.states.get(image)
        if state is None or image not in self.viewer.layers:
            return
        kept = edits > 0 and names_for(image)["prediction"] in state.kept
        self.predict_panel.say_closed(image, closed_prediction_note(image, edits, kept, self._stored_latest(state)))

    def _stored_latest(self, state: ImageState) -> bool:
        """Whether the open store holds the prediction behind an image's prediction layer as its latest (Open brings
        it back then), as :meth:`keep_edits` checks it."""
        if self._store is None or not state.image_hash:
            return False
        self.flush_prediction_saves(5.0)
        try:
            record = self._store.latest_prediction(state.image_hash)
        except Exception:
            return False
        return (record is not None and tuple(record.shape) == tuple(np.shape(state.original_labels))
                and (record.model_version or None) == state.model_version)

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
