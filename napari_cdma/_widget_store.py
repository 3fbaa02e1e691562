"""What a project store brings back into the viewer: its images, latest predictions and accepted
regions as layers (not the images of slide windows: the slide panel shows slides).

Opening a path where no store exists asks before creating one (:func:`open_or_ask`, :func:`ask_create_store`);
declined, nothing is created and the store open before stays open. The store summary under the path field
follows the layers (:class:`StoreSummary`): images a reopen brought back and then closed are no longer counted.

Reopening a store shows each stored image, a Shapes layer of its accepted boxes and a Labels layer
of its accepted corrections (:func:`restore_layers`; :class:`Restore` splits it so that no stored
pixel is read on the GUI thread); the dock then shows each image's latest prediction kept by the
store as its prediction and uncertainty layers (and its hidden disagreement layer when kept), drawn as a
fresh Predict draws them (:func:`stored_prediction_steps`). Edits made in a prediction layer and not
accepted are kept by the store only on request (the dock's "Keep unaccepted edits"), never for training.

At a switch to another store the prediction layers of the store left are detached (:func:`untag_prediction`): hidden
copies named after it. Reopening that store closes each of its copies that holds what the reopen shows again
(:func:`redundant_copies`), so switching back and forth does not pile up copies; a copy holding anything else stays.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from ._layers import (
    HASH_KEY,
    IMAGE_KEY,
    ROLE_KEY,
    LayerInputError,
    gland_colormap,
    image_from_layer,
    input_hw,
    is_derived,
    names_for,
    show_accepted,
    style_prediction,
    uncertainty_layer_steps,
    upsert_layer,
)
from ._time_text import short_when
from .project.retrain_job import plural
from .project.store import ProjectStore, RegionRecord, StoreError, hash_image

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- opening a store
def store_exists(path: Any) -> bool:
    """Whether ``path`` holds something :meth:`ProjectStore.open` opens without creating a store: a directory with
    anything in it (a store, or a folder it refuses). A missing or empty folder would be made a new, empty store."""
    root = Path(path).expanduser()
    try:
        return root.exists() and (not root.is_dir() or any(root.iterdir()))
    except OSError:  # unreadable: let the store say why
        return True


def create_question(path: Any) -> str:
    """What the dock asks before it creates a store (a mistyped path made a new empty store: walk)."""
    root = Path(path).expanduser()
    where = "" if root.exists() else " (the folder does not exist: it is created)"
    return (f"Create a new project store at {root}?{where}\n\nNo project store is there. A new one starts empty: "
            "no accepted regions, the bundled model. Check the path for a typo if you meant to open an existing "
            "project.")


def ask_create_store(parent: Any, path: Any) -> bool:
    """Ask the user whether to create a new project store at ``path`` (a Yes / No question, No by default)."""
    from qtpy.QtWidgets import QMessageBox

    Button = QMessageBox.StandardButton
    answer = QMessageBox.question(parent, "Create a project store?", create_question(path),
                                  Button.Yes | Button.No, Button.No)
    return answer == Button.Yes


def declined_note(path: Any, open_root: Optional[Path]) -> str:
    """What the dock says when the user declined to create a store at ``path``; once a store exists there (made
    since, outside this dock), that instead."""
    path = Path(path).expanduser()
    kept = f" {open_root} stays open." if open_root is not None else " No store is open."
    if store_exists(path):
        return f"A project store exists at {path} now: press Open to open it.{kept}"
    return f"No project store created at {path}.{kept}"


def open_or_ask(path: Any, parent: Any = None, create: Optional[bool] = None,
                ask: Optional[Callable[[Any, Any], bool]] = None) -> Optional[ProjectStore]:
    """Open the project store at ``path``; where there is none, create one if ``create``, ask the user first if
    ``create`` is None (a button press), refuse if False.

    Args:
        path: store directory.
        parent: the widget the question is asked over.
        create: True: create without asking (code: the first Predict or Accept creates the store); None: ask
            (``ask``, default :func:`ask_create_store`); False: never create.
        ask: ``(parent, path) -> bool``, the question.

    Returns:
        The store, or None when there was none and it was not created (nothing is written then).

    Raises:
        StoreError and the other errors of :meth:`ProjectStore.open`.
    """
    if not store_exists(path):
        if create is None:
            create = (ask or ask_create_store)(parent, path)
        if not create:
            return None
    return ProjectStore.open(path)


# ------------------------------------------------------------------------------------ the store opened last
#: Folder of the dock's settings file (:data:`LAST_STORE_FILE`); default: the user's config folder ("napari-cdma").
CONFIG_ENV = "NAPARI_CDMA_CONFIG_DIR"
#: The settings file that names the project store opened last: ``{"store": "/abs/path"}``.
LAST_STORE_FILE = "last_store.json"


def config_dir() -> Path:
    """Where the dock keeps its settings: ``$NAPARI_CDMA_CONFIG_DIR``, else the user's config folder for
    "napari-cdma" (platformdirs: ~/.config/napari-cdma on Linux)."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    try:
        from platformdirs import user_config_dir
    except ImportError:  # napari brings platformdirs; without it, the XDG default
        return Path.home() / ".config" / "napari-cdma"
    return Path(user_config_dir("napari-cdma", appauthor=False))


