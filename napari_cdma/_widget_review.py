"""Review panel: ranked regions (Next / Previous), accept a suggested region, a drawn one or the whole
image, and the accepted-region list (withdraw)."""
from __future__ import annotations

import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple

import numpy as np
from magicgui.widgets import ComboBox, create_widget
from napari.layers import Image, Labels, Shapes
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ._layers import (
    COMBO_CHARS,
    IMAGE_KEY,
    ROLE_KEY,
    TILE_COLOR,
    TILE_WIDTH,
    camera_for_tile,
    is_derived,
    names_for,
    narrow_combo,
    not_yet_accepted,
    polygon_mask,
    region_arrays,
    shape_bbox,
    show_review_tiles,
    side_suffix,
    source_path,
)
from ._messages import show_message
from ._slide_view import SLIDE_KEY, STORE_KEY
from .project.store import ProjectStore, RegionRecord

if TYPE_CHECKING:  # the dock's per-image state; imported for the type only (no cycle at run time)
    from ._widget import ImageState

BBox = Tuple[int, int, int, int]
CONTEXT_MARGIN = 1.6  # "Next" shows the region and ~30 % of its size around it: a gland is judged in context
# The selected review box is drawn thicker and in another colour than the others: with ten cyan
# squares on screen the pathologist must see at once which one "Next" went to.
CURRENT_TILE_COLOR, CURRENT_TILE_WIDTH = "yellow", 7
# The engine's review boxes never overlap, but they may touch: an outline drawn on a box's edge, half its
# stroke outside the box, then lies on (or crosses) its neighbour's. Each outline is drawn inside its own
# box's pixels instead, inset by half the widest stroke, so no two outlines overlap. The selected box is the
# exception: its stroke runs just outside its pixels, so the region Next shows is seen whole, rim included.
OUTLINE_INSET = CURRENT_TILE_WIDTH / 2.0
NO_REGIONS_LEFT = ("No review regions left on this image: every suggested region was accepted. Draw a "
                   "rectangle or polygon (Draw) to accept more, or predict again with another model.")


#: Layer metadata keys of a whole slide's layers (the reader's and the Whole slide panel's).
SLIDE_META_KEYS = (SLIDE_KEY, STORE_KEY)


def no_regions_note(viewer: Any, name: Optional[str]) -> str:
    """What "Look here next" says while the layer ``name`` (the image chosen in Predict) has no
    review regions: predict it only when it is an H&E image the dock predicts.

    A layer of the plugin's own (a prediction, an uncertainty map, ...) belongs to an image: that
    image's regions are the ones to see. A whole slide's layers (the slide, its stored uncertainty
    and glands) have their review regions in the Whole slide panel. Other layers are no H&E image.
    """
    if not name:
        return ""
    layer = viewer.layers[name] if name in viewer.layers else None
    if layer is None:
        return ""
    meta = getattr(layer, "metadata", None) or {}
    if any(meta.get(k) for k in SLIDE_META_KEYS):
        return (f"'{name}' belongs to a whole slide: its review regions are listed in the Whole slide "
                "panel (Predict view ranks them over the predicted area).")
    role = meta.get(ROLE_KEY)
    if role:
        owner = meta.get(IMAGE_KEY)
        whose = f" of '{owner}'" if owner else ""
        return (f"'{name}' is the plugin's {role} layer{whose}, not an image to predict: choose the H&E "
                "image in Predict to see its review regions.")
    if not isinstance(layer, Image) or not getattr(layer, "rgb", False):
        return (f"'{name}' is not an RGB H&E image: choose one in Predict to see its review regions.")
    if getattr(layer, "multiscale", False):
        return (f"'{name}' is a multiscale image (a slide pyramid): review regions of a slide opened "
                "with this plugin are listed in the Whole slide panel.")
    return f"Predict '{name}' to see its review regions."


