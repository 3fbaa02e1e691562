"""What the dock (:class:`~napari_cdma._widget.CdmaWidget`) writes to the project store besides accepted regions.

:class:`PredictionSaveMixin` keeps each image's latest prediction in the store (off the GUI thread, one save after
another, so that the last prediction made is the one kept; a large image's left until after its hand-over,
:data:`SAVE_DELAY_MS`), creates the store the first prediction needs, and keeps the edits not accepted of the
prediction layers (*Keep unaccepted edits*).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from qtpy.QtCore import QTimer

from ._layers import names_for, source_path, uncertainty_values
from ._widget_predict import PredictResult
from .project.store import MAX_FULL_IMAGE_PIXELS, ProjectStore

logger = logging.getLogger(__name__)

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


class PredictionSaveMixin:
    """The dock's writes to the project store of latest predictions and of edits not accepted.

    A mixin of :class:`~napari_cdma._widget.CdmaWidget` (no state of its own: it uses the dock's attributes,
    set in the dock's ``__init__``).
    """

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
        self._kept_said = dict(kept)
        return kept

    def _kept_replaced(self, name: str) -> None:
        """A new latest prediction of ``name`` was saved: the edits kept of it before are replaced, so the summary no
        longer says they are kept (walk 26b: "Kept 1610 edited pixel(s)" stayed after Predict again)."""
        kept = getattr(self, "_kept_said", {})
        if name not in kept:
            return
        n = kept.pop(name)
        self.summary.rewrite()
        lines = [f"Kept {m} edited pixel(s) of '{k}' in the store (not accepted: not used for training)."
                 for k, m in kept.items()]
        lines.append(f"'{name}' was predicted again: the {n} edited pixel(s) kept of it are replaced by the new "
                     "prediction.")
        self.store_label.setText(self.store_label.text() + "\n" + " ".join(lines))

    def _on_prediction_saved(self, name: str, message: str) -> None:
        if not message:
            self._kept_replaced(name)
        if message:
            self.predict_panel.last_message = (f"{self.predict_panel.last_message} The prediction of '{name}' "
                                               f"could not be kept in the project store: {message}").strip()
            self.predict_panel.show_status(self.predict_panel.last_message)