def last_store() -> Optional[Path]:
    """The project store opened last in a dock (walk 26: a fresh dock showed ~/napari-cdma-project, so the
    pathologist had to remember and retype the store used the day before), or None: never written, unreadable or
    not a path (silently: the dock falls back to its default). Whether the folder still exists is not checked."""
    try:
        text = (config_dir() / LAST_STORE_FILE).read_text(encoding="utf-8")
        value = json.loads(text).get("store")
    except (OSError, ValueError, AttributeError):  # missing, unreadable, not JSON, not an object
        return None
    return Path(value) if isinstance(value, str) and value.strip() else None


def remember_store(path: Any) -> None:
    """Write ``path`` (made absolute) as the store opened last, atomically (a temporary file renamed over the old
    one, so a crash leaves the old file or the new one, never half of one); nothing when it is written already. A
    failure is logged, never raised: a store opened is not worth an error about a settings file."""
    root = str(Path(path).expanduser().absolute())
    if last_store() == Path(root):
        return
    folder = config_dir()
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=folder, prefix=".last_store.",
                                         suffix=".tmp", delete=False) as f:
            tmp = Path(f.name)
            json.dump({"store": root}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / LAST_STORE_FILE)
        tmp = None
    except OSError:
        logger.warning("could not remember the project store %s in %s", root, folder, exc_info=True)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


#: roles of the layers that show what the open store holds: an image's accepted boxes and accepted corrections.
#: Another store opened, those of the previous store are no longer true (:func:`store_overlays`).
STORE_ROLES = ("accepted", "corrections")


def store_overlays(viewer: Any) -> List[Any]:
    """The layers showing the open store's accepted regions and accepted corrections (roles :data:`STORE_ROLES`,
    tagged by :func:`~napari_cdma._layers.show_accepted` and :class:`Restore`), images and predictions left out:
    when another store is opened these belong to the previous one. Read from metadata only (no pixel)."""
    return [layer for layer in viewer.layers if (getattr(layer, "metadata", None) or {}).get(ROLE_KEY) in STORE_ROLES]


def untag_store_overlay(layer: Any, old_root: Any) -> None:
    """Turn an accepted-corrections layer the user edited into a plain labels layer of the user's, named after the
    store it came from (its edits are never lost, and it no longer claims to show the open store's corrections)."""
    image = (layer.metadata or {}).get(IMAGE_KEY) or "image"
    layer.metadata = {k: v for k, v in (layer.metadata or {}).items() if k not in (ROLE_KEY, IMAGE_KEY)}
    layer.name = f"{image} corrections edited, from {Path(old_root).name}"


#: layer.metadata key of a layer detached at a store switch (:func:`untag_prediction`): a dict naming the store it
#: came from ("store", its resolved root), the image's store hash ("image_hash") and the layer's role ("role").
DETACHED_KEY = "napari_cdma_detached"


def is_detached(layer: Any) -> bool:
    """Whether ``layer`` is a copy detached from a store at a switch (:func:`untag_prediction`): the Review panel's
    choosers do not offer it (its Accept would store the store left's corrections in the store now open)."""
    return bool((getattr(layer, "metadata", None) or {}).get(DETACHED_KEY))