def readable_list(widget: Any) -> None:
    """Let a QListWidget's rows wrap at the dock's width (no horizontal scrollbar to hide their ends);
    a word longer than the width is elided in the middle, and each row's full text is its tooltip."""
    widget.setWordWrap(True)
    widget.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    widget.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    widget.setResizeMode(type(widget).ResizeMode.Adjust)
    widget.setUniformItemSizes(False)


def outline_box(bbox: BBox, inset: float = OUTLINE_INSET) -> Tuple[float, float, float, float]:
    """Where to draw the outline of the pixel box (y0, x0, y1, x1): its pixels span [y0 - 0.5, y1 - 0.5]
    (napari pixel centres are integers); the line runs ``inset`` inside that edge (at most to the middle)."""
    y0, x0, y1, x1 = (float(v) for v in bbox)
    dy, dx = min(inset, (y1 - y0) / 2.0), min(inset, (x1 - x0) / 2.0)
    return (y0 - 0.5 + dy, x0 - 0.5 + dx, y1 - 0.5 - dy, x1 - 0.5 - dx)


def selected_box(bbox: BBox, width: float = CURRENT_TILE_WIDTH) -> Tuple[float, float, float, float]:
    """Where to draw the selected box's outline: its whole stroke (``width``) just outside the box's pixels,
    so the region the pathologist is sent to is seen whole, its rim included."""
    y0, x0, y1, x1 = (float(v) for v in bbox)
    d = 0.5 + width / 2.0
    return (y0 - d, x0 - d, y1 - 1.0 + d, x1 - 1.0 + d)


def review_outline_boxes(tiles: List[Tuple[float, BBox]], row: int = -1) -> List[Tuple[float, ...]]:
    """The drawn boxes of the review outlines: the selected one (``row``) outside its pixels
    (:func:`selected_box`), the others inside theirs (:func:`outline_box`: touching boxes' outlines neither
    overlap nor cross)."""
    return [selected_box(b) if i == row else outline_box(b) for i, (_, b) in enumerate(tiles)]


def show_review_outlines(viewer: Any, image_name: str, tiles: List[Tuple[float, BBox]], row: int = -1) -> Any:
    """:func:`~napari_cdma._layers.show_review_tiles` at :func:`review_outline_boxes`."""
    return show_review_tiles(viewer, image_name,
                             [(s, b) for (s, _), b in zip(tiles, review_outline_boxes(tiles, row), strict=True)])


