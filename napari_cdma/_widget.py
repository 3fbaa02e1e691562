"""The napari-cdma dock: project store, Predict, review / correct / accept, Retrain, versions.

The dock is a composite of small panels (``_widget_predict``, ``_widget_review``,
``_widget_retrain``, ``_widget_versions``); it owns the project store and the per-image state they
share, and wires them: a prediction fills the layers and the review list; a new current model
re-runs Predict.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import napari.viewer
import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
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

from ._layers import names_for, show_prediction, show_review_tiles
from ._widget_predict import BUNDLED, PredictPanel, PredictResult
from ._widget_retrain import RetrainPanel
from ._widget_review import ReviewPanel
from ._widget_versions import VersionsPanel
from .project.store import ProjectStore

PROJECT_ENV = "NAPARI_CDMA_PROJECT"


def default_project_path() -> Path:
    """Project store used when none is chosen: ``$NAPARI_CDMA_PROJECT`` or ~/napari-cdma-project."""
    return Path(os.environ.get(PROJECT_ENV) or Path.home() / "napari-cdma-project")


@dataclass
class ImageState:
    """What the dock remembers about a predicted image.

    Attributes:
        image: uint8 (H, W, 3) model input.
        original_labels: the model's label map before any user edit (H, W) uint8.
        model_version: project model version that predicted it (None for a checkpoint file).
    """

    image: np.ndarray
    original_labels: np.ndarray
    model_version: Optional[str]


class CdmaWidget(QWidget):
    """CDMA segmentation dock widget.

    Args:
        napari_viewer: the viewer (injected by napari).
        store_path: project store directory (default: :func:`default_project_path`; opened at
            start only if it already exists, otherwise created on first use).
        parent: parent widget.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, store_path: Optional[os.PathLike] = None,
                 parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self._store: Optional[ProjectStore] = None
        self.states: Dict[str, ImageState] = {}
        self.last_image: Optional[str] = None
        self._refresh_after_predict = False

        self.store_edit = QLineEdit(str(store_path or default_project_path()))
        self.store_edit.setToolTip("Folder of the project store: corrections and model versions")
        browse = QPushButton("...")
        browse.setMaximumWidth(30)
        open_button = QPushButton("Open")
        self.store_label = QLabel("")
        self.store_label.setWordWrap(True)

        self.predict_panel = PredictPanel(self.viewer, self._model_path_for)
        self.review_panel = ReviewPanel(self.viewer, lambda: self.store, self.states.get)
        self.retrain_panel = RetrainPanel(lambda: self.store, before_start=self._add_open_images)
        self.versions_panel = VersionsPanel(lambda: self.store)

        store_row = QHBoxLayout()
        store_row.addWidget(self.store_edit, 1)
        store_row.addWidget(browse)
        store_row.addWidget(open_button)
        project_box = QGroupBox("Project store")
        pl = QVBoxLayout(project_box)
        pl.addLayout(store_row)
        pl.addWidget(self.store_label)

        inner = QWidget()
        col = QVBoxLayout(inner)
        col.addWidget(project_box)
        for title, panel in (("Predict", self.predict_panel), ("Review, correct, accept", self.review_panel),
                             ("Retrain", self.retrain_panel), ("Model versions", self.versions_panel)):
            box = QGroupBox(title)
            QVBoxLayout(box).addWidget(panel)
            col.addWidget(box)
        col.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # content follows dock width
        scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.setMinimumWidth(340)

        browse.clicked.connect(self._browse_store)
        open_button.clicked.connect(lambda: self.open_store(self.store_edit.text()))
        self.predict_panel.finished.connect(self._on_predicted)
        self.predict_panel.idle.connect(self._on_predict_idle)
        self.predict_panel.cancel_button.clicked.connect(lambda: setattr(self, "_refresh_after_predict", False))
        self.retrain_panel.model_changed.connect(self._on_model_changed)
        self.versions_panel.model_changed.connect(self._on_model_changed)

        if Path(self.store_edit.text()).expanduser().is_dir():
            self.open_store(self.store_edit.text(), quiet=True)

    # ------------------------------------------------------------------ store
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

    def open_store(self, path: os.PathLike, quiet: bool = False) -> Optional[ProjectStore]:
        """Open (or create) a project store and show its regions, versions and current model.

        Args:
            path: store directory.
            quiet: do not pop up an error notification if it cannot be opened.

        Returns:
            The ``ProjectStore``, or None if it could not be opened (the reason is shown).
        """
        path = Path(path).expanduser()
        try:
            store = ProjectStore.open(path)
        except Exception as exc:
            self.store_label.setText(f"Cannot open project store {path}: {exc}")
            if not quiet:
                from napari.utils.notifications import show_error

                show_error(self.store_label.text())
            return None
        self._store = store
        self.store_edit.setText(str(path))
        self._sync_from_store()
        return store

    def _sync_from_store(self) -> None:
        store = self._store
        versions = [m.version for m in store.models()]
        self.predict_panel.set_model_versions(versions, current=store.current_model_version)
        self.review_panel.refresh_regions()
        self.versions_panel.refresh()
        self.store_label.setText(f"{len(store.regions())} accepted region(s), {len(versions)} trained "
                                 f"version(s); current model: {store.current_model_version}")

    def _browse_store(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Project store folder", self.store_edit.text())
        if path:
            self.open_store(path)

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

    def _on_predicted(self, result: PredictResult) -> None:
        layers = show_prediction(self.viewer, result.image_name, result.prediction,
                                 entropy=self.predict_panel.entropy_check.isChecked(),
                                 branches=self.predict_panel.branches_check.isChecked())
        show_review_tiles(self.viewer, result.image_name, result.ranked)
        self.states[result.image_name] = ImageState(
            image=result.image, original_labels=np.array(result.prediction.labels, dtype=np.uint8, copy=True),
            model_version=result.model_version)
        self.last_image = result.image_name
        self.review_panel.set_tiles(result.image_name, result.ranked)
        labels = layers["prediction"]
        self.viewer.layers.selection.active = labels  # ready for brush / fill / eraser

    def layer_names(self, image_name: Optional[str] = None) -> Dict[str, str]:
        """Names of the layers derived from an image (default: the last predicted one)."""
        return names_for(image_name or self.last_image or "")

    def _on_model_changed(self, version: str) -> None:
        """A new current model: select it and refresh the predictions of the last image."""
        if self._store is not None:
            self._sync_from_store()
        self.predict_panel.set_model_versions([m.version for m in self.store.models()], current=version)
        if self.last_image and self.last_image in self.viewer.layers:
            if self.predict_panel.running:
                self._refresh_after_predict = True  # re-run once the current run has stopped
                self.predict_panel.cancel()
            else:
                self.predict(self.last_image)

    def _on_predict_idle(self) -> None:
        if self._refresh_after_predict and self.last_image in self.viewer.layers:
            self._refresh_after_predict = False
            self.predict(self.last_image)