def untag_prediction(layer: Any, old_root: Any, layers: Any, image_hash: Optional[str] = None,
                     role: str = "prediction") -> str:
    """Turn a prediction layer of the previous store (its labels, with that store's accepted corrections pasted in and
    the user's edits; or one of its maps) into a plain layer of the user's, named after the store it came from: the
    dock no longer takes it for the image's prediction (another store's Accept, Keep unaccepted edits and review list
    do not use it), and its pixels, edits included, stay as they are. It is hidden: shown over the new store's
    prediction of the image, the previous store's corrections and edits looked as if the new store held them
    (pathologist walk). It is marked as detached from ``old_root`` (:data:`DETACHED_KEY`, with ``image_hash`` and
    ``role``), so that reopening that store closes it when it shows the same pixels again
    (:func:`redundant_copies`). A layer already detached is left as it is (never a copy of a copy). Returns its
    (new) name (free among ``layers``)."""
    meta = layer.metadata or {}
    if meta.get(DETACHED_KEY):
        return layer.name
    layer.metadata = {**{k: v for k, v in meta.items() if k not in (ROLE_KEY, IMAGE_KEY)},
                      DETACHED_KEY: {"store": str(Path(old_root).resolve()), "image_hash": image_hash,
                                     "role": role}}
    layer.visible = False
    base = f"{layer.name}, from {Path(old_root).name}"
    name, k = base, 1
    while name in layers:
        k += 1
        name = f"{base} ({k})"
    layer.name = name
    return name


def _level0(data: Any, multiscale: bool) -> np.ndarray:
    """The full-resolution pixels of a layer's data: level 0 of a multiscale layer's pyramid (napari's
    ``np.asarray`` of multiscale data gives its smallest level, and of a plain list of levels raises), else
    the data."""
    if multiscale:
        if len(data) == 0:
            raise ValueError("a multiscale layer without levels")
        data = data[0]
    return np.asarray(data)


def _same_pixels(copy: Any, shown: Any, role: str, multiscale: Tuple[bool, bool] = (False, False)) -> bool:
    """Whether a detached copy holds what the restored layer ``shown`` shows, at the store's precision: labels
    exactly, maps (uncertainty, disagreement) as the float16 the store keeps them in. A multiscale side
    (``multiscale``: the copy's, the shown layer's) is compared at its level 0, its full resolution (a large
    image's maps are shown as a pyramid). Another shape, or pixels that cannot be read, are not the same (the
    copy then stays: keeping it loses nothing)."""
    try:
        a, b = _level0(copy, multiscale[0]), _level0(shown, multiscale[1])
        if a.shape != b.shape:
            return False
        if role == "prediction":
            return bool(np.array_equal(a, b))
        return bool(np.array_equal(a.astype(np.float16, copy=False), b.astype(np.float16, copy=False), equal_nan=True))
    except Exception as exc:  # a copy is closed only when it is known to hold nothing else
        logger.warning("could not compare a detached copy with the restored %s layer (kept): %s", role, exc)
        return False


def redundant_copies(viewer: Any, root: Any, image_hash: Optional[str], restored: Dict[str, Any]) -> List[Any]:
    """The layers detached from the store at ``root`` (:func:`untag_prediction`) of the image ``image_hash`` whose
    pixels the store brought back: equal to the layer of their role in ``restored`` (role -> layer restored from the
    store, :func:`stored_prediction_steps`). Switching A -> B -> A piled up "from A" copies beside A's restored
    prediction (walk); a copy holding anything else (edited after the switch, or edits the store could not keep) is
    not listed, nor one that could not be compared (:func:`_same_pixels`). Compares pixels of the copies of that
    image only; a large image's multiscale copy at its level 0."""
    if not image_hash:
        return []
    root = str(Path(root).resolve())
    out = []
    for layer in list(viewer.layers):
        info = (getattr(layer, "metadata", None) or {}).get(DETACHED_KEY) or {}
        if info.get("store") != root or info.get("image_hash") != image_hash:
            continue
        role = str(info.get("role") or "")
        shown = restored.get(role)
        if shown is None or shown is layer or shown not in viewer.layers:
            continue
        scales = (bool(getattr(layer, "multiscale", False)), bool(getattr(shown, "multiscale", False)))
        if _same_pixels(layer.data, shown.data, role, scales):
            out.append(layer)
    return out


# ---------------------------------------------------------------------------------------------- the summary
#: at most this many images are named in one group of :func:`restored_notes` (the others are counted)
NAMED_PER_GROUP = 3


def split_restored(note: str) -> Tuple[str, str, str]:
    """A restored prediction's note ``"<model>, <ISO time>[; <remarks>]"`` as ``(model, time, remarks)``; a note of
    another form (``"not restored (...)"``) as ``(note, "", "")``."""
    head, _, rest = str(note).partition("; ")
    model, comma, when = head.rpartition(", ")
    if not comma or str(note).startswith("not restored"):
        return str(note), "", ""
    return model, when, rest


