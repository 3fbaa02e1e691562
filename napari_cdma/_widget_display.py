"""Display panel: the uncertainty legend, the value under the cursor, and the per-gland table (CSV)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt, QTimer
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from src_model.gland_table import MIN_GLAND_PIXELS, glands_only

from ._layers import (
    IMAGE_KEY,
    ROLE_KEY,
    _reviewed,
    camera_for_tile,
    prediction_layers,
    reviewed_at,
    source_path,
    style_prediction,
    uncertainty_at,
    uncertainty_tint_start,
    uncertainty_values,
    upsert_layer,
)
from ._layers import unwrap_layer as _unwrap
from ._messages import show_message
from ._widget_review import CONTEXT_MARGIN, box_text, canvas_hw, scene_camera

LEGEND_W, LEGEND_H = 160, 12
TABLE_COLUMNS = ("id", "area", "mean_uncertainty")  # the table's columns (and the CSV's first: its box follows)
#: Smallest side (data px) of what a click on a gland row shows around the gland: a sliver left by an edit (a few
#: px wide) was zoomed to fill the canvas, with no tissue around it to judge it by (walk).
MIN_GLAND_VIEW = 128


def at_least(bbox: Tuple[int, int, int, int], side: int) -> Tuple[int, int, int, int]:
    """``bbox`` ``(y0, x0, y1, x1)`` grown about its centre to at least ``side`` px a side."""
    y0, x0, y1, x1 = bbox
    grow_y, grow_x = max(0, side - (y1 - y0)), max(0, side - (x1 - x0))
    return y0 - grow_y // 2, x0 - grow_x // 2, y1 + grow_y - grow_y // 2, x1 + grow_x - grow_x // 2


# The dock's table shows only these (they fit its width); the other keys go in each row's tooltip.
TABLE_HEADERS = ("id", "area", "mean unc.")
# The gland clicked in the table: one rectangle just outside its box, in a Shapes layer of its own (role
# "selected gland", named after the image as the plugin's other layers). Magenta: apart from the green /
# blue gland outlines, the cyan and yellow review boxes and the red accepted boxes.
SELECTED_ROLE = "selected gland"
SELECTED_COLOR, SELECTED_WIDTH, SELECTED_PAD = "magenta", 2.0, 2.0
NO_PREDICTION_TEXT = "Predict an image to see its uncertainty legend and gland table."
#: The readout's first line; the values go on the second. On one line "Under cursor: uncertainty 0.0901, gland 1"
#: needed 274 px of the 225 px the 280 px dock gives it and the gland number was cut (walk); the second line,
#: "uncertainty 0.902, gland 99999", needs about 206 px in napari's style.
READOUT_TITLE = "Under cursor:"
READOUT_TIP = ("The uncertainty (0 to 1) and the gland's number under the mouse pointer; over an accepted region "
               "(reviewed: not tinted), which one")
#: The gland table follows the edits not accepted of the prediction layer it describes: made again this long after
#: the last stroke, fill, erase, undo or redo (one table per pause, never one per stroke).
GLANDS_REFRESH_MS = 500
#: Largest prediction layer (pixels) whose table is made again so (GUI thread: about 0.1 s a megapixel on a busy
#: 2-core machine; a GlaS image is 0.4 Mpx); a larger one's table says it predates the edits until the next Accept.
LIVE_GLANDS_PIXELS = 2_000_000
#: Whose prediction the panel describes, on one line over the legend (walk 20: after a model change with edits not
#: accepted, the new model's glands went to '<image> prediction (v0001)' while the legend, tint and table stayed
#: those of the layer being corrected, and nothing said which model's glands were corrected there).
#: Another layer (a slide's numbered glands) is named; 223 px of text in the 280 px dock cut a long name at its end,
#: the model whole. The layer being corrected is said in words (:data:`CORRECTED_TEXT`): its name was cut before
#: "prediction" (walk 21).
SOURCE_TEXT = "Model {model}: '{layer}'"
#: The same line for the image's own prediction layer, the one corrected with the brush.
CORRECTED_TEXT = "Predicted by {model}"
#: Said instead of "Wrote N gland(s) to PATH." once the table is made again with other rows (walk 20: the line stayed
#: after a split or merge of glands changed the table, as if the file still held it).
STALE_EXPORT_TEXT = "The gland table changed after it was written to {path}: Export CSV again to save it."
#: Said instead of the legend and table once the prediction layer they described was closed (walk 26: "Predicted by
#: bundled", the legend and an empty gland table stayed).
CLOSED_PREDICTION_TEXT = ("'{layer}' was closed: no prediction of '{image}' to describe. Predict it again (or Open "
                          "the project store) to see its legend and gland table.")
#: Said in place of the legend once the uncertainty layer was closed while its prediction layer stays.
CLOSED_UNCERTAINTY_TEXT = ("'{layer}' was closed: no uncertainty legend (the readout gives the gland alone). The "
                           "table's mean uncertainty is still the model's; Predict again to show the map.")
#: The most glands in pieces named on the note under the table (the tooltip of each one's row says it too).
SPLIT_NAMED = 4
STALE_GLANDS_TEXT = ("The gland table predates your edits of the prediction layer (too large to update after "
                     "each stroke): Accept or Predict updates it.")


def split_text(split: Dict[int, int]) -> str:
    """The note under the table on the glands whose label is in disconnected pieces (gland id -> pieces): "Gland 9 is
    in 6 pieces" (walk 26), its stray pieces left to erase or to give labels of their own."""
    if len(split) == 1:
        (gid, n), = split.items()
        head = f"Gland {gid} is in {n} pieces"
    else:
        named = sorted(split.items(), key=lambda item: (-item[1], item[0]))[:SPLIT_NAMED]
        more = len(split) - len(named)
        head = "Glands in pieces: " + ", ".join(f"{gid} ({n})" for gid, n in named) + (f" and {more} more" if more
                                                                                       else "")
    return (f"{head} (one number, not joined): erase the stray pieces, or fill them with a new label to make them "
            "glands of their own.")


