"""Opening a project store in the dock (:class:`~napari_cdma._widget.CdmaWidget`).

:class:`StoreRestoreMixin` opens (or creates) a store; leaves the one open before (a Predict reading its accepted
corrections is cancelled, the edits not accepted are kept in it, its overlays close and its prediction layers stay
as the user's own, detached); and brings back the new store's images, accepted regions and latest predictions (read
on a worker thread, added one layer per event-loop turn, the image chosen in Predict focused), with each restored
image's review overlays made when it is first shown.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, Generator, Iterator, List, Optional, Tuple

import numpy as np
from qtpy.QtCore import QTimer

from ._layers import (
    IMAGE_KEY,
    ROLE_KEY,
    ids_like,
    image_from_layer,
    names_for,
    not_yet_accepted,
    raise_overlays,
    show_accepted,
    show_reviewed,
)
from ._messages import show_message
from ._widget_edits import ImageState
from ._widget_review import show_review_outlines
from ._widget_store import (
    Restore,
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
from .project.store import MAX_FULL_IMAGE_PIXELS, PredictionRecord, ProjectStore, StoreError

logger = logging.getLogger(__name__)


class StoreRestoreMixin:
    """The dock's opening of a project store: leaving the one open before and restoring the new one's layers.

    A mixin of :class:`~napari_cdma._widget.CdmaWidget` (no state of its own: it uses the dock's attributes,
    set in the dock's ``__init__``).
    """

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
        kept = self._store.root if self._store is not None else None
        if not str(path).strip():  # Path("") is the working folder: never opened or created unasked (walk 24)
            return self._cannot_open("Give the project store's folder (the path is empty).", kept, quiet)
        path = Path(path).expanduser()
        try:
            store = open_or_ask(path, self, create=create)
        except Exception as exc:
            return self._cannot_open(f"Cannot open project store {path}: {exc}", kept, quiet)
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

    def _cannot_open(self, message: str, kept: Optional[Path], quiet: bool) -> None:
        """An Open that failed: said, and with a store open the path box goes back to it and the summary stays, saying
        that store stays open (walk 24: the bad path stayed in the box and the summary vanished, as if no store were
        open, while its regions were still listed). Returns None, :meth:`open_store`'s "not opened"."""
        message = message.rstrip()  # a sentence of its own: the engine's errors end without a full stop (walk 25:
        if not message.endswith((".", "!", "?")):  # "... choose an empty or new folder /tmp/x stays open.")
            message += "."
        if kept is not None:
            message = f"{message} {kept} stays open."
            self.store_edit.setText(str(kept))
            self.summary.set_note(message)
        else:
            self.store_label.setText(message)
        if not quiet:
            from napari.utils.notifications import show_error

            show_error(message)
        return None

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
        self.review_panel.restore_ended()
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