def restored_text(note: str) -> str:
    """How the dock says a restored prediction's note: ``"bundled at 18:01; kept edits, not accepted"`` (the time as
    every live status line says it, :func:`~napari_cdma._time_text.short_when`; walk 21: "at 18:01" live, "2026-12-02
    18:01 UTC" after a reopen)."""
    model, when, rest = split_restored(note)
    said = f"{model} at {short_when(when)}" if when else model
    return said + (f"; {rest}" if rest else "")


def restored_notes(shown: List[Tuple[str, str]]) -> str:
    """What the summary says of the restored predictions ``shown`` (image name, note ``"<model>, <ISO time>[; ...]"``),
    in one short sentence: images whose predictions have the same model and the same remarks (kept edits, stale, ...)
    are said together, with the latest time, and at most :data:`NAMED_PER_GROUP` of them named; a prediction alone
    keeps its note as it is. The walk's summary grew to 13 lines with a note per image."""
    groups: Dict[Tuple[str, str], List[Tuple[str, str]]] = {}
    for name, note in shown:
        model, when, rest = split_restored(note)
        groups.setdefault((model, rest), []).append((name, when))
    said = []
    for (model, rest), members in groups.items():
        names = [f"'{name}'" for name, _ in members[:NAMED_PER_GROUP]]
        if len(members) > NAMED_PER_GROUP:
            names[-1] += f" and {len(members) - NAMED_PER_GROUP} more"
        latest = max(when for _, when in members)  # ISO times in one zone (the store's UTC) sort as they read
        if not latest:
            note = model
        else:
            note = f"{model}{' at' if len(members) == 1 else ', latest at'} {short_when(latest)}"
        said.append(f"{', '.join(names)} ({note}{'; ' + rest if rest else ''})")
    return "; ".join(said)


#: the dock's sentence of what the store holds (``CdmaWidget._sync_from_store``), read back by
#: :func:`compact_store_text`
STORE_SENTENCE = re.compile(r"(?P<regions>\d+) accepted region\(s\) \((?P<held>\d+) held out\) from "
                            r"(?P<images>\d+) image\(s\), (?P<versions>\d+) trained version\(s\); "
                            r"current model: (?P<current>.+)")


def compact_store_text(text: str) -> str:
    """The dock's sentence of what the store holds in two short lines: ``"2 accepted regions, 2 images"`` and
    ``"Model v0001 (1 trained)"`` (the current model, and how many versions were trained); the held-out count is in
    the tooltip (:meth:`StoreSummary.details`). A text of another form is kept as it is."""
    found = STORE_SENTENCE.fullmatch(text.strip())
    if found is None:
        return text
    n = {key: int(found[key]) for key in ("regions", "images", "versions")}
    return (f"{plural(n['regions'], 'accepted region')}, {plural(n['images'], 'image')}\n"
            f"Model {found['current']} ({n['versions']} trained)")


