"""The dock's following of the viewer's layers and of the edits made in its prediction layers.

:class:`ImageState` is what the dock (:class:`~napari_cdma._widget.CdmaWidget`) remembers about each predicted
image, and :class:`EditHistory` what it has seen of a prediction layer's napari undo items.
:class:`EditTrackingMixin` is the part of the dock that handles the viewer's layer events: a layer added or about
to be removed (an image or its prediction layer closing has its edits not accepted kept first), an image closed
(the layers shown over it follow it), and each paint, undo, redo or data replacement of a prediction layer, counted
as it is made, which is what enables *Keep unaccepted edits*.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
from qtpy.QtCore import QTimer

from ._layers import IMAGE_KEY, ROLE_KEY, Reviewed, is_derived, names_for, unsaved_edits
from ._messages import show_message
from ._widget_review import SLIDE_META_KEYS
from ._widget_store import regions_by_image

logger = logging.getLogger(__name__)


KEEP_TIP = ("Keep in the project store the edits of each prediction layer that are not accepted yet, so that they "
            "come back when the store is reopened (they are not used for training until accepted)")


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



def _stroke_box(atoms: Sequence[Any], shape: Tuple[int, ...]) -> Optional[Tuple[int, Tuple[int, int, int, int], Any]]:
    """``(label, (y0, x0, y1, x1), mask)`` of napari's edit ``atoms`` (a paint event's undo item) when they all wrote
    one label above 0 into a 2-D layer of ``shape``: the box around the pixels they changed and those pixels (a bool
    mask of the box); None otherwise (an erase, several labels, another kind of edit)."""
    if len(shape) != 2:
        return None
    parts, labels = [], set()
    try:
        for atom in atoms:
            if hasattr(atom, "slice_key"):  # a mask-based edit: brush, fill, polygon
                if len(atom.slice_key) != 2:
                    return None
                (y0, y1, sy), (x0, x1, sx) = (k.indices(n) for k, n in zip(atom.slice_key, shape, strict=True))
                if sy != 1 or sx != 1 or y1 <= y0 or x1 <= x0:
                    return None
                mask = np.ones((y1 - y0, x1 - x0), bool) if atom.mask is None else np.asarray(atom.mask, bool)
                ys, xs = np.nonzero(mask)
                new = atom.new_value
            else:  # (indices, values before, values after): Labels.data_setitem
                indices, _, new = atom
                ys, xs = (np.asarray(i, np.intp).ravel() for i in indices)
                y0 = x0 = 0
            if np.ndim(new) != 0:
                return None
            labels.add(int(new))
            parts.append((ys + y0, xs + x0))
    except (TypeError, ValueError, AttributeError):
        return None
    if len(labels) != 1 or not parts:
        return None
    label = labels.pop()
    ys, xs = (np.concatenate(p) for p in zip(*parts, strict=True))
    if label <= 0 or not ys.size:
        return None
    y0, x0, y1, x1 = int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    mask[ys - y0, xs - x0] = True
    return label, (y0, x0, y1, x1), mask


def _replaced_labels(atoms: Sequence[Any]) -> Set[int]:
    """The labels above 0 that napari's edit ``atoms`` (a paint event's undo item) wrote over: the values before the
    edit (a mask-based atom's ``old_values``, a data_setitem atom's second item); empty when they cannot be read."""
    out: Set[int] = set()
    try:
        for atom in atoms:
            old = atom.old_values if hasattr(atom, "slice_key") else atom[1]
            out.update(int(v) for v in np.unique(np.asarray(old)) if v > 0)
    except (TypeError, ValueError, AttributeError, IndexError):
        return set()
    return out


def _grown(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its 8 neighbours of each pixel added (one pixel of dilation)."""
    rows = mask.copy()
    rows[1:] |= mask[:-1]
    rows[:-1] |= mask[1:]
    out = rows.copy()
    out[:, 1:] |= rows[:, :-1]
    out[:, :-1] |= rows[:, 1:]
    return out