def scene_camera(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def canvas_hw(viewer: Any) -> Tuple[int, int]:
    """Canvas (height, width) in screen pixels."""
    canvas = getattr(viewer, "canvas", None)
    size = getattr(canvas, "size", None)
    return (int(size[0]), int(size[1])) if size is not None else (600, 800)


def separate_glands(labels: Any, bbox: BBox, inside: Optional[np.ndarray] = None) -> int:
    """Give each disconnected piece of a gland in a region its own label, in the Labels layer itself.

    A background line drawn through a gland leaves two pieces with one label; the pathologist split it,
    so each piece becomes a gland (:func:`src_model.postprocess.separate_pieces`: new labels above the
    layer's maximum, the glands around keep theirs). The change is one step of the layer's undo history.

    Args:
        labels: the napari Labels layer of the corrections (2-D).
        bbox: (y0, x0, y1, x1) of the region.
        inside: bool (h, w): only these pixels of the box are the region (a polygon).

    Returns:
        How many pieces got a new label.
    """
    from src_model.postprocess import separate_pieces

    data = np.asarray(labels.data)
    y0, x0, y1, x1 = bbox
    region = np.zeros(data.shape, bool)
    region[y0:y1, x0:x1] = True if inside is None else inside
    relabelled = separate_pieces(data, region)
    changed = np.nonzero(relabelled != data)
    if not changed[0].size:
        return 0
    labels.data_setitem(changed, relabelled[changed])
    return int(len(np.unique(relabelled[changed])))


#: How the Corrections chooser names a dock layer's kind (by its role metadata).
KIND_TEXT = {"prediction": "prediction", "corrections": "accepted corrections"}


def corrections_label(layer: Any) -> str:
    """How the Corrections chooser lists a Labels layer: a dock layer's kind first ("prediction: <image>",
    "accepted corrections: <image>", "prediction (v0002): <image>" for a side prediction), so that a narrow
    dock, which cuts the end of the text, still tells them apart (walk: "<image> prediction" and "<image>
    accepted corrections" both showed as "GlaS testA_1 ("); any other layer by its name."""
    meta = getattr(layer, "metadata", None) or {}
    kind, image = KIND_TEXT.get(meta.get(ROLE_KEY)), meta.get(IMAGE_KEY)
    if kind is None or not image:
        return layer.name
    return f"{kind}{side_suffix(image, layer.name)}: {image}"


class ReviewPanel(QWidget):
    """"Where to look next" list and the accepted-region list.

    Args:
        viewer: the napari viewer.
        get_store: returns the open ``ProjectStore`` (opening it if needed).
        get_state: returns the dock's ``ImageState`` for an image name (or None).
        image_label: names a region's image in the accepted-region list (default: its file name).
        parent: parent widget.

    Signals:
        regions_changed(): a region was accepted or withdrawn.
    """

    regions_changed = Signal()

    def __init__(self, viewer: Any, get_store: Callable[[], ProjectStore],
                 get_state: Callable[[str], Optional["ImageState"]],
                 image_label: Optional[Callable[[RegionRecord], str]] = None, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._get_store = get_store
        self._get_state = get_state
        self._image_label = image_label or (lambda r: Path(r.source_path).name if r.source_path else r.image_hash[:8])
        self.image_name: Optional[str] = None
        self.tiles: List[Tuple[float, BBox]] = []
        self.last_message = ""

        # The layer holding the corrections: the prediction of the reviewed image by default, or any
        # other Labels layer of the same size (magicgui follows the viewer's Labels layers).
        self.labels_choice: ComboBox = create_widget(annotation=Labels, label="Corrections",
                                                     options={"choices": self._labels_layers})
        self.labels_choice.native.setToolTip("Labels layer whose corrected mask is stored on Accept")
        narrow_combo(self.labels_choice.native, COMBO_CHARS)
        self.tile_list = QListWidget()
        self.tile_list.setMaximumHeight(110)
        readable_list(self.tile_list)
        self._next_row = 0  # where Next goes when no region is selected (after an Accept)
        self.tile_list.setToolTip("Regions ranked by uncertainty over tissue (score - (y, x), size)")
        self.prev_button = QPushButton("Previous")
        self.next_button = QPushButton("Next")
        self.accept_button = QPushButton("Accept region")
        self.accept_button.setToolTip("Store the selected region's corrected mask in the project")
        # Regions the pathologist chooses: any Shapes layer of their own (rectangles, polygons).
        self.shapes_choice: ComboBox = create_widget(annotation=Shapes, label="Drawn",
                                                     options={"choices": self._drawn_layers})
        self.shapes_choice.native.setToolTip("Shapes layer with the regions you drew (selected shapes, "
                                             "or all of them, are accepted)")
        narrow_combo(self.shapes_choice.native, COMBO_CHARS)
        self.draw_button = QPushButton("Draw")
        self.draw_button.setToolTip("Add a Shapes layer and start drawing rectangles")
        self.accept_drawn_button = QPushButton("Accept drawn")
        self.accept_image_button = QPushButton("Accept whole image")
        self.region_list = QListWidget()
        self.region_list.setMaximumHeight(110)
        readable_list(self.region_list)
        self.withdraw_button = QPushButton("Withdraw")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        nav = QHBoxLayout()
        nav.addWidget(self.prev_button)
        nav.addWidget(self.next_button)
        nav.addWidget(self.accept_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        # rows that fit a narrow dock (napari's default window): the chooser under its label, with the dock's
        # whole width, its whole choice in its tooltip (corrections_label); the drawn regions' two buttons
        # share a row
        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapAllRows)
        form.addRow("Corrections", self.labels_choice.native)
        self.labels_choice.changed.connect(lambda *_: self.labels_choice.native.setToolTip(
            self.labels_choice.native.currentText()))
        layout.addLayout(form)
        look = QLabel("Look here next (most uncertain first):")
        look.setWordWrap(True)
        layout.addWidget(look)
        layout.addWidget(self.tile_list)
        layout.addLayout(nav)
        drawn = QHBoxLayout()
        drawn.addWidget(QLabel("Drawn"))
        drawn.addWidget(self.shapes_choice.native, 1)
        layout.addLayout(drawn)
        drawn_buttons = QHBoxLayout()
        drawn_buttons.addWidget(self.draw_button)
        drawn_buttons.addWidget(self.accept_drawn_button)
        layout.addLayout(drawn_buttons)
        layout.addWidget(self.accept_image_button)
        layout.addWidget(QLabel("Accepted regions:"))
        layout.addWidget(self.region_list)
        layout.addWidget(self.withdraw_button)
        layout.addWidget(self.status)

        self.next_button.clicked.connect(lambda: self.step(+1))
        self.prev_button.clicked.connect(lambda: self.step(-1))
        self.tile_list.itemActivated.connect(lambda item: self.go_to(self.tile_list.row(item)))
        self.tile_list.itemDoubleClicked.connect(lambda item: self.go_to(self.tile_list.row(item)))
        self.tile_list.currentRowChanged.connect(self._highlight)
        self.accept_button.clicked.connect(lambda: self.accept())
        self.draw_button.clicked.connect(lambda: self.start_drawing())
        self.accept_drawn_button.clicked.connect(lambda: self.accept_drawn())
        self.accept_image_button.clicked.connect(lambda: self.accept_whole_image())
        self.withdraw_button.clicked.connect(lambda: self.withdraw())
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed):
            ev.connect(lambda _e=None: (self.labels_choice.reset_choices(), self.shapes_choice.reset_choices()))

    def _labels_layers(self, _widget: Any = None) -> List[Tuple[str, Any]]:
        """Labels layers whose corrections Accept can store: not a whole slide's (its glands, its edit window:
        the Whole slide panel accepts those); each listed as :func:`corrections_label` names it."""
        return [(corrections_label(ly), ly) for ly in self.viewer.layers
                if isinstance(ly, Labels) and not getattr(ly, "multiscale", False)
                and not any((ly.metadata or {}).get(k) for k in SLIDE_META_KEYS)]

    def _drawn_layers(self, _widget: Any = None) -> List[Any]:
        return [ly for ly in self.viewer.layers if isinstance(ly, Shapes) and not is_derived(ly)]

    # ------------------------------------------------------------------ tiles
    def set_tiles(self, image_name: str, ranked: List[Tuple[float, BBox]]) -> None:
        """Show the ranked tiles of an image (tiles without tissue, score 0, are left out); its
        prediction layer becomes the layer of corrections."""
        self.image_name = image_name
        self.labels_choice.reset_choices()
        prediction = names_for(image_name)["prediction"]
        if prediction in self.viewer.layers:
            self.labels_choice.value = self.viewer.layers[prediction]
        useful = [t for t in ranked if t[0] > 0] or list(ranked)
        self._next_row = 0
        self._fill_tiles([(float(s), tuple(int(v) for v in b)) for s, b in useful])
        # the list is now this image's: an earlier "Predict ... to see its review regions" no longer holds
        self._say(f"{len(self.tiles)} review region(s) of '{image_name}', most uncertain first: Next shows each."
                  if self.tiles else f"'{image_name}' has no uncertain region to review.")

    def clear_tiles(self, image_name: Optional[str] = None) -> None:
        """Empty "Look here next": the list belongs to the image on screen, and ``image_name`` (None:
        no image) has no prediction here yet or was closed."""
        self.image_name = None
        self._next_row = 0
        self._fill_tiles([])
        self._say(no_regions_note(self.viewer, image_name))

    def _fill_tiles(self, tiles: List[Tuple[float, BBox]]) -> None:
        self.tiles = list(tiles)
        self.tile_list.clear()
        for k, (score, (y0, x0, y1, x1)) in enumerate(self.tiles, start=1):  # the rank and what is uncertain there
            self.tile_list.addItem(f"{k}. uncertainty {score:.2f}, {x1 - x0} x {y1 - y0} px at x {x0}, y {y0}")

    def _tiles_layer(self) -> Any:
        name = names_for(self.image_name)["tiles"] if self.image_name else None
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _highlight(self, row: int) -> None:
        """Draw the selected review box thick and yellow just outside its pixels, the others thin and cyan
        inside theirs (per-shape edges)."""
        layer = self._tiles_layer()
        if layer is None or len(layer.data) != len(self.tiles) or not len(layer.data):
            return
        drawn = [(*np.min(d, axis=0)[-2:], *np.max(d, axis=0)[-2:]) for d in layer.data]
        if not np.allclose(drawn, review_outline_boxes(self.tiles, row)):  # drawn elsewhere (another selection)
            layer = show_review_outlines(self.viewer, self.image_name, self.tiles, row)
        layer.edge_color = [CURRENT_TILE_COLOR if i == row else TILE_COLOR for i in range(len(self.tiles))]
        layer.edge_width = [CURRENT_TILE_WIDTH if i == row else TILE_WIDTH for i in range(len(self.tiles))]

    def drop_reviewed(self, image_name: Optional[str], bbox: BBox) -> int:
        """Take the review regions that ``bbox`` covers off "Look here next" and off the canvas.

        Called on Accept, so an accepted square leaves the list at once (not at the next Predict).
        No region is selected afterwards; Next goes to the region after the accepted one.

        Returns:
            How many regions were taken off.
        """
        if not image_name or image_name != self.image_name or not self.tiles:
            return 0
        kept = not_yet_accepted(self.tiles, [bbox])
        dropped = len(self.tiles) - len(kept)
        if not dropped:
            return 0
        row = self.tile_list.currentRow()
        first_gone = next(i for i, t in enumerate(self.tiles) if t not in kept)
        self._fill_tiles(kept)
        show_review_outlines(self.viewer, image_name, kept)
        self._highlight(-1)
        self._next_row = min(first_gone if row < 0 else row, max(0, len(kept) - 1))
        return dropped

    def step(self, delta: int) -> None:
        """Select the next (+1) or previous (-1) tile and move the camera to it."""
        if not self.tiles:
            state = self._target()[2] if self.image_name else None  # None: the image on screen has no prediction
            self._say(NO_REGIONS_LEFT if state is not None else "Predict an image first.", error=state is None)
            return
        row = self.tile_list.currentRow()
        if row < 0:  # nothing selected: start where the last accepted region was
            row = (self._next_row if delta > 0 else self._next_row - 1) % len(self.tiles)
        else:
            row = (row + delta) % len(self.tiles)
        self.go_to(row)

    def go_to(self, row: int) -> None:
        """Select region ``row`` and centre the camera on it, zoomed to show it with some context."""
        if not 0 <= row < len(self.tiles):
            return
        self.tile_list.setCurrentRow(row)
        center, zoom = camera_for_tile(self.tiles[row][1], canvas_hw(self.viewer), margin=CONTEXT_MARGIN)
        camera = scene_camera(self.viewer)
        camera.center = center
        camera.zoom = zoom

    def current_bbox(self) -> Optional[BBox]:
        """The selected tile's (y0, x0, y1, x1), or None."""
        row = self.tile_list.currentRow()
        return self.tiles[row][1] if 0 <= row < len(self.tiles) else None

    # ---------------------------------------------------------------- regions
    def _say(self, message: str, error: bool = False) -> None:
        self.last_message = message
        show_message(self.status, message, error)

    def _target(self) -> Tuple[Optional[str], Any, Optional["ImageState"]]:
        """(image name, corrections Labels layer, the dock's state of that image)."""
        labels = self.labels_choice.value
        image = (labels.metadata.get(IMAGE_KEY) if labels is not None else None) or self.image_name
        return image, labels, self._get_state(image) if image else None

    def accept(self, bbox: Optional[BBox] = None, inside: Optional[np.ndarray] = None,
               what: str = "region") -> Optional[RegionRecord]:
        """Store the corrected mask of ``bbox`` (default: the selected region) in the project.

        Args:
            bbox: (y0, x0, y1, x1) in image pixels.
            inside: bool (h, w): only these pixels of the box take the layer's edits; elsewhere the
                model's prediction is stored (the store keeps a box, not a mask of reviewed pixels).
            what: how the status line names the region ("region", "drawn polygon", ...).

        Returns:
            The store's ``RegionRecord``, or None if nothing could be stored (the reason is shown).
        """
        bbox = bbox or self.current_bbox()
        image_name, labels, state = self._target()
        if state is None:
            self._say("Predict an image and select a review region (or draw one) first.", error=True)
            return None
        if bbox is None:
            self._say(NO_REGIONS_LEFT if not self.tiles and self.image_name else
                      "Select a review region (Next) or draw one first.",
                      error=True)
            return None
        if labels is None:
            self._say(f"No Labels layer holds corrections of '{image_name}'; predict again.", error=True)
            return None
        original, version = state.original_for(labels.name)
        if tuple(labels.data.shape) != original.shape:
            self._say(f"The Labels layer '{labels.name}' is {tuple(labels.data.shape)}, not the size of "
                      f"'{image_name}' {original.shape}; choose its prediction layer.", error=True)
            return None
        split = separate_glands(labels, bbox, inside)
        _, corrected, predicted = region_arrays(state.image, labels.data, original, bbox)
        if inside is not None:
            corrected = np.where(inside, corrected, predicted)
        layer = self.viewer.layers[image_name] if image_name in self.viewer.layers else None
        try:
            store = self._get_store()
            # The store keeps the crop itself (and the image around it as unlabelled tissue).
            record = store.accept_region(state.image, bbox, corrected, predicted,
                                         model_version=str(version or store.current_model_version),
                                         user=getpass.getuser(), image_hash=state.image_hash or None,
                                         source_path=source_path(layer) if layer is not None else None,
                                         image_name=image_name)
        except Exception as exc:
            self._say(f"Could not store the {what}: {exc}", error=True)
            return None
        # what the layer holds there now is in the store: overwriting it later loses nothing
        state.note_reviewed(labels.name, bbox, inside, np.asarray(labels.data))
        y0, x0, y1, x1 = bbox
        note = ("; the store keeps its bounding box: inside it only the polygon's pixels take your edits, "
                "the rest keeps the model's prediction") if inside is not None else ""
        if split:
            note += f"; {split} separated piece(s) of glands got labels of their own"
        self._say(f"Accepted {what} {record.region_id} of '{image_name}' at ({y0}, {x0}), "
                  f"{y1 - y0} x {x1 - x0} px{note}.")
        self.drop_reviewed(image_name, bbox)
        self.refresh_regions()
        self.regions_changed.emit()
        return record

    def accept_whole_image(self) -> Optional[RegionRecord]:
        """Accept the whole image of the corrections layer as reviewed."""
        _, _, state = self._target()
        if state is None:
            self._say("Predict an image first.", error=True)
            return None
        h, w = state.original_labels.shape
        return self.accept((0, 0, h, w), what="whole image")

    def start_drawing(self) -> Any:
        """Add (or select) a Shapes layer for the reviewed image, in rectangle-drawing mode."""
        image_name, _, _ = self._target()
        name = names_for(image_name or "image")["drawn"]
        layer = self.viewer.layers[name] if name in self.viewer.layers else self.viewer.add_shapes(
            name=name, edge_color="yellow", face_color="transparent", edge_width=3)
        self.shapes_choice.reset_choices()
        self.shapes_choice.value = layer
        self.viewer.layers.selection.active = layer
        layer.mode = "add_rectangle"
        return layer

    def accept_drawn(self, layer: Any = None) -> List[RegionRecord]:
        """Accept the selected shapes (or all shapes) of a drawn Shapes layer, one region each.

        A shape's region is its bounding box on the image; for a polygon only the pixels inside
        it take the edits. Accepted shapes are removed from the layer (the accepted-region layer
        shows them from now on).
        """
        layer = layer or self.shapes_choice.value
        _, labels, state = self._target()
        if layer is None or not len(layer.data):
            self._say("Draw a rectangle or polygon first (Draw), then accept it.", error=True)
            return []
        if state is None or labels is None:
            self._say("Predict the image first: the drawn region is stored with its prediction.", error=True)
            return []
        hw = state.original_labels.shape
        chosen = sorted(layer.selected_data) or list(range(len(layer.data)))
        records, done = [], []
        for i in chosen:
            # drawn on the canvas: the shape's world coordinates, mapped into the labels' pixels
            verts = np.array([labels.world_to_data(layer.data_to_world(v)) for v in layer.data[i]])
            bbox = shape_bbox(verts, hw)
            if bbox is None:
                self._say(f"Shape {i + 1} lies outside the image; nothing stored.", error=True)
                continue
            polygon = layer.shape_type[i] == "polygon"
            record = self.accept(bbox, inside=polygon_mask(verts, bbox) if polygon else None,
                                 what="drawn polygon" if polygon else "drawn rectangle")
            if record is None:
                break
            records.append(record)
            done.append(i)
        if done:
            layer.selected_data = set(done)
            layer.remove_selected()
        layer.mode = "pan_zoom"  # the next click moves the view; it does not draw another region
        if records and labels in self.viewer.layers:  # the brush goes back to the glands (pathologist walk)
            self.viewer.layers.selection.active = labels
        return records

    def refresh_regions(self) -> None:
        """Rebuild the accepted-region list from the store."""
        self.region_list.clear()
        try:
            regions: List[RegionRecord] = self._get_store().regions()
        except Exception as exc:
            self._say(f"Cannot read the project store: {exc}", error=True)
            return
        for r in regions:
            # what tells regions apart first (held out, id, image); the rows wrap, nothing is cut
            mark = "[held out] " if r.holdout else ""
            y0, x0, y1, x1 = r.bbox
            text = (f"{mark}{r.region_id}  {self._image_label(r)}  ({y0}, {x0}) {y1 - y0} x {x1 - x0}  "
                    f"corrects {r.model_version}")
            item = QListWidgetItem(text)
            item.setToolTip(text)
            item.setData(Qt.ItemDataRole.UserRole, r.region_id)
            self.region_list.addItem(item)

    def withdraw(self, region_id: Optional[str] = None) -> bool:
        """Withdraw ``region_id`` (default: the selected accepted region) from the project."""
        if region_id is None:
            item = self.region_list.currentItem()
            if item is None:
                self._say("Select an accepted region to withdraw.", error=True)
                return False
            region_id = item.data(Qt.ItemDataRole.UserRole)
        try:
            self._get_store().withdraw(region_id)
        except Exception as exc:
            self._say(f"Could not withdraw {region_id}: {exc}", error=True)
            return False
        self._say(f"Withdrew region {region_id}.")
        self.refresh_regions()
        self.regions_changed.emit()
        return True