class StoreSummary:
    """The project-store summary under the path field, following the viewer's layers.

    It is made of what the store holds (:meth:`set_store_text`, at each refresh from the store), the predictions a
    reopen restored (:meth:`set_predictions`), the images it brought back (:meth:`set_restored`), the store's slide
    windows (:meth:`set_windows`) and one more note (:meth:`set_note`, or :meth:`set_declined` for an Open the user
    declined). The restored images and predictions are counted over those still open: when their layers are removed
    the summary is written again (walk: "Reopened 2 stored image(s)" stayed after both were closed). Layers are
    followed by identity, so a renamed image still counts. It states what is, not what switches did: the label in
    three short lines at the dock's width (:meth:`text`; walk 25: 13 lines after a reopen), the details in its tooltip
    (:meth:`details`), where restored predictions of the same model and remarks are said together
    (:func:`restored_notes`; walk: a note per image, each with the copies the last switch closed, made 13 lines).

    The note says what happened once: it goes when the store is read again; a declined Open's also after a later
    Predict with a store open (:meth:`drop_declined`; walk: "No project store created at ..." stayed after a
    Predict), and it is written as it is at each writing of the summary: "a project store exists there now" once
    one does.

    Args:
        viewer: the napari viewer.
        label: the QLabel showing the summary.
    """

    def __init__(self, viewer: Any, label: Any) -> None:
        self.viewer, self.label = viewer, label
        self._base_tip = label.toolTip()  # what the dock says of the label itself, after the details
        self.store_text = ""
        self.note = ""
        self._declined: Optional[Tuple[Path, Optional[Path]]] = None  # (path, the store open then): set_declined
        self.windows = 0
        self._restored: List[Tuple[Any, bool]] = []  # (image layer, came back with its prediction)
        self._predictions: List[Tuple[Any, str]] = []  # (prediction layer, what to say of it)
        viewer.layers.events.removed.connect(self._on_removed)

    def _layer(self, name: str) -> Any:
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def clear(self) -> None:
        """Another store was opened: nothing restored yet."""
        self.store_text, self.note, self._declined, self.windows = "", "", None, 0
        self._restored, self._predictions = [], []

    def set_store_text(self, text: str) -> None:
        """What the store holds, read again from it; the one-off note (:meth:`set_note`, :meth:`set_declined`) is
        dropped."""
        self.store_text, self.note, self._declined = text, "", None
        self.show()

    def set_note(self, text: str) -> None:
        """One more line (an error), until the store is read again."""
        self.note, self._declined = text, None
        self.show()

    def set_declined(self, path: Any, open_root: Optional[Path]) -> None:
        """The user declined to create a store at ``path`` (``open_root``: the store that stayed open, or None); said
        until the store is read again or the note dropped (:func:`declined_note`, written anew at each writing)."""
        self.note, self._declined = "", (Path(path).expanduser(), open_root)
        self.show()

    def drop_declined(self) -> None:
        """The declined Open is no longer news (a later Predict, with a store open): the summary says what the store
        holds."""
        if self._declined is not None:
            self._declined = None
            self.show()

    def rewrite(self) -> None:
        """Write the summary again as it reads now (a declined Open after a store was made there), if it says
        anything (else the dock's own line, "No project store there yet ...", stays)."""
        if self.store_text or self.note or self._declined is not None:
            self.show()

    def set_windows(self, count: int) -> None:
        self.windows = int(count)
        self.show()

    def set_restored(self, with_prediction: Iterable[str], without: Iterable[str] = ()) -> None:
        """The image layers a reopen added, by name: those that came back with their latest prediction and those
        without one. Names not open are left out."""
        pairs = [(self._layer(n), True) for n in with_prediction] + [(self._layer(n), False) for n in without]
        self._restored = [(layer, has) for layer, has in pairs if layer is not None]
        self.show()

    def set_predictions(self, notes: Dict[str, str]) -> None:
        """Layer name -> what to say of a prediction restored from the store (its model, when kept, ...)."""
        self._predictions = [(layer, note) for name, note in notes.items() if (layer := self._layer(name)) is not None]
        self.show()

    def restored_count(self) -> Tuple[int, int]:
        """How many reopened images are still open, and how many of them came back without a prediction."""
        layers = self.viewer.layers
        open_ = [has for layer, has in self._restored if layer in layers]
        return len(open_), sum(1 for has in open_ if not has)

    def _restored_shown(self) -> List[Tuple[str, str]]:
        layers = self.viewer.layers
        return [(layer.name, note) for layer, note in self._predictions if layer in layers]

    def details(self) -> str:
        """Everything the summary knows, in full sentences (the label's tooltip): what the store holds, each restored
        prediction's model, time and remarks, the reopened images, slide windows and the one-off note."""
        parts = [self.store_text] if self.store_text else []
        shown = self._restored_shown()
        if shown:
            parts.append("Predictions restored from the store: " + restored_notes(shown)
                         + ". New edits are not kept until accepted or kept.")
        restored, without = self.restored_count()
        if restored:
            note = f"Reopened {restored} stored image(s) with their accepted regions"
            if without:
                note += (f"; {without} of them had no stored prediction (never predicted with this store open, "
                         "or unreadable): press Predict.")
            else:
                note += " and latest predictions."
            parts.append(note)
        if self.windows:
            parts.append(f"{self.windows} slide window(s): open the slide to see them (Whole-slide panel).")
        parts.extend(self._notes())
        return "\n".join(parts)

    def _notes(self) -> List[str]:
        """The one-off note and the declined Open: said in full in the label (they are news)."""
        said = [self.note] if self.note else []
        if self._declined is not None:
            said.append(declined_note(*self._declined))
        return said

    def text(self) -> str:
        """The summary as the label shows it: a few short lines at the dock's width (walk 25: 13 lines after a
        reopen), what the store holds (:func:`compact_store_text`), the images a reopen brought back, the slide
        windows and the one-off note; the rest is in :meth:`details` (the tooltip)."""
        parts = [compact_store_text(self.store_text)] if self.store_text else []
        restored, without = self.restored_count()
        shown = len(self._restored_shown())
        if restored:
            parts.append(f"Reopened {restored}; {without} need{'s' if without == 1 else ''} Predict" if without
                         else f"Reopened {plural(restored, 'image')}")
        elif shown:
            parts.append(f"{plural(shown, 'prediction')} restored")
        if self.windows:
            parts.append(f"{plural(self.windows, 'slide window')} stored")
        return "\n".join(parts + self._notes())

    def show(self) -> None:
        text = self.text()
        if self.label.text() != text:
            self.label.setText(text)
        details = self.details()
        tip = "\n\n".join(t for t in (details, self._base_tip) if t)
        if self.label.toolTip() != tip:
            self.label.setToolTip(tip)

    def _on_removed(self, event: Any = None) -> None:
        """A layer was closed: restored images and predictions no longer open are dropped (the summary keeps no
        closed layer) and the summary is written again."""
        layers = self.viewer.layers
        before = (len(self._restored), len(self._predictions))
        self._restored = [(ly, has) for ly, has in self._restored if ly in layers]
        self._predictions = [(ly, note) for ly, note in self._predictions if ly in layers]
        if (len(self._restored), len(self._predictions)) != before:
            self.show()


