"""Review panel: ranked tiles (Next / Previous), accept the corrected region, withdraw."""
from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple

from magicgui.widgets import ComboBox, create_widget
from napari.layers import Labels
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

from ._layers import camera_for_tile, names_for, region_arrays, source_path
from ._messages import show_message
from .project.store import ProjectStore, RegionRecord

if TYPE_CHECKING:  # the dock's per-image state; imported for the type only (no cycle at run time)
    from ._widget import ImageState

BBox = Tuple[int, int, int, int]


def scene_camera(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def canvas_hw(viewer: Any) -> Tuple[int, int]:
    """Canvas (height, width) in screen pixels."""
    canvas = getattr(viewer, "canvas", None)
    size = getattr(canvas, "size", None)
    return (int(size[0]), int(size[1])) if size is not None else (600, 800)


class ReviewPanel(QWidget):
    """"Where to look next" list and the accepted-region list.

    Args:
        viewer: the napari viewer.
        get_store: returns the open ``ProjectStore`` (opening it if needed).
        get_state: returns the dock's ``ImageState`` for an image name (or None).
        parent: parent widget.

    Signals:
        regions_changed(): a region was accepted or withdrawn.
    """

    regions_changed = Signal()

    def __init__(self, viewer: Any, get_store: Callable[[], ProjectStore],
                 get_state: Callable[[str], Optional["ImageState"]], parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._get_store = get_store
        self._get_state = get_state
        self.image_name: Optional[str] = None
        self.tiles: List[Tuple[float, BBox]] = []
        self.last_message = ""

        # The layer holding the corrections: the prediction of the reviewed image by default, or any
        # other Labels layer of the same size (magicgui follows the viewer's Labels layers).
        self.labels_choice: ComboBox = create_widget(annotation=Labels, label="Corrections",
                                                     options={"choices": self._labels_layers})
        self.labels_choice.native.setToolTip("Labels layer whose corrected mask is stored on Accept")
        self.tile_list = QListWidget()
        self.tile_list.setMaximumHeight(110)
        self.tile_list.setToolTip("Tiles ranked by branch disagreement over tissue (score - (y, x))")
        self.prev_button = QPushButton("Previous")
        self.next_button = QPushButton("Next")
        self.accept_button = QPushButton("Accept region")
        self.accept_button.setToolTip("Store the selected tile's corrected mask in the project")
        self.region_list = QListWidget()
        self.region_list.setMaximumHeight(110)
        self.withdraw_button = QPushButton("Withdraw")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        nav = QHBoxLayout()
        nav.addWidget(self.prev_button)
        nav.addWidget(self.next_button)
        nav.addWidget(self.accept_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        form = QFormLayout()
        form.addRow("Corrections", self.labels_choice.native)
        layout.addLayout(form)
        layout.addWidget(QLabel("Look here next (most uncertain first):"))
        layout.addWidget(self.tile_list)
        layout.addLayout(nav)
        layout.addWidget(QLabel("Accepted regions:"))
        layout.addWidget(self.region_list)
        layout.addWidget(self.withdraw_button)
        layout.addWidget(self.status)

        self.next_button.clicked.connect(lambda: self.step(+1))
        self.prev_button.clicked.connect(lambda: self.step(-1))
        self.tile_list.itemActivated.connect(lambda item: self.go_to(self.tile_list.row(item)))
        self.tile_list.itemDoubleClicked.connect(lambda item: self.go_to(self.tile_list.row(item)))
        self.accept_button.clicked.connect(lambda: self.accept())
        self.withdraw_button.clicked.connect(lambda: self.withdraw())
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed):
            ev.connect(lambda _e=None: self.labels_choice.reset_choices())

    def _labels_layers(self, _widget: Any = None) -> List[Any]:
        return [ly for ly in self.viewer.layers if isinstance(ly, Labels)]

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
        self.tiles = [(float(s), tuple(int(v) for v in b)) for s, b in useful]
        self.tile_list.clear()
        for score, (y0, x0, _, _) in self.tiles:
            self.tile_list.addItem(f"{score:.3f} - ({y0}, {x0})")

    def step(self, delta: int) -> None:
        """Select the next (+1) or previous (-1) tile and move the camera to it."""
        if not self.tiles:
            return
        row = self.tile_list.currentRow()
        row = 0 if row < 0 else (row + delta) % len(self.tiles)
        self.go_to(row)

    def go_to(self, row: int) -> None:
        """Select tile ``row`` and centre the camera on it, zoomed so the tile fills the canvas."""
        if not 0 <= row < len(self.tiles):
            return
        self.tile_list.setCurrentRow(row)
        center, zoom = camera_for_tile(self.tiles[row][1], canvas_hw(self.viewer))
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

    def accept(self, bbox: Optional[BBox] = None) -> Optional[RegionRecord]:
        """Store the corrected mask of ``bbox`` (default: the selected tile) in the project.

        Returns:
            The store's ``RegionRecord``, or None if nothing could be stored (the reason is shown).
        """
        bbox = bbox or self.current_bbox()
        state = self._get_state(self.image_name) if self.image_name else None
        if bbox is None or state is None:
            self._say("Predict an image and select a review tile first.", error=True)
            return None
        labels = self.labels_choice.value
        if labels is None:
            self._say(f"No Labels layer holds corrections of '{self.image_name}'; predict again.", error=True)
            return None
        if tuple(labels.data.shape) != state.original_labels.shape:
            self._say(f"The Labels layer '{labels.name}' is {tuple(labels.data.shape)}, not the size of "
                      f"'{self.image_name}' {state.original_labels.shape}; choose its prediction layer.",
                      error=True)
            return None
        _, corrected, predicted = region_arrays(state.image, labels.data, state.original_labels, bbox)
        layer = self.viewer.layers[self.image_name] if self.image_name in self.viewer.layers else None
        try:
            store = self._get_store()
            # The store keeps the crop itself (and the image around it as unlabelled tissue).
            record = store.accept_region(state.image, bbox, corrected, predicted,
                                         model_version=str(state.model_version or store.current_model_version),
                                         user=getpass.getuser(),
                                         source_path=source_path(layer) if layer is not None else None)
        except Exception as exc:
            self._say(f"Could not store the region: {exc}", error=True)
            return None
        self._say(f"Accepted region {record.region_id} at {bbox[:2]}.")
        self.refresh_regions()
        self.regions_changed.emit()
        return record

    def refresh_regions(self) -> None:
        """Rebuild the accepted-region list from the store."""
        self.region_list.clear()
        try:
            regions: List[RegionRecord] = self._get_store().regions()
        except Exception as exc:
            self._say(f"Cannot read the project store: {exc}", error=True)
            return
        for r in regions:
            mark = "  [held out]" if r.holdout else ""
            text = f"{r.region_id}  (y, x) = {tuple(r.bbox[:2])}  corrects {r.model_version}{mark}"
            item = QListWidgetItem(text)
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