def distinct_new_gland(layer: Any, atoms: List[Any]) -> Optional[int]:
    """After a stroke (napari's paint event: its undo item ``atoms``) that painted a new gland, a label no other pixel
    of the Labels ``layer`` holds, beside a gland of the same colour (the prediction layer cycles through four), or
    over part of a gland of that colour whose other part is left (a split: an eraser line, then a fill of one half):
    the stroke's pixels take the next unused label whose colour differs from those of every gland they touch and of
    the gland they split (walk 25: a gland painted beside its neighbour looked like one gland with it; walk 26: the
    halves of a split gland). No other gland is renumbered. The relabelling
    is added to the stroke's undo item (one undo takes the whole new gland off) and becomes the selected label (the
    next strokes go on painting that gland). Returns the new label, or None when nothing was changed."""
    data = getattr(layer, "data", None)
    if not isinstance(data, np.ndarray) or data.ndim != 2:
        return None
    found = _stroke_box(atoms, data.shape)
    if found is None:
        return None
    label, (y0, x0, y1, x1), mask = found
    h, w = data.shape
    ey0, ex0, ey1, ex1 = max(0, y0 - 1), max(0, x0 - 1), min(h, y1 + 1), min(w, x1 + 1)
    region = data[ey0:ey1, ex0:ex1]
    stroke = np.zeros(region.shape, bool)
    stroke[y0 - ey0:y1 - ey0, x0 - ex0:x1 - ex0] = mask
    stroke &= region == label  # the stroke's pixels that hold its label now
    if not stroke.any():
        return None
    touched = set(np.unique(region[_grown(stroke) & ~stroke]).tolist()) - {0, label}
    # a fill (or stroke) over part of a gland, the rest of it left: the gland split in two (walk 26: an eraser line
    # across gland 6, then its upper half filled with the next label, 10, drawn azure like 6 beyond the line)
    replaced = _replaced_labels(atoms) - touched - {0, label}
    if not touched and not replaced:
        return None

    def colour(value: int) -> Tuple[float, ...]:
        return tuple(np.round(np.asarray(layer.colormap.map(value), float).ravel()[:4], 3))

    taken = {colour(v) for v in touched}
    replaced = {v for v in replaced if colour(v) == colour(label)}  # only a part left of the label's colour matters
    if colour(label) not in taken and not replaced:
        return None
    # read the whole layer only now (a stroke beside a gland of its colour): whether any other pixel holds the label
    if int(np.count_nonzero(data == label)) != int(np.count_nonzero(stroke)):
        return None  # the label was in use before the stroke: an edit of a gland, not a new one
    if replaced:  # the glands written over in part, whose other part is still in the layer
        left = set(np.unique(data[np.isin(data, list(replaced))]).tolist())
        taken |= {colour(v) for v in left}
        if colour(label) not in taken:
            return None
    top = max(int(data.max()), label)
    tries = len(getattr(layer.colormap, "colors", ()))  # as many labels as the colormap has colours
    new = next((v for v in range(top + 1, top + 1 + tries) if colour(v) not in taken), None)
    if new is None:  # every colour is a neighbour's
        return None
    ys, xs = np.nonzero(stroke)
    undo = getattr(layer, "_undo_history", None)  # napari's: the stroke's item is its newest
    merge = bool(undo) and undo[-1] is atoms
    with layer.events.paint.blocker():  # one paint event, the stroke's, carries the relabelling too
        layer.data_setitem((ys + ey0, xs + ex0), new)
    if merge and len(undo) >= 2 and undo[-2] is atoms:
        atoms.extend(undo.pop())
    layer.selected_label = new
    logger.info("a new gland painted beside a gland of its colour: label %d -> %d", label, new)
    return new


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


class EditTrackingMixin:
    """The dock's handlers of the viewer's layer events and its counting of the edits made in prediction
    layers (:class:`EditHistory`, :meth:`ImageState.edit_delta`), which keeps *Keep unaccepted edits* up to date.

    A mixin of :class:`~napari_cdma._widget.CdmaWidget` (no state of its own: it uses the dock's attributes,
    set in the dock's ``__init__``).
    """

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
        """A stroke, fill or erase done in a prediction layer: counted over the pixels it changed. A new gland painted
        beside a gland of its colour first takes a label of another colour (:func:`distinct_new_gland`)."""
        layer = event.source
        state = self._prediction_state(layer)
        if state is not None and isinstance(event.value, list):
            try:
                distinct_new_gland(layer, event.value)  # changes the stroke's undo item before it is followed below
            except Exception:  # a colour is not worth a failed stroke
                logger.exception("could not give the new gland of '%s' a colour of its own", layer.name)
        history = self._histories.get(layer.unique_id)
        if history is not None:
            history.painted(event.value)
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