class OpenImages(dict):
    """Store hash -> layer name of the open images whose hash is known, and (``unhashed``) the open
    image layers whose hash is not: those are hashed only when a stored image could be theirs
    (:func:`restore_layers`)."""

    def __init__(self) -> None:
        super().__init__()
        self.unhashed: List[Any] = []


def _model_input_hw(layer: Any) -> Optional[Tuple[int, int]]:
    """(H, W) of a layer that could be model input (single-scale RGB(A) image, or a uint8 / uint16 grey one: the
    store keeps it as the grey RGB the model read), read from its shape only (no pixels); None otherwise."""
    return input_hw(layer)


def _layer_hash(layer: Any) -> Optional[str]:
    """The store hash of a layer's pixels as the model would read them (uint8 RGB), or None."""
    try:
        return hash_image(image_from_layer(layer))
    except LayerInputError:
        return None


def open_image_hashes(viewer: Any) -> OpenImages:
    """Store hash -> name of each open image layer (RGB or grey) whose hash is known (the plugin's own layers left out).

    Layers the dock restored or predicted carry their hash in their metadata (the predict worker
    computes it off the GUI thread). The others are not hashed here: hashing takes the GUI thread
    0.4 s for a 6000 x 6000 image on a busy 2-core machine. They are listed in ``unhashed`` and
    :func:`restore_layers` hashes one only if the store holds an image of its size.
    Layers that cannot be model input (multiscale, not RGB) are left out.
    """
    from napari.layers import Image

    out = OpenImages()
    for layer in viewer.layers:
        if not isinstance(layer, Image) or is_derived(layer):
            continue
        digest = (layer.metadata or {}).get(HASH_KEY)
        if digest:
            out.setdefault(str(digest), layer.name)
        elif _model_input_hw(layer) is not None:
            out.unhashed.append(layer)
    return out


def regions_by_image(regions: Iterable[RegionRecord]) -> Dict[str, List[RegionRecord]]:
    """Live regions grouped by their image hash."""
    out: Dict[str, List[RegionRecord]] = defaultdict(list)
    for r in regions:
        out[r.image_hash].append(r)
    return dict(out)


def _free_name(viewer: Any, name: str, digest: str) -> str:
    return name if name not in viewer.layers else f"{name} ({digest[:8]})"


def stored_name(store: ProjectStore, digest: str, regions: Optional[List[RegionRecord]] = None) -> Optional[str]:
    """The name a stored image had on screen: when its latest region was accepted, else when it was
    last predicted; None if the store kept none. ``regions``: the store's regions, if already read."""
    regions = store.regions() if regions is None else regions
    wanted = next((r.image_name for r in sorted(regions, key=lambda r: r.region_id, reverse=True)
                   if r.image_hash == digest and r.image_name), None)
    if not wanted:  # an image predicted, never corrected: the name it had when predicted
        record = store.latest_prediction(digest)
        wanted = record.image_name if record is not None else None
    return wanted or None


def read_restore(job: "Restore") -> "Restore":
    """Run ``job.read()`` (on a worker thread) and return the job."""
    job.read()
    return job


