"""Whole-slide panel: predict the visible region on demand into the slide's prediction store, review
regions over the predicted area, and correct a bounded full-resolution window.

A slide opened by the plugin's reader (an RGB multiscale layer whose metadata ``cdma_slide`` names
the file) is predicted chunk by chunk into an OME-Zarr store (:mod:`src_model.slide_store`, written by
:func:`src_model.slide_predict.predict_slide`): "Predict view" computes only the chunks under the
canvas that the store does not hold yet (at most :data:`~napari_cdma._slide_view.MAX_VIEW_CHUNKS`,
nearest the centre first), in a worker thread. The store's gland labels and uncertainty are shown as
multiscale layers read straight from the store, so panning shows every chunk predicted so far. A view
whose slide layer was closed (or replaced) before its job returned is shown nowhere: the store keeps its
chunks, and the status line says so. The Slide chooser lists only the slides (the reader's RGB slide
layers), never the panel's overlays, which name the slide in their metadata too.

napari cannot paint multiscale labels (napari issue #1587): "Edit window" opens an ordinary Labels
layer over the view (at most :data:`~napari_cdma._slide_view.MAX_EDIT_SIDE` store pixels a side) at
the store's full resolution; "Accept window" writes it back into the store's labels and their
pyramid, and records it in the project store as a region of the slide
(:mod:`napari_cdma.project.slide_regions`), with the slide's path and the box as provenance. Both read
or write the stores and split glands in a worker thread (seconds for a large window), the viewer staying
responsive; the layer is added or updated when the worker returns. One job (Predict view, Export, Edit,
Accept or Withdraw window) runs at a time: the buttons are off meanwhile (Cancel stops a prediction); idle, each is on
only when it can act (Edit window: a view shown; Accept window: an edit window open; Withdraw window: an accepted
window selected; Export: a store), a disabled one's tooltip saying what it needs first. A
progress bar shows under them while it runs (hidden when idle), and the status line under it says what runs
and how the last job ended, on two lines whose height never changes (a longer message is cut with an ellipsis
and read whole in its tooltip: :class:`StatusLine`; each message says first what is done and how much, and what to do
next), so the controls below it never move with it. The uncertainty's legend and readout sit under the panel's
controls: they show with a slide's first prediction and move nothing above them. A slide opened (by the reader, with
the dock open) is chosen and framed, as napari frames the first layer opened only (not a slide opened again while
the view lies within it and its overlays are open). Review regions half covered or
more by an accepted window are reviewed: they leave the list and their outlines go (back when it is withdrawn). Accepted
windows are outlined just outside their pixels, in red like accepted image regions, and listed in the panel; the
outlines of accepted windows and review regions keep :data:`OUTLINE_PX` screen pixels at every zoom: they are frame
layers as an image's review and accepted regions are (:func:`~napari_cdma._layers.frames_of`), drawn again for a new
zoom by the review panel's zoom handler (:func:`~napari_cdma._layers.redraw_frames`).
"Withdraw window" withdraws the selected one from the project and undoes it in the store's labels and pyramid, in a
worker thread too, as if it had never been accepted (overlapping live windows keep their corrections); a window
withdrawn elsewhere (the accepted-region list of the dock) is undone in the store in a worker thread too,
within :data:`WATCH_MS` (the panel watches the open project store's index while windows are listed), or
when the job running then ends (:meth:`SlidePanel.sync`), and in any case before the panel next uses the store:
Predict view, Export, Edit and Accept window undo them first in their own worker thread. An edit window open
over a window so undone is read again in that worker and shows the store's labels in place (its layer is kept:
napari collects garbage on the GUI thread when a layer is removed). "Export GeoJSON..." writes the store's glands as
QuPath annotations (:mod:`src_model.export`, as ``cdma export STORE --geojson FILE``).

Numbered glands: once every chunk of a slide is predicted (after a Predict view, and when a slide or store whose
store is complete is chosen), its glands are numbered one label per gland, a gland cut by chunk sides one label,
with the dock's post-processing and the numbers Export gives (:func:`src_model.export.write_instances`, written
atomically into the store as ``labels/instances`` and reused while the store's gland labels are unchanged), in a
process of its own watched by a worker thread (:func:`~napari_cdma._slide_view.number_glands_job`), and shown as
"<slide> glands (numbered)", a read-only multiscale Labels layer filled under the glands' outlines. The editable
path stays the edit window's (napari cannot paint multiscale labels); a job that writes the store's labels stops the
numbering, which runs again when the job ends, the layer drawn transparent until its numbers are current again.
:attr:`SlidePanel.gland_rows` holds the per-gland table (the dock's gland-table rows, boxes in world pixels) and
``glands_numbered`` says when it is ready.
"""
from __future__ import annotations

import contextlib
import getpass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from magicgui.widgets import ComboBox, create_widget
from napari.layers import Image, Shapes
from qtpy.QtCore import QEvent, QSize, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._layers import (
    OUTLINE_WIDTH,
    ROLE_KEY,
    camera_for_tile,
    frames_of,
    gland_colormap,
    names_for,
    narrow_combo,
    not_yet_accepted,
    set_frames,
    show_accepted,
    show_review_tiles,
    style_prediction,
)
from ._messages import show_message
from ._slide_view import (
    MAX_EDIT_SIDE,
    MAX_VIEW_CHUNKS,
    NUMBERED,
    RANGE_KEY,
    SLIDE_KEY,
    STORE_KEY,
    accept_window_job,
    default_store_path,
    edit_window_job,
    export_geojson_job,
    has_edits,
    number_glands_job,
    pending_withdrawn,
    predict_view_job,
    release_held,
    reopen_job,
    slide_of,
    store_display_range,
    uncertainty_style,
    undo_withdrawn_job,
    visible_world_box,
    warm_slide_reader,
    withdraw_window_job,
)
from ._widget_display import UncertaintyLegend, readout_label, readout_text, value_under
from ._widget_review import box_text, canvas_hw, is_slide, readable_list, scene_camera, tile_row, world_box

Box = Tuple[int, int, int, int]
#: Chunk side of the stores the panel creates (the store's unit of work and of caching).
DEFAULT_CHUNK = 1024
#: Progress steps of a Predict view after the job's own (showing its layers and review regions in the
#: viewer): the bar is full only when the run has ended.
SHOW_STEPS = 1
#: Share of the canvas left around a slide framed by :meth:`SlidePanel.frame`, as napari's reset_view leaves
#: around the layer it fits.
FRAME_MARGIN = 0.05
#: How often the panel checks whether a listed accepted window was withdrawn elsewhere, ms.
WATCH_MS = 1000
#: Width of the panel's outlines over the slide (review regions, accepted windows), screen pixels at every zoom
#: (:func:`~napari_cdma._layers.redraw_frames`): a width in slide pixels would vanish at the zoom a slide is looked at.
OUTLINE_PX = 3.0
#: Wait between the steps that show a job's result (:meth:`SlidePanel._in_steps`), ms: a timer, not a queued call
#: (Qt runs queued calls back to back), so that the viewer's timers and drawing run in between.
STEP_MS = 1
#: When the panel starts importing what a slide's open imports (:func:`~napari_cdma._slide_view.warm_slide_reader`),
#: ms after it is made: after the dock's own warm-up threads have started (1 s), and once they have ended (polled
#: every :data:`WARM_POLL_MS`), so that three threads of imports never compete with the GUI thread for the GIL.
WARM_READER_MS = 1250
WARM_POLL_MS = 250
#: What the status line says of the job that runs when another is asked for (one job at a time).
BUSY = {"predict": "A prediction is running", "export": "An export is running",
        "edit": "An edit window is being read", "accept": "The edit window is being accepted",
        "withdraw": "A window is being withdrawn", "sync": "A window withdrawn elsewhere is being undone"}
#: How the status line starts once a job of that kind did its work (the progress bar then shows it done).
DONE = {"predict": "Predicted", "export": "Exported", "edit": "Edit window of", "accept": "Accepted the window",
        "withdraw": "Withdrew window", "sync": "Undid window"}
#: The jobs that may write the store's gland labels (a prediction, an accepted or undone window; Export and Predict
#: view undo withdrawn windows first): the numbered glands are checked, and numbered again if need be, after them.
WRITES = ("predict", "export", "accept", "withdraw", "sync")
#: The job buttons' tooltips when they can act; a disabled one's tooltip says first what it needs (as the image
#: review's buttons do: walk 20, on a fresh slide Edit, Accept, Withdraw window and Export were on, and a click only
#: said "Open an edit window first").
TIPS = {"predict": "Predict the chunks of the slide under the canvas that are not predicted yet",
        "edit": f"Editable labels over the view (at most {MAX_EDIT_SIDE} px a side)",
        "accept": "Write the edited window into the slide's labels and the project store",
        "withdraw": "Withdraw the selected accepted window from the project and undo it in the slide's labels",
        "export": "Write the glands of the slide's prediction store as polygons that QuPath imports as annotations "
                  "(File > Import objects)"}
#: What a disabled job button needs first (its tooltip's first line).
NEEDS = {"slide": "Open a slide first (drag it onto the viewer).",
         "predict": "Predict the view first (Predict view).",
         "reading": "The slide's store is being read: its review regions and accepted windows come first.",
         "window": "Open an edit window first (Edit window).",
         "select": "Select an accepted window in the list first.",
         "store": "Nothing to export yet: predict the view first (Predict view) to fill the slide's store."}
#: Opacity of the numbered glands (filled, a colour per gland, under the glands' outlines).
NUMBERED_OPACITY = 0.55
#: Metadata of the numbered glands' layer while its numbers are out of date (being numbered again): the opacity to
#: draw it at again (it is transparent meanwhile).
OUT_OF_DATE_KEY = "cdma_out_of_date_opacity"
#: Fill colours of the numbered glands, by gland number (cyclic): 13 saturated hues that read over the pinks and
#: purples of H&E at :data:`NUMBERED_OPACITY` (no black, white, grey, brown, pink or purple: black and white filled
#: glands darkened or washed out the tissue), in an order that keeps consecutive numbers (neighbours in a chunk's
#: row) far apart; 13, a prime, so that no short period of the numbering repeats a colour. On the 8192 x 8192 GlaS
#: mosaic, 19 of 528 pairs of numbered glands within 12 px of each other (3.6 %) share a colour (10 colours: 30,
#: 5.7 %).
NUMBERED_COLORS = ((0.0, 1.0, 0.0), (0.0, 0.35, 1.0), (1.0, 0.55, 0.0), (0.0, 1.0, 1.0), (1.0, 0.0, 0.0),
                   (1.0, 1.0, 0.0), (0.0, 0.7, 0.3), (0.0, 0.75, 1.0), (0.65, 1.0, 0.0), (0.0, 0.7, 0.75),
                   (1.0, 0.3, 0.0), (0.0, 1.0, 0.6), (0.0, 0.0, 1.0))


def numbered_colormap() -> Any:
    """Cyclic label colormap of the numbered glands (0 = background, transparent)."""
    from napari.utils.colormaps import CyclicLabelColormap

    colors = np.array([(0.0, 0.0, 0.0, 0.0)] + [(*c, 1.0) for c in NUMBERED_COLORS], dtype=np.float32)
    return CyclicLabelColormap(colors=colors, name="numbered glands")


def _alive(widget: QWidget) -> bool:
    """Whether the Qt object behind ``widget`` still exists (it is deleted when the viewer closes)."""
    try:
        widget.objectName()
    except RuntimeError:
        return False
    return True