def readout_text(parts: Sequence[str], region: Optional[str] = None) -> str:
    """The readout's two lines: :data:`READOUT_TITLE` (and "reviewed r0003" over an accepted region ``region``,
    which the uncertainty layer leaves untinted), then ``parts`` ("uncertainty 0.090", "gland 7") or "-". The
    region goes on the first line: the second, "uncertainty 0.902, gland 99999", already fills the dock's width."""
    title = READOUT_TITLE + (f" reviewed {region}" if region else "")
    return title + "\n" + (", ".join(parts) if parts else "-")


def readout_label() -> QLabel:
    """The value-under-the-cursor label: always two lines (:func:`readout_text`), so its height never changes
    with the text (a text that changes on every mouse move must not re-layout the dock), and as wide as its
    panel, the values on a line of their own (the Whole slide panel's readout can be made the same way)."""
    label = QLabel(readout_text([]))
    label.setWordWrap(False)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
    label.setToolTip(READOUT_TIP)
    return label


def elide_name(label: QLabel, head: str, name: str, tail: str, width: int) -> str:
    """``head + name + tail`` in at most ``width`` px of ``label``'s font, ``name`` (a layer's) cut at its end first, so
    that ``head`` (the model) stays whole; only when ``head`` and ``tail`` alone are too wide is the whole text cut."""
    fm = label.fontMetrics()
    whole = head + name + tail
    if fm.horizontalAdvance(whole) <= width:
        return whole
    room = width - fm.horizontalAdvance(head + tail)
    if room >= fm.horizontalAdvance("mm\u2026"):  # a letter or two of the name before the cut
        return head + fm.elidedText(name, Qt.TextElideMode.ElideRight, room) + tail
    return fm.elidedText(whole, Qt.TextElideMode.ElideRight, width)


class SourceLabel(QLabel):
    """One line that names the model and layer the panel describes (:data:`SOURCE_TEXT`), cut to the panel's width
    (the layer name at its end, never the model); its tooltip says it whole. Never widens the dock."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setWordWrap(False)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self._parts = ("", "", "")

    def set_source(self, model: str, layer: Optional[str]) -> None:
        """Name ``model`` and the layer ``layer``; None: the layer being corrected, said in words
        (:data:`CORRECTED_TEXT`: its name, "<image> prediction", was cut before its last word in the 280 px dock and
        could not be told from a side layer's, walk 21)."""
        if layer is None:
            self._parts = (CORRECTED_TEXT.format(model=model), "", "")
        else:
            head, tail = SOURCE_TEXT.split("{layer}")
            self._parts = (head.format(model=model), layer, tail)
        self._elide()

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        text = elide_name(self, *self._parts, max(1, self.contentsRect().width()))
        if text != self.text():
            self.setText(text)


def selected_gland_name(image_name: str) -> str:
    """Name of the layer that outlines the gland clicked in the table of image ``image_name``."""
    return f"{image_name} {SELECTED_ROLE}"


def gland_rectangle(bbox: Sequence[int], pad: float = SELECTED_PAD, width: float = SELECTED_WIDTH) -> np.ndarray:
    """Corners (4, 2) (row, col) of a rectangle whose ``width`` px stroke lies ``pad`` px outside the
    pixels of ``bbox`` (y0, x0, y1, x1), so it never covers the gland's own outline."""
    y0, x0, y1, x1 = (float(v) for v in bbox)
    d = pad + width / 2.0  # pixel edges at -0.5 (napari pixel centres are integers)
    a, b, c, e = y0 - 0.5 - d, x0 - 0.5 - d, y1 - 0.5 + d, x1 - 0.5 + d
    return np.array([[a, b], [a, e], [c, e], [c, b]], dtype=float)


def legend_rgb(colormap: Any, width: int = LEGEND_W, height: int = LEGEND_H, opacity: float = 1.0) -> np.ndarray:
    """The colormap as it looks over glass: RGBA at the layer's ``opacity`` composited on white, uint8
    (height, width, 3)."""
    rgba = np.asarray(colormap.map(np.linspace(0.0, 1.0, width)), dtype=np.float32)
    alpha = rgba[:, 3:4] * float(opacity)
    rgb = rgba[:, :3] * alpha + (1.0 - alpha)
    return np.ascontiguousarray(np.repeat((rgb * 255).astype(np.uint8)[None], height, axis=0))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value)
    return str(value)


def _tip_part(key: str, value: Any) -> str:
    """One key of a gland row in its tooltip; its box as the dock writes boxes ("40 x 110 px at x 200, y 150"), not
    "bbox 150 200 260 240" (y0 x0 y1 x1), which needed its convention told (walk 20)."""
    if key == "bbox" and isinstance(value, (tuple, list)) and len(value) == 4:
        return f"box {box_text(value)}"
    return f"{key} {_fmt(value)}"


def value_under(viewer: Any, layer: Any, position: Sequence[float]) -> Any:
    """The value of ``layer`` at a world position, or None when there is none there or the layer is
    absent or hidden (a hidden layer is not what the user sees under the cursor)."""
    if layer is None or layer not in viewer.layers or not layer.visible:
        return None
    value = layer.get_value(position, world=True)
    if isinstance(value, tuple):  # a multiscale layer (a large image's or a slide's): (level, value)
        value = value[-1]
    return value


def reviewed_under(layer: Any, position: Sequence[float]) -> Optional[Tuple[float, str]]:
    """Over an accepted region that an uncertainty layer shows untinted (:func:`~._layers.show_reviewed`): the
    model's uncertainty there (not the untinted value the layer shows) and the region's id; else None."""
    if layer is None:
        return None
    row, col = (int(v) for v in np.round(np.asarray(layer.world_to_data(position), dtype=float)[-2:]))
    region = reviewed_at(layer, row, col)
    return None if region is None else (uncertainty_at(layer, row, col), region)