class Restore:
    """Reopening a store in three parts, so that no stored pixel is read on the GUI thread.

    Made on the GUI thread, it reads only the store's index, the shapes of its whole images
    (:meth:`~napari_cdma.project.store.ProjectStore.list_whole_images`) and those of the open
    layers. :meth:`read` (safe on a worker thread: it changes no layer) hashes the open layers that
    could show a stored image, and reads the stored images to add and the accepted corrections.
    :meth:`steps` (GUI thread) adds the layers, one layer per step, so the event loop can run
    between steps. :attr:`names` then maps store hash -> image layer name of every stored image
    shown (``known`` included); the hashes computed are added to ``known``. Call each part once.
    """

    def __init__(self, viewer: Any, store: ProjectStore, known: Dict[str, str]) -> None:
        self.viewer, self.store, self.known = viewer, store, known
        self.names = dict(known)
        self._unhashed = [(layer, hw) for layer in getattr(known, "unhashed", [])
                          if layer in viewer.layers and (hw := _model_input_hw(layer)) is not None]
        self._by_image = regions_by_image(store.regions())
        self._listed = store.list_whole_images()
        self._slides = store.slide_images()
        #: hash -> (H, W) of the layer showing it (its corrections are read at that size)
        self._shapes = {d: tuple(viewer.layers[n].data.shape[:2]) for d, n in self.names.items()
                        if n in viewer.layers}
        self._hashed: Dict[str, Any] = {}  # hash -> open layer, of the layers hashed by read()
        self._added: List[Tuple[str, np.ndarray]] = []
        self._corrections: Dict[str, np.ndarray] = {}

    def _shown(self, digest: str, fits: Callable[[Tuple[int, int]], bool]) -> bool:
        """Whether an open layer shows ``digest``: one known, or one found by hashing the unhashed
        open layers whose size ``fits`` until one shows it."""
        for entry in list(self._unhashed):
            if digest in self.names or digest in self._hashed:
                break
            if not fits(entry[1]):
                continue
            self._unhashed.remove(entry)
            other = _layer_hash(entry[0])
            if other is not None:
                self._hashed.setdefault(other, entry[0])
                self._shapes.setdefault(other, entry[1])
        return digest in self.names or digest in self._hashed

    def read(self) -> None:
        """Hash, decode and read what :meth:`steps` shows (no layer is changed)."""
        # Whole images only: a slide-sized source keeps context crops, which are not shown as images.
        # Nor is a slide small enough to be kept whole: the slide panel shows slides and their windows;
        # its regions are shown only on an open image layer with the same pixels. An image already
        # open is found by its shape first, so it is never decoded.
        whole = set()
        for item in self._listed:
            digest = item.image_hash
            if item.damaged:
                logger.warning("skipping a damaged image: %s", item.damaged)
            elif self._shown(digest, lambda hw, s=item.shape[:2]: hw == tuple(s)) or digest in self._slides:
                whole.add(digest)
            else:
                try:
                    image = self.store.load_image(item.key)
                except StoreError as exc:
                    logger.warning("skipping a damaged image: %s", exc)
                    continue
                whole.add(digest)
                self._added.append((digest, image))
                self._shapes[digest] = tuple(image.shape[:2])
        # Regions of images the store does not keep whole (slide-sized): an open layer may show one; it
        # must at least hold every accepted box.
        for digest, regions in self._by_image.items():
            if digest not in whole:
                need = (max(r.bbox[2] for r in regions), max(r.bbox[3] for r in regions))
                self._shown(digest, lambda hw, n=need: hw[0] >= n[0] and hw[1] >= n[1])
        for digest, regions in self._by_image.items():
            shape = self._shapes.get(digest)  # set for the images shown (open, hashed or added) only
            if shape is None:
                continue
            corrections = np.zeros(shape, dtype=np.int32)
            for r in regions:
                y0, x0, y1, x1 = r.bbox
                try:
                    corrections[y0:y1, x0:x1] = self.store.load_region(r.region_id, r.version)[1]
                except StoreError:  # a damaged region: its box is still shown, its pixels cannot be
                    continue
            self._corrections[digest] = corrections

    def steps(self) -> Iterator[None]:
        """Add the images :meth:`read` read and each shown image's accepted boxes and corrections
        (GUI thread); yields after each layer it adds or updates."""
        viewer = self.viewer
        for digest, layer in self._hashed.items():
            if layer in viewer.layers:
                self.names.setdefault(digest, layer.name)
                self.known.setdefault(digest, layer.name)
        # Stored images all sit at the origin: only the first is shown when nothing else is, the others
        # come back hidden (tick their eye to compare) rather than stacked over the open image.
        show = not any(getattr(ly, "visible", False) and not is_derived(ly) for ly in viewer.layers)
        for digest, image in self._added:
            source = next((r.source_path for r in self._by_image.get(digest, []) if r.source_path), None)
            # the name it had on screen, at once (not the file's stem, renamed when all is shown)
            wanted = stored_name(self.store, digest, [r for rs in self._by_image.values() for r in rs])
            name = wanted if wanted and wanted not in viewer.layers else \
                _free_name(viewer, Path(source).stem if source else f"stored image {digest[:8]}", digest)
            meta = {HASH_KEY: digest, **({"source_path": source} if source else {})}
            self.names[digest] = name  # before it is added: the dock's line, said as it is inserted, asks
            viewer.add_image(image, name=name, rgb=True, metadata=meta, visible=show)
            show = False
            yield
        for digest, regions in self._by_image.items():
            name, corrections = self.names.get(digest), self._corrections.get(digest)
            if not self._fits(name, corrections):
                continue
            visible = bool(viewer.layers[name].visible)
            show_accepted(viewer, name, [r.bbox for r in regions]).visible = visible
            yield
            if not self._fits(name, corrections):  # the image was closed meanwhile
                continue
            layer_name = names_for(name)["corrections"]
            if layer_name in viewer.layers:
                viewer.layers[layer_name].data = corrections
            else:
                # added hidden and outlined, then shown: napari draws a visible labels layer at each change
                layer = viewer.add_labels(corrections, name=layer_name, opacity=0.6, visible=False,
                                          metadata={ROLE_KEY: "corrections", IMAGE_KEY: name})
                layer.contour = 2
                layer.visible = visible
            yield

    def _fits(self, name: Optional[str], corrections: Optional[np.ndarray]) -> bool:
        """Whether the image layer ``name`` is open at the size its ``corrections`` were read at."""
        layers = self.viewer.layers
        return (name is not None and corrections is not None and name in layers
                and tuple(layers[name].data.shape[:2]) == corrections.shape)


