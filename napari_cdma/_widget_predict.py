"""Predict panel: choose image and model, run tiled prediction off the GUI thread, cancel."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Generator, List, Optional, Tuple

import numpy as np
from magicgui.widgets import ComboBox, create_widget
from napari.layers import Image
from qtpy.QtCore import Signal
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

from ._layers import LayerInputError, image_from_layer, is_derived, narrow_combo

CHOOSE_FILE = "Choose file..."


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


def _review_outputs(prediction: Any, image: np.ndarray) -> Dict[str, Any]:
    """Instances, uncertainty map, display range, review regions and gland table (worker thread).

    All from the engine (``src_model.uncertainty``, ``src_model.postprocess``): one label per gland
    with the post-processing chosen on validation, the robust display range over tissue, review
    regions of at least 128 px centred on uncertain glands, and the per-gland table.
    """
    from src_model.postprocess import instance_labels
    from src_model.tissue import tissue_mask
    from src_model.uncertainty import display_range, gland_table, review_regions

    tissue = tissue_mask(image)
    umap = np.asarray(prediction.uncertainty, dtype=np.float32)
    instances = instance_labels(prediction)
    lo, hi = display_range(umap, tissue)
    # the map, glands and tissue computed above, so the engine does not compute them again
    ranked = review_regions(prediction, image, uncertainty_map=umap, instances=instances, tissue=tissue)
    return dict(instances=instances, uncertainty=umap, display_range=(float(lo), float(hi)),
                ranked=[(float(s), tuple(int(v) for v in b)) for s, b in ranked],
                glands=gland_table(instances, umap))


def _predict_job(model_path: str, image: np.ndarray, branches: bool) -> Generator[Any, None, Any]:
    """Load the model and run tiled prediction; yields engine ``Progress`` events.

    Everything derived from the prediction (gland instances, display range, review regions, gland
    table, the store's image hash) is computed here too, never on the GUI thread.

    Expected failures (unreadable or foreign checkpoint) are returned as ``("error", message)``
    rather than raised, so the dock shows one clear message instead of a traceback.
    """
    from src_model.checkpoint import (
        CheckpointError,
        load_model,
    )
    from src_model.inference import predict_tiles

    from .project.store import hash_image

    try:
        model = load_model(model_path)
    except (CheckpointError, FileNotFoundError) as exc:
        return ("error", f"Cannot use this model: {exc}")
    prediction = yield from predict_tiles(model, image, return_branches=branches)
    extra = _review_outputs(prediction, image)
    extra["image_hash"] = hash_image(image)
    return ("ok", prediction, extra)


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
        self._last_model_index = 0
        self.pixel_limit: Optional[int] = None  # None = the engine's MAX_PIXELS
        self.last_message = ""

        # magicgui's layer chooser: follows the viewer's image layers by type (not by name); the
        # plugin's own outputs (disagreement, entropy, ...) are marked in their metadata and left out.
        self.image_choice: ComboBox = create_widget(annotation=Image, label="Image",
                                                    options={"choices": self._image_layers})
        self.image_choice.native.setToolTip("H&E image layer to segment")
        narrow_combo(self.image_choice.native)
        self.model_combo = QComboBox()
        self.model_combo.setToolTip("Model for prediction: the bundled one, a project version or a file")
        narrow_combo(self.model_combo)
        self.entropy_check = QCheckBox("entropy")
        self.branches_check = QCheckBox("branches")
        self.branches_check.setToolTip("Also show each decoder branch's foreground probability")
        self.predict_button = QPushButton("Predict")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Image", self.image_choice.native)
        form.addRow("Model", self.model_combo)
        extra = QHBoxLayout()
        extra.addWidget(QLabel("Also show:"))
        extra.addWidget(self.entropy_check)
        extra.addWidget(self.branches_check)
        buttons = QHBoxLayout()
        buttons.addWidget(self.predict_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addLayout(extra)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)

        self.set_model_versions([])
        self.predict_button.clicked.connect(lambda: self.predict())
        self.cancel_button.clicked.connect(self.cancel)
        self.model_combo.activated.connect(self._on_model_activated)
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed,
                   viewer.layers.events.moved):
            ev.connect(self._refresh_images)
        self._refresh_images()

    # ----------------------------------------------------------------- choices
    @property
    def running(self) -> bool:
        """True while a prediction runs."""
        return self._worker is not None

    def _image_layers(self, _widget: Any = None) -> List[Any]:
        return [ly for ly in self.viewer.layers if isinstance(ly, Image) and not is_derived(ly)]

    def _refresh_images(self, event: Any = None) -> None:
        self.image_choice.reset_choices()
        inserted = getattr(event, "value", None) if getattr(event, "type", "") == "inserted" else None
        if inserted is not None and inserted in self.image_choice.choices:
            self.image_choice.value = inserted  # a newly opened image becomes the one to predict

    @property
    def image_layer(self) -> Any:
        """The chosen image layer, or None."""
        return self.image_choice.value

    def set_image(self, name: str) -> None:
        """Select the image layer ``name``."""
        self._refresh_images()
        if name in self.viewer.layers:
            self.image_choice.value = self.viewer.layers[name]

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
        keep = self.model_combo.currentData() if current is None else None
        files = [self.model_combo.itemData(i) for i in range(self.model_combo.count())
                 if (self.model_combo.itemData(i) or ("",))[0] == "file"]
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItem(BUNDLED, ("version", BUNDLED))
        for v in versions:
            if str(v) != BUNDLED:
                note = notes.get(str(v))
                self.model_combo.addItem(f"project {v}" + (f" ({note})" if note else ""), ("version", str(v)))
        for data in files:
            self.model_combo.addItem(Path(data[1]).name, data)
        self.model_combo.addItem(CHOOSE_FILE, ("choose", None))
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
        """Add a checkpoint file to the model combo and select it."""
        data = ("file", str(path))
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

    def model_choice(self) -> Tuple[str, Any]:
        """The selected model entry as ``(kind, value)``; kind "version" or "file"."""
        data = self.model_combo.currentData()
        return data if data and data[0] != "choose" else ("version", BUNDLED)

    # ----------------------------------------------------------------- running
    def _fail(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.last_message = message
        self.status.setText(message)
        show_error(message)
        self.failed.emit(message)

    def predict(self, layer: Any = None) -> bool:
        """Start a prediction of ``layer`` (default: the chosen image) in a worker thread.

        Returns:
            True if a run started; False if the input was refused (the reason is shown).
        """
        if self._worker is not None:
            self._fail("A prediction is already running; cancel it first.")
            return False
        if layer is None:
            layer = self.image_layer
        try:
            image = image_from_layer(layer, self.pixel_limit)
        except LayerInputError as exc:
            self._fail(str(exc))
            return False
        choice = self.model_choice()
        label = self.model_combo.currentText()
        try:
            model_path = str(self._model_path_for(choice))
        except Exception as exc:
            self._fail(f"Cannot find the model '{label}': {exc}")
            return False

        from napari.qt.threading import create_worker

        worker = create_worker(_predict_job, model_path, image, self.branches_check.isChecked())
        name = layer.name
        version = str(choice[1]) if choice[0] == "version" else None
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda res: self._on_returned(res, name, image, label, version))
        worker.errored.connect(lambda exc: self._fail(f"Prediction failed: {exc}"))
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.predict_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)  # busy until the first tile batch reports
        self.status.setText(f"Predicting '{name}' with {label}...")
        worker.start()
        return True

    def cancel(self) -> None:
        """Ask the running prediction to stop after the current tile batch."""
        if self._worker is not None:
            self.status.setText("Cancelling after this tile batch...")
            self._worker.quit()

    def _on_progress(self, event: Any) -> None:
        total = int(getattr(event, "total", 0) or 0)
        step = int(getattr(event, "step", 0) or 0)
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(min(step, total))

    def _on_returned(self, result: Any, name: str, image: np.ndarray, label: str,
                     version: Optional[str]) -> None:
        if result[0] == "error":
            self._fail(result[1])
            return
        _, prediction, extra = result
        self.last_message = f"Predicted '{name}' with {label}."
        self.status.setText(self.last_message)
        self.finished.emit(PredictResult(name, image, prediction, model_label=label, model_version=version,
                                         **extra))

    def _on_aborted(self) -> None:
        self.last_message = "Prediction cancelled."
        self.status.setText(self.last_message)

    def _on_finished(self) -> None:
        self._worker = None
        self.predict_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        self.progress.setValue(self.progress.maximum() if self.last_message.startswith("Predicted")
                               else 0)
        self.idle.emit()