def _kill(procs: List[Any]) -> None:
    """Kill the numbering processes still running (their write is atomic: the store keeps its numbers as they were)."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()


#: Passes of :meth:`SlidePanel._settle_layout`: one per level of widgets from the panel up to the dock's scroll area
#: (about a dozen in napari's dock), with room to spare.
LAYOUT_PASSES = 24

#: Lines of the panel's status lines (:class:`StatusLine`): in the dock's 225 px, one line showed about 30 characters
#: of a job's message, two show most of a short one; a longer one is cut, and read whole in the line's tooltip.
STATUS_LINES = 2


def fit_lines(text: str, metrics: Any, width: int, lines: int) -> str:
    """``text`` wrapped at spaces into at most ``lines`` lines of ``width`` px (``metrics``: a QFontMetrics), the last
    cut with an ellipsis if the rest does not fit on it; its own line breaks count as spaces. A word wider than a
    line (a path) is broken where the line ends."""
    words = text.split()
    out: List[str] = []
    while words and len(out) < lines - 1:
        line = words[0]
        if metrics.horizontalAdvance(line) > width:  # broken where the line ends
            k = max(1, next((i for i in range(1, len(line)) if metrics.horizontalAdvance(line[:i + 1]) > width),
                            len(line)))
            out.append(line[:k])
            words[0] = line[k:]
            continue
        i = 1
        while i < len(words) and metrics.horizontalAdvance(f"{line} {words[i]}") <= width:
            line, i = f"{line} {words[i]}", i + 1
        out.append(line)
        words = words[i:]
    if words:
        out.append(metrics.elidedText(" ".join(words), Qt.TextElideMode.ElideRight, width))
    return "\n".join(out)


def predicted_message(summary: Any, n_chunks: int, n_visible: int) -> str:
    """The status line after a Predict view: how much of the slide is predicted and what to do next first, on the two
    lines the status line shows in a dock of the default width (225 px, about 33 characters a line); the rest, in its
    tooltip (pathologist walk: "1 of 12 chunks of the slide are done" was read in the tooltip only).

    Args:
        summary: the run's :class:`~src_model.slide_predict` summary (``chunks_computed``, ``chunks_done``,
            ``chunks_total``).
        n_chunks: chunks of the view the run did (computed or found in the store).
        n_visible: chunks the view covers (more than ``n_chunks`` when it held more than one press does).
    """
    new, done, total = int(summary.chunks_computed), int(summary.chunks_done), int(summary.chunks_total)
    head = f"Predicted {new} new chunk(s)."
    if n_visible > n_chunks:  # the view holds more than a press predicts
        return (f"{head} {done} of {total} chunks done; press again for more. The view covers {n_visible} chunks; "
                f"the {n_chunks} nearest its centre were done: press again, or zoom in. ({n_chunks - new} of them "
                "were in the store already.)")
    if done >= total:
        return f"{head} All {total} chunks of the slide are done. ({n_chunks - new} of the view's were in the store.)"
    return (f"{head} {done} of {total} chunks done; pan, press again. The rest of the slide is not predicted yet: "
            f"pan (or zoom out) to it and press Predict view. ({n_chunks - new} of the view's chunks were in the store "
            "already.)")


class StatusLine(QLabel):
    """A message line of a fixed height (``lines`` text lines, :data:`STATUS_LINES`) whatever it says, as wide as its
    panel: a message longer than that is cut with an ellipsis and read whole in the line's tooltip (:meth:`text`
    returns it whole too; :meth:`shown_text` what shows). A word-wrapping label grew to 3-4 lines at a job's first
    message and pushed the controls below it down by 40-49 px (pathologist walk); this one keeps its height, so
    nothing under it moves when a job starts, runs or ends."""

    def __init__(self, text: str = "", lines: int = STATUS_LINES, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._full = ""
        self.lines = max(1, int(lines))
        self.setWordWrap(False)  # wrapped by fit_lines, to at most its lines
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        # as wide as the panel gives it (its text never widens a narrow dock), its lines high
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        # napari's style sheet pads labels by a few px that contentsMargins() does not report: the second line was
        # drawn cut through (pathologist walk); without that padding the lines fit the height measured below
        self.setStyleSheet("QLabel { padding: 0px; }")
        self.setText(text)

    def text(self) -> str:  # the whole message, not the part shown
        return self._full

    def setText(self, text: str) -> None:
        self._full = str(text or "")
        self.setToolTip(self._full)  # the whole message, on its own lines
        self._fit()

    def shown_text(self) -> str:
        """What the line shows: the message on its lines, cut with an ellipsis when longer."""
        return super().text()

    def _height(self) -> int:
        metrics, margins = self.fontMetrics(), self.contentsMargins()
        return (metrics.height() + (self.lines - 1) * metrics.lineSpacing() + margins.top() + margins.bottom()
                + 2 * self.margin() + 2)  # 2 px of slack for a style that draws the text lower

    def sizeHint(self) -> QSize:
        return QSize(super().sizeHint().width(), self._height())

    def minimumSizeHint(self) -> QSize:
        return QSize(0, self._height())

    def _fit(self) -> None:
        width = max(1, self.contentsRect().width() - 2 * self.margin() - max(0, self.indent()))
        shown = fit_lines(self._full, self.fontMetrics(), width, self.lines)
        if super().text() != shown:
            super().setText(shown)

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self._fit()

    def changeEvent(self, event: Any) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.FontChange, QEvent.Type.StyleChange):  # the viewer's style, once docked
            self.updateGeometry()
            self._fit()


def _follows_buttons(attr: str, doc: str) -> property:
    """A :class:`SlidePanel` attribute kept in ``attr`` whose every change sets the job buttons again
    (:meth:`SlidePanel.update_buttons`)."""
    def get(self: Any) -> Any:
        return getattr(self, attr)

    def put(self: Any, value: Any) -> None:
        setattr(self, attr, value)
        self.update_buttons()

    return property(get, put, doc=doc)


class SlidePanel(QWidget):
    """Predict view, review regions and edit windows of a whole slide.

    Args:
        viewer: the napari viewer.
        get_store: returns the open project store (opening it if needed).
        get_model: returns ``(checkpoint path, project model version or None, label)`` of the chosen model.
        parent: parent widget.

    Signals:
        regions_changed(): a window was accepted into, or withdrawn from, the project store.
        idle(): a job (Predict view, Export, Edit, Accept or Withdraw window) has stopped.
    """

    regions_changed = Signal()
    idle = Signal()
    #: glands_numbered(slide layer name): its numbered glands are shown, :attr:`gland_rows` holds their table
    glands_numbered = Signal(str)

    def __init__(self, viewer: Any, get_store: Callable[[], Any],
                 get_model: Callable[[], Tuple[str, Optional[str], str]], parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._get_store = get_store
        self._get_model = get_model
        self._worker = None
        self._job: Optional[Dict[str, Any]] = None  # what the running worker does ("kind": predict, export, ...)
        self._sync_pending = False  # a window was withdrawn elsewhere while a job ran: undone when it ends
        self._steps: List[Callable[[], Any]] = []  # what a job's result still shows, one per turn (_in_steps)
        self._stepping = False  # a timer runs the steps (_next_step)
        self._finished: Optional[bool] = None  # the running job's worker has finished (done or not)
        self.chunk = DEFAULT_CHUNK
        self.max_view_chunks = MAX_VIEW_CHUNKS
        self.max_edit_side = MAX_EDIT_SIDE
        self.last_message = ""
        self.last_result: Optional[Dict[str, Any]] = None
        self._buttons: Dict[str, Any] = {}  # the job buttons by key of TIPS (made below)
        self.window: Optional[Dict[str, Any]] = None  # the open edit window
        self.last_record: Any = None  # the region of the window accepted last
        self._closed_window = False  # the open edit window was closed by undoing a withdrawn window
        self._reread_window = False  # the open edit window was read again by undoing a withdrawn window
        self._watch = QTimer(self)  # runs while windows are listed: notices those withdrawn elsewhere
        self._watch.setInterval(WATCH_MS)
        self._watch.timeout.connect(self._check_withdrawn)
        self._digests: Dict[Tuple[str, int], str] = {}  # (slide, level) -> project-store hash
        self.tiles: List[Tuple[float, Box]] = []  # review regions listed (not accepted yet), level-0 (world) pixels
        #: the review regions of the view shown, accepted or not: (slide layer name, world boxes, downsample)
        self._ranked: Optional[Tuple[str, List[Tuple[float, Box]], float]] = None
        #: slide layer name -> the world boxes of its live accepted windows (those cover review regions)
        self._accepted_boxes: Dict[str, List[Box]] = {}
        #: store path -> (lo, hi, level): the uncertainty layer's contrast (uncertainty units, over tissue)
        self.ranges: Dict[str, Tuple[float, float, int]] = {}
        self._numbering = None  # the worker numbering a store's glands (not one of the jobs: it blocks no button)
        # the viewer closed (the panel destroyed): the numbering stops, its process killed at once
        # (a numbering worker's quit kills its process: number_glands)
        self._numbering_box: Dict[str, Any] = {"worker": None, "procs": []}  # procs: its process
        self.destroyed.connect(lambda *_a, box=self._numbering_box: box["worker"] and box["worker"].quit())
        self._numbering_run: Optional[Dict[str, Any]] = None  # what it numbers: layer, store, slide id, hidden
        self._numbered: Dict[str, str] = {}  # slide layer name -> store whose numbered glands it shows, current
        #: slide layer name -> the per-gland table of its numbered glands (the dock's gland-table rows: "id",
        #: "area" in level-0 pixels, "mean_uncertainty", "bbox" in level-0 = world pixels)
        self.gland_rows: Dict[str, List[Dict[str, Any]]] = {}
        self._job_run: Optional[Dict[str, Any]] = None  # the run of the writing job that runs (numbered after it)
        self._reopening: Optional[Dict[str, Any]] = None  # a slide opened again: its review regions being read
        #: a store chosen while the panel is made is shown at once (the dock's making is one stall anyway); later
        #: (a slide opened with the dock open, or chosen) its layers come over the next turns (:meth:`reopen`)
        self._show_at_once = True

        self.slide_choice: ComboBox = create_widget(annotation=Image, label="Slide",
                                                    options={"choices": self._slide_layers})
        self.slide_choice.native.setToolTip("Slide layer (opened with the napari-cdma reader)")
        narrow_combo(self.slide_choice.native)
        self.store_edit = QLineEdit("")
        self.store_edit.setToolTip("Prediction store of the slide (OME-Zarr): predicted chunks are cached here")
        self.level_spin = QSpinBox()
        self.level_spin.setToolTip("Slide level the model predicts (0 = full resolution)")
        self.predict_button = QPushButton("Predict view")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.edit_button = QPushButton("Edit window")
        self.accept_button = QPushButton("Accept window")
        self.withdraw_button = QPushButton("Withdraw window")
        self.window_list = QListWidget()
        self.window_list.setMaximumHeight(70)
        self.window_list.setToolTip("Accepted windows of this slide (double-click: go there)")
        readable_list(self.window_list)
        self.export_button = QPushButton("Export GeoJSON...")
        self.tile_list = QListWidget()
        self.tile_list.setMaximumHeight(100)
        readable_list(self.tile_list)
        # shown while a job runs only: idle, an empty framed bar sat under Edit window / Accept window (walk), and
        # the status line, once it says something, tells how the job ended (as the Predict panel's bar); its row is
        # kept, so that the status line and the lists below do not move when a job starts and ends
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        policy = self.progress.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        self.progress.setSizePolicy(policy)
        self.progress.setVisible(False)
        # two lines high, shown from the start (empty until the first message): its row never changes height, so
        # that the legend, lists and buttons below it stay put when a job starts, runs and ends; a longer message is
        # cut with an ellipsis and read whole in its tooltip
        self.status = StatusLine("")
        self.legend = UncertaintyLegend()  # the slide's uncertainty overlay, read as the image overlay's
        self.legend.setVisible(False)
        # the slide's uncertainty (and gland) under the cursor, on two lines of fixed height as the image's
        self.readout = readout_label()
        self.readout.setVisible(False)
        # the numbered glands: being numbered, shown, or why not (a fixed height too: it changes at each step)
        self.number_status = StatusLine("")

        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        form.addRow("Slide", self.slide_choice.native)
        form.addRow("Store", self.store_edit)
        form.addRow("Level", self.level_spin)
        run_row = QHBoxLayout()
        run_row.addWidget(self.predict_button)
        run_row.addWidget(self.cancel_button)
        edit_row = QHBoxLayout()
        edit_row.addWidget(self.edit_button)
        edit_row.addWidget(self.accept_button)
        window_row = QVBoxLayout()  # one above the other: side by side they were wider than a narrow dock
        window_row.addWidget(self.withdraw_button)
        window_row.addWidget(self.export_button)
        # with no slide open the panel is one line (it was about 450 px of controls that do nothing then)
        self.no_slide = QLabel("No whole slide open. Drag a slide (pyramidal TIFF, OME-Zarr, ...) or its "
                               "<slide>.cdma.zarr store onto napari to predict, edit and accept windows of it here.")
        self.no_slide.setWordWrap(True)
        self.content = QWidget()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.no_slide)
        outer.addWidget(self.content)
        layout = QVBoxLayout(self.content)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        # the jobs' buttons, bar and status line together at the top, not the status below the lists, out of
        # view at the default window size
        layout.addLayout(run_row)
        layout.addLayout(edit_row)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.number_status)
        regions_label = QLabel("Review regions over the predicted area:")
        regions_label.setWordWrap(True)  # wraps in a narrow dock rather than widening it
        layout.addWidget(regions_label)
        layout.addWidget(self.tile_list)
        layout.addWidget(QLabel("Accepted windows:"))
        layout.addWidget(self.window_list)
        layout.addLayout(window_row)
        # the uncertainty's legend and readout under the controls: they show with a slide's first prediction (104 px
        # in the walk), and between the status lines and the lists they moved the lists and buttons down then
        layout.addWidget(self.legend)
        layout.addWidget(self.readout)

        self.predict_button.clicked.connect(lambda: self.predict_view())
        self.cancel_button.clicked.connect(self.cancel)
        self.edit_button.clicked.connect(lambda: self.edit_window())
        self.accept_button.clicked.connect(lambda: self.accept_window())
        self.withdraw_button.clicked.connect(lambda: self.withdraw_window())
        self.window_list.itemDoubleClicked.connect(lambda item: self._go_to_box(item.data(Qt.ItemDataRole.UserRole)[1]))
        self.export_button.clicked.connect(self._export_clicked)
        self.tile_list.itemDoubleClicked.connect(lambda item: self.go_to(self.tile_list.row(item)))
        self.tile_list.itemActivated.connect(lambda item: self.go_to(self.tile_list.row(item)))
        self.slide_choice.changed.connect(lambda _v: self._on_slide_changed())
        self._buttons = {"predict": self.predict_button, "edit": self.edit_button, "accept": self.accept_button,
                         "withdraw": self.withdraw_button, "export": self.export_button}
        self.window_list.currentItemChanged.connect(lambda *_a: self.update_buttons())
        self.store_edit.textChanged.connect(lambda _t: self.update_buttons())
        viewer.layers.events.inserted.connect(self._on_layer_inserted)
        viewer.layers.events.removed.connect(lambda _e=None: self._on_layers_changed())
        #: slide key -> unique ids of its overlays hidden with it (:meth:`_follow_slide_visibility`)
        self._hidden_with_slide: Dict[str, set] = {}
        #: unique ids of layers added hidden (:meth:`_reveal`) that replaced a hidden layer: they stay hidden
        self._hidden_from: set = set()
        for layer in viewer.layers:
            if self._is_slide(layer):
                self._watch_visibility(layer)
        viewer.cursor.events.position.connect(self._on_cursor)
        self._on_slide_changed()
        self._show_at_once = False
        self._show_content()
        self.update_buttons()
        #: the thread importing what a slide's open imports (:meth:`_warm_reader`), None until it starts
        self.reader_warming: Any = None
        QTimer.singleShot(WARM_READER_MS, self._warm_reader)

    def _warm_reader(self) -> None:
        """Import what napari's open of a slide imports on the GUI thread the first time (the plugin's reader, the
        slide formats, dask, the store: :data:`~napari_cdma._slide_view.SLIDE_WARM_MODULES`) in a thread of its own,
        once the dock's warm-up threads have ended; when it ends, the objects those imports made are frozen out of
        the collector's reach as the dock's warm-up's are (:mod:`napari_cdma._gc`). The first slide opened with the
        dock open did these imports inside napari's open: 2.3-2.5 s of a 2.5 s freeze at load 4-6
        (bench_slide_open)."""
        from ._predict_stream import warmed

        if not _alive(self):
            return
        if self.reader_warming is None:
            if not warmed():
                QTimer.singleShot(WARM_POLL_MS, self._warm_reader)
                return
            self.reader_warming = warm_slide_reader()
        if self.reader_warming.is_alive():
            QTimer.singleShot(WARM_POLL_MS, self._warm_reader)
            return
        from . import _gc

        if _gc.enabled():
            _gc._freeze()

    # ---------------------------------------------------------------- what the buttons can do
    window = _follows_buttons("_window", "The open edit window (Accept window follows it).")
    last_result = _follows_buttons("_last_result", "The view shown last (a Predict view's, or a slide opened again "
                                   "with its store): Edit window works on it.")
    _reopening = _follows_buttons("_reopening_run", "The reopening of a slide's store under way, if any.")

    def needs(self) -> Dict[str, Optional[str]]:
        """What each job button (a key of :data:`TIPS`) needs before it can act, None for one that can: what its
        click checks first (one job at a time; Edit window a shown view, Accept window an open edit window,
        Withdraw window a selected accepted window, Export a store)."""
        if self._worker is not None and self._job is not None:
            kind = self._job["kind"]
            busy = f"{BUSY[kind]}; wait for it to end{' or cancel it' if kind == 'predict' else ''}."
            return dict.fromkeys(TIPS, busy)
        run, w = self.last_result, self.window
        shown = run is not None and run["layer"] in self.viewer.layers
        edit = None if shown else NEEDS["reading"] if self._reopening is not None else NEEDS["predict"]
        store_path = self.store_edit.text().strip()
        return {"predict": None if self.slide_layer is not None else NEEDS["slide"],
                "edit": edit,
                "accept": None if w is not None and w["name"] in self.viewer.layers else NEEDS["window"],
                "withdraw": NEEDS["select"] if self.window_list.currentItem() is None else
                None if run is not None else NEEDS["predict"],
                "export": None if store_path and Path(store_path).exists() else NEEDS["store"]}

    def update_buttons(self) -> None:
        """Enable each job button that can act now; a disabled one's tooltip says what it needs first (Cancel: a
        prediction runs)."""
        if not getattr(self, "_buttons", None):  # not made yet (the panel's state is set up first)
            return
        try:
            for key, need in self.needs().items():
                button = self._buttons[key]
                button.setEnabled(need is None)
                button.setToolTip(TIPS[key] if need is None else f"{need}\n({TIPS[key]})")
            job = self._job if self._worker is not None else None
            self.cancel_button.setEnabled(job is not None and job["kind"] == "predict")
        except RuntimeError:  # the panel's Qt objects are gone (the viewer closed)
            return

    def _on_layers_changed(self) -> None:
        self.slide_choice.reset_choices()
        self._show_content()
        self.update_buttons()  # the edit window's or the slide's layer closed
        for name in [n for n in self._accepted_boxes if n not in self.viewer.layers]:
            del self._accepted_boxes[name]  # its slide closed: another of that name has its own windows

    def _on_layer_inserted(self, event: Any = None) -> None:
        """A layer was added: the chooser follows; a slide just opened is chosen and framed (:meth:`frame`), as
        napari frames the first layer opened only: a slide opened after other images stayed where the view was,
        and Predict view predicted 1 of its 12 chunks (pathologist walk)."""
        self._on_layers_changed()
        layer = getattr(event, "value", None)
        if layer is None or not self._is_slide(layer):
            return
        self._watch_visibility(layer)
        same = [ly for ly in self._slide_layers() if ly.unique_id == layer.unique_id]
        if same and not self.running and self.window is None and self.slide_layer is not same[0]:
            self.slide_choice.value = same[0]  # the slide just opened is the one the panel works on
        if not self._looking_at(layer):
            self.frame(layer)

    def _watch_visibility(self, slide: Any) -> None:
        slide.events.visible.connect(lambda _e=None, ly=slide: self._follow_slide_visibility(ly))

    def _follow_slide_visibility(self, slide: Any) -> None:
        """A slide hidden takes its overlays (uncertainty, glands, review tiles, windows) with it, and shown again
        brings back those it took (walk: hiding the slide left its outlines and tint over the GlaS image under
        it). Overlays the user hid stay hidden."""
        key = str((slide.metadata or {}).get(SLIDE_KEY))
        others = [ly for ly in self.viewer.layers if ly is not slide and not self._is_slide(ly)
                  and str((getattr(ly, "metadata", None) or {}).get(SLIDE_KEY)) == key]
        if not slide.visible:
            shown = [ly for ly in others if ly.visible]
            self._hidden_with_slide.setdefault(key, set()).update(ly.unique_id for ly in shown)
            for ly in shown:
                ly.visible = False
            return
        taken = self._hidden_with_slide.pop(key, set())
        for ly in others:
            if ly.unique_id in taken:
                ly.visible = True

    def _looking_at(self, layer: Any) -> bool:
        """Whether the view already shows part of slide ``layer`` and nothing else: it lies within the slide, and
        layers of that slide (its store's overlays) are open, as when a slide is opened again over what the panel
        showed of it. The pathologist's view is then kept; any other view is framed on the slide (:meth:`frame`)."""
        slide = str(layer.metadata.get(SLIDE_KEY))
        if not any(ly is not layer and getattr(ly, "unique_id", None) != layer.unique_id
                   and str(getattr(ly, "metadata", {}).get(SLIDE_KEY)) == slide for ly in self.viewer.layers):
            return False
        box = world_box(layer)
        if box is None:
            return False
        y0, x0, y1, x1 = box
        vy0, vx0, vy1, vx1 = self.view_box()
        return y0 <= vy0 and x0 <= vx0 and vy1 <= y1 and vx1 <= x1

    def frame(self, layer: Any) -> None:
        """Fit the canvas to slide ``layer`` (all of it in view, its pixels' outer edges: :func:`world_box`,
        centred), as napari fits the first layer opened, :data:`FRAME_MARGIN` of the canvas around it."""
        box = world_box(layer)
        if box is None:
            return
        ch, cw = canvas_hw(self.viewer)
        camera = scene_camera(self.viewer)
        camera.center = ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)
        camera.zoom = (1.0 - FRAME_MARGIN) * min(max(1, ch) / max(1e-6, box[2] - box[0]),
                                                 max(1, cw) / max(1e-6, box[3] - box[1]))

    def _show_content(self) -> None:
        """The panel's controls while a slide is open (or a job or an edit window still runs), else one line."""
        needed = bool(self._slide_layers()) or self.running or self.window is not None
        self.content.setVisible(needed)
        self.no_slide.setVisible(not needed)

    # ------------------------------------------------------------------ choices
    def _slide_layers(self, _widget: Any = None) -> List[Any]:
        """The slides the panel predicts: the RGB image layers the plugin's reader opened from a slide (or a
        prediction store opened as its slide). Other layers that name a slide in their metadata are never
        listed: a store's uncertainty (the reader's, not RGB) and the panel's own overlays (a role)."""
        return [ly for ly in self.viewer.layers if self._is_slide(ly)]

    @staticmethod
    def _is_slide(layer: Any) -> bool:
        """Whether ``layer`` is a slide the panel predicts (:meth:`_slide_layers`)."""
        return is_slide(layer)

    @property
    def slide_layer(self) -> Any:
        return self.slide_choice.value

    @property
    def running(self) -> bool:
        return self._worker is not None

    @property
    def worker(self) -> Any:
        """The running job's worker (napari's thread worker: ``finished`` etc.), None when no job runs."""
        return self._worker

    def _on_slide_changed(self) -> None:
        layer = self.slide_layer
        if layer is None:
            return
        meta = layer.metadata
        self.store_edit.setText(str(meta.get(STORE_KEY) or default_store_path(meta[SLIDE_KEY])))
        self.level_spin.setRange(0, max(0, len(meta.get("downsamples") or [1]) - 1))
        unc = f"{layer.name} uncertainty"
        shown = self.viewer.layers[unc] if unc in self.viewer.layers else None
        rng = (shown.metadata.get(RANGE_KEY) if shown is not None else None)
        if rng:  # its uncertainty layer (the reader's, or the panel's live one) carries its contrast
            self.ranges[str(shown.metadata.get(STORE_KEY))] = tuple(rng)
            self._show_legend(unc, shown, tuple(rng))
        else:  # no uncertainty of this slide shown yet: no legend of another one
            self._legend_visible(False)
        store_path = self.store_edit.text().strip()
        if store_path and Path(store_path).is_dir():
            self.reopen(layer.name, store_path)  # what a Predict view showed of it, at once
            if self._numbered.get(layer.name) != store_path \
                    or self._live_layer(f"{layer.name} {NUMBERED}", store_path) is None:  # (closed since)
                self.number_glands(layer.name, store_path)  # a completely predicted store: its glands numbered

    def reopen(self, name: str, store_path: str) -> bool:
        """Show what slide layer ``name``'s prediction store holds, as a Predict view shows it, without predicting:
        the glands' outlines and the uncertainty (with its legend and the readout), then the review regions (kept in
        the store, ranked again only if it changed: :func:`~napari_cdma._slide_view.cached_review`) and the accepted
        windows, read in a worker thread (:func:`~napari_cdma._slide_view.reopen_job`). Nothing when the store holds
        no predicted chunk, a job runs, or the store is shown live already; True if started.

        A slide opened (or chosen) with the panel open returns to the event loop at once: the store is opened and
        its uncertainty's range read in the worker, and its two layers are added one per turn (:meth:`_in_steps`)
        once they are read, so that the slide is drawn first and the viewer draws between them. Opening an 8192 px
        slide with its store did all of it inside napari's open on the GUI thread: 1.3-1.6 s with nothing drawn
        (the range alone 0.13 s, 2.4 s with its first imports). While the panel is made (:attr:`_show_at_once`)
        the layers are shown at once, as before."""
        from src_model.slide_store import StoreError, open_store

        if self.running or name not in self.viewer.layers or self._live_layer(f"{name} glands", store_path) is not None:
            return False
        level: Optional[int] = None
        try:
            slide_path, _ = slide_of(self.viewer.layers[name])
            if self._show_at_once:
                store = open_store(store_path)
                if not store.done().any():
                    return False
                level = int(store.info.slide_level)
        except (StoreError, OSError, ValueError, KeyError):
            return False
        if self._show_at_once:
            self.show_store(name, store_path)
        from ._workers import create_worker

        run = {"layer": name, "slide": slide_path, "store": str(store_path), "level": level, "version": None,
               "label": None, "id": self.viewer.layers[name].unique_id, "before": self.last_result}
        known = {lv: d for (path, lv), d in self._digests.items() if path == slide_path}  # by slide level
        worker = create_worker(reopen_job, str(store_path), slide_path,
                               known.get(level) if level is not None else known)
        self._reopening = {"worker": worker, "run": run}
        worker.yielded.connect(lambda event, run=run: self._on_reopen_read(event, run))
        worker.returned.connect(lambda result, run=run: self._on_reopened(result, run))
        worker.errored.connect(lambda exc, run=run: self._on_reopened(("error", str(exc)), run))
        worker.start()
        return True

    def _reopen_current(self, run: Dict[str, Any]) -> bool:
        """Whether what :meth:`reopen` read for ``run`` is still to be shown: the slide still shown, and no Predict
        view (nor another slide's reopening) showed its own since."""
        return _alive(self) and self._reopening is not None and self._reopening["run"] is run \
            and self._same_layer(run["layer"], run["id"]) and self.last_result is run.get("out", run["before"])

    def _on_reopen_read(self, event: Tuple[str, Dict[str, Any]], run: Dict[str, Any]) -> None:
        """A part of a slide's store read by :meth:`reopen`'s worker: its layers' facts, or its review regions."""
        kind, shown = event
        if kind == "store":
            self._on_reopen_store(shown, run)
        else:
            self._on_reopen_regions(shown, run)

    def _on_reopen_store(self, shown: Dict[str, Any], run: Dict[str, Any]) -> None:
        """The store of a slide opened again (:meth:`reopen`) is read: its layers added, one per turn."""
        if not self._reopen_current(run):
            return
        run["level"] = int(shown["level"])
        if shown["display_range"] is not None:
            self.ranges.setdefault(run["store"], tuple(shown["display_range"]))
        if self._live_layer(f"{run['layer']} glands", run["store"]) is not None:
            return  # shown already (at once, or by a job since)

        def still() -> bool:
            return self._reopen_current(run) or self._same_layer(run["layer"], run["id"]) \
                and self.last_result is run.get("out")

        self._in_steps(*self.store_steps(run["layer"], run["store"], still, shown.get("store"), shown.get("held")))

    def _on_reopen_regions(self, shown: Dict[str, Any], run: Dict[str, Any]) -> None:
        """The review regions of a slide opened again (:meth:`reopen`): listed and outlined."""
        if not self._reopen_current(run):
            return
        run["level"] = int(shown["level"])
        out = run["out"] = {**shown, **run, "digest": None}
        self.last_result = out
        ds = out["downsample"]
        tiles = [(s, tuple(int(round(v * ds)) for v in b)) for s, b in out["ranked"]]
        self._in_steps(lambda: self.set_tiles(run["layer"], tiles, ds) if self.last_result is out
                       and self._same_layer(run["layer"], run["id"]) else None)

    def _on_reopened(self, result: Any, run: Dict[str, Any]) -> None:
        """The slide level's digest of a slide opened again (:meth:`reopen`): its accepted windows outlined."""
        current = self._reopen_current(run)
        if _alive(self) and self._reopening is not None and self._reopening["run"] is run:
            self._reopening = None
        if not current or result[0] != "ok" or "out" not in run:
            return
        out = run["out"]
        digest = result[1]["digest"]
        if digest is not None:
            self._digests[(run["slide"], run["level"])] = out["digest"] = digest
            self._in_steps(lambda: self.show_accepted_windows(out) if self.last_result is out
                           and self._same_layer(run["layer"], run["id"]) else None)

    def value_text(self, position: Any) -> str:
        """The chosen slide's uncertainty (and whether a gland) under a world position, from its layers."""
        layer = self.slide_layer
        parts = []
        for kind in ("uncertainty", "glands", NUMBERED):
            name = f"{layer.name} {kind}" if layer is not None else ""
            shown = self.viewer.layers[name] if name in self.viewer.layers else None
            value = value_under(self.viewer, shown, position)
            if value is None:
                continue
            if kind == "uncertainty":
                parts.append(f"uncertainty {float(value) / 255.0:.3f}")  # the store keeps 255 x value
            elif kind == NUMBERED and int(value) > 0:  # the gland's number (as in the table and the export)
                parts = [p for p in parts if p != "gland"] + [f"gland {int(value)}"]
            elif int(value) > 0:
                parts.append("gland")
        return readout_text(parts)

    def _on_cursor(self, event: Any = None) -> None:
        if not self.readout.isVisibleTo(self):
            return
        text = self.value_text(self.viewer.cursor.position)
        if text != self.readout.text():
            self.readout.setText(text)

    def _say(self, message: str, error: bool = False) -> None:
        self.last_message = message
        show_message(self.status, message, error)

    # ---------------------------------------------------------------- predict view
    def view_box(self) -> Tuple[float, ...]:
        """The world (level-0) box the canvas shows now."""
        camera = scene_camera(self.viewer)
        return visible_world_box(camera.center, camera.zoom, canvas_hw(self.viewer))

    def predict_view(self) -> bool:
        """Predict the part of the slide under the canvas (the chunks not in the store yet); True if started."""
        if self._refuse_if_busy():
            return False
        layer = self.slide_layer
        if layer is None:
            self._say("Open a slide first (drag it onto the viewer: the napari-cdma reader opens it).", error=True)
            return False
        try:
            slide_path, base_level = slide_of(layer)
            model_path, version, label = self._get_model()
        except Exception as exc:
            self._say(f"Cannot predict this slide: {exc}", error=True)
            return False
        level = base_level if layer.metadata.get(STORE_KEY) else self.level_spin.value()
        store_path = self.store_edit.text().strip() or str(default_store_path(slide_path))
        from ._workers import create_worker

        run = {"layer": layer.name, "slide": slide_path, "store": store_path, "level": level, "version": version,
               "label": label}
        # windows withdrawn from the project are undone in the store by the job, in its worker thread, first
        project, undo_error = self._undo_project(store_path)
        worker = create_worker(predict_view_job, slide_path, store_path, str(model_path), level, self.chunk,
                               self.view_box(), self.max_view_chunks, self._digests.get((slide_path, level)),
                               project=project, open_window=self._reread_args(run))
        worker.yielded.connect(self._on_job_progress)
        worker.returned.connect(self._on_job_returned)
        worker.errored.connect(self._on_job_errored)
        worker.aborted.connect(self._on_job_aborted)
        job = {"kind": "predict", **self._undo_job(run)}
        if undo_error is not None:  # the view is predicted all the same; the status line says so
            job["undo_error"] = f"Could not undo withdrawn windows in the slide's labels: {undo_error}"
        self._start_job(worker, job, f"Predicting the view of '{layer.name}' with {label}...")
        return True

    def _undo_project(self, store_path: Any) -> Tuple[Any, Optional[Exception]]:
        """The project store a job that first undoes withdrawn windows in the store at ``store_path`` needs
        (:func:`~napari_cdma._slide_view.undo_first`): None when the store does not exist yet or lists no
        accepted window (read on the GUI thread: the store's attributes only); and the error that kept it from
        being opened, if any."""
        try:
            if not Path(store_path).exists() or not has_edits(store_path):
                return None, None
            return self._get_store(), None
        except Exception as exc:
            return None, exc

    def cancel(self) -> None:
        """Stop after the chunk being predicted (finished chunks stay in the store)."""
        if self._worker is not None:
            self._worker.quit()

    def _on_progress(self, event: Any, run: Dict[str, Any]) -> None:
        if event.total:
            self._set_progress(int(event.step), int(event.total) + SHOW_STEPS)
        if event.stage == "predict-slide":  # a chunk was written: show it now
            for kind in ("glands", "uncertainty"):
                layer = self._live_layer(f"{run['layer']} {kind}", run["store"])
                if layer is not None:
                    layer.refresh()

    def _on_returned(self, result: Any, job: Dict[str, Any]) -> None:
        """The view is predicted into the store: show the store's layers and the review regions over the
        slide, if the slide it was predicted for is still shown (else the store keeps the chunks, nothing
        is shown)."""
        run = job["run"]
        undo = result[2] if result[0] == "error" else result[1]["undo"]  # undo_first's, with the job's every result
        self._show_reread(undo, job)  # the withdrawn windows the worker undid changed the open window's labels
        undo_error = undo.get("error") or job.get("undo_error")
        undone_note = f" {undo_error}" if undo_error else self._undone_note(undo["undone"])
        if result[0] == "error":
            self._say(f"{result[1]}{undone_note}", error=True)
            return
        out = {**result[1], **run}
        self._digests[(run["slide"], run["level"])] = out["digest"]
        if out.get("display_range"):  # the contrast follows the chunks predicted so far
            self.ranges[str(run["store"])] = tuple(out["display_range"])
        if not self._same_layer(run["layer"], job["slide"]):  # closed or replaced while the view was predicted
            if self.last_result is not None and self.last_result["layer"] == run["layer"]:
                self.last_result = None  # what is shown under that name (if anything) is not that slide now
            self.tiles, self._ranked = [], None
            self.tile_list.clear()
            s = out["summary"]
            self._say(f"'{run['layer']}' was closed or replaced while its view was predicted: the store keeps the "
                      f"{s.chunks_computed} new chunk(s) ({s.chunks_done} of {s.chunks_total} chunks of the slide "
                      f"are done); nothing is shown.{undone_note}", error=True)
            return
        self.last_result = out
        ds = out["downsample"]
        tiles = [(s, tuple(int(round(v * ds)) for v in b)) for s, b in out["ranked"]]
        # one per turn of the event loop (each re-slices layers; the viewer draws in between), the slide still shown
        shown = lambda: self.last_result is out and self._same_layer(run["layer"], job["slide"])  # noqa: E731
        self._in_steps(*self.store_steps(run["layer"], run["store"], shown),
                       lambda: self.set_tiles(run["layer"], tiles, ds) if shown() else None,
                       lambda: self.show_accepted_windows(out) if shown() else None)
        self._say(predicted_message(out["summary"], len(out["chunks"]), out["n_visible"]) + undone_note,
                  error=bool(undo_error))

    def show_store(self, name: str, store_path: str) -> Dict[str, Any]:
        """Show (or refresh) the store's glands and uncertainty as multiscale layers over slide ``name``.

        The layers read the store's zarr arrays directly (no cache in between), so a refresh shows
        chunks written since. The uncertainty is drawn as the dock draws an image's (visible, the same
        fading colormap and opacity), over its own range over tissue (:attr:`ranges`, from the last
        Predict view, else :func:`~napari_cdma._slide_view.store_display_range`); the panel's legend says
        where the tint starts. :meth:`store_steps` does the same one layer per turn of the event loop.
        """
        from src_model.slide_store import open_store

        store = open_store(store_path)
        shown = {kind: self._show_store_layer(name, store_path, kind, store) for kind in ("image", "labels")}
        rng = self.ranges.get(str(store_path))
        if rng is not None:
            self._show_legend(f"{name} uncertainty", shown["image"], rng)
        return shown

    def store_steps(self, name: str, store_path: str, still: Callable[[], bool],
                    store: Any = None, held: Optional[Dict[str, Any]] = None) -> List[Callable[[], Any]]:
        """:meth:`show_store` as steps for :meth:`_in_steps`, each done only if ``still()`` (``store``: the store
        opened already, by a worker): the uncertainty added hidden, then drawn (with the legend); then the glands'
        outlines, added hidden, then drawn. Adding a multiscale layer is 0.1-0.5 s of the GUI thread (napari's layer
        controls and visual), and its first slice as much again (the store's chunks read, the outlines traced): the
        two layers in one turn were one stall of 0.7-1.3 s opening an 8192 px slide (bench_slide_open). ``held``:
        the layers' levels as the worker read them (kind -> :func:`~napari_cdma._slide_view.held_levels`), the first
        slice cut from them rather than read from the store on this thread; dropped once drawn (read live then)."""
        added: Dict[str, Any] = {}

        def add(kind: str) -> None:
            if still() and name in self.viewer.layers:
                added[kind] = self._show_store_layer(name, store_path, kind, store, hidden=True,
                                                     levels=(held or {}).get(kind))

        def reveal(kind: str) -> None:
            layer = added.pop(kind, None)
            if layer is None or layer not in self.viewer.layers:
                return
            if not layer.visible:  # added hidden (a live layer refreshed is shown already: set again, sliced again)
                self._reveal(name, layer)
            release_held(layer.data)  # drawn: read live from the store from now on
            rng = self.ranges.get(str(store_path))
            if kind == "image" and rng is not None:
                self._show_legend(f"{name} uncertainty", layer, rng)

        return [lambda: add("image"), lambda: reveal("image"), lambda: add("labels"), lambda: reveal("labels")]

    def _reveal(self, name: str, layer: Any) -> None:
        """Draw ``layer``, added hidden over slide ``name``, unless it is to stay hidden (:attr:`_hidden_from`); while
        the slide is hidden it comes back with it (:meth:`_follow_slide_visibility`)."""
        if getattr(layer, "unique_id", None) in self._hidden_from:
            self._hidden_from.discard(layer.unique_id)
            return
        slide = self.viewer.layers[name] if name in self.viewer.layers else None
        if slide is not None and not slide.visible:
            key = str((slide.metadata or {}).get(SLIDE_KEY))
            self._hidden_with_slide.setdefault(key, set()).add(layer.unique_id)
            return
        layer.visible = True

    def _show_store_layer(self, name: str, store_path: str, kind: str, store: Any = None,
                          hidden: bool = False, levels: Optional[List[Any]] = None) -> Any:
        """Show (or refresh) one of the store's layers over slide ``name`` (``kind``: "image", the uncertainty, or
        "labels", the glands), live from its zarr arrays (:meth:`show_store`); the uncertainty's range is read from
        the store (on this thread) unless :attr:`ranges` holds it. ``hidden``: a layer added is added hidden (not
        sliced: :meth:`_reveal` draws it, in a later turn), unless it replaces a hidden one (it stays hidden).
        ``levels``: the layer's levels read ahead (:func:`~napari_cdma._slide_view.held_levels`) for a layer added,
        else the store's arrays."""
        from napari.layers import Labels

        from src_model.slide_store import open_store

        store = store if store is not None else open_store(store_path)
        ds = store.info.downsample
        rng = self.ranges.get(str(store_path))
        if rng is None and kind == "image":
            rng = store_display_range(store)
            if rng is not None:
                self.ranges[str(store_path)] = rng
        meta = {STORE_KEY: str(store_path), SLIDE_KEY: store.info.slide, "napari_cdma_live": True}
        if kind == "image":
            lname, arrays, style, role = f"{name} uncertainty", store.uncertainty, uncertainty_style(rng), \
                "slide uncertainty"
        else:
            lname, arrays, style, role = f"{name} glands", store.glands, dict(opacity=0.9), "slide glands"
        live = self._live_layer(lname, store_path)
        if live is not None:
            release_held(live.data)  # read live (a layer added but never drawn still held its first levels)
            if kind == "image" and "contrast_limits" in style:
                live.contrast_limits = style["contrast_limits"]
                live.metadata[RANGE_KEY] = tuple(rng)
            live.refresh()
            return live
        old = self.viewer.layers[lname] if lname in self.viewer.layers else None
        if old is not None:  # the reader's lazy layer (or another store's): replaced by the live one
            style["visible"] = old.visible
            self.viewer.layers.remove(old)
        stays_hidden = not style.get("visible", True)
        if hidden:
            style["visible"] = False
        layer_meta = {**meta, ROLE_KEY: role}  # an overlay of the panel's, never a slide to choose
        if levels is not None and len(levels) == len(arrays):
            arrays = levels
        if kind == "image":
            if rng is not None:
                layer_meta[RANGE_KEY] = tuple(rng)
            layer = self.viewer.add_image(list(arrays), name=lname, multiscale=True, scale=(ds, ds),
                                          metadata=layer_meta, **style)
            if hidden and stays_hidden:
                self._hidden_from.add(layer.unique_id)
            return layer
        # outlined, as an image's prediction (the H&E stays readable inside the glands), in the bright green of an
        # image's glands: set before the layer is added, each setter of a layer in the viewer slices it again
        layer = Labels(list(arrays), name=lname, multiscale=True, scale=(ds, ds), metadata=layer_meta,
                       colormap=gland_colormap(), **style)
        with layer._block_refresh():
            layer.contour = OUTLINE_WIDTH
        if hidden and stays_hidden:
            self._hidden_from.add(layer.unique_id)
        return self.viewer.add_layer(layer)

    def _show_legend(self, name: str, layer: Any, rng: Tuple[float, float, int]) -> None:
        """The legend of the slide's uncertainty layer (its range ``(lo, hi, level)``, uncertainty units)."""
        lo, hi, level = rng
        self.legend.show_range(name, layer.colormap, layer.opacity, (lo, hi),
                               where=f", of the predicted tissue at store level {int(level)}")
        self._legend_visible(True)

    def _legend_visible(self, visible: bool) -> None:
        """Show or hide the legend and the readout, the dock's layout settled at once (:meth:`_settle_layout`)."""
        self.legend.setVisible(visible)
        self.readout.setVisible(visible)
        self._settle_layout()

    def _settle_layout(self) -> None:
        """Lay the dock out again now, up to its scroll area, rather than over the next turns of the event loop.

        A widget shown or grown in the panel makes Qt lay out each widget around it in turn, one level per turn of
        the event loop: the dock's scrolled content was laid out again within its old height (the Slide / Store /
        Level rows squashed by 22 px) a turn before the scroll area made it taller, and a job's next step ran in
        between (0.5 s, pathologist walk). The layout requests are sent here, level by level."""
        from qtpy.QtWidgets import QApplication

        for _ in range(LAYOUT_PASSES):  # each pass sends those the last one posted (a level up)
            QApplication.sendPostedEvents(None, QEvent.Type.LayoutRequest)

    def _live_layer(self, name: str, store_path: str) -> Any:
        """Layer ``name`` if it shows the store ``store_path`` live (its zarr arrays), else None."""
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        meta = layer.metadata if layer is not None else {}
        return layer if meta.get("napari_cdma_live") and meta.get(STORE_KEY) == str(store_path) else None

    # ---------------------------------------------------------------- review regions
    def set_tiles(self, name: str, tiles: List[Tuple[float, Box]], downsample: float) -> None:
        """List the review regions (world boxes of store boxes, ``downsample`` world pixels per store pixel)
        and outline them over the slide, inside their pixels (touching regions' outlines neither overlap nor
        cross), :data:`OUTLINE_PX` screen pixels wide. Those half covered or more by an accepted window of the slide
        are reviewed: neither listed nor outlined (as an image's accepted regions leave its review list); they come
        back when the window is withdrawn (:meth:`show_accepted_windows` filters them again)."""
        self._ranked = (name, list(tiles), float(downsample))
        self._list_tiles()

    def _list_tiles(self) -> None:
        """List and outline the review regions of :attr:`_ranked` not accepted yet (:meth:`set_tiles`); nothing
        changes when the same ones are listed already."""
        if self._ranked is None:
            return
        name, ranked, downsample = self._ranked
        tiles = not_yet_accepted(ranked, self._accepted_boxes.get(name, []))
        if tiles == self.tiles and self.tile_list.count() == len(tiles) \
                and names_for(name)["tiles"] in self.viewer.layers:
            return  # listed and outlined already (setting a Shapes layer's data re-slices every layer)
        self.tiles = list(tiles)
        self.tile_list.clear()
        # the image review list's rows ("1. score 0.69, 163 x 128 px at x 230, y 394"): one way of writing a box
        # everywhere (walk 20: "0.924 - (320, 1856), 128 x 128" here, height first, the corner as (y, x))
        for rank, (score, box) in enumerate(self.tiles, start=1):
            self.tile_list.addItem(QListWidgetItem(tile_row(rank, score, box)))
        self._outline(name, "tiles", [b for _, b in self.tiles], downsample, outside=False)

    def _outline(self, name: str, role: str, boxes: List[Tuple[float, ...]], downsample: float,
                 outside: bool) -> Any:
        """Outline world boxes (store boxes times ``downsample``) over slide ``name`` in its Shapes layer of
        ``role`` ("tiles": review regions, "accepted": accepted windows; made, empty, if missing), inside or just
        outside their pixels, :data:`OUTLINE_PX` screen pixels wide: a frame layer
        (:func:`~napari_cdma._layers.frames_of`), which the review panel's zoom handler draws again as the view
        zooms (:func:`~napari_cdma._layers.redraw_frames`). Returns the layer. Its data is set only when the boxes
        changed (:func:`~napari_cdma._layers.set_frames`): each change of a Shapes layer's data re-slices every
        layer of the viewer (tens of ms on the GUI thread for a slide's)."""
        layer = self._outline_layer(name, role)
        frames = frames_of(boxes, [OUTLINE_PX] * len(boxes), [outside] * len(boxes), downsample=downsample)
        set_frames(layer, frames, scene_camera(self.viewer).zoom)
        return layer

    def _outline_layer(self, name: str, role: str) -> Any:
        """The Shapes layer of ``role`` over slide ``name`` (:meth:`_outline`), made, empty, if missing."""
        layer_name = names_for(name)[role]
        layer = self.viewer.layers[layer_name] if layer_name in self.viewer.layers else None
        if not isinstance(layer, Shapes):
            active = self.viewer.layers.selection.active
            layer = (show_review_tiles if role == "tiles" else show_accepted)(self.viewer, name, [])
            if active is not None and active in self.viewer.layers:  # napari makes a new layer the active one: the
                self.viewer.layers.selection.active = active  # outlines are no layer to work on (walk 20)
        return layer

    def go_to(self, row: int) -> None:
        """Centre the camera on review region ``row``."""
        if 0 <= row < len(self.tiles):
            self.tile_list.setCurrentRow(row)
            self._go_to_box(self.tiles[row][1])

    def _go_to_box(self, box: Box) -> None:
        center, zoom = camera_for_tile(box, canvas_hw(self.viewer), margin=1.6)
        camera = scene_camera(self.viewer)
        camera.center, camera.zoom = center, zoom

    # ---------------------------------------------------------------- edit window
    def edit_window(self) -> bool:
        """Open an editable Labels layer of the store's full-resolution glands over the view; True if started.

        The store is read and its glands split (:func:`~napari_cdma._slide_view.edit_window_job`, seconds
        for a large window) in a worker thread; the layer is added, and :attr:`window` set, when it returns
        (:attr:`running` is False again), unless the slide was closed or replaced meanwhile."""
        from src_model.slide_store import StoreError

        if self._refuse_if_busy():
            return False
        run = self.last_result
        if run is None or run["layer"] not in self.viewer.layers:
            self._say("Predict the view first (Predict view).", error=True)
            return False
        try:  # the project store only when windows were accepted into the slide's store (as their undoing)
            project = self._get_store() if has_edits(run["store"]) else None
        except Exception as exc:
            self._say(str(exc) if isinstance(exc, StoreError) else f"Cannot open an edit window: {exc}", error=True)
            return False
        from ._workers import create_worker

        worker = create_worker(edit_window_job, project, run["store"], self.view_box(), self.max_edit_side,
                               self._open_window(run))
        worker.returned.connect(self._on_job_returned)
        worker.errored.connect(self._on_job_errored)
        self._start_job(worker, {"kind": "edit", "run": run, "slide": self.viewer.layers[run["layer"]].unique_id},
                        f"Reading the edit window of '{run['layer']}'...")
        return True

    def _open_window(self, run: Dict[str, Any]) -> Optional[Tuple[Box, np.ndarray]]:
        """``(box, predicted)`` of the edit window open over the store of ``run`` (shown: its layer not closed), if
        any (a job that undoes withdrawn windows says whether that changed the labels under it)."""
        w = self.window
        if w is None or str(w["store"]) != str(run["store"]) or w["name"] not in self.viewer.layers:
            return None  # none, or its layer closed: nothing to read again
        return w["box"], w["predicted"]

    def _on_edit_read(self, result: Any, job: Dict[str, Any]) -> None:
        """The edit window's labels are read: add the layer, if the slide it was read for is still shown."""
        run = job["run"]
        extra = result[2] if result[0] == "error" else result[1]
        if extra.get("stale"):  # the open window showed labels a withdrawn window's undoing changed
            self._drop_window()
        self._closed_window = False  # a new window opens now, or the error says why not
        current = self.last_result is run and self._same_layer(run["layer"], job["slide"])
        if not current:  # closed or replaced while the window was read: nothing of it is shown
            self._say(f"The edit window was not opened: '{run['layer']}' was closed or replaced meanwhile.",
                      error=True)
            return
        if extra.get("undone"):
            self.show_store(run["layer"], run["store"])
        if result[0] == "error":
            self._say(result[1], error=True)
            return
        out = result[1]
        box, instances, ds = out["box"], out["instances"], out["downsample"]
        y0, x0, _y1, _x1 = box
        name = f"{run['layer']} edit window"
        meta = {STORE_KEY: run["store"], ROLE_KEY: "slide edit window"}
        old = self.viewer.layers[name] if name in self.viewer.layers else None
        if old is not None and getattr(old, "metadata", {}).get(ROLE_KEY) == meta[ROLE_KEY]:
            # the window opened again: the same layer shows it (napari collects garbage on the GUI thread
            # when a layer is removed, about half a second with a slide open)
            layer = old
            layer.metadata = meta
            layer.scale, layer.translate = (ds, ds), (y0 * ds, x0 * ds)
            layer.data = out["labels"]
        else:
            if old is not None:
                self.viewer.layers.remove(name)
            # as an image's prediction: bright outlines, one colour per gland (the colormap given at once: each
            # change of a 2048 px layer's look redraws all of it on the GUI thread)
            layer = self.viewer.add_labels(out["labels"], name=name, scale=(ds, ds), translate=(y0 * ds, x0 * ds),
                                           colormap=gland_colormap(), opacity=1.0, metadata=meta)
            style_prediction(layer)
        layer.selected_label = out["n_glands"] + 1  # a new gland
        layer.mode = "paint"
        self.viewer.layers.selection.active = layer
        self.window = {**run, "box": box, "predicted": out["predicted"], "instances": instances, "name": name}
        # what to do first, on the two lines shown; where the window is and how splits are kept in the tooltip
        from src_model.postprocess import DEFAULT_INSTANCES  # loaded by the job already

        small = int(out.get("n_small", 0))
        specks = (f" and {small} speck(s) under {DEFAULT_INSTANCES.min_size} px, which the slide's numbering and "
                  "export leave out") if small else ""
        self._say(f"Edit window of {out['n_glands'] - small} gland(s){specks}: paint or erase, then Accept window. "
                  "It is "
                  f"{box_text(box)} (store pixels), one label per gland: paint a new label "
                  "over part of a gland to split it. The slide's labels keep gland / background: a split is kept as a "
                  "1 px gap; glands given one label are split again by shape when a window is reopened."
                  f"{self._undone_note(out['undone'])}")

    def accept_window(self) -> bool:
        """Write the edit window into the store's labels (and pyramid) and the project store; True if started.

        Splits are carved and the stores written (:func:`~napari_cdma._slide_view.accept_window_job`) in a
        worker thread; the window is read-only meanwhile. When it returns, the window shows what the
        store holds, the store's layers and the accepted windows are refreshed and :attr:`last_record`
        is the region. The project store keeps what the store's labels held under the window (the
        region's ``predicted``), so withdrawing the region restores them (:meth:`withdraw_window`)."""
        if self._refuse_if_busy():
            return False
        w = self.window
        if w is None or w["name"] not in self.viewer.layers:
            self._say("Open an edit window first (Edit window).", error=True)
            return False
        layer = self.viewer.layers[w["name"]]
        try:
            project = self._get_store()
            version = str(w["version"] or project.current_model_version)
        except Exception as exc:
            self._say(f"Could not accept the window: {exc}", error=True)
            return False
        edited = np.array(layer.data)  # a copy: what is accepted is the window as it is now
        from ._workers import create_worker

        worker = create_worker(accept_window_job, project, w["slide"], w["store"], w["box"], edited, w["instances"],
                               w["predicted"], model_version=version, level=w["level"], user=getpass.getuser(),
                               digest=self._digests.get((w["slide"], w["level"])))
        job = {"kind": "accept", "window": w, "layer": layer.unique_id, "mode": layer.mode, "editable": layer.editable}
        layer.editable = False  # no painting while it is written: the window then shows what the store holds
        self.last_record = None
        worker.returned.connect(self._on_job_returned)
        worker.errored.connect(self._on_job_errored)
        self._start_job(worker, job, f"Accepting the window, {box_text(w['box'])}...")
        return True

    def _on_accepted(self, result: Any, job: Dict[str, Any]) -> None:
        """The window is written (or refused): the window shows what the store holds, the layers follow.

        What the viewer shows of it is done in steps (:meth:`_in_steps`, one per turn of the event loop; the job
        ends after the last): the window's labels (a 2048 px window's are drawn again whole, their outlines
        recomputed), the store's glands (not its uncertainty: accepting writes labels only), the accepted
        windows' outlines (not set again when they did not move), the dock's lists. Done at once, they stalled
        the viewer 0.13 to 0.38 s on a 2048 px window."""
        w = job["window"]
        if result[0] == "error":
            self._show_accepted_window(job, None)
            if result[2].get("stale"):  # a withdrawn window was undone under it: it showed labels no longer held
                self._drop_window()
            self._closed_window = False
            self._say(result[1], error=True)
            return
        out = result[1]
        record = out["record"]
        self.last_record = record
        if self.window is w:  # accepting again compares with this
            self.window = {**w, "predicted": out["corrected"], "instances": out["carved"]}
        carved = out["labels"]  # a copy made in the worker, None when the window shows it already
        shown = lambda: w["layer"] in self.viewer.layers  # noqa: E731  (the slide not closed meanwhile)
        self._in_steps(lambda: self._show_accepted_window(job, carved), lambda: self._refresh_glands(w),
                       # the first window's outline layer made in a turn of its own (a layer added re-slices it)
                       lambda: self._outline_layer(w["layer"], "accepted") if shown() else None,
                       lambda: self.show_accepted_windows(w) if shown() else None,
                       lambda: self._brush_on_window(job),
                       self.regions_changed.emit)
        self._say(f"Accepted the window as region {record.region_id}{' (held out)' if record.holdout else ''}; "
                  f"the review regions under it are done. {len(out['written'])} chunk(s) of the slide's labels "
                  f"rewritten; the window is {box_text(w['box'])} (store pixels) of "
                  f"{Path(w['slide']).name}.")

    def _brush_on_window(self, job: Dict[str, Any]) -> None:
        """The edit window the active layer again (the outline layer an Accept adds took the selection, and with
        it the brush: walk), if it is still shown."""
        w = job["window"]
        if self._same_layer(w["name"], job["layer"]):
            self.viewer.layers.selection.active = self.viewer.layers[w["name"]]

    def _show_accepted_window(self, job: Dict[str, Any], carved: Optional[np.ndarray]) -> None:
        """The edit window of an Accept window job editable again (if it is still shown), showing ``carved`` (what
        the store now holds; a copy of the labels the next Accept compares with, so that painting it does not
        change those) when not None."""
        w = job["window"]
        if not self._same_layer(w["name"], job["layer"]):
            return
        layer = self.viewer.layers[w["name"]]
        layer.editable = job["editable"]
        if job["editable"]:
            layer.mode = job["mode"]
        if carved is not None:
            layer.data = carved

    def _refresh_glands(self, run: Dict[str, Any]) -> None:
        """Show the glands the store of ``run`` holds now (its live glands layer read again; the store's layers
        shown if they are not), if its slide is still shown."""
        if run["layer"] not in self.viewer.layers:
            return
        glands = self._live_layer(f"{run['layer']} glands", run["store"])
        if glands is not None:
            glands.refresh()
        else:
            self.show_store(run["layer"], run["store"])

    # ---------------------------------------------------------------- jobs of the edit window
    def _same_layer(self, name: str, unique_id: Any) -> bool:
        """Whether layer ``name`` is still the one a job started on (not closed, nor replaced by another of
        that name); by napari's id, as a plugin's viewer hands out a new proxy of a layer each time."""
        return name in self.viewer.layers and self.viewer.layers[name].unique_id == unique_id

    def _refuse_if_busy(self) -> bool:
        """True (and says so) while a job runs: one at a time, as they all use the slide's store."""
        if self._worker is None:
            return False
        kind = self._job["kind"]
        # not an error (no pop-up that outlives the job): the status line says it until the job ends
        self._say(f"{BUSY[kind]}; wait for it to end{' or cancel it' if kind == 'predict' else ''}.")
        return True

    def _set_busy(self, busy: bool, kind: str = "") -> None:
        """The buttons while a job runs (all but Cancel off; Cancel on for a prediction) and after (each on if it
        can act: :meth:`update_buttons`)."""
        self.update_buttons()

    def _start_job(self, worker: Any, job: Dict[str, Any], message: str) -> None:
        """Run a job (``job["kind"]``: a key of :data:`BUSY`) in ``worker``, its result handlers connected by
        the caller (a Predict view's or an edit-window job's to :meth:`_on_job_returned` and
        :meth:`_on_job_errored`: bound methods, so none arrives once the panel is gone, the viewer closed; they
        drop a result whose slide layer was closed or replaced meanwhile); its end comes to
        :meth:`_on_job_finished`."""
        self._job = job
        self._job_run = None
        if job["kind"] in WRITES:  # its numbers may be out of date once the job has written: checked after it
            self._job_run = job.get("run") or job.get("window")
            self._stop_numbering(self._job_run["store"] if self._job_run else self.store_edit.text().strip())
        worker.finished.connect(self._on_job_finished)
        self._worker = worker
        self._set_busy(True, job["kind"])
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self._say(message)
        worker.start()

    def _on_job_returned(self, result: Any) -> None:
        job = self._job
        if job is None or not _alive(self):
            return
        handle = {"predict": self._on_returned, "edit": self._on_edit_read, "accept": self._on_accepted,
                  "withdraw": self._on_withdrawn, "sync": self._on_synced, "export": self._on_exported}[job["kind"]]
        handle(result, job)

    def _on_job_errored(self, exc: Exception) -> None:
        job = self._job
        if job is None or not _alive(self):
            return
        if job["kind"] == "predict":
            self._say(f"Prediction failed: {exc}", error=True)
        elif job["kind"] == "export":
            self._say(f"Export failed: {exc}", error=True)
        elif job["kind"] == "edit":
            self._say(f"Cannot open an edit window: {exc}", error=True)
        elif job["kind"] == "withdraw":
            self._on_withdrawn(("error", f"Could not withdraw {job['region']}: {exc}", {}), job)
        elif job["kind"] == "sync":
            self._on_synced(("error", f"Could not undo withdrawn windows in the slide's labels: {exc}", {}), job)
        else:
            self._on_accepted(("error", f"Could not accept the window: {exc}", {}), job)

    def _on_job_progress(self, event: Any) -> None:
        job = self._job
        if job is not None and job["kind"] == "predict" and _alive(self):
            self._on_progress(event, job["run"])

    def _on_job_aborted(self) -> None:
        if self._job is not None and _alive(self):
            self._say("Prediction cancelled; the chunks finished so far are kept.")

    def _on_job_finished(self) -> None:
        if not _alive(self):
            self._worker = self._job = None
            self._steps = []
            return
        self._finished = self.last_message.startswith(DONE[self._job["kind"]])
        if not self._steps:  # else the job ends after its last step (:meth:`_next_step`)
            self._job = None
            self._end_job(self._finished)

    def _in_steps(self, *steps: Callable[[], Any]) -> None:
        """Run ``steps`` (what a job's result shows in the viewer) one per turn of the event loop (:data:`STEP_MS`
        apart), after the handler that queues them: each of them re-slices layers (tens to a hundred ms on the GUI
        thread with a slide and an edit window shown), and the viewer draws in between. The job ends
        (:attr:`running` False, the buttons back) after the last one."""
        self._steps.extend(steps)
        if not self._stepping:  # one chain of timers runs the steps: each call started its own, and two or three
            self._stepping = True  # chains ran two or three steps a turn (a slide's layers added in one stall)
            QTimer.singleShot(STEP_MS, self._next_step)

    def _next_step(self) -> None:
        if not self._steps:
            self._stepping = False
            return
        step = self._steps.pop(0)
        if not _alive(self):
            self._steps = []
            return
        try:
            step()
        finally:
            if self._steps:
                QTimer.singleShot(STEP_MS, self._next_step)
            else:
                self._stepping = False
            # the worker has finished: the job ends
            if not self._steps and self._finished is not None and self._job is not None:
                self._job = None
                self._end_job(self._finished)

    def _set_progress(self, value: int, maximum: int) -> None:
        """The progress bar at ``value`` of ``maximum``, drawn with the window's next paint: QProgressBar.setValue
        repaints at once, and with it the whole window, the canvas included (tens of ms on the GUI thread, added to
        whatever runs then: a job's result, the refresh of the store's layers after each predicted chunk)."""
        self.progress.setUpdatesEnabled(False)
        try:
            self.progress.setRange(0, maximum)
            self.progress.setValue(value)
        finally:
            self.progress.setUpdatesEnabled(True)

    def _end_job(self, done: bool) -> None:
        """A job has stopped: the buttons and the bar back, withdrawals noticed meanwhile undone now, the store's
        glands numbered again if the job may have changed them (the worker finds out; a completely predicted
        store only)."""
        self._worker = None
        self._finished = None
        run, self._job_run = self._job_run, None  # set for a job that writes the store only
        self._set_busy(False)
        self._set_progress(1 if done else 0, 1)
        self.progress.setVisible(False)  # idle: the status line says how the job ended
        self.idle.emit()
        if self._sync_pending:
            self._sync_pending = False
            if self.sync():
                return  # the sync job numbers when it ends
        if run is not None and run.get("layer") in self.viewer.layers:
            self.number_glands(run["layer"], run["store"])

    def withdraw_window(self, region_id: Optional[str] = None) -> bool:
        """Withdraw an accepted window (default: the one selected in the list) from the project store and
        undo it in the slide's labels and pyramid; True if started.

        Each pixel of the window goes back to the correction of the live window accepted last over it,
        if any, or else to what the store held before the first window over it was accepted: a
        window that overlaps it keeps its corrections (:func:`~napari_cdma.project.slide_regions.
        restore_withdrawn`). The stores are written (:func:`~napari_cdma._slide_view.withdraw_window_job`)
        in a worker thread; the store's layers and the accepted windows follow when it returns, unless the
        slide was closed or replaced meanwhile."""
        if self._refuse_if_busy():
            return False
        run = self.last_result
        if region_id is None:
            item = self.window_list.currentItem()
            if item is None:
                self._say("Select an accepted window to withdraw.", error=True)
                return False
            region_id = item.data(Qt.ItemDataRole.UserRole)[0]
        if run is None:
            self._say("Predict the view of the slide first (Predict view).", error=True)
            return False
        try:
            project = self._get_store()
        except Exception as exc:
            self._say(f"Could not withdraw {region_id}: {exc}", error=True)
            return False
        from ._workers import create_worker

        worker = create_worker(withdraw_window_job, project, region_id, run["store"], self._reread_args(run))
        worker.returned.connect(self._on_job_returned)
        worker.errored.connect(self._on_job_errored)
        self._start_job(worker, {"kind": "withdraw", "region": region_id, **self._undo_job(run)},
                        f"Withdrawing window {region_id} and undoing it in the slide's labels...")
        return True

    def _undo_job(self, run: Dict[str, Any]) -> Dict[str, Any]:
        """What a job that undoes withdrawn windows in the store of ``run`` keeps of its start: the run and its
        slide layer, and the edit window open over the store (and its layer), read again if the undoing changes
        the labels under it (:meth:`_show_reread`)."""
        layer = lambda name: self.viewer.layers[name].unique_id if name in self.viewer.layers else None  # noqa: E731
        if self.window is not None and self.window["name"] not in self.viewer.layers:
            self.window = None  # its layer closed by the user: nothing to read again, nor to accept
        w = self.window if self._open_window(run) is not None else None
        return {"run": run, "slide": layer(run["layer"]), "window": w,
                "window_layer": layer(w["name"]) if w is not None else None}

    def _reread_args(self, run: Dict[str, Any]) -> Optional[Tuple[Box, np.ndarray, np.ndarray]]:
        """``(box, predicted, shown)`` of the edit window open over the store of ``run`` (``shown``: its layer's
        labels, read, not written, by the worker), if any: what a job that undoes withdrawn windows needs to read
        it again (:func:`~napari_cdma._slide_view.reread_window`)."""
        open_window = self._open_window(run)
        if open_window is None:
            return None
        return (*open_window, np.asarray(self.viewer.layers[self.window["name"]].data))

    def _show_reread(self, out: Dict[str, Any], job: Dict[str, Any]) -> None:
        """A job undid withdrawn windows under the open edit window: the window shows the store's labels as they
        are now, one label per gland (``out["window"]``, read in the worker: the glands Edit window would open
        there), in place: only the pixels whose label changes are set (napari redraws their box alone; a gland
        left as it was keeps its label). Its layer is kept, not closed: napari collects garbage on the GUI thread
        when a layer is removed (half a second with a slide open). A window closed or replaced meanwhile is left
        alone; one whose layer the user closed is forgotten."""
        w, fresh = job["window"], out.get("window")
        if fresh is None or w is None or self.window is not w:
            return
        if not self._same_layer(w["name"], job["window_layer"]):  # closed by the user: nothing to show it in
            self.window = None
            return
        layer = self.viewer.layers[w["name"]]
        idx, labels = fresh["update"]
        if len(idx[0]):
            layer.data_setitem(idx, labels)  # the changed pixels' box redrawn, no new layer, no re-slice of others
        layer.selected_label = int(fresh["instances"].max()) + 1  # a new gland
        self.window = {**w, "predicted": fresh["predicted"], "instances": fresh["instances"]}
        self._reread_window = True

    def _on_withdrawn(self, result: Any, job: Dict[str, Any]) -> None:
        """The window is withdrawn and undone in the store (or refused): the layers, the accepted windows and
        the dock's lists follow; a slide closed or replaced meanwhile shows nothing."""
        run, region_id = job["run"], job["region"]
        if result[0] == "error":
            self._say(result[1], error=True)
        else:
            self._show_reread(result[1], job)  # the open window showed the labels the undoing changed
            undone = dict(result[1]["undone"])
            if self.last_result is run and self._same_layer(run["layer"], job["slide"]):
                self._in_steps(lambda: self.show_store(run["layer"], run["store"]),
                               lambda: self.show_accepted_windows(run))
                where = ""
            else:
                where = f" '{run['layer']}' was closed or replaced meanwhile: nothing is shown."
            self._say(f"Withdrew window {region_id}: {undone.get(region_id, 0)} chunk(s) restored in the slide's "
                      f"labels.{where}{self._undone_note([])}")
        self._in_steps(self.regions_changed.emit)  # the dock's lists follow, in a turn of their own

    def sync(self) -> bool:
        """Undo in the shown slide's store the windows withdrawn from the project elsewhere (the dock's
        accepted-region list), and refresh the store's layers and the accepted windows; True if a job was
        started to undo them.

        Whether any is to be undone is read on the GUI thread (the store's attributes and the project's index);
        the undoing (:func:`~napari_cdma._slide_view.undo_withdrawn_job`: every chunk under the windows at each
        pyramid level) runs in a worker thread, one job at a time as the panel's others; while a job runs, it
        is done when the job ends. With nothing to undo, the accepted windows are listed again now."""
        run = self.last_result
        if run is None:
            return False
        if self._worker is not None:
            self._sync_pending = True
            return False
        try:
            project = self._get_store() if has_edits(run["store"]) else None
            todo = pending_withdrawn(project, run["store"])
        except Exception as exc:
            self._say(f"Could not undo withdrawn windows in the slide's labels: {exc}", error=True)
            todo = []
        if not todo:
            self.show_accepted_windows(run)
            return False
        from ._workers import create_worker

        worker = create_worker(undo_withdrawn_job, project, run["store"], self._reread_args(run))
        worker.returned.connect(self._on_job_returned)
        worker.errored.connect(self._on_job_errored)
        self._start_job(worker, {"kind": "sync", **self._undo_job(run)},
                        f"Window(s) {', '.join(todo)} withdrawn from the project: undoing them in the slide's "
                        "labels...")
        return True

    def _on_synced(self, result: Any, job: Dict[str, Any]) -> None:
        """Windows withdrawn elsewhere are undone in the store (or could not be): the layers and the accepted
        windows follow, unless the slide was closed or replaced meanwhile."""
        run = job["run"]
        current = self.last_result is run and self._same_layer(run["layer"], job["slide"])
        if result[0] == "error":
            if current:  # the list follows the project, so that the watch does not start this again each second
                self.show_accepted_windows(run)
            self._say(result[1], error=True)
            return
        out = result[1]
        self._show_reread(out, job)
        if current:
            if out["undone"]:
                self._in_steps(lambda: self.show_store(run["layer"], run["store"]))
            self._in_steps(lambda: self.show_accepted_windows(run))
        ids = ", ".join(rid for rid, _ in out["undone"]) or "(none left)"
        where = "" if current else f" '{run['layer']}' was closed or replaced meanwhile: nothing is shown."
        self._say(f"Undid window(s) {ids} withdrawn from the project in the slide's labels.{where}"
                  f"{self._undone_note([])}")

    def _check_withdrawn(self) -> None:
        """Timer: a listed window withdrawn elsewhere (the dock's accepted-region list) is undone in the
        store now (:meth:`sync`); the check reads the open project store's index in memory."""
        if self._worker is not None or not self.window_list.count():
            return
        listed = {self.window_list.item(i).data(Qt.ItemDataRole.UserRole)[0] for i in range(self.window_list.count())}
        try:
            live = {r.region_id for r in self._get_store().regions()}
        except Exception:  # no project store open any more: nothing to compare
            return
        if listed - live:
            self.sync()

    def _drop_window(self) -> None:
        """Close the open edit window (its labels are no longer the store's); the note says so."""
        w = self.window
        if w is None:
            return
        if w["name"] in self.viewer.layers:  # the note says so only if it was shown (not closed by the user)
            self.viewer.layers.remove(w["name"])
            glands = self._live_layer(f"{w['layer']} glands", w["store"])
            if glands is not None:  # the layer the window showed over, rather than no layer at all
                self.viewer.layers.selection.active = glands
            self._closed_window = True
        self.window = None

    def _undone_note(self, undone: List[Tuple[str, int]]) -> str:
        ids = ", ".join(rid for rid, _ in undone)
        note = f" Withdrawn window(s) {ids} undone in the slide's labels." if undone else ""
        if self._closed_window:
            self._closed_window = False
            note += " The edit window over it was closed; open it again to edit there."
        if self._reread_window:
            self._reread_window = False
            note += (" The edit window over it now shows the slide's labels as they are, one label per gland "
                     "(what it showed before is not kept).")
        return note

    # ---------------------------------------------------------------- accepted windows
    def show_accepted_windows(self, run: Optional[Dict[str, Any]] = None) -> Any:
        """Outline the slide's accepted windows (the project store's live regions of the predicted slide
        level) over the slide layer, as accepted image regions are; returns the Shapes layer, or None
        when no project store or slide is at hand, or nothing was accepted yet."""
        from .project.slide_regions import slide_regions

        run = run or self.last_result
        digest = self._digests.get((run["slide"], run["level"])) if run else None
        if digest is None or run["layer"] not in self.viewer.layers:
            return None
        try:
            project = self._get_store()
            regions = slide_regions(project, digest) if project is not None else []
        except Exception:  # no project store could be opened: nothing is accepted
            return None
        ds = self._store_downsample(run)
        boxes = [tuple(v * ds for v in r.bbox) for r in regions]  # store pixels -> world (level-0) pixels
        # the review regions they cover are reviewed: they leave the list and their outlines go
        self._accepted_boxes[run["layer"]] = [tuple(int(round(v)) for v in b) for b in boxes]
        if self._ranked is not None and self._ranked[0] == run["layer"]:
            self._list_tiles()
        self.window_list.clear()
        for r, world in zip(regions, boxes, strict=True):
            # the box as the dock's accepted-region list writes it (walk 20: "(744, 779) 1585 x 1515" here)
            item = QListWidgetItem(f"{'[held out] ' if r.holdout else ''}{r.region_id}  {box_text(r.bbox)}  "
                                   f"v{r.version}")
            item.setData(Qt.ItemDataRole.UserRole, (r.region_id, tuple(int(round(v)) for v in world)))
            self.window_list.addItem(item)
        if boxes:
            self._watch.start()
        else:
            self._watch.stop()
        if not boxes and names_for(run["layer"])["accepted"] not in self.viewer.layers:
            return None  # no empty layer before anything is accepted
        # just outside the window: its accepted pixels are not covered, nor its edge taken for a gland's
        return self._outline(run["layer"], "accepted", boxes, ds, outside=True)

    def _store_downsample(self, run: Dict[str, Any]) -> float:
        if run.get("downsample"):
            return float(run["downsample"])
        from src_model.slide_store import open_store

        return float(open_store(run["store"]).info.downsample)

    # ---------------------------------------------------------------- numbered glands
    def number_glands(self, name: str, store_path: str) -> bool:
        """Show the glands of slide layer ``name``'s store numbered, one label per gland, as ``<slide> glands
        (numbered)``, once the slide is completely predicted; True if a worker was started.

        The numbering (:func:`~napari_cdma._slide_view.number_glands_job`: the dock's post-processing, numbered as
        ``cdma export`` numbers its GeoJSON, a gland cut by chunk sides one label; written into the store as
        ``labels/instances``) runs in a process of its own, watched by a worker thread: no button waits for it,
        and a job that writes the store's labels stops it (it runs again when that job ends). Numbers the store
        holds for its labels as they are are shown at once (the worker only checks them). While glands are
        numbered again, the numbered layer is drawn transparent (its numbers are out of date)."""
        if name not in self.viewer.layers:
            return False
        run = self._numbering_run
        if self._numbering is not None and run is not None and run["store"] == str(store_path) \
                and run["layer"] == name:
            return False  # already at it
        self._stop_numbering()
        from ._workers import create_worker

        run = {"layer": name, "store": str(store_path), "slide": self.viewer.layers[name].unique_id, "hidden": False}
        procs: List[Any] = []  # the numbering process, killed at once when the numbering is stopped
        worker = create_worker(number_glands_job, str(store_path), procs)
        self._numbering, self._numbering_run = worker, run
        self._numbering_box.update(worker=worker, procs=procs)
        plain_quit = worker.quit

        def quit_and_kill() -> None:
            """Quit, and kill the process at once (also when napari quits every worker as the application quits)."""
            plain_quit()
            _kill(procs)

        worker.quit = quit_and_kill
        worker.yielded.connect(lambda event, run=run: self._on_number_progress(event, run))
        worker.returned.connect(lambda result, run=run: self._on_numbered(result, run))
        worker.errored.connect(lambda exc, run=run: self._on_numbered(("error", str(exc), None), run))
        worker.finished.connect(lambda run=run: self._on_number_finished(run))
        worker.start()
        return True

    @property
    def numbering(self) -> bool:
        """Whether glands are being numbered (or checked) in the background."""
        return self._numbering is not None

    def _stop_numbering(self, store_path: Optional[str] = None) -> None:
        """Stop the numbering (of the store at ``store_path`` only, if given): its process is killed, the store's
        numbered glands stay as they were; what it would have shown is dropped."""
        run = self._numbering_run
        if self._numbering is None or run is None or (store_path is not None and run["store"] != str(store_path)):
            if store_path is not None:
                self._forget_numbered(store_path)
            return
        self._numbering.quit()  # kills its process at once (number_glands)
        self._numbering = self._numbering_run = None
        self._forget_numbered(run["store"])  # store_path, if given, is this one

    def _forget_numbered(self, store_path: str) -> None:
        """The numbers shown for the store at ``store_path`` are to be checked again (its labels may change)."""
        for name in [n for n, s in self._numbered.items() if s == str(store_path)]:
            del self._numbered[name]

    def _on_number_progress(self, event: Any, run: Dict[str, Any]) -> None:
        if run is not self._numbering_run or not _alive(self):
            return
        if not run["hidden"]:  # numbered again: the numbers shown are out of date, drawn transparent meanwhile
            run["hidden"] = True  # (by opacity, a uniform: hiding the layer and showing it again re-slices it, up to
            shown = self._live_layer(f"{run['layer']} {NUMBERED}", run["store"])  # 160 ms on the GUI thread)
            if shown is not None and shown.opacity > 0:
                shown.metadata[OUT_OF_DATE_KEY] = shown.opacity
                shown.opacity = 0.0
        self.number_status.setText(f"Numbering glands: step {event.step} of {event.total}, in the background; "
                                   f"'{run['layer']} {NUMBERED}' shows when done.")

    def _on_numbered(self, result: Any, run: Dict[str, Any]) -> None:
        """The numbering worker returned: show the numbered glands, or say why not."""
        if run is not self._numbering_run or not _alive(self):
            return
        kind = result[0]
        if not self._same_layer(run["layer"], run["slide"]):
            return  # the slide was closed or replaced meanwhile
        if kind == "incomplete":
            done, total = result[1]
            self.number_status.setText(f"Numbered glands: once all {total} chunks are predicted ({done} done). "
                                       "Glands are then numbered one label per gland, as Export numbers them.")
            return
        if kind == "error":
            self.number_status.setText(f"The glands could not be numbered: {result[1]}")
            return
        if kind == "stale":  # the labels changed while they were numbered: again, unless a job writes them now
            run["again"] = self._worker is None
            return
        out, rows = result[1], result[2]
        shown: Dict[str, Any] = {}

        def show() -> None:  # a step: the numbering is over (numbering False) only after it
            if run is not self._numbering_run or not self._same_layer(run["layer"], run["slide"]):
                return
            shown["layer"] = self._show_numbered(run["layer"], run["store"], hidden=True, read=out.get("layer"))
            self._numbered[run["layer"]] = run["store"]
            self.gland_rows[run["layer"]] = rows
            how = "as the store held them" if out["reused"] else f"in {out['seconds']:.0f} s"
            self.number_status.setText(f"{out['n_glands']} glands numbered, one label each: '{run['layer']} "
                                       f"{NUMBERED}' (numbered as Export numbers them, {how}).")
            self.glands_numbered.emit(run["layer"])

        def reveal() -> None:
            layer = shown.get("layer")
            if layer is not None and layer in self.viewer.layers and not layer.visible:
                self._reveal(run["layer"], layer)
            if layer is not None:
                release_held(layer.data)  # drawn: read live from the store from now on

        self._in_steps(show, reveal)

    def _on_number_finished(self, run: Dict[str, Any]) -> None:
        """The numbering worker ended: once what it shows is shown (a step after those of :meth:`_on_numbered`),
        the numbering is over, and runs again if its labels changed meanwhile."""
        if run is not self._numbering_run or not _alive(self):
            return
        self._in_steps(lambda: self._number_finished(run))

    def _number_finished(self, run: Dict[str, Any]) -> None:
        if run is not self._numbering_run or not _alive(self):
            return
        self._numbering = self._numbering_run = None
        if run.get("again") and self._worker is None:
            self.number_glands(run["layer"], run["store"])

    def _show_numbered(self, name: str, store_path: str, hidden: bool = False,
                       read: Optional[Dict[str, Any]] = None) -> Any:
        """Show (or refresh) the store's numbered glands over slide ``name``: a multiscale Labels layer read from
        ``labels/instances`` (filled, a colour per gland, :data:`NUMBERED_COLORS`, under the glands' outlines); the
        active layer stays the one that was (an open edit window keeps its brush). ``hidden``: a layer added is added
        hidden (not sliced), where it belongs (one insert, not an add and a move), for :meth:`_reveal` to draw in a
        later turn: added shown and moved, it was one stall of 0.6-2 s opening an 8192 px slide. ``read``: the
        layer's arrays, downsample and slide, read by the numbering worker (else the store is opened here)."""
        from src_model.export import instance_levels
        from src_model.slide_store import open_store

        lname = f"{name} {NUMBERED}"
        live = self._live_layer(lname, store_path)
        if live is not None:
            release_held(live.data)
            live.refresh()
            if OUT_OF_DATE_KEY in live.metadata:  # drawn again at the opacity it had
                live.opacity = live.metadata.pop(OUT_OF_DATE_KEY)
            return live
        from napari.layers import Labels

        if read is None:
            store = open_store(store_path)
            read = {"levels": instance_levels(store), "downsample": store.info.downsample, "slide": store.info.slide}
        ds = read["downsample"]
        active = self.viewer.layers.selection.active
        if lname in self.viewer.layers:
            self.viewer.layers.remove(lname)
        meta = {STORE_KEY: str(store_path), SLIDE_KEY: read["slide"], "napari_cdma_live": True,
                ROLE_KEY: "slide numbered glands"}
        layer = Labels(read["levels"], name=lname, multiscale=True, scale=(ds, ds), opacity=NUMBERED_OPACITY,
                       colormap=numbered_colormap(), metadata=meta, visible=not hidden)
        glands = f"{name} glands"
        # under the glands' outlines (and an edit window), not over them
        self.viewer.layers.insert(self.viewer.layers.index(glands) if glands in self.viewer.layers
                                  else len(self.viewer.layers), layer)
        if glands in self.viewer.layers:
            over = self.viewer.layers[glands]
            if not getattr(over, "contour", 1):  # the reader's layer, filled: outlined as the panel's own (its
                over.colormap = gland_colormap()  # fill hid the numbered glands' colours under a brown veil)
                over.contour = OUTLINE_WIDTH
                over.opacity = 0.9
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active
        return layer

    # ---------------------------------------------------------------- export
    def export_geojson(self, path: Any) -> bool:
        """Export the glands of the slide's prediction store (the Store field) to a GeoJSON file at ``path``,
        in a worker thread; True if started (the status line says when it is written). Windows withdrawn from the
        project are undone in the store first, in that worker too (:func:`~napari_cdma._slide_view.undo_first`), so
        none is exported."""
        if self._refuse_if_busy():
            return False
        store_path = self.store_edit.text().strip()
        if not store_path or not Path(store_path).exists():
            self._say("Nothing to export yet: predict the view first (Predict view) to fill the slide's store.",
                      error=True)
            return False
        # a window withdrawn elsewhere must not be exported: the job undoes it first, in its worker thread
        project, undo_error = self._undo_project(store_path)
        if undo_error is not None:
            self._say(f"Not exported: withdrawn windows could not be undone in the slide's labels: {undo_error}",
                      error=True)
            return False
        run = self._run_of_store(store_path)
        from ._workers import create_worker

        worker = create_worker(export_geojson_job, store_path, str(path), project,
                               self._reread_args(run) if run is not None else None)
        worker.returned.connect(self._on_job_returned)
        worker.errored.connect(self._on_job_errored)
        job = {"kind": "export", "path": str(path),
               **(self._undo_job(run) if run is not None else {"run": None, "window": None})}
        self._start_job(worker, job, f"Exporting the glands of {Path(store_path).name} to {path}...")
        return True

    def _run_of_store(self, store_path: str) -> Optional[Dict[str, Any]]:
        """The shown view (:attr:`last_result`) of the store at ``store_path``, else the open edit window's run over
        it (it holds the run's keys), else None."""
        for run in (self.last_result, self.window):
            if run is not None and str(run["store"]) == str(store_path):
                return run
        return None

    def _export_clicked(self) -> None:
        store_path = self.store_edit.text().strip()
        default = str(Path(store_path).with_suffix("").with_suffix(".geojson")) if store_path else "glands.geojson"
        path, _ = QFileDialog.getSaveFileName(self, "Export the slide's glands for QuPath", default,
                                              "GeoJSON (*.geojson *.json)")
        if path:
            self.export_geojson(path)

    def _on_exported(self, result: Any, job: Dict[str, Any]) -> None:
        """The store's glands are written (or not): withdrawn windows the worker undid first are shown undone (the
        open edit window read again in place, the store's layers and the accepted windows refreshed)."""
        run, path, undo = job["run"], job["path"], result[2]
        self._show_reread(undo, job)
        if undo["undone"] and run is not None and run is self.last_result \
                and self._same_layer(run["layer"], job["slide"]):  # the shown view's store, its slide still shown
            self._in_steps(lambda: self.show_store(run["layer"], run["store"]), lambda: self.show_accepted_windows(run))
        note = self._undone_note(undo["undone"])
        if result[0] == "error":
            self._say(f"Could not export: {result[1]}{note}", error=True)
            return
        n, done, total = result[1]
        rest = "" if done == total else f"; {total - done} of {total} chunks not predicted (exported as background)"
        self._say(f"Exported {n} gland(s) to {Path(path).name}{rest}. QuPath: File > Import objects. Written to "
                  f"{path}.{note}")


__all__ = ["DEFAULT_CHUNK", "SHOW_STEPS", "SlidePanel"]