def restore_layers(viewer: Any, store: ProjectStore, known: Dict[str, str]) -> Dict[str, str]:
    """Add the store's images that are not open, and each image's accepted boxes and corrections,
    all on the calling thread (:class:`Restore` splits this for a worker thread).

    Args:
        viewer: napari viewer (model).
        store: the opened project store.
        known: store hash -> name of an image layer already showing it (not added again). An
            :class:`OpenImages` also names open layers not hashed yet: one of them is hashed only
            when a stored image not matched otherwise has its size, and every hash so computed is
            added to ``known``.

    Returns:
        Store hash -> image layer name, for every stored image now shown (``known`` included).
    """
    job = Restore(viewer, store, known)
    job.read()
    for _ in job.steps():
        pass
    return job.names


def stored_prediction_steps(viewer: Any, image_name: str, labels: np.ndarray, uncertainty: np.ndarray,
                            display_range: Tuple[float, float], out: Dict[str, Any], fill: bool = False,
                            visible: bool = True, disagreement: Optional[np.ndarray] = None,
                            image: Optional[np.ndarray] = None) -> Iterator[None]:
    """Show a prediction the store kept as the image's prediction and uncertainty layers, and its hidden
    disagreement layer when the store kept the disagreement; yields after each layer (run one step per
    event-loop turn: each layer added is a few hundred ms of GUI work).

    Same names, colormaps, contrast limits, opacity and outline style as a fresh Predict
    (:func:`~napari_cdma._layers.show_prediction`); the optional entropy and branch layers are not kept
    by the store and are not shown.

    Args:
        viewer: napari viewer (model).
        image_name: the image layer's name.
        labels: the gland labels to show (H, W), int32.
        uncertainty: the uncertainty map (H, W), shown as float32.
        display_range: its contrast limits.
        out: filled with role -> layer (``"prediction"``, ``"uncertainty"``, ``"disagreement"``).
        fill: draw the glands filled rather than as outlines.
        visible: show the layers (those of a restored hidden image stay hidden).
        disagreement: the branches' disagreement (H, W), shown as the hidden disagreement layer; None: none.
        image: the image (H, W, 3), whose tissue sets the disagreement layer's contrast.
    """
    names = names_for(image_name)
    yield from uncertainty_layer_steps(viewer, image_name, uncertainty, display_range, out, visible=visible,
                                       disagreement=disagreement, image=image)
    # added hidden and styled, then shown: napari draws (and outlines) a visible labels layer at each change
    layer = upsert_layer(viewer, names["prediction"], np.array(labels, dtype=np.int32, copy=True), "labels",
                         visible=False, metadata={ROLE_KEY: "prediction", IMAGE_KEY: image_name})
    layer.colormap = gland_colormap()
    style_prediction(layer, fill=fill)
    out["prediction"] = layer
    yield
    layer.visible = visible