class GlandTableModel(QAbstractTableModel):
    """The per-gland rows for a Qt view, kept as one numpy column per shown key and the rows' dicts:
    no per-cell object is made, so filling thousands of rows costs a few milliseconds; a cell's text and
    a row's tooltip are made only when the view draws or asks for them.

    Attributes:
        glands: the rows (dicts) in the order given; ``order`` maps a shown row to its index there.
        values: (rows, len(TABLE_COLUMNS)) float, NaN where a row has no number for that key.
    """

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.glands: List[Dict[str, Any]] = []
        #: gland id -> the disconnected pieces its label is in, for the glands in more than one (walk 26)
        self.pieces: Dict[int, int] = {}
        self.values = np.zeros((0, len(TABLE_COLUMNS)), dtype=np.float64)
        self.order = np.zeros(0, dtype=np.int64)
        self._sort: Optional[Tuple[int, Any]] = None

    def set_rows(self, glands: List[Dict[str, Any]]) -> None:
        """Show ``glands`` (kept, not copied), sorted as the view last asked."""
        self.beginResetModel()
        self.glands = glands
        values = np.full((len(glands), len(TABLE_COLUMNS)), np.nan, dtype=np.float64)
        for c, key in enumerate(TABLE_COLUMNS):
            try:
                values[:, c] = np.fromiter((g[key] for g in glands), dtype=np.float64, count=len(glands))
            except (KeyError, TypeError, ValueError):  # a missing or non-numeric value: NaN there, the rest kept
                values[:, c] = [_number(g.get(key)) for g in glands]
        self.values = values
        self.order = self._sorted_order()
        self.endResetModel()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self.glands)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(TABLE_COLUMNS)

    def gland(self, row: int) -> Optional[Dict[str, Any]]:
        """The gland shown in ``row`` (rows may be sorted), or None."""
        return self.glands[int(self.order[row])] if 0 <= row < len(self.order) else None

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        gland = self.gland(index.row())
        if gland is None:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            value = gland.get(TABLE_COLUMNS[index.column()], "")
            return _fmt(value)
        if role == Qt.ItemDataRole.ToolTipRole:
            tip = "; ".join(_tip_part(k, v) for k, v in gland.items())
            n = self.pieces.get(gland.get("id"), 1)
            return tip + (f"; in {n} pieces, not joined (one number)" if n > 1 else "")
        return None

    def headerData(self, section: int, orientation: Any, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal \
                and 0 <= section < len(TABLE_HEADERS):
            return TABLE_HEADERS[section]
        return None

    def sort(self, column: int, order: Any = Qt.SortOrder.AscendingOrder) -> None:
        """Sort the shown rows by ``column``'s numbers (rows without one last)."""
        if not 0 <= column < len(TABLE_COLUMNS):
            return
        self.layoutAboutToBeChanged.emit()
        self._sort = (int(column), order)
        self.order = self._sorted_order()
        self.layoutChanged.emit()

    def _sorted_order(self) -> np.ndarray:
        n = len(self.glands)
        if self._sort is None or n == 0:
            return np.arange(n, dtype=np.int64)
        column, order = self._sort
        col = self.values[:, column]
        key = -col if order == Qt.SortOrder.DescendingOrder else col
        return np.argsort(key, kind="stable").astype(np.int64)  # NaN sorts last either way


class GlandTableView(QTableView):
    """The dock's gland table: a view over a :class:`GlandTableModel`. ``rowCount()`` is the number of
    rows shown (as a QTableWidget's)."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.gland_model = GlandTableModel(self)
        self.setModel(self.gland_model)
        # the columns share the table's width, none hidden behind a horizontal scrollbar; id and area as wide as
        # their numbers need (showEvent), the rest to "mean unc.", whose header is cut short in a narrow dock
        # when the three share it equally
        header = self.horizontalHeader()
        header.setStretchLastSection(True)
        for column in range(len(TABLE_COLUMNS) - 1):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Fixed)

    def showEvent(self, event: Any) -> None:
        """Size the id and area columns in the font the table is drawn in now (napari's style, once shown)."""
        super().showEvent(event)
        header = self.horizontalHeader()
        # 5 digits and the cell padding (a wider number is elided, its row's tooltip gives it whole)
        width = header.fontMetrics().horizontalAdvance("00000") + header.fontMetrics().height()
        for column in range(len(TABLE_COLUMNS) - 1):
            header.resizeSection(column, width)

    def rowCount(self) -> int:
        return self.gland_model.rowCount()

    def columnCount(self) -> int:
        return self.gland_model.columnCount()

    def text(self, row: int, column: int) -> str:
        """The text shown in a cell (rows as sorted on screen)."""
        return str(self.gland_model.data(self.gland_model.index(row, column)) or "")


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


class UncertaintyLegend(QWidget):
    """What the uncertainty overlay's colours mean: a title that says where the tint starts, the colour
    ramp as it looks over glass, and the low and high ends of the range. The dock's image overlay and the
    Whole slide panel's overlay use it, so both read the same way.

    Attributes:
        legend_title, legend, lo_label, hi_label: the title, the ramp (a pixmap) and the range's ends.
        display_range: the range shown, uncertainty units (the map's values, in [0, 1]).
    """

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.display_range: Tuple[float, float] = (0.0, 1.0)
        self._legend_data: Optional[np.ndarray] = None  # QImage borrows this buffer
        self.legend = QLabel()
        self.legend.setFixedHeight(LEGEND_H)
        self.legend.setMinimumWidth(40)
        self.legend.setScaledContents(True)  # the gradient follows the dock's width
        self.legend.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.legend.setToolTip("Uncertainty colours, transparent (certain) to deep green (most uncertain)")
        self.legend_title = QLabel("Uncertainty colours (range over tissue):")
        self.legend_title.setWordWrap(True)  # wraps in a narrow dock rather than widening it
        self.lo_label = QLabel("")
        self.hi_label = QLabel("")
        row = QHBoxLayout()
        row.addWidget(self.lo_label)
        row.addWidget(self.legend, 1)
        row.addWidget(self.hi_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.legend_title)
        layout.addLayout(row)

    def show_range(self, name: str, colormap: Any, opacity: float, display_range: Tuple[float, float],
                   where: str = "") -> None:
        """Show the legend of an uncertainty layer named after ``name`` drawn with ``colormap`` at
        ``opacity`` over ``display_range`` (uncertainty units); ``where`` says, in the tooltip, which
        pixels the range was taken from when they are not all of the map."""
        self.display_range = (float(display_range[0]), float(display_range[1]))
        self._legend_data = legend_rgb(colormap, opacity=opacity)
        h, w, _ = self._legend_data.shape
        qimage = QImage(self._legend_data.data, w, h, 3 * w, QImage.Format.Format_RGB888)
        self.legend.setPixmap(QPixmap.fromImage(qimage))
        lo, hi = self.display_range
        self.lo_label.setText(f"{lo:.3f}")
        self.hi_label.setText(f"{hi:.3f}")
        tint = uncertainty_tint_start(lo, hi)
        self.legend_title.setText(f"Uncertainty colours (tint from {tint:.3f}):")
        self.legend.setToolTip(f"Uncertainty of '{name}': transparent (the H&E unchanged) below {tint:.3f}, "
                               f"deeper green as it rises, strongest at {hi:.3f} and above; {lo:.3f} to {hi:.3f} "
                               f"is its range over tissue (2nd to 99.5th percentile{where})")


class DisplayPanel(QWidget):
    """What the colours mean and the numbers behind them.

    Args:
        viewer: the napari viewer.
        parent: parent widget.
    """

    def __init__(self, viewer: Any, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.image_name: Optional[str] = None
        self.uncertainty_layer: Any = None
        self.labels_layer: Any = None
        self.glands: List[Dict[str, Any]] = []
        #: what counts as a gland in the table and its CSV: at least this many pixels, the engine's minimum object
        #: size (:data:`src_model.gland_table.MIN_GLAND_PIXELS`), as in the whole-slide path; smaller labelled pieces
        #: (left by a correction) are counted under the table, not listed (walk 24)
        self.min_gland_pixels = MIN_GLAND_PIXELS
        #: how many labelled pieces under :attr:`min_gland_pixels` the last table left out
        self.small_pieces = 0
        #: gland id -> the disconnected pieces of the glands listed whose label is in more than one (walk 26: an erase
        #: through gland 9 left 6 fragments, one row); said on :attr:`pieces_label` and in the row's tooltip
        self.split_glands: Dict[int, int] = {}
        #: (id, area, bbox) of each gland listed -> its pieces, as last counted: only a gland whose row changed (a
        #: stroke changes its area) is counted again (:meth:`_count_split`)
        self._pieces_cache: Dict[Tuple[int, int, Tuple[int, ...]], int] = {}
        #: the model whose prediction the panel describes, as :meth:`show_result` was told ("" if not told)
        self.model_label = ""
        self.selected_gland: Optional[int] = None  # the gland last clicked in the table (outlined)
        self.last_message = ""
        #: returns the open project store (or its folder), RuntimeError or None when none is open: Export CSV...
        #: suggests its folder (:meth:`export_folder`); None: asked of the dock this panel is in
        self.store_for: Optional[Callable[[], Any]] = None
        #: the last export, while its "Wrote ..." line (or STALE_EXPORT_TEXT) is the status: (image, path, the rows
        #: written, that line)
        self._exported: Optional[Tuple[str, str, List[Dict[str, Any]], str]] = None
        self._watched: Any = None  # the labels layer whose edits the table follows (_watch)
        #: the model's uncertainty map behind an uncertainty layer that was closed while its prediction layer stays:
        #: the table's mean uncertainty is still made from it (:meth:`refresh_glands`)
        self._closed_values: Any = None
        #: image name -> (its prediction layer, the gland rows last shown for it): shown again when the image is
        #: chosen again (table_of)
        self._tables: Dict[str, Tuple[Any, List[Dict[str, Any]]]] = {}
        self._painted = False  # a stroke, fill or erase since the table was made
        #: the table is made again once the edits pause (GLANDS_REFRESH_MS after the last one)
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(GLANDS_REFRESH_MS)
        self._refresh_timer.timeout.connect(self.refresh_glands)

        self.legend_box = UncertaintyLegend()
        self.legend, self.legend_title = self.legend_box.legend, self.legend_box.legend_title
        self.lo_label, self.hi_label = self.legend_box.lo_label, self.legend_box.hi_label
        self.readout = readout_label()
        self.source_label = SourceLabel()
        self.source_label.setVisible(False)
        self.table = GlandTableView()
        self.table.setMaximumHeight(150)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        # three columns that share the dock's width: no horizontal scrollbar hides a row (GlandTableView)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setSortingEnabled(True)
        self.table.setToolTip("One row per predicted gland; click a header to sort, a row to go to the gland")
        self.table.verticalHeader().setVisible(False)
        self.pieces_label = QLabel("")
        self.pieces_label.setWordWrap(True)
        self.pieces_label.setVisible(False)
        #: says why the legend is gone: its uncertainty layer was closed (CLOSED_UNCERTAINTY_TEXT)
        self.closed_label = QLabel("")
        self.closed_label.setWordWrap(True)
        self.closed_label.setVisible(False)
        self.fill_check = QCheckBox("Fill glands")
        self.fill_check.setToolTip("Filled glands (faint) instead of 3 px outlines; a prediction of "
                                   "another version ('... (v0003)') is drawn fainter and thinner")
        self.export_button = QPushButton("Export CSV...")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        #: said instead of an empty legend and table while no prediction is shown (none yet, only a whole slide
        #: open, or the prediction's layers closed)
        self.empty_label = QLabel(NO_PREDICTION_TEXT)
        self.empty_label.setWordWrap(True)

        # what describes a prediction: legend, readout, gland table, export; hidden while there is none
        self.content = QWidget()
        content = QVBoxLayout(self.content)
        content.setContentsMargins(0, 0, 0, 0)
        content.addWidget(self.source_label)
        content.addWidget(self.legend_box)
        content.addWidget(self.closed_label)
        content.addWidget(self.readout)
        glands_row = QHBoxLayout()
        glands_label = QLabel("Glands (one label each):")
        glands_label.setWordWrap(True)
        glands_row.addWidget(glands_label, 1)
        glands_row.addWidget(self.fill_check)
        content.addLayout(glands_row)
        content.addWidget(self.table)
        content.addWidget(self.pieces_label)
        content.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.empty_label)
        layout.addWidget(self.content)
        layout.addWidget(self.status)
        self._show_content()

        self.export_button.clicked.connect(self._export_clicked)
        self.fill_check.toggled.connect(self.set_fill)
        self.table.clicked.connect(lambda index: self.go_to_gland(self._row_id(index.row())))
        viewer.cursor.events.position.connect(self._on_cursor)
        viewer.layers.events.removed.connect(self._on_layer_removed)

    @property
    def showing(self) -> bool:
        """Whether the panel describes a prediction: it has gland rows, or its uncertainty or labels layer is open."""
        return bool(self.glands) or any(layer is not None and layer in self.viewer.layers
                                        for layer in (self.uncertainty_layer, self.labels_layer))

    def _show_content(self) -> None:
        """The legend and gland table while a prediction is shown; else one line that says how to get them."""
        showing = self.showing
        self.content.setVisible(showing)
        self.empty_label.setVisible(not showing)

    def _on_layer_removed(self, event: Any = None) -> None:
        """The prediction layer described closed: nothing is described any more, the legend, readout and table give
        way to a line that says so (:data:`CLOSED_PREDICTION_TEXT`; walk 26: the legend and an empty table stayed).
        Its uncertainty layer closed: the legend gives way to a line that says so (:data:`CLOSED_UNCERTAINTY_TEXT`);
        the table still describes the prediction layer's glands, their mean uncertainty from the model's map."""
        layer = _unwrap(getattr(event, "value", None))
        if layer is None or not any(layer is _unwrap(ly) for ly in (self.uncertainty_layer, self.labels_layer)):
            return
        if layer is _unwrap(self.labels_layer):  # the table described its glands: nothing left to describe
            image = self.image_name or ""
            self.selected_gland = None
            self._drop_glands()
            self._drop_uncertainty()
            self.image_name = None
            self.empty_label.setText(CLOSED_PREDICTION_TEXT.format(layer=layer.name, image=image))
            if self.last_message:  # "Wrote N gland(s) to ..." or that the table predates the edits: of no table now
                self.last_message = ""
                show_message(self.status, "")
        else:
            umap = self.uncertainty_layer
            values = None if getattr(umap, "multiscale", False) else uncertainty_values(umap)
            self._drop_uncertainty()
            self._closed_values = values
            self.legend_box.setVisible(False)
            self.closed_label.setText(CLOSED_UNCERTAINTY_TEXT.format(layer=layer.name))
            self.closed_label.setVisible(True)
        self._show_content()

    def _drop_uncertainty(self) -> None:
        self.uncertainty_layer = None
        self._closed_values = None
        self.legend_box.setVisible(True)
        self.closed_label.setVisible(False)
        self.readout.setText(readout_text([]))

    def _drop_glands(self) -> None:
        self._tables.pop(self.image_name or "", None)
        self.labels_layer = None
        self._show_source("")
        self._watch(None)
        self.glands = []
        self.table.gland_model.set_rows(self.glands)
        self.small_pieces = 0
        self.split_glands = self.table.gland_model.pieces = {}
        self.pieces_label.setText("")
        self.pieces_label.setVisible(False)

    def _watch(self, layer: Any) -> None:
        """Follow the edits of ``layer`` (None: of none): napari's paint event (a stroke, fill or erase done) and its
        redraws (an undo or redo) start the timer that makes the gland table again (:meth:`refresh_glands`). Only an
        image's prediction layer is followed: a slide's numbered glands keep the Whole slide panel's table (its boxes
        in slide pixels)."""
        layer = _unwrap(layer)
        if layer is not None and (getattr(layer, "metadata", None) or {}).get(ROLE_KEY) != "prediction":
            layer = None
        old = self._watched
        if old is layer:
            return
        self._refresh_timer.stop()
        if old is not None:
            for emitter in (old.events.paint, old.events.set_data):
                with contextlib.suppress(Exception):  # not (or no longer) connected
                    emitter.disconnect(self._on_labels_edited)
        if layer is not None:
            layer.events.paint.connect(self._on_labels_edited)
            layer.events.set_data.connect(self._on_labels_edited)
        self._watched = layer

    def _on_labels_edited(self, event: Any = None) -> None:
        """An edit of the prediction layer the table describes: the table is made again once the edits pause."""
        source = _unwrap(getattr(event, "source", None))
        if source is not None and source is not _unwrap(self.labels_layer):
            return
        if getattr(event, "type", "") == "paint":
            self._painted = True
        self._refresh_timer.start()  # restarted by each edit: one table per pause

    def refresh_glands(self) -> bool:
        """Make the gland table again from its prediction and uncertainty layers as they are now (edits not accepted
        included), keeping the rows' sort and the outline of the gland clicked if it is still there. Not for a layer
        over :data:`LIVE_GLANDS_PIXELS` or a multiscale one (the status then says the table predates the edits, if
        it was painted since the table was made: a redraw alone is no edit). Returns whether the table was made
        again."""
        from src_model.gland_table import gland_table  # torch-free

        labels, umap = self.labels_layer, self.uncertainty_layer
        layers = self.viewer.layers
        closed = self._closed_values  # the uncertainty layer was closed: its values are still the model's
        if labels is None or labels not in layers or _unwrap(labels) is not self._watched \
                or (closed is None and (umap is None or umap not in layers)):
            return False
        shape = tuple(getattr(labels.data, "shape", ()))
        if getattr(labels, "multiscale", False) or (closed is None and getattr(umap, "multiscale", False)) \
                or int(np.prod(shape)) > LIVE_GLANDS_PIXELS:
            if self._painted:
                self.last_message = STALE_GLANDS_TEXT
                show_message(self.status, self.last_message)
            return False
        try:
            values = closed if closed is not None else uncertainty_values(umap)
            glands = gland_table(np.asarray(labels.data), np.asarray(values))
        except ValueError:  # the layers no longer match (another image under the same name)
            return False
        selected = self.selected_gland
        self._painted = False
        self.glands = self._only_glands(glands)
        self._remember()
        self.table.gland_model.set_rows(self.glands)  # sorted as the user last sorted it
        self._check_export()
        row = next((g for g in self.glands if g.get("id") == selected), None) if selected is not None else None
        if row is None:
            self.clear_selected_gland()
        elif self.image_name and self._highlight_layer() is not None:
            self._outline_gland(tuple(int(v) for v in row["bbox"]))  # it may have grown or shrunk
        if self.last_message == STALE_GLANDS_TEXT:
            self.last_message = ""
            show_message(self.status, "")
        self._show_content()
        return True

    def _remember(self) -> None:
        if self.image_name and self.labels_layer is not None:
            self._tables[self.image_name] = (_unwrap(self.labels_layer), self.glands)

    def table_of(self, image_name: str, labels_layer: Any) -> Optional[List[Dict[str, Any]]]:
        """The gland rows last shown for ``image_name``'s prediction layer ``labels_layer`` (None if none)."""
        layer, rows = self._tables.get(image_name, (None, None))
        return rows if layer is not None and layer is _unwrap(labels_layer) else None

    def forget(self, image_name: str) -> None:
        """No longer describe the prediction of ``image_name`` (its layers were handed to the user at a store switch):
        the legend and gland table go, as when its layers are closed."""
        self._tables.pop(image_name, None)
        if self.image_name != image_name:
            return
        self.clear_selected_gland()
        self._drop_uncertainty()
        self._drop_glands()
        self._show_content()

    def set_aside(self, note: Optional[str] = None) -> None:
        """Describe no prediction for now: the image chosen has none (walk: with testA_2 chosen and not predicted,
        the table and legend still showed testA_1's glands), or lies hidden under a whole slide (``note`` says so
        instead of :data:`NO_PREDICTION_TEXT`). The rows shown are remembered (:meth:`table_of`), so choosing that
        image again shows them; the legend and table give way to the panel's one-line note."""
        self.empty_label.setText(note or NO_PREDICTION_TEXT)
        if self.image_name is None:
            return
        self._remember()
        self.clear_selected_gland()
        self.image_name = None
        self._drop_uncertainty()
        self.labels_layer = None
        self._show_source("")
        self._watch(None)
        self.glands = []
        self.table.gland_model.set_rows(self.glands)
        self._show_content()

    @property
    def display_range(self) -> Tuple[float, float]:
        """The uncertainty range the legend shows (uncertainty units), as its :class:`UncertaintyLegend` keeps it."""
        return self.legend_box.display_range

    # ------------------------------------------------------------------ content
    def show_result(self, image_name: str, uncertainty_layer: Any, labels_layer: Any,
                    display_range: Tuple[float, float], glands: Sequence[Dict[str, Any]],
                    model_label: str = "") -> None:
        """Show the legend of ``uncertainty_layer`` and the gland table of one prediction; ``model_label`` (e.g.
        "bundled", "v0003") names the model that made it, on a line over the legend and in the CSV ("": not said)."""
        self.clear_selected_gland()  # the previous image's outline (its name follows the image)
        self.image_name = image_name
        self.empty_label.setText(NO_PREDICTION_TEXT)
        self._drop_uncertainty()  # a legend closed before (CLOSED_UNCERTAINTY_TEXT) is shown again
        self.uncertainty_layer = uncertainty_layer
        self.labels_layer = labels_layer
        self._watch(labels_layer)
        self.legend_box.show_range(image_name, uncertainty_layer.colormap, uncertainty_layer.opacity,
                                   display_range)
        self.legend.setToolTip(self.legend.toolTip() + "; not tinted inside accepted regions (red boxes: reviewed), "
                               "where the readout still gives the model's uncertainty"
                               + (f"; made by model '{model_label}'" if model_label else ""))
        self._show_source(model_label)
        self.set_glands(glands)  # and shows the legend and table (_show_content)

    def _show_source(self, model_label: str) -> None:
        """Name ``model_label`` and the prediction layer described on :attr:`source_label` ("" or no layer: hidden)."""
        self.model_label = model_label
        labels = _unwrap(self.labels_layer)
        line = self.source_label
        if not model_label or labels is None:
            line.setVisible(False)
            line.setToolTip("")
            return
        layer = str(labels.name)
        tip = (f"The legend, tint, readout and gland table below describe the prediction of model '{model_label}' "
               f"in the layer '{layer}'")
        corrected = (getattr(labels, "metadata", None) or {}).get(ROLE_KEY) == "prediction"
        if corrected:
            tip += (", the layer you correct. A prediction by another model while it holds edits not accepted goes "
                    f"to a layer of its own ('{layer} (v0001)', ...), which this panel does not describe.")
        else:
            tip += "."
        line.set_source(model_label, None if corrected else layer)
        line.setToolTip(tip)
        line.setVisible(True)

    def set_glands(self, glands: Sequence[Dict[str, Any]]) -> None:
        """Fill the per-gland table (id, area, mean uncertainty; other keys such as the bbox in the
        row's tooltip). The rows' dicts are kept, not copied (each caller makes fresh ones): copying
        thousands of dicts on the GUI thread can set off a full garbage collection of napari's heap."""
        self.clear_selected_gland()  # a new or cleared table: the outlined gland may no longer be there
        self._painted = False
        if self.last_message == STALE_GLANDS_TEXT:  # made again (Accept, Predict): no longer stale
            self.last_message = ""
            show_message(self.status, "")
        self.glands = self._only_glands(glands)
        self._remember()
        self.table.gland_model.set_rows(self.glands)
        self._check_export()
        # most uncertain gland first: the order in which to check them (a header click sorts again)
        self.table.sortByColumn(TABLE_COLUMNS.index("mean_uncertainty"), Qt.SortOrder.DescendingOrder)
        self._show_content()

    def _only_glands(self, rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """The rows of glands (at least :attr:`min_gland_pixels`); the smaller pieces are counted on
        :attr:`pieces_label`, not listed (walk 24: 1 and 2 px specks left by a split were the table's first rows)."""
        glands, pieces = glands_only(rows, self.min_gland_pixels)
        self.small_pieces = pieces
        self.split_glands = split = self._count_split(glands)
        self.table.gland_model.pieces = split
        said = [split_text(split)] if split else []
        if pieces:
            said.append(f"{pieces} labelled piece(s) under {self.min_gland_pixels} px not listed: not glands (the "
                        "model's minimum gland size; their pixels stay labelled).")
        self.pieces_label.setText(" ".join(said))
        self.pieces_label.setVisible(bool(said))
        return glands

    def _count_split(self, glands: Sequence[Dict[str, Any]]) -> Dict[int, int]:
        """Gland id -> the disconnected pieces (8-connected) of each gland of ``glands`` whose label in the prediction
        layer described is in more than one. Counted on each gland's box alone, and only for a gland whose row (id,
        area, box) differs from the last count (:attr:`_pieces_cache`): after a stroke, only the glands it touched.
        None for a multiscale layer or one over :data:`LIVE_GLANDS_PIXELS` (its table is not made again either)."""
        from scipy import ndimage as ndi

        labels = _unwrap(self.labels_layer)
        shape = tuple(getattr(getattr(labels, "data", None), "shape", ()))
        if labels is None or getattr(labels, "multiscale", False) or len(shape) != 2 \
                or shape[0] * shape[1] > LIVE_GLANDS_PIXELS:
            self._pieces_cache = {}
            return {}
        data = np.asarray(labels.data)
        old, cache, split = self._pieces_cache, {}, {}
        eight = np.ones((3, 3), dtype=bool)
        for row in glands:
            try:
                key = (int(row["id"]), int(row["area"]), tuple(int(v) for v in row["bbox"]))
            except (KeyError, TypeError, ValueError):
                continue
            n = old.get(key)
            if n is None:
                y0, x0, y1, x1 = key[2]
                n = int(ndi.label(data[y0:y1, x0:x1] == key[0], structure=eight)[1])
            cache[key] = n
            if n > 1:
                split[key[0]] = n
        self._pieces_cache = cache
        return split

    def accepted_regions(self) -> Dict[int, str]:
        """Gland id -> the ids of the accepted regions it lies in (in part or whole; space-separated), from the boxes
        the uncertainty layer shows untinted (:func:`~._layers.show_reviewed`); glands in none are absent."""
        kept = _reviewed(self.uncertainty_layer) if self.uncertainty_layer is not None else None
        labels = _unwrap(self.labels_layer)
        if not kept or labels is None or getattr(labels, "multiscale", False):
            return {}
        data = np.asarray(labels.data)
        found: Dict[int, List[str]] = {}
        for rid, (y0, x0, y1, x1) in sorted(kept["boxes"].items()):
            for gid in np.unique(data[y0:y1, x0:x1]).tolist():
                if gid > 0:
                    found.setdefault(int(gid), []).append(str(rid))
        return {gid: " ".join(rids) for gid, rids in found.items()}

    def _check_export(self) -> None:
        """The table was made again: the status's "Wrote N gland(s) to PATH." goes if it now shows another image's
        table, says the table changed since (:data:`STALE_EXPORT_TEXT`) if its rows differ from those written (a
        split, merge or accept), and stays, or comes back, if they are the same (a redraw, an undo back)."""
        exported = self._exported
        if exported is None:
            return
        image, path, rows, wrote = exported
        stale = STALE_EXPORT_TEXT.format(path=path)
        if self.last_message not in (wrote, stale):  # something else was said since
            self._exported = None
            return
        if image != (self.image_name or ""):
            self._exported = None
            text = ""
        else:
            text = wrote if rows == self.glands else stale
        if text != self.last_message:
            self.last_message = text
            show_message(self.status, text)

    def set_fill(self, fill: bool) -> None:
        """Draw every prediction layer filled (``fill``) or as outlines; later predictions follow."""
        if self.fill_check.isChecked() != bool(fill):
            self.fill_check.setChecked(bool(fill))  # toggled() calls back here
            return
        for layer, secondary in prediction_layers(self.viewer):
            style_prediction(layer, fill=bool(fill), secondary=secondary)

    def _row_id(self, row: int) -> Optional[int]:
        gland = self.table.gland_model.gland(row)  # rows may be sorted
        return gland.get("id") if gland is not None else None

    def go_to_gland(self, gland_id: Optional[int]) -> bool:
        """Centre the view on a gland of the table (needs its "bbox", which the engine provides) and show
        which one it is: its label becomes the prediction layer's selected label (painting goes on with
        it; the other glands stay shown) and one magenta rectangle outlines it (replaced on the next click)."""
        row = next((g for g in self.glands if g.get("id") == gland_id), None)
        if row is None or not row.get("bbox"):
            return False
        bbox = tuple(int(v) for v in row["bbox"])
        center, zoom = camera_for_tile(at_least(bbox, MIN_GLAND_VIEW), canvas_hw(self.viewer), margin=CONTEXT_MARGIN)
        camera = scene_camera(self.viewer)
        camera.center = center
        camera.zoom = zoom
        self._select_gland(int(row["id"]), bbox)
        return True

    def _highlight_layer(self) -> Any:
        name = selected_gland_name(self.image_name) if self.image_name else None
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _select_gland(self, gland_id: int, bbox: Tuple[int, int, int, int]) -> None:
        labels = self.labels_layer
        if labels is not None and labels in self.viewer.layers:
            labels.selected_label = gland_id  # not show_selected_label: that would hide every other gland
        self.selected_gland = gland_id
        if self.image_name:
            self._outline_gland(bbox)

    def _outline_gland(self, bbox: Tuple[int, int, int, int]) -> None:
        """Draw (or move) the magenta rectangle just outside the clicked gland's box ``bbox``."""
        # a new layer becomes the active one: keep the one the user works on (the labels to paint)
        active = self.viewer.layers.selection.active
        upsert_layer(self.viewer, selected_gland_name(self.image_name), [gland_rectangle(bbox)], "shapes",
                     shape_type="rectangle", edge_color=SELECTED_COLOR, face_color="transparent",
                     edge_width=SELECTED_WIDTH, opacity=1.0,
                     metadata={ROLE_KEY: SELECTED_ROLE, IMAGE_KEY: self.image_name})
        if active is not None and active in self.viewer.layers and self.viewer.layers.selection.active is not active:
            self.viewer.layers.selection.active = active

    def clear_selected_gland(self) -> None:
        """Take the outline of the clicked gland off the canvas (the table was cleared or replaced)."""
        self.selected_gland = None
        layer = self._highlight_layer()
        if layer is not None:
            self.viewer.layers.remove(layer)

    # ------------------------------------------------------------------ cursor
    def value_text(self, position: Sequence[float]) -> str:
        """What lies under a world position: the uncertainty value and the gland id (:func:`readout_text`)."""
        parts, region = [], None
        for what, layer in (("uncertainty", self.uncertainty_layer), ("gland", self.labels_layer)):
            value = value_under(self.viewer, layer, position)
            if value is None:
                continue
            if what == "uncertainty":
                reviewed = reviewed_under(layer, position)
                if reviewed is not None:  # the layer shows no tint there: the model's value, and why
                    value, region = reviewed
                elif np.issubdtype(np.dtype(getattr(layer, "dtype", np.float32)), np.integer):
                    value = float(value) / 255.0  # a slide store's map (the Whole slide panel's layer) keeps 255 x
                parts.append(f"uncertainty {float(value):.3f}")  # as the legend's ends
            elif int(value) > 0:
                parts.append(f"gland {int(value)}")
        return readout_text(parts, region)

    def _on_cursor(self, event: Any = None) -> None:
        if self.uncertainty_layer is None and self.labels_layer is None:
            return
        text = self.value_text(self.viewer.cursor.position)
        if text != self.readout.text():
            self.readout.setText(text)

    # ------------------------------------------------------------------ export
    def export_csv(self, path: Any) -> Path:
        """Write the gland table to ``path`` (one row per gland; its box as box_left, box_top, box_width, box_height
        in pixels; the image and model on each row: :func:`src_model.gland_table.write_csv`)."""
        from src_model.gland_table import write_csv  # torch-free

        accepted = self.accepted_regions()
        rows = [{**g, "accepted_region": accepted.get(int(g.get("id", 0)), "")} for g in self.glands] \
            if accepted else self.glands
        return write_csv(path, rows, image=self.image_name or "", model=self.model_label)

    def _store_root(self) -> Optional[Path]:
        """The open project store's folder, or None: :attr:`store_for` when the dock set it, else asked of the dock
        this panel sits in (its open store only: none is created)."""
        ask = self.store_for
        if ask is None:
            widget = self.parentWidget()
            while widget is not None and not callable(getattr(widget, "_open_store_only", None)):
                widget = widget.parentWidget()
            ask = getattr(widget, "_open_store_only", None)
        try:
            store = ask() if ask is not None else None
        except RuntimeError:  # no store is open
            return None
        root = getattr(store, "root", store)
        return Path(root) if root else None

    def export_folder(self) -> Path:
        """Where Export CSV... suggests writing: the open project store's folder, else the folder of the image's
        source file (one it may write to), else the home folder (walk 22: it suggested the process's working folder,
        /work/main)."""
        root = self._store_root()
        if root is not None and root.is_dir() and os.access(root, os.W_OK):
            return root
        layers = self.viewer.layers
        source = source_path(layers[self.image_name]) if self.image_name and self.image_name in layers else None
        folder = Path(source).parent if source else None
        if folder is not None and folder.is_dir() and os.access(folder, os.W_OK):  # not a read-only sample's
            return folder
        return Path.home()

    def _export_clicked(self) -> None:
        if not self.glands:
            show_message(self.status, "Predict an image first: there is no gland table to export.", True)
            return
        default = str(self.export_folder() / f"{self.image_name or 'glands'} glands.csv")
        path, _ = QFileDialog.getSaveFileName(self, "Export the gland table", default, "CSV (*.csv)")
        if path:
            try:
                self.export_csv(path)
            except OSError as exc:
                show_message(self.status, f"Could not write {path}: {exc}", True)
                return
            self.last_message = f"Wrote {len(self.glands)} gland(s) to {path}."
            self._exported = (self.image_name or "", str(path), self.glands, self.last_message)
            show_message(self.status, self.last_message)
