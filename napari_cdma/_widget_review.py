"""Review panel: ranked regions (Next / Previous), accept a suggested region, a drawn one or the whole
image, and the accepted-region list (withdraw, and restore a withdrawn region: *Show withdrawn* lists them).

Each button is enabled only when it can act; a disabled button's tooltip says what it needs first
(:meth:`ReviewPanel.update_buttons`, run as layers are added or removed, regions predicted, selected or
accepted, and the store's regions read).

While a whole slide is what the canvas shows (:func:`slide_on_screen`), the panel lists no image's review regions and
says that the slide's are in the Whole slide panel; the image it listed is listed again once the slide is hidden or
closed (:meth:`ReviewPanel.check_screen`)."""
from __future__ import annotations

import contextlib
import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
from magicgui.widgets import ComboBox, create_widget
from napari.layers import Image, Labels, Shapes
from qtpy.QtCore import QEvent, Qt, QTimer, Signal
from qtpy.QtGui import QPalette
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from src_model.tiling import boxes_overlap  # torch-free

from ._layers import (
    COMBO_CHARS,
    FRAME_SLACK,
    FRAMES_KEY,
    HASH_KEY,
    IMAGE_KEY,
    ROLE_KEY,
    TILE_COLOR,
    TILE_WIDTH,
    TILES_STYLE,
    camera_for_tile,
    frame_rects,
    frames_of,
    input_hw,
    is_derived,
    names_for,
    narrow_combo,
    not_input_note,
    not_yet_accepted,
    polygon_mask,
    redraw_frames,
    region_arrays,
    scene_camera,
    shape_bbox,
    show_frames,
    side_suffix,
    source_path,
    unwrap_layer,
)
from ._messages import show_message
from ._slide_view import SLIDE_KEY, STORE_KEY
from ._time_text import full_when, short_when
from ._widget_store import is_detached
from .project.store import SLIDE_SOURCE, ProjectStore, RegionRecord

if TYPE_CHECKING:  # the dock's per-image state; imported for the type only (no cycle at run time)
    from ._widget import ImageState

BBox = Tuple[int, int, int, int]
CONTEXT_MARGIN = 1.6  # "Next" shows the region and ~30 % of its size around it: a gland is judged in context
# The selected review box is drawn thicker and in another colour than the others: with ten cyan
# squares on screen the pathologist must see at once which one "Next" went to. Widths are screen pixels at every
# zoom (:func:`~napari_cdma._layers.show_frames`): in image pixels the frames were bars of 31 and 13 screen pixels
# at the zoom Next sets (walk 17).
CURRENT_TILE_COLOR, CURRENT_TILE_WIDTH = "yellow", 5
# The engine's review boxes never overlap, but they may touch: an outline drawn on a box's edge, half its
# stroke outside the box, then lies on (or crosses) its neighbour's. The selected box's stroke runs just outside its
# pixels, so the region Next shows is seen whole, rim included, and no other frame lies on it: the others run just
# inside their own boxes' pixels (TILE_WIDTH screen pixels, a fraction of an image pixel at Next's zoom), so no two
# frames overlap and none covers another region's tissue.
NO_REGIONS_LEFT = ("No review regions left on this image: every suggested region was accepted. Draw a "
                   "rectangle or polygon (Draw) to accept more, or predict again with another model.")


#: The Shapes layer that frames the accepted region clicked in the accepted-region list (live or withdrawn):
#: its role, name suffix, and colour, black: apart from the gland outlines (green, azure, orange, rose), the red
#: accepted boxes, cyan / yellow review boxes, magenta gland box and green uncertainty tint (it was orange, like
#: a gland outline: walk). Its label is drawn above the frame, outside it, not over the glands inside.
SHOWN_ROLE, SHOWN_SUFFIX, SHOWN_COLOR, SHOWN_WIDTH = "shown region", "shown region", "black", 4  # screen pixels
#: The label's size (screen points) and the gap between the frame and the label's baseline (screen pixels).
SHOWN_TEXT_SIZE, SHOWN_TEXT_GAP = 10, 3
#: What every withdrawn row of the accepted-region list starts with (:func:`withdrawn_mark`).
WITHDRAWN_MARK = "[withdrawn"
#: A space a list row does not wrap at (:func:`tile_row`).
NBSP = "\u00a0"


def box_text(bbox: Sequence[int]) -> str:
    """A pixel box (y0, x0, y1, x1) as the panel's lists and status line give it, the same way everywhere:
    ``163 x 128 px at x 230, y 394`` (width x height, then the top-left corner's x and y)."""
    y0, x0, y1, x1 = (int(v) for v in bbox)
    return f"{x1 - x0} x {y1 - y0} px at x {x0}, y {y0}"


def tile_row(rank: int, score: float, bbox: Sequence[int]) -> str:
    """A row of "Look here next": ``1. score 0.69, 163 x 128 px at x 230, y 394``, its rank and score, its size and
    its corner each held on one line by non-breaking spaces (walk: at the dock's width a row wrapped inside a
    coordinate pair, "at x 230, y" above "394"); it wraps only between the three."""
    size, corner = box_text(bbox).split(" at ")
    return " ".join(part.replace(" ", NBSP) for part in (f"{rank}. score {score:.2f},", size, f"at {corner}"))


def withdrawn_mark(record: RegionRecord, now: Optional[Any] = None) -> str:
    """The start of a withdrawn region's row: who withdrew it and when, short (``[withdrawn 18:24 by root] ``, local
    time); the tooltip and the status line give the date in full."""
    when = f" {short_when(record.withdrawn_at, now)}" if record.withdrawn_at else ""
    who = f" by {record.withdrawn_by}" if record.withdrawn_by else ""
    return f"{WITHDRAWN_MARK}{when}{who}] "


def withdrawn_note(record: RegionRecord, full: bool = True, now: Optional[Any] = None) -> str:
    """Who withdrew a region and when: in full for a tooltip (``withdrawn 2026-11-30 18:24 UTC by root``), short for
    the status line (``full=False``: ``withdrawn 18:24 by root``, as the row says it: walk 22 read the row's
    "[withdrawn 06:31 by root]" and the status line's "withdrawn 2026-12-03 06:31 UTC by root" at once); local time."""
    when = "" if not record.withdrawn_at else \
        f" {full_when(record.withdrawn_at) if full else short_when(record.withdrawn_at, now)}"
    who = f" by {record.withdrawn_by}" if record.withdrawn_by else ""
    return f"withdrawn{when}{who}"


def box_inside(inner: Sequence[int], outer: Sequence[int]) -> bool:
    """Whether the box ``inner`` (y0, x0, y1, x1) lies wholly inside ``outer``."""
    return (inner[0] >= outer[0] and inner[1] >= outer[1] and inner[2] <= outer[2] and inner[3] <= outer[3])


def overlapping(record: RegionRecord, records: Sequence[RegionRecord]) -> List[RegionRecord]:
    """The live regions of ``records`` of the same image as ``record`` (not itself) whose boxes share pixels with
    its box."""
    return [r for r in records if r.region_id != record.region_id and not r.withdrawn
            and r.image_hash == record.image_hash and boxes_overlap(tuple(r.bbox), tuple(record.bbox))]


def _accepted_text(other: RegionRecord, whole: Optional[Sequence[int]], now: Optional[Any]) -> str:
    """``(accepted whole at 06:31)`` / ``(accepted at 06:31)``: how an overlap note names the other region."""
    how = "accepted whole" if whole is not None and tuple(other.bbox) == tuple(whole) else "accepted"
    return f"({how} at {short_when(other.created, now)})"


def _held_note(a: RegionRecord, b: RegionRecord) -> str:
    """When one of two overlapping regions is held out for validation and the other trains: say so."""
    if a.holdout == b.holdout:
        return ""
    held, trains = (a, b) if a.holdout else (b, a)
    return f" {held.region_id} is held out for validation, yet {trains.region_id} trains on the tissue they share."


def overlap_note(record: RegionRecord, records: Sequence[RegionRecord], whole: Optional[Sequence[int]] = None,
                 now: Optional[Any] = None) -> str:
    """What the status line says after ``record`` was accepted (or restored) over live regions of its image
    (walk 22: a rectangle drawn inside an image accepted whole was stored silently as a region of its own). What
    happens is said as the store and the retraining do it: each region is a training pair of its own, its box with
    the corrected mask it was stored with (:func:`~napari_cdma.project.retrain_worker.training_pairs`), so where two
    boxes overlap the pixels are trained twice, once with each mask, and where those masks differ the model is taught
    both; a reopened store pastes the regions in id order, the highest id's mask on top. ``whole``: the image's box
    (a region with that box is "accepted whole"). "" when it overlaps none."""
    others = overlapping(record, records)
    if not others:
        return ""
    parts = []
    for other in others:
        if box_inside(record.bbox, other.bbox):
            relation = "lies inside"
        elif box_inside(other.bbox, record.bbox):
            relation = "covers"
        else:
            relation = "overlaps"
        parts.append(f"{relation} {other.region_id} {_accepted_text(other, whole, now)}")
    ids = [record.region_id, *(o.region_id for o in others)]
    both = "both train" if len(others) == 1 else "all train"
    note = (f"{record.region_id} {', '.join(parts)}: {both}, each with the mask it was stored with (where the masks "
            f"differ, training is taught both); a reopened store shows {max(ids)}'s where they overlap.")
    return note + "".join(_held_note(record, o) for o in others)


def still_trained_note(record: RegionRecord, records: Sequence[RegionRecord], whole: Optional[Sequence[int]] = None,
                       now: Optional[Any] = None) -> str:
    """What the status line says after ``record`` was withdrawn while live regions of its image overlap it (walk 22:
    withdrawing r0001 left its edit in training through r0002, accepted whole after it): they still train (or, held
    out, score) that tissue with the masks they were stored with. "" when none overlaps it."""
    notes = []
    for other in overlapping(record, records):
        use = "is still scored on" if other.holdout else "still trains"
        what = "that tissue" if box_inside(record.bbox, other.bbox) else "part of that tissue"
        notes.append(f"{other.region_id} {_accepted_text(other, whole, now)} {use} {what}, with the mask it was "
                     f"stored with (which holds {record.region_id}'s edits if they were made before it was accepted): "
                     f"withdraw {other.region_id} too to take it out.")
    return " ".join(notes)


#: What the review buttons say they do (their tooltip while enabled); :data:`NEEDS` what they need first.
TIPS = {
    "prev": "Show the previous review region",
    "next": "Show the next review region (most uncertain first)",
    "accept": "Store the selected region's corrected mask in the project",
    "draw": "Add a Shapes layer and start drawing rectangles",
    "accept_drawn": "Store the shapes drawn in the Drawn layer (the selected ones, or all), one region each",
    "accept_image": "Store the whole image's corrected mask in the project as one region",
    "withdraw": "Take the selected accepted region out of training and validation; the store keeps it "
                "(Show withdrawn lists it, Restore brings it back)",
    "restore": "Make the selected withdrawn region count again for training (or validation, if held out)",
}
NEEDS = {
    "open": "Open an H&E image and predict it first (Predict, above).",
    "predict": "Predict an image first (Predict, above).",
    "none_left": "No review region left on this image: draw one (Draw) or accept the whole image.",
    "select_tile": "Select a review region first (Next, or click one in the list).",
    "draw": "Draw a rectangle or polygon first (Draw), or choose a Shapes layer of your own in Drawn.",
    "select_region": "Select an accepted region in the list first (accept one when the list is empty).",
    "is_withdrawn": "The selected region is withdrawn already: Restore makes it count again.",
    "select_withdrawn": "Select a withdrawn region first (tick Show withdrawn to list them).",
    "not_withdrawn": "The selected region is not withdrawn.",
    "slide": "A whole slide is on screen: its review regions are in the Whole slide panel (hide or close it to "
             "review an image here).",
    "slide_edit": "A whole slide is on screen: its own windows are drawn and accepted in the Whole slide panel "
                  "(Edit window, Accept window); hide or close the slide to draw on or accept an image here.",
}


def hidden_note(image: str, shown: str) -> str:
    """What Draw and the accept buttons need while the corrections layer is of ``image``, hidden, and another image,
    ``shown``, is on screen (walk: Accept whole image stored a hidden image's unreviewed prediction, and a rectangle
    drawn over the image on screen was stored as a region of the hidden one)."""
    return (f"The corrections layer is of '{image}', which is hidden; '{shown}' is on screen. Choose '{image}' in "
            f"Predict to review it, or predict '{shown}' to correct it.")


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
    if isinstance(layer, Image) and getattr(layer, "multiscale", False):
        return (f"'{name}' is a multiscale image (a slide pyramid): review regions of a slide opened "
                "with this plugin are listed in the Whole slide panel.")
    if input_hw(layer) is None:
        if isinstance(layer, Image):  # why, as Predict says it (a map, a mask, a one-channel stack: review 18)
            return f"{not_input_note(layer)} Choose an H&E image in Predict to see its review regions."
        return (f"'{name}' is not an RGB or greyscale H&E image: choose one in Predict to see its review regions.")
    return f"Predict '{name}' to see its review regions."


def of_a_slide(layer: Any) -> bool:
    """Whether ``layer`` belongs to a whole slide (the reader's slide, its prediction store's layers, the Whole slide
    panel's own: its metadata names the slide or the store)."""
    meta = getattr(unwrap_layer(layer), "metadata", None) or {}
    return any(meta.get(k) for k in SLIDE_META_KEYS)


def is_slide(layer: Any) -> bool:
    """Whether ``layer`` is a whole slide the plugin's reader opened (an RGB image naming its slide in its
    metadata), not a layer of its prediction store nor the Whole slide panel's own."""
    return (isinstance(layer, Image) and bool(getattr(layer, "rgb", False))
            and bool((getattr(layer, "metadata", None) or {}).get(SLIDE_KEY)) and not is_derived(layer))


def slide_on_screen(viewer: Any) -> Any:
    """The whole slide the canvas shows, or None: the topmost visible of the open slides and images the dock
    predicts is a slide (opened over the images, or the images under it hidden). The Review panel is then about
    no image of its own: a slide is reviewed in the Whole slide panel."""
    from ._widget_predict import predictable  # imported when used, as in focus_owner

    for layer in reversed(list(viewer.layers)):
        if not getattr(layer, "visible", False):
            continue
        if is_slide(layer):
            return layer
        if predictable(layer):
            return None
    return None


def slide_note(slide_name: str, aside: Optional[str] = None) -> str:
    """What the Review panel says while the whole slide ``slide_name`` is on screen; ``aside``: the image whose
    review regions it listed before (hidden under the slide), listed again once the slide is hidden or closed."""
    note = (f"The whole slide '{slide_name}' is on screen: its review regions and accepted windows are in the "
            "Whole slide panel.")
    if aside:
        note += f" Hide or close the slide to review '{aside}' here."
    return note


def readable_list(widget: Any) -> None:
    """Let a QListWidget's rows wrap at the dock's width (no horizontal scrollbar to hide their ends);
    a word longer than the width is elided in the middle, and each row's full text is its tooltip."""
    widget.setWordWrap(True)
    widget.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    widget.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    widget.setResizeMode(type(widget).ResizeMode.Adjust)
    widget.setUniformItemSizes(False)


def review_frames(tiles: List[Tuple[float, BBox]], row: int = -1) -> Dict[str, Any]:
    """The review regions' frames (:func:`~napari_cdma._layers.frames_of`): the selected one (``row``)
    :data:`CURRENT_TILE_WIDTH` screen pixels just outside its pixels, the others :data:`TILE_WIDTH` just inside
    theirs (touching boxes' outlines neither overlap nor cross)."""
    return frames_of([b for _, b in tiles], [CURRENT_TILE_WIDTH if i == row else TILE_WIDTH for i in range(len(tiles))],
                     [i == row for i in range(len(tiles))])


def show_review_outlines(viewer: Any, image_name: str, tiles: List[Tuple[float, BBox]], row: int = -1) -> Any:
    """Add or update the image's Shapes layer of review regions, framed as :func:`review_frames` says."""
    return show_frames(viewer, image_name, "tiles", review_frames(tiles, row), TILES_STYLE)


def label_offset(viewer: Any, rect: Any, image_hw: Optional[Tuple[int, int]] = None,
                 width: Optional[float] = None) -> List[float]:
    """The shift (data pixels, y then x) of a frame's label, anchored at the upper-left corner of the frame ``rect``
    (its corners, y x; its stroke ``width`` data pixels, default :data:`SHOWN_WIDTH` screen pixels): just above the
    frame at the viewer's zoom, outside it, not over the glands it frames; just below it when the image
    (``image_hw``) has no room above (a region at the image's top: a label off the image, on the canvas, was
    unreadable); inside its top edge when the image has room for neither."""
    zoom = float(getattr(scene_camera(viewer), "zoom", 1.0) or 1.0)
    rect = np.asarray(rect, float)
    top, bottom = float(rect[:, 0].min()), float(rect[:, 0].max())
    # napari draws an upper-left label with its baseline on the anchor (the text rises from it, over the stroke)
    width = SHOWN_WIDTH / zoom if width is None else float(width)
    stroke, gap, text = width / 2.0, SHOWN_TEXT_GAP / zoom, SHOWN_TEXT_SIZE * 1.5 / zoom
    if image_hw is None or top - stroke - gap - text >= -0.5:
        return [-(stroke + gap), 0.0]
    if bottom + stroke + gap + text <= image_hw[0] - 0.5:
        return [bottom - top + stroke + gap + text, 0.0]
    return [stroke + gap + text, 0.0]


def image_hw(layer: Any) -> Optional[Tuple[int, int]]:
    """(H, W) of an image layer (its full resolution), None if unknown."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = tuple(getattr(data, "shape", ()))
    return (int(shape[0]), int(shape[1])) if len(shape) >= 2 else None


def canvas_hw(viewer: Any) -> Tuple[int, int]:
    """Canvas (height, width) in screen pixels."""
    canvas = getattr(viewer, "canvas", None)
    size = getattr(canvas, "size", None)
    return (int(size[0]), int(size[1])) if size is not None else (600, 800)


#: An image's own layers shown with it when the review brings back an image that was hidden (what a Predict shows):
#: its prediction, uncertainty, review boxes, accepted boxes and the frame of a region shown; its accepted corrections
#: too when it has no prediction layer (which would show them pasted in). Hidden maps (disagreement, ...) stay hidden.
FOCUS_ROLES = ("prediction", "uncertainty", "tiles", "accepted", SHOWN_ROLE)
#: how the name of an image's Shapes layer of drawn regions ends (:meth:`ReviewPanel.start_drawing`)
DRAWN_SUFFIX = names_for("")["drawn"]


def focus_owner(layer: Any) -> Optional[str]:
    """The image a layer belongs to for :meth:`ReviewPanel.focus`: an image the dock can predict (its own name), or
    the image named in a plugin layer's metadata; None for the others (the user's own layers, a slide's, copies
    detached at a store switch), which the review never hides or shows."""
    from ._widget_predict import predictable  # imported when used, as in ReviewPanel._has_image

    meta = getattr(layer, "metadata", None) or {}
    if any(meta.get(k) for k in SLIDE_META_KEYS):
        return None
    if is_derived(layer):
        image = meta.get(IMAGE_KEY)
        return str(image) if image else None
    if isinstance(layer, Shapes) and layer.name.endswith(DRAWN_SUFFIX) and len(layer.name) > len(DRAWN_SUFFIX):
        # "<image> drawn regions" (Draw, ReviewPanel.start_drawing): hidden and shown with its image (walk: testA_1's
        # rectangles stayed on screen over testA_2)
        return layer.name[:-len(DRAWN_SUFFIX)]
    return layer.name if predictable(layer) else None


#: Width of the shapes drawn with Draw, screen pixels at every zoom (walk 18: 3 image pixels were 13 screen pixels at
#: Next's zoom, wider than the selected region's frame, over the tissue at the rectangle's edge).
DRAWN_WIDTH = 3.0
#: Colour of the shapes drawn with Draw: blue, a colour none of the dock's overlays has (walk: they were yellow, the
#: selected review region's frame, and a drawn rectangle looked like a selected suggestion). Taken are red (accepted),
#: cyan / yellow (review boxes), black (a region shown), magenta (the gland box), deep green (the uncertainty tint) and
#: green, azure, orange and rose (gland outlines). On the GlaS images pure blue differs from every tissue pixel
#: (CIELAB distance above 69 for 95 % of them: darker than eosin pink, bluer than haematoxylin purple) and from azure
#: by its darkness.
DRAWN_COLOR = "blue"


def fit_drawn(viewer: Any) -> None:
    """Keep the shapes of each image's drawn-regions layer (Draw) :data:`DRAWN_WIDTH` screen pixels wide: their width
    set again once the zoom took it out of :data:`~._layers.FRAME_SLACK` (a user's own Shapes layer is left as it
    is)."""
    zoom = float(scene_camera(viewer).zoom)
    width = DRAWN_WIDTH / zoom
    for layer in viewer.layers:
        if not isinstance(layer, Shapes) or is_derived(layer) or focus_owner(layer) is None:
            continue
        if not FRAME_SLACK[0] <= float(layer.current_edge_width) / width <= FRAME_SLACK[1]:
            layer.current_edge_width = width
            if len(layer.data):
                layer.edge_width = [width] * len(layer.data)


def world_box(layer: Any) -> Optional[Tuple[float, float, float, float]]:
    """The world box ``(y0, x0, y1, x1)`` a layer covers on the canvas (last two axes), None if unknown.

    From napari's ``layer.extent.world``: for an image-like layer (Image, Labels) its pixels' outer edges (napari
    puts pixel centres on the extent's corners: pixel ``i`` spans ``[i - 0.5, i + 0.5]`` times the scale), a
    multiscale layer's at full resolution; for other layers (shapes, points) the extent of their coordinates.
    """
    try:
        extent = layer.extent
        box = np.asarray(extent.world, dtype=float)
        step = np.asarray(extent.step, dtype=float)
    except Exception:  # a layer without an extent
        return None
    if box.ndim != 2 or box.shape[0] != 2 or box.shape[1] < 2:
        return None
    lo, hi = box[0, -2:], box[1, -2:]
    if isinstance(layer, (Image, Labels)) and step.size >= 2:
        half = 0.5 * np.abs(step[-2:])
        lo, hi = lo - half, hi + half
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def overlaps(a: Any, b: Any) -> bool:
    """Whether two layers' world boxes (:func:`world_box`) overlap on the canvas (unknown: True). GlaS images all
    lie at the origin."""
    box_a, box_b = world_box(a), world_box(b)
    if box_a is None or box_b is None:
        return True
    return boxes_overlap(box_a, box_b)


def data_box_world(layer: Any, bbox: Sequence[int]) -> Optional[Tuple[float, float, float, float]]:
    """The world box ``(y0, x0, y1, x1)`` the pixels ``bbox`` (end exclusive) of ``layer`` cover (None if unknown)."""
    y0, x0, y1, x1 = (float(v) for v in bbox)
    try:
        a = np.asarray(layer.data_to_world((y0 - 0.5, x0 - 0.5)), dtype=float)[-2:]
        b = np.asarray(layer.data_to_world((y1 - 0.5, x1 - 0.5)), dtype=float)[-2:]
    except Exception:  # a layer that cannot map its pixels
        return None
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def covered_by(viewer: Any, layer: Any, bbox: Optional[Sequence[int]] = None,
               skip: Optional[str] = None) -> Optional[str]:
    """The name of the topmost image lying over ``layer`` on screen, or None: a shown image the dock can predict
    (the user's H&E images, not the dock's maps nor a slide), not transparent, above ``layer`` in the layer list, whose
    extent overlaps ``layer``'s (or, with ``bbox``, those pixels of ``layer``); not the image named ``skip`` (a
    corrections layer's own image). Walk 25: testB_5's image, shown above
    testB_1, hid it, and Accept whole image stored testB_1 unseen."""
    from ._widget_predict import predictable  # imported when used, as in focus_owner

    layers = list(viewer.layers)
    if layer not in layers:
        return None
    area = data_box_world(layer, bbox) if bbox is not None else world_box(layer)
    for other in reversed(layers[layers.index(layer) + 1:]):
        if other is layer or other.name in (getattr(layer, "name", None), skip) or not other.visible:
            continue
        if float(getattr(other, "opacity", 1.0)) <= 0 or not predictable(other):
            continue
        box = world_box(other)
        if area is None or box is None or boxes_overlap(area, box):
            return other.name
    return None


def hiding_labels(viewer: Any, labels: Any, image: Optional[str], bbox: Optional[Sequence[int]] = None) -> Any:
    """The topmost layer that hides the corrections layer ``labels`` on screen, or None: a shown, not transparent
    image above it in the layer list whose extent overlaps it (with ``bbox``: those pixels of it), the image ``image``
    it corrects included, and any image of the user's (a slide, a grey or float image the dock does not predict); not
    the dock's own maps (the uncertainty tint lies over the glands by design) nor a copy detached at a store switch.
    Walk 26: testA_1 dragged above its own prediction covered it, and Accept whole image stored a stroke nobody saw."""
    layers = list(viewer.layers)
    if labels not in layers:
        return None
    area = data_box_world(labels, bbox) if bbox is not None else world_box(labels)
    for other in reversed(layers[layers.index(labels) + 1:]):
        if not isinstance(other, Image) or not other.visible or float(getattr(other, "opacity", 1.0)) < SEE_THROUGH:
            continue  # hidden, or see-through: the glands show under it
        if str(getattr(other, "blending", "")) == "additive":
            continue  # added onto what lies under it: the glands show through
        if other.name != image and (is_derived(other) or is_detached(other)):
            continue
        box = world_box(other)
        if area is None or box is None or boxes_overlap(area, box):
            return other
    return None


#: an image above the corrections layer at less than this opacity leaves the glands to be seen (:func:`hiding_labels`)
SEE_THROUGH = 0.5


def under_note(labels: str, cover: str) -> str:
    """What Draw and the accept buttons need while the corrections layer ``labels`` lies under the image ``cover``
    (:func:`hiding_labels`)."""
    return (f"'{labels}', the corrections Accept stores, lies under '{cover}': move '{labels}' above '{cover}' in the "
            f"layer list (or hide '{cover}') to see what you accept or draw.")


def top_image(viewer: Any, layer: Any, hidden: Optional[Dict[str, Set[Any]]] = None) -> Optional[str]:
    """The image on top over the image layer ``layer`` (it, or another): of the images the dock can predict whose
    extent overlaps ``layer``'s (``layer``'s own included), the one whose image layer or prediction layer lies highest
    in the layer list, counting a layer shown, or hidden by :meth:`ReviewPanel.focus` to show another image
    (``hidden``: its :attr:`~ReviewPanel.hidden_by_focus`), not one the user hid. A reorder of the layer list that
    changes it is followed as an eye icon turned on is (walk 26: testA_2 dragged above testA_1 covered it; the dock kept
    describing testA_1)."""
    from ._widget_predict import predictable  # imported when used, as in focus_owner

    layers = viewer.layers
    if layer not in layers:
        return None
    hidden = hidden or {}
    top = None
    for other in layers:  # bottom to top: the last one counted is the top
        owner = focus_owner(other)
        if owner is None or owner not in layers or other.name not in (owner, names_for(owner)["prediction"]):
            continue
        if not (other.visible or other.unique_id in hidden.get(owner, ())) or float(other.opacity) <= 0:
            continue
        image = layers[owner]
        if image is layer or (predictable(image) and overlaps(layer, image)):
            top = owner
    return top


def covered_note(name: str, cover: str) -> str:
    """What Draw and the accept buttons need while ``name`` (the image, or its corrections layer) lies under the
    image ``cover`` (:func:`covered_by`)."""
    return (f"'{name}' is not on screen (covered by '{cover}'): choose it in Predict or hide '{cover}' before "
            "accepting or drawing.")


def separate_glands(labels: Any, bbox: BBox, inside: Optional[np.ndarray] = None) -> int:
    """Give each disconnected piece of a gland in a region its own label, in the Labels layer itself.

    A background line drawn through a gland leaves two pieces with one label; the pathologist split it,
    so each piece becomes a gland (:func:`src_model.postprocess.separate_pieces`: new labels above the
    layer's maximum, the glands around keep theirs). A piece under the engine's minimum gland size
    (:data:`src_model.gland_table.MIN_GLAND_PIXELS`) gets no label of its own: it keeps its gland's. The change is
    one step of the layer's undo history.

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
    changed = relabelled != data
    if changed.any():
        # a piece under the engine's minimum gland size (a pixel or two a split line cut off) is no gland: it keeps
        # its gland's label, pixels and all, and no new label is made of it (walk 24: Accept made 1 and 2 px specks
        # into "glands" of their own, the gland table's first rows)
        from src_model.gland_table import MIN_GLAND_PIXELS

        new_ids, sizes = np.unique(relabelled[changed], return_counts=True)
        small = new_ids[sizes < MIN_GLAND_PIXELS]
        if small.size:
            back = changed & np.isin(relabelled, small)
            relabelled[back] = data[back]
            changed &= ~back
    changed = np.nonzero(changed)
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
        image_label: names a region's image while it is not open (default: its file name); an open image is named
            by its layer's name (:meth:`ReviewPanel.image_text`).
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
        self._focused: Optional[str] = None  # the image :meth:`focus` showed last (its drawn regions are offered)
        #: whether the image of that name is being brought back from a project store now (set by the dock), and the
        #: image the line says it is looking for (walk 24: "Predict '...' to see its review regions" for some 10 s
        #: of a reopen, while Predict said it was looking for the stored prediction)
        self.restoring: Optional[Callable[[str], bool]] = None
        self._looking: Optional[str] = None
        self.tiles: List[Tuple[float, BBox]] = []
        self.last_message = ""
        #: what the latest Accept said of edits left outside the region it stored ("" when none: walk 25)
        self._outside = ""
        #: the whole slide on screen (:func:`slide_on_screen`), None when an image (or nothing) is: while a slide is,
        #: the panel lists no image's review regions and says the slide's are in the Whole slide panel
        self.slide_name: Optional[str] = None
        #: (image name, its review regions) the panel listed when a slide came on screen, or that the dock listed
        #: meanwhile: listed again once no slide is on screen
        self._aside: Optional[Tuple[str, List[Tuple[float, BBox]]]] = None

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
        # "uncertainty 0.69" beside a legend on which 0.69 is deep green, over a box that looked barely tinted (walk 18:
        # the score is a power mean, above the box's plain mean uncertainty of 0.20)
        self.tile_list.setToolTip(
            "Regions ranked by score (width x height px at x, y): the uncertainty over the box's tissue averaged with "
            "most weight on its most uncertain pixels (a power mean), so a box with a small, "
            "very uncertain part ranks high. It is above the box's plain mean, not a value read on the legend.")
        self.prev_button = QPushButton("Previous")
        self.next_button = QPushButton("Next")
        self.accept_button = QPushButton("Accept region")
        # Regions the pathologist chooses: the chosen image's drawn regions (Draw), chosen by the dock, or a Shapes
        # layer of their own, only once they pick it in Drawn, for the image chosen then (walk 25: "my notes B5",
        # the only Shapes layer, was chosen by itself and its rectangles stored on testB_5, then on testA_1)
        self.shapes_choice: ComboBox = create_widget(annotation=Shapes, label="Drawn",
                                                     options={"choices": self._drawn_layers, "nullable": True})
        self.shapes_choice.native.setToolTip("The regions drawn with Draw on the chosen image, or a Shapes layer of "
                                             "your own once you choose it here (its selected shapes, or all of "
                                             "them, are accepted)")
        #: (unique id of a Shapes layer of the user's chosen in Drawn, the image chosen then)
        self._user_drawn: Optional[Tuple[Any, Optional[str]]] = None
        narrow_combo(self.shapes_choice.native, COMBO_CHARS)
        self.draw_button = QPushButton("Draw")
        self.accept_drawn_button = QPushButton("Accept drawn")
        self.accept_image_button = QPushButton("Accept whole image")
        self.region_list = QListWidget()
        self.region_list.setMaximumHeight(110)
        readable_list(self.region_list)
        self.region_list.setToolTip("Click a region to see it on its image (a black box)")
        #: the store's regions as last read (withdrawn ones included), region id -> record
        self.records: dict = {}
        self._moving = False  # go_to moves the view: the frames are drawn for its zoom after it (_on_zoom)
        self.shown_region: Optional[str] = None  # the region framed on its image (show_region)
        #: image name -> unique ids of its layers :meth:`focus` hid while another image was reviewed (shown again
        #: when it is reviewed or chosen again)
        self._hidden_by_focus: Dict[str, Set[Any]] = {}
        #: image name -> unique ids of all its layers when :meth:`focus` hid it: a layer of it not among them was made
        #: since (walk 25: a store switch replaces its prediction and maps) and is shown as a Predict shows it
        self._known_by_focus: Dict[str, Set[Any]] = {}
        self._names_pending = False  # the rows' image names are redone next turn (_names_changed)
        self._store_slides: Dict[str, str] = {}  # slide prediction store -> the slide file it was predicted from
        self.show_withdrawn = QCheckBox("Show withdrawn")
        self.show_withdrawn.setToolTip("List the withdrawn regions too (greyed, marked [withdrawn]): the store "
                                       "keeps them, and Restore makes one count again")
        self.withdraw_button = QPushButton("Withdraw")
        self.restore_button = QPushButton("Restore")
        self._buttons = {"prev": self.prev_button, "next": self.next_button, "accept": self.accept_button,
                         "draw": self.draw_button, "accept_drawn": self.accept_drawn_button,
                         "accept_image": self.accept_image_button, "withdraw": self.withdraw_button,
                         "restore": self.restore_button}
        self._watched_shapes: Any = None  # the Drawn layer whose shapes enable Accept drawn
        #: why what Accept and Draw act on is not on screen (:meth:`needs`), and the reason the status line said last
        self._unseen: Optional[str] = None
        self._said_unseen: Optional[str] = None
        self._unseen_pending = False
        for button in self._buttons.values():  # a click on a disabled one says what it needs (eventFilter)
            button.installEventFilter(self)
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
        accepted = QHBoxLayout()
        accepted_label = QLabel("Accepted regions:")
        accepted_label.setWordWrap(True)
        accepted.addWidget(accepted_label, 1)
        accepted.addWidget(self.show_withdrawn)
        layout.addLayout(accepted)
        layout.addWidget(self.region_list)
        region_buttons = QHBoxLayout()
        region_buttons.addWidget(self.withdraw_button)
        region_buttons.addWidget(self.restore_button)
        layout.addLayout(region_buttons)
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
        self.restore_button.clicked.connect(lambda: self.restore())
        self.show_withdrawn.toggled.connect(lambda _on: self._fill_regions())
        self.region_list.currentItemChanged.connect(lambda *_: self.update_buttons())
        self.region_list.itemClicked.connect(lambda item: self.show_region(item.data(Qt.ItemDataRole.UserRole)))
        # the frames keep their screen widths, and the label stays just above the shown frame
        scene_camera(self.viewer).events.zoom.connect(self._on_zoom)
        self.region_list.itemActivated.connect(lambda item: self.show_region(item.data(Qt.ItemDataRole.UserRole)))
        self.tile_list.currentRowChanged.connect(lambda _row: self.update_buttons())
        self.labels_choice.changed.connect(lambda *_: self.update_buttons())
        self.shapes_choice.changed.connect(lambda *_: self._watch_shapes())
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed):
            ev.connect(lambda _e=None: (self.labels_choice.reset_choices(), self.shapes_choice.reset_choices()))
            # the dock updates its images' state in the same event, after this panel: the buttons follow next turn
            ev.connect(lambda _e=None: QTimer.singleShot(0, self.update_buttons))
            ev.connect(self._names_changed)  # a region's image opened or closed: its row names it so
        # the slide on screen: after the dock's own handlers of the same event (it may list another image)
        viewer.layers.events.inserted.connect(self._on_layer_inserted)
        for ev in (viewer.layers.events.removed, viewer.layers.events.moved):
            ev.connect(lambda _e=None: QTimer.singleShot(0, self.check_screen))
        viewer.layers.events.removed.connect(self._on_removed)
        for layer in viewer.layers:
            layer.events.visible.connect(self._on_visible)
            layer.events.name.connect(self._names_changed)
        self._watch_shapes()
        self.update_buttons()
        self.check_screen()

    def _labels_layers(self, _widget: Any = None) -> List[Tuple[str, Any]]:
        """Labels layers whose corrections Accept can store: not a whole slide's (its glands, its edit window:
        the Whole slide panel accepts those), nor a copy detached from the store left at a switch (walk 17: it stayed
        chosen, with that store's corrections); each listed as :func:`corrections_label` names it."""
        return [(corrections_label(ly), ly) for ly in self.viewer.layers
                if isinstance(ly, Labels) and not getattr(ly, "multiscale", False) and not is_detached(ly)
                and not any((ly.metadata or {}).get(k) for k in SLIDE_META_KEYS)]

    def _drawn_layers(self, _widget: Any = None) -> List[Any]:
        """Shapes layers Accept drawn can take: the user's, not the plugin's, nor drawn regions detached from the
        store left at a switch (drawn over that store's corrections); of the images' own drawn regions (Draw), only
        those of the image reviewed (walk 26: testA_1's were offered while testB_1 was reviewed)."""
        images = {None, self._target()[0], self.image_name, self._focused}  # during a switch: the image shown next
        return [ly for ly in self.viewer.layers if isinstance(ly, Shapes) and not is_derived(ly)
                and not is_detached(ly) and focus_owner(ly) in images]

    # ------------------------------------------------------------------ tiles
    def set_tiles(self, image_name: str, ranked: List[Tuple[float, BBox]]) -> None:
        """Show the ranked tiles of an image (tiles without tissue, score 0, are left out); its
        prediction layer becomes the layer of corrections. While a whole slide is on screen
        (:func:`slide_on_screen`) they are set aside, listed once it is hidden or closed: the panel never names
        an image under the slide as the one reviewed (pathologist walk)."""
        slide = slide_on_screen(self.viewer)
        if slide is not None:
            self._to_slide(slide, (image_name, list(ranked)))
            return
        self.slide_name, self._aside = None, None
        self.image_name, self._looking = image_name, None
        self.labels_choice.reset_choices()
        prediction = names_for(image_name)["prediction"]
        if prediction in self.viewer.layers:
            self.labels_choice.value = self.viewer.layers[prediction]
        self.shapes_choice.reset_choices()  # the drawn regions of this image, not those of the one reviewed before
        useful = [t for t in ranked if t[0] > 0] or list(ranked)
        self._next_row = 0
        self._fill_tiles([(float(s), tuple(int(v) for v in b)) for s, b in useful])
        # the list is now this image's: an earlier "Predict ... to see its review regions" no longer holds
        if self.tiles:
            self._say(f"{len(self.tiles)} review region(s) of '{image_name}', most uncertain first: Next shows each.")
        elif getattr(self._get_state(image_name), "ranked", None):  # it had some: all accepted (a reopened store)
            self._say(NO_REGIONS_LEFT.replace("on this image", f"on '{image_name}'"))
        else:
            self._say(f"'{image_name}' has no uncertain region to review.")

    def clear_tiles(self, image_name: Optional[str] = None) -> None:
        """Empty "Look here next": the list belongs to the image on screen, and ``image_name`` (None:
        no image) has no prediction here yet or was closed."""
        self.image_name = None
        self._next_row = 0
        self._fill_tiles([])
        self.slide_name, self._aside = None, None  # the dock follows another image: none is set aside
        if image_name and self.restoring is not None and self.restoring(image_name):
            self._looking = image_name
            self._say(f"'{image_name}': looking for its review regions in the project store...")
            return
        self._looking = None
        self._say(no_regions_note(self.viewer, image_name))

    def restore_ended(self) -> None:
        """A reopen has shown all its layers: a line still looking for an image's review regions says what holds now
        (the regions, when the store had a prediction of it, were listed by :meth:`set_tiles` already)."""
        name, self._looking = self._looking, None
        if name is not None and not self.tiles:
            self._say(no_regions_note(self.viewer, name))

    # ------------------------------------------------------------------ the slide on screen
    def _on_layer_inserted(self, event: Any = None) -> None:
        layer = getattr(event, "value", None)
        if layer is not None:
            layer.events.visible.connect(self._on_visible)
            layer.events.name.connect(self._names_changed)
        QTimer.singleShot(0, self.check_screen)

    def _on_visible(self, _event: Any = None) -> None:
        QTimer.singleShot(0, self.check_screen)

    def check_screen(self) -> None:
        """Follow what the canvas shows: a whole slide came on screen (:func:`slide_on_screen`: opened over the
        image reviewed, or that image hidden) while an image's regions are listed: they are set aside and the panel
        says the slide is reviewed in the Whole slide panel (before: it still named the image under the slide, and
        listed its regions); the slide hidden or closed, the image set aside is listed again, if it is still open
        and predicted. With no image's regions listed (the image chosen in Predict has no prediction: "Predict
        '<image>' ..."), the panel's note about the chosen image stays."""
        try:
            slide = slide_on_screen(self.viewer)
        except RuntimeError:  # the viewer is being closed
            return
        if slide is not None:
            if self.image_name is not None:
                self._to_slide(slide, (self.image_name, list(self.tiles)))
            elif self.slide_name is not None and slide.name != self.slide_name:
                self._to_slide(slide, None)
            else:
                self.update_buttons()  # Draw and the accept buttons are off while a slide is on screen
            return
        if self.slide_name is None:
            self.update_buttons()  # a slide hidden or closed while no image's regions were listed: they may act again
            return
        aside, self.slide_name, self._aside = self._aside, None, None
        if aside is not None and self.image_name is None:
            name, ranked = aside
            if name in self.viewer.layers and self._get_state(name) is not None:
                self.set_tiles(name, ranked)
                return
        self.update_buttons()
        self._say("")

    def _to_slide(self, slide: Any, aside: Optional[Tuple[str, List[Tuple[float, BBox]]]]) -> None:
        """List no image's regions while the whole slide ``slide`` is on screen; ``aside``: the image and regions
        to list again once it is not (None: those set aside before, if any)."""
        if aside is not None:
            self._aside = aside
        self.slide_name = slide.name
        self.image_name = None
        self._next_row = 0
        if self.tiles:
            self._fill_tiles([])
        else:
            self.update_buttons()
        self._say(slide_note(slide.name, self._aside[0] if self._aside else None))

    def _fill_tiles(self, tiles: List[Tuple[float, BBox]]) -> None:
        self.tiles = list(tiles)
        self.tile_list.clear()
        for k, (score, bbox) in enumerate(self.tiles, start=1):  # the rank and what is uncertain there
            self.tile_list.addItem(tile_row(k, score, bbox))
        self.update_buttons()

    # ------------------------------------------------------------------ buttons
    def _prediction_state(self) -> Optional["ImageState"]:
        """The dock's state of the image whose review regions are listed (None: it has no prediction here)."""
        return self._get_state(self.image_name) if self.image_name else None

    def _has_image(self) -> bool:
        """Whether an image the dock could predict is open (one the Predict chooser lists)."""
        from ._widget_predict import predictable

        return any(predictable(ly) for ly in self.viewer.layers)

    def needs(self) -> dict:
        """Button key (:data:`TIPS`) -> what it needs before it can act (a :data:`NEEDS` text), or None when it
        can act now."""
        target, labels, state = self._target()
        predict = NEEDS["predict"] if self._has_image() else NEEDS["open"]
        # Next / Previous: the image's regions, or (all accepted) the words that none is left
        nav = None if self.tiles or self._prediction_state() is not None else \
            NEEDS["slide"] if self.slide_name is not None else predict
        blocked = self.edit_blocked(target)
        self._unseen = None  # why what Accept and Draw act on is not on screen (said on the status line: walk 26)
        if blocked is not None:
            accept = drawn = image = draw = blocked
            if state is not None and labels is not None and blocked != NEEDS["slide_edit"]:
                self._unseen = blocked
        elif state is None or labels is None:
            accept = drawn = image = draw = predict
        else:
            draw = image = None
            accept = None if self.current_bbox() is not None else \
                NEEDS["none_left"] if not self.tiles else NEEDS["select_tile"]
            shapes = self.shapes_choice.value
            drawn = NEEDS["draw"] if shapes is None or not len(shapes.data) else self.drawn_elsewhere(shapes, target)
            if drawn is None and self.user_drawn_elsewhere(shapes, target):
                drawn = NEEDS["draw"]
            unseen = self.mask_unseen()
            if unseen is not None:
                accept, drawn, image = accept or unseen, drawn or unseen, unseen
                self._unseen = unseen
        record = self.selected_record()
        if record is None:
            withdraw, restore = NEEDS["select_region"], NEEDS["select_withdrawn"]
        else:
            withdraw = NEEDS["is_withdrawn"] if record.withdrawn else None
            restore = None if record.withdrawn else NEEDS["not_withdrawn"]
        return {"prev": nav, "next": nav, "accept": accept, "draw": draw, "accept_drawn": drawn,
                "accept_image": image, "withdraw": withdraw, "restore": restore}

    def update_buttons(self) -> None:
        """Enable each button that can act now; a disabled one's tooltip says what it needs first. When Accept and
        Draw turn off because what they act on is not on screen (hidden or covered), the status line says why too,
        once the event loop has settled (walk 26: the reason was only in the tooltip, which few users hover)."""
        try:
            needs = self.needs()
            for key, button in self._buttons.items():
                need = needs[key]
                button.setEnabled(need is None)
                button.setToolTip(TIPS[key] if need is None else f"{need}\n({TIPS[key]})")
        except RuntimeError:  # the panel's Qt objects are gone (the dock or the viewer closed)
            return
        if self._unseen != self._said_unseen and not self._unseen_pending:
            self._unseen_pending = True
            QTimer.singleShot(0, self._say_unseen)

    def _say_unseen(self) -> None:
        """Say on the status line why Accept and Draw are off (:attr:`_unseen`), if that still holds now and was not
        said yet; once it no longer holds, a line still saying it says that they act again."""
        self._unseen_pending = False
        try:
            self.needs()
        except RuntimeError:  # the panel's Qt objects are gone
            return
        reason, said = self._unseen, self._said_unseen
        if reason == said:
            return
        self._said_unseen = reason
        if reason is not None:
            self._say(reason)
        elif said is not None and self.last_message == said:
            self._say("What Accept stores is on screen again: Accept and Draw act on it.")

    def eventFilter(self, obj: Any, event: Any) -> bool:
        """A click on a disabled button says on the status line what it needs (walk 26: nothing happened)."""
        if event.type() == QEvent.Type.MouseButtonRelease and isinstance(obj, QPushButton) and not obj.isEnabled():
            key = next((k for k, b in self._buttons.items() if b is obj), None)
            need = self.needs().get(key) if key is not None else None
            if need:
                self._say(need)
        return super().eventFilter(obj, event)

    def _watch_shapes(self) -> None:
        """Accept drawn follows the shapes of the chosen Drawn layer (enabled once it holds one). A layer of the
        user's chosen is remembered with the image chosen then: it is taken for that image only."""
        layer = self.shapes_choice.value
        if layer is not None and focus_owner(layer) is None:
            if self._user_drawn is None or self._user_drawn[0] != layer.unique_id:
                self._user_drawn = (layer.unique_id, self._target()[0])
        else:
            self._user_drawn = None
        old = self._watched_shapes
        if old is not layer:
            if old is not None:
                with contextlib.suppress(Exception):  # not (or no longer) connected
                    old.events.data.disconnect(self._on_shapes_changed)
            if layer is not None:
                layer.events.data.connect(self._on_shapes_changed)
            self._watched_shapes = layer
        self.update_buttons()

    def _on_shapes_changed(self, _event: Any = None) -> None:
        self.update_buttons()

    def _tiles_layer(self) -> Any:
        name = names_for(self.image_name)["tiles"] if self.image_name else None
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _highlight(self, row: int) -> None:
        """Draw the selected review box thick and yellow just outside its pixels, the others thin and cyan
        inside theirs (per-shape edges; :func:`review_frames`)."""
        layer = self._tiles_layer()
        if layer is None and self.tiles and self.slide_name is None and self.image_name in self.viewer.layers:
            # the user deleted the layer: drawn again, or Next named a region and framed nothing (walk 26); the brush
            # stays on the glands, not on the new Shapes layer napari makes active
            layer = show_review_outlines(self.viewer, self.image_name, self.tiles, row)
            self._brush_to_corrections(force=True)
        if layer is None or len(layer.data) != len(self.tiles) or not len(layer.data):
            return
        drawn = (layer.metadata or {}).get(FRAMES_KEY) or {}
        wanted = review_frames(self.tiles, row)
        if any(drawn.get(k) != wanted[k] for k in ("edges", "px", "outside")):  # drawn for another selection
            layer = show_review_outlines(self.viewer, self.image_name, self.tiles, row)
        layer.edge_color = [CURRENT_TILE_COLOR if i == row else TILE_COLOR for i in range(len(self.tiles))]
        # the selected frame over the others: a touching neighbour's cyan frame, inside that neighbour's pixels, lies
        # where the yellow one runs (just outside the selected box) and hid most of its edge there
        order = [int(i == row) for i in range(len(self.tiles))]
        if list(layer.z_index) != order:
            layer.z_index = order

    def _on_removed(self, event: Any = None) -> None:
        """A layer of the dock's was deleted: napari makes another layer active, maybe a hidden one (walk 26: the
        deleted review tiles left the brush on the hidden accepted corrections); the brush goes back to the glands."""
        if is_derived(getattr(event, "value", None)):
            QTimer.singleShot(0, self._brush_to_corrections)

    def _brush_to_corrections(self, force: bool = False) -> None:
        """Make the corrections layer (shown) the active layer when the active one is hidden or none (``force``:
        whatever it is)."""
        try:
            layers = self.viewer.layers
            labels, active = self.labels_choice.value, layers.selection.active
        except RuntimeError:  # the viewer is being closed
            return
        if labels is None or labels not in layers or not labels.visible or active is labels:
            return
        if force or active is None or not active.visible:
            layers.selection.active = labels

    def _on_zoom(self, _event: Any = None) -> None:
        """The view zoomed: the frames drawn again once their widths left their screen pixels' slack
        (:func:`~napari_cdma._layers.redraw_frames`; not while :meth:`go_to` moves the view: it draws them once,
        after), then the shown frame's label placed (:meth:`_place_label`)."""
        if not self._moving:
            redraw_frames(self.viewer)
            fit_drawn(self.viewer)
        self._place_label()

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
        # Next goes on from where the review was: the region after the selected one, or (none selected: a drawn
        # region or the whole image accepted) where Next was going; walk 19: the position of the region taken off,
        # so after a drawn region's accept the first Next skipped to the least uncertain region
        anchor = row if row >= 0 else self._next_row
        after = sum(t in kept for t in self.tiles[:anchor])
        self._fill_tiles(kept)
        show_review_outlines(self.viewer, image_name, kept)
        self._highlight(-1)
        self._next_row = min(after, max(0, len(kept) - 1))
        return dropped

    def bring_back(self, image_name: Optional[str], ranked: List[Tuple[float, BBox]]) -> int:
        """List again the review regions of ``image_name`` that an accepted region covered until it was withdrawn
        (walk 17: the withdrawn tissue was tinted again but its region stayed off "Look here next"). ``ranked``: the
        image's ranked regions not covered by a live accepted region. The selected region stays selected.

        Returns:
            How many regions came back (0 when ``image_name`` is not the image listed).
        """
        if not image_name or image_name != self.image_name or self.slide_name is not None:
            return 0
        useful = [(float(s), tuple(int(v) for v in b)) for s, b in ranked if s > 0]
        back = [t for t in useful if t not in self.tiles]
        if not back:
            return 0
        selected = self.current_bbox()
        self._fill_tiles(useful)
        show_review_outlines(self.viewer, image_name, useful)
        row = next((i for i, (_, b) in enumerate(useful) if b == selected), -1)
        if row >= 0:
            self.tile_list.setCurrentRow(row)
        self._highlight(row)
        return len(back)

    def step(self, delta: int) -> None:
        """Select the next (+1) or previous (-1) tile and move the camera to it."""
        if not self.tiles and self.slide_name is not None:
            self._say(slide_note(self.slide_name, self._aside[0] if self._aside else None))
            return
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
        # the view first: selected next, the review frames are drawn once, for the new zoom (_highlight), not also
        # for the old selection as the view zooms (each redraw of a Shapes layer re-slices every layer)
        center, zoom = camera_for_tile(self.tiles[row][1], canvas_hw(self.viewer), margin=CONTEXT_MARGIN)
        camera = scene_camera(self.viewer)
        self._moving = True
        try:
            camera.center = center
            camera.zoom = zoom
        finally:
            self._moving = False
        if self._tiles_layer() is None:  # deleted by the user: framed again even when the row stays selected
            self._highlight(row)
        self.tile_list.setCurrentRow(row)
        # the view leaves an accepted region shown from its list: its row gives way, so Withdraw cannot act on it
        # while Accept region acts on this one (walk), and the status says where the view is now
        if self.region_list.currentRow() >= 0:
            self.region_list.setCurrentRow(-1)
            self.region_list.clearSelection()
        self.close_shown()  # and its black frame with it (walk 18: it stayed drawn through later work)
        box = box_text(self.tiles[row][1])
        self._say(f"Review region {row + 1} of {len(self.tiles)} of '{self.image_name}': {box}.")
        # seen on its image, not under another one
        self.focus_note(self.image_name, self.focus(self.image_name), append=True)
        redraw_frames(self.viewer)  # the other frames (accepted regions, a region shown) for the new zoom
        fit_drawn(self.viewer)

    @property
    def hidden_by_focus(self) -> Dict[str, Set[Any]]:
        """Image name -> unique ids of its layers :meth:`focus` hid to show another image, shown again when it is
        chosen again (the dock forgets a layer it hides for good)."""
        return self._hidden_by_focus

    def focus(self, image_name: Optional[str]) -> List[str]:
        """Make the image ``image_name`` what the canvas shows: the open images all lie at the origin, and a region
        of the image reviewed was shown under another image's layers (walk). The other images whose extent overlaps
        it are hidden with their layers (prediction, maps, boxes), remembered, and shown again as they were when they
        are reviewed or chosen in Predict again. The image itself is shown: the layers of it :meth:`focus` hid, or,
        if it was hidden otherwise (a reopened store's other images come back hidden), its prediction layers as a
        Predict shows them (:data:`FOCUS_ROLES`); its layers the user hid while it was on screen stay hidden. Its
        "drawn regions" layer (Draw) is hidden and shown with it, and chosen in Drawn when it is shown. The user's own
        layers, slides and detached copies are left as they are.

        Returns:
            The names of the images hidden now (none when no other image was shown over or under it).
        """
        layers = self.viewer.layers
        if not image_name or image_name not in layers:
            return []
        target = layers[image_name]
        self._focused = image_name
        groups: Dict[str, List[Any]] = {}
        for layer in layers:
            owner = focus_owner(layer)
            if owner is not None:
                groups.setdefault(owner, []).append(layer)
        if focus_owner(target) != image_name:  # not an image the dock reviews (a slide, a plugin layer)
            return []
        hidden: List[str] = []
        for other, group in groups.items():
            if other == image_name or other not in layers or not overlaps(target, layers[other]):
                continue
            shown = [ly for ly in group if ly.visible]
            if not shown:
                continue
            self._hidden_by_focus.setdefault(other, set()).update(ly.unique_id for ly in shown)
            self._known_by_focus.setdefault(other, set()).update(ly.unique_id for ly in group)
            for ly in shown:
                ly.visible = False
            hidden.append(other)
        own = groups.get(image_name, [])
        remembered = self._hidden_by_focus.pop(image_name, set())
        known = self._known_by_focus.pop(image_name, None)
        for ly in own:
            if ly.unique_id in remembered:
                ly.visible = True
        names = names_for(image_name)
        with_prediction = names["prediction"] in layers

        def as_predicted(ly: Any) -> bool:  # what a Predict shows of the image
            role = (ly.metadata or {}).get(ROLE_KEY)
            return role in FOCUS_ROLES or (role == "corrections" and not with_prediction)

        if not target.visible:
            target.visible = True
            for ly in own:
                if as_predicted(ly):
                    ly.visible = True
        elif known is not None and remembered:
            # hidden here, and layers of it made since (walk 25: a store switch and back replaced its prediction and
            # maps; its image layer, remembered, was shown again, and its new prediction stayed hidden while the
            # dock described it and accepted it): those are shown as a Predict shows them (its own main layers, not
            # another version's side layers)
            for ly in own:
                role = (ly.metadata or {}).get(ROLE_KEY)
                if (ly.unique_id not in known and as_predicted(ly)
                        and (role == SHOWN_ROLE or ly.name == names.get(str(role)))):
                    ly.visible = True
        drawn = layers[names["drawn"]] if names["drawn"] in layers else None
        chosen = getattr(self.shapes_choice.value, "unique_id", None)
        if isinstance(drawn, Shapes) and chosen != drawn.unique_id:  # its drawn regions are what Accept drawn takes
            self.shapes_choice.reset_choices()
            self.shapes_choice.value = drawn
        elif self.user_drawn_elsewhere(self.shapes_choice.value, image_name):  # picked for another image (walk 25)
            self.shapes_choice.value = None
        else:
            self.shapes_choice.reset_choices()  # another image's drawn regions are not offered (walk 26)
        return hidden

    def user_drawn_elsewhere(self, shapes: Any, image: Optional[str]) -> bool:
        """Whether ``shapes`` is a layer of the user's chosen in Drawn while another image than ``image`` was chosen
        (it is taken only for the image chosen when it was picked)."""
        pick = self._user_drawn
        return (shapes is not None and pick is not None and focus_owner(shapes) is None
                and pick[0] == getattr(shapes, "unique_id", None) and pick[1] != image)

    def focus_note(self, image_name: Optional[str], hidden: List[str], append: bool = False) -> None:
        """Say which images :meth:`focus` hid to show ``image_name`` and how to see them again (nothing if none);
        ``append``: after what the status says now."""
        if hidden:
            note = (f"'{image_name}' shown alone: " + ", ".join(f"'{n}'" for n in hidden)
                    + " hidden (they overlap it). Choose one in Predict to see it again.")
            self._say(f"{self.last_message} {note}".strip() if append else note)

    def clear_tile_selection(self) -> None:
        """Select no review region (its yellow box drawn cyan again, Accept region off) when the view leaves it for
        an accepted region (pathologist walk: Accept region stored the review region left off screen); Next then
        goes back to the region that was selected."""
        row = self.tile_list.currentRow()
        if row < 0:
            return
        self._next_row = row
        self.tile_list.setCurrentRow(-1)
        self.tile_list.clearSelection()
        self._highlight(-1)
        self.update_buttons()

    def current_bbox(self) -> Optional[BBox]:
        """The selected tile's (y0, x0, y1, x1), or None."""
        row = self.tile_list.currentRow()
        return self.tiles[row][1] if 0 <= row < len(self.tiles) else None

    # ---------------------------------------------------------------- regions
    def _say(self, message: str, error: bool = False) -> None:
        self.last_message = message
        show_message(self.status, message, error)

    def edit_blocked(self, image: Optional[str], bbox: Optional[Sequence[int]] = None) -> Optional[str]:
        """Why Draw, Accept drawn / region / whole image must not act on ``image`` (the corrections layer's) now, or
        None: nothing is accepted unseen. A whole slide is on screen and the image lies hidden under it (walk: Draw
        and Accept whole image stayed on), or another image is shown instead of it (walk: a hidden image's prediction
        was stored unseen), or over it (walk 25: testB_5's image, shown above testB_1, covered it, and Accept whole
        image stored testB_1): the image, or its corrections layer, lies under another shown image that overlaps it
        (with ``bbox``: those pixels of the image), or the corrections layer lies under its own image or an image of
        the user's (walk 26: testA_1 dragged above its prediction; :func:`hiding_labels`). The buttons
        (:meth:`needs`) and the calls from a script refuse for the same reason (:meth:`mask_unseen` adds the
        corrections layer hidden, for the accept buttons)."""
        if self.slide_name is not None or slide_on_screen(self.viewer) is not None:
            return NEEDS["slide_edit"]
        shown = self.shown_over(image)
        if shown is not None:
            return hidden_note(str(image), shown)
        layers = self.viewer.layers
        if not image or image not in layers or not layers[image].visible:
            return None  # hidden with no other image shown: its labels seen alone (shown_over)
        cover = covered_by(self.viewer, layers[image], bbox)
        if cover is not None:
            return covered_note(str(image), cover)
        labels = self.labels_choice.value
        if labels is None or labels not in layers or not labels.visible:
            return None
        over = hiding_labels(self.viewer, labels, image, bbox)  # its own image above it, or an image of the user's
        if over is not None:
            return under_note(labels.name, over.name)
        return self._outside_stored(labels, image, bbox)

    def _outside_stored(self, labels: Any, image: Optional[str], bbox: Optional[Sequence[int]]) -> Optional[str]:
        """Why an "accepted corrections" layer must not be stored over ``bbox`` (None: the whole image), or None.
        That layer holds the store's corrections inside their boxes and background everywhere else (walk 26b: with
        the prediction layer deleted it became the layer Accept stores, and a region where the model had two glands
        was stored empty); a box inside the accepted boxes (a stored correction edited again) is fine."""
        if (labels.metadata or {}).get(ROLE_KEY) != "corrections":
            return None
        state = self._get_state(image) if image else None
        h, w = labels.data.shape[:2]
        y0, x0, y1, x1 = (0, 0, h, w) if bbox is None else (int(v) for v in bbox)
        covered = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), bool)
        image_hash = getattr(state, "image_hash", None)
        for r in self.records.values():
            if r.withdrawn or not image_hash or r.image_hash != image_hash:
                continue
            ry0, rx0, ry1, rx1 = (int(v) for v in r.bbox)
            covered[max(ry0 - y0, 0):max(ry1 - y0, 0), max(rx0 - x0, 0):max(rx1 - x0, 0)] = True
        if covered.all():
            return None
        return (f"'{labels.name}' holds only the corrections already stored (inside their boxes): this box reaches "
                f"outside them, where it holds no glands. Predict '{image}' again (or Open the project store) and "
                "correct its prediction layer.")

    def mask_unseen(self) -> Optional[str]:
        """Why the accept buttons must not store the corrections layer now, or None: it is hidden (walk 25: the dock
        accepted a mask nobody could see)."""
        labels = self.labels_choice.value
        if labels is None or labels not in self.viewer.layers or labels.visible:
            return None
        return (f"'{labels.name}', the corrections Accept stores, is hidden: show it (its eye icon) to see what you "
                "accept.")

    @staticmethod
    def drawn_elsewhere(shapes: Any, image: Optional[str]) -> Optional[str]:
        """Why Accept drawn must not take ``shapes`` as regions of ``image`` (the corrections layer's), or None: they
        are another image's drawn regions (walk 18: testA_1's rectangle, its layer hidden with testA_1, was stored as
        a region of testA_2 on screen). A Shapes layer of the user's own belongs to no image and is taken."""
        owner = focus_owner(shapes)
        if owner is None or not image or owner == image:
            return None
        return (f"The shapes in '{shapes.name}' were drawn on '{owner}', not on '{image}': choose '{owner}' in "
                f"Predict to accept them, or Draw on '{image}'.")

    def shown_over(self, image: Optional[str]) -> Optional[str]:
        """The image on screen instead of ``image`` (the one whose corrections Draw and Accept would store), when
        ``image`` is hidden and another image the dock can predict is shown; None otherwise (an image the user hid
        to see its labels alone, with no other image shown, is still the one reviewed)."""
        from ._widget_predict import predictable

        layers = self.viewer.layers
        if not image or image not in layers or layers[image].visible:
            return None
        return next((ly.name for ly in reversed(list(layers))
                     if ly.name != image and ly.visible and predictable(ly)), None)

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
        self._outside = ""
        bbox = bbox or self.current_bbox()
        image_name, labels, state = self._target()
        blocked = self.edit_blocked(image_name, bbox) or self.mask_unseen()
        if blocked is not None:  # never a region of an image nobody sees
            self._say(blocked, error=True)
            return None
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
        unedited = not split and np.array_equal(corrected, predicted)
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
        note = ("; the store keeps its bounding box: inside it only the polygon's pixels take your edits, "
                "the rest keeps the model's prediction") if inside is not None else ""
        if split:
            note += f"; {split} separated piece(s) of glands got labels of their own"
        # the same box of the same image again is a new version of its region (the store adds no region)
        where = f"{record.region_id} of '{image_name}'"
        head = f"Accepted {what} {where}" if record.version <= 1 else \
            f"{what[:1].upper() + what[1:]} {where} was accepted before: stored again as its version {record.version}"
        # held out for validation: said, not only in its list row (walk 26)
        held = ": held out to judge the next retrain, not trained on" if record.holdout else ""
        # nothing edited: legitimate (the model was right), said so that one who forgot to edit sees it (walk 26)
        plain = " (no edits: the model's glands were stored as correct)" if unedited else ""
        self._say(f"{head}, {box_text(bbox)}{note}{plain}{held}.")
        self.drop_reviewed(image_name, bbox)
        self.refresh_regions()
        h, w = state.original_labels.shape[:2]
        over = overlap_note(record, list(self.records.values()), (0, 0, h, w))
        if over:  # stored beside live regions of the image it overlaps: said, not silent (walk 22)
            self._say(f"{self.last_message} {over}")
        self._outside = self._outside_note(state, labels)
        if self._outside:  # edits left outside what was accepted: said now, not first at the next Predict (walk 25)
            self._say(f"{self.last_message} {self._outside}")
        self.regions_changed.emit()
        return record

    @staticmethod
    def _outside_note(state: "ImageState", labels: Any) -> str:
        """What the status line of an Accept adds when the corrections layer still holds edits not accepted (outside
        the box or polygon just stored), counted as the dock counts them (:meth:`ImageState.unsaved`, kept up to date
        edit by edit in ``unsaved_px``), or ""."""
        count = state.unsaved_px.get(labels.name)
        if count is None:
            count = state.unsaved(labels.name, np.asarray(labels.data))
        if count <= 0:
            return ""
        return (f"{count} edited pixel(s) outside this region are not accepted yet (Accept whole image, or Draw "
                "around them).")

    def accept_whole_image(self) -> Optional[RegionRecord]:
        """Accept the whole image of the corrections layer as reviewed (not while a whole slide is on screen)."""
        image_name, _, state = self._target()
        blocked = self.edit_blocked(image_name) or self.mask_unseen()
        if blocked is not None:
            self._say(blocked, error=True)
            return None
        if state is None:
            self._say("Predict an image first.", error=True)
            return None
        h, w = state.original_labels.shape
        done = self._accepted_whole(state, (0, 0, h, w))
        if done is not None:  # pressed again: the store would only add an identical version of the same region
            self._say(f"'{image_name}' was already accepted whole as {done.region_id}, and its corrections have not "
                      "changed since: nothing new was stored.")
            return None
        return self.accept((0, 0, h, w), what="whole image")

    def _accepted_whole(self, state: "ImageState", bbox: BBox) -> Optional[RegionRecord]:
        """The live region of the store that holds the whole image ``bbox`` as the corrections layer holds it now
        (accepted whole, no edit since), else None."""
        _, labels, _ = self._target()
        record = next((r for r in self.records.values() if not r.withdrawn and tuple(r.bbox) == tuple(bbox)
                       and state.image_hash and r.image_hash == state.image_hash), None)
        if record is None or labels is None:
            return None
        # what the layer held when the whole image was last accepted (or the store's corrections pasted into it)
        crop = next((c for b, inside, c in reversed(state.reviewed.get(labels.name, []))
                     if tuple(b) == tuple(bbox) and inside is None), None)
        return record if crop is not None and np.array_equal(crop, np.asarray(labels.data)) else None

    def start_drawing(self) -> Any:
        """Add (or select) a Shapes layer for the reviewed image, in rectangle-drawing mode; None while a whole slide
        is on screen (the slide's windows are drawn in the Whole slide panel)."""
        image_name, _, _ = self._target()
        blocked = self.edit_blocked(image_name)
        if blocked is not None:  # a rectangle drawn over what is on screen would be stored as the hidden image's
            self._say(blocked, error=True)
            return None
        image_name = image_name or "image"
        name = names_for(image_name)["drawn"]
        layer = self.viewer.layers[name] if name in self.viewer.layers else self.viewer.add_shapes(
            name=name, edge_color=DRAWN_COLOR, face_color="transparent")
        fit_drawn(self.viewer)
        self.shapes_choice.reset_choices()
        self.shapes_choice.value = layer
        self.viewer.layers.selection.active = layer
        layer.mode = "add_rectangle"
        # said, not the last Accept's line left (walk 25)
        self._say(f"Draw a rectangle over '{image_name}' (press and drag; the layer controls also draw polygons), "
                  "then press Accept drawn.")
        return layer

    def accept_drawn(self, layer: Any = None) -> List[RegionRecord]:
        """Accept the selected shapes (or all shapes) of a drawn Shapes layer, one region each.

        A shape's region is its bounding box on the image; for a polygon only the pixels inside
        it take the edits. Accepted shapes are removed from Draw's own layer (the accepted-region layer
        shows them from now on); a Shapes layer of the user's keeps them: it holds the user's notes (walk 25).
        """
        layer = layer or self.shapes_choice.value
        image_name, labels, state = self._target()
        if layer is None or not len(layer.data):
            self._say("Draw a rectangle or polygon first (Draw), or choose a Shapes layer of your own in Drawn, then "
                      "accept it.", error=True)
            return []
        elsewhere = self.drawn_elsewhere(layer, image_name)
        if elsewhere is None and self.user_drawn_elsewhere(layer, image_name):
            elsewhere = (f"Your layer '{layer.name}' was chosen in Drawn for '{self._user_drawn[1]}': choose it in "
                         f"Drawn again to accept its shapes as regions of '{image_name}'.")
        if elsewhere is not None:
            self._say(elsewhere, error=True)
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
        own = focus_owner(layer) is not None  # Draw's layer of the image, not one of the user's
        if done and own:
            layer.selected_data = set(done)
            layer.remove_selected()
        layer.mode = "pan_zoom"  # the next click moves the view; it does not draw another region
        if records and labels in self.viewer.layers:  # the brush goes back to the glands (pathologist walk)
            self.viewer.layers.selection.active = labels
        if records and not own:  # a layer of the user's, not Draw's: said, and its shapes stay (walk 25)
            message, outside = self.last_message, self._outside
            if not (outside and message.endswith(outside)):  # the last shape's Accept said no such note
                outside = ""
            message = message[:len(message) - len(outside)].rstrip()  # the note of edits left outside stays last
            self._say(f"{message.rstrip('.')} (from your layer '{layer.name}', whose shapes stay)."
                      + (f" {outside}" if outside else ""))
        return records

    def refresh_regions(self) -> None:
        """Rebuild the accepted-region list from the store (withdrawn regions too while *Show withdrawn* is
        ticked); the selected region stays selected."""
        try:
            regions: List[RegionRecord] = self._get_store().regions(include_withdrawn=True)
        except Exception as exc:
            self._say(f"Cannot read the project store: {exc}", error=True)
            return
        self.records = {r.region_id: r for r in regions}
        self._fill_regions()

    def image_text(self, r: RegionRecord) -> str:
        """A region's image as the panel names it: the name of its layer while the image is open (what the layer
        list, the Predict chooser, the status lines and the CSV's image column say), else the stored source's name
        (the file it came from; the dock's ``image_label``), said not open. Walk 22: the list said
        "glas_testA_1.png" and "testA_2.png" beside layers "GlaS testA_1 (H&E)" and "testA_2"."""
        layer = self.image_layer_of(r) if r.source_kind != SLIDE_SOURCE else self.slide_layer_of(r)
        return layer.name if layer is not None else f"{self._image_label(r)} (not open)"

    def slide_layer_of(self, record: RegionRecord) -> Any:
        """The open whole slide (:func:`is_slide`) a slide window ``record`` was accepted on (the slide file in its
        metadata is the region's source), else None."""
        if not record.source_path:
            return None
        source = Path(record.source_path)
        for layer in self.viewer.layers:
            if is_slide(layer) and source in self._slide_files(layer):
                return layer
        return None

    def _slide_files(self, layer: Any) -> Set[Path]:
        """The slide files a slide layer shows: the one its metadata names, and, for a slide opened from its
        prediction store (its metadata names the store), the slide that store was predicted from (read once)."""
        meta = layer.metadata or {}
        files = {Path(str(meta[SLIDE_KEY]))} if meta.get(SLIDE_KEY) else set()
        store = str(meta.get(STORE_KEY) or "")
        if store:
            if store not in self._store_slides:
                try:
                    from src_model.slide_store import open_store  # torch-free

                    self._store_slides[store] = str(open_store(store).info.slide)
                except Exception:  # not (or no longer) a readable slide store
                    self._store_slides[store] = ""
            if self._store_slides[store]:
                files.add(Path(self._store_slides[store]))
        return files

    def region_text(self, r: RegionRecord) -> str:
        """A row of the accepted-region list: what tells regions apart first (withdrawn, held out, id, image);
        the rows wrap, nothing is cut."""
        mark = (withdrawn_mark(r) if r.withdrawn else "") + ("[held out] " if r.holdout else "")
        return (f"{mark}{r.region_id}  {self.image_text(r)}  {box_text(r.bbox)}  "
                f"corrects {r.model_version}")

    def _whole_box(self, record: Optional[RegionRecord]) -> Optional[BBox]:
        """The box of the whole image of ``record`` (0, 0, H, W) while it is open, else None."""
        layer = self.image_layer_of(record) if record is not None else None
        hw = image_hw(layer) if layer is not None else None
        return (0, 0, hw[0], hw[1]) if hw is not None else None

    def _names_changed(self, _event: Any = None) -> None:
        """An image was opened, closed or renamed: the list's rows name each region's image as it is now
        (:meth:`image_text`), once the event loop turns (a reopen adds many layers in a row)."""
        if not self._names_pending:
            self._names_pending = True
            QTimer.singleShot(0, self._rename_rows)

    def _rename_rows(self) -> None:
        self._names_pending = False
        try:
            texts = [self.region_text(r) for r in self.records.values()]
            rows = [self.region_list.item(i).text() for i in range(self.region_list.count())]
        except RuntimeError:  # the panel's Qt objects are gone (the dock or the viewer closed)
            return
        if any(t not in texts for t in rows):
            self._fill_regions()

    def _fill_regions(self) -> None:
        """The list from the regions last read (:attr:`records`): no store is read (ticking *Show withdrawn*
        with no store open creates none)."""
        chosen = self.selected_region_id()
        self.region_list.blockSignals(True)
        try:
            self.region_list.clear()
            grey = self.region_list.palette().color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text)
            for r in self.records.values():
                if r.withdrawn and not self.show_withdrawn.isChecked():
                    continue
                text = self.region_text(r)
                item = QListWidgetItem(text)
                tip = text
                if r.withdrawn:  # greyed and in italics: out of training and validation
                    item.setForeground(grey)
                    font = item.font()
                    font.setItalic(True)
                    item.setFont(font)
                    note = withdrawn_note(r)
                    tip += (f"\n{note[0].upper()}{note[1:]}: not used for training or validation "
                            "(Restore brings it back).")
                item.setToolTip(tip)
                item.setData(Qt.ItemDataRole.UserRole, r.region_id)
                self.region_list.addItem(item)
                if r.region_id == chosen:
                    self.region_list.setCurrentItem(item)
        finally:
            self.region_list.blockSignals(False)
        self.update_buttons()

    def selected_region_id(self) -> Optional[str]:
        item = self.region_list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def selected_record(self) -> Optional[RegionRecord]:
        """The record of the region selected in the accepted-region list, or None."""
        return self.records.get(self.selected_region_id() or "")

    def select_region(self, region_id: str) -> bool:
        """Select ``region_id``'s row in the accepted-region list (ticking *Show withdrawn* for a withdrawn
        one); False if the list has no such region."""
        record = self.records.get(region_id)
        if record is None:
            return False
        if record.withdrawn and not self.show_withdrawn.isChecked():
            self.show_withdrawn.setChecked(True)
        for i in range(self.region_list.count()):
            if self.region_list.item(i).data(Qt.ItemDataRole.UserRole) == region_id:
                self.region_list.setCurrentRow(i)
                return True
        return False

    def image_layer_of(self, record: RegionRecord) -> Any:
        """The open image layer showing a region's image (its store hash in the layer's metadata, or the dock's
        state of the layer), else None. Among several layers of the same pixels (walk 23: the default project's
        restored "GlaS testA_1 (H&E)" and the sample opened again, "GlaS testA_1 (H&E) [1]", predicted and accepted
        from in another store) the layer the dock's state of the image is on comes first, then a shown one, then
        the first in the layer list; a layer detached from a previous store only when no other shows the image."""
        return self._layer_of_hash(record.image_hash)

    def open_image_name(self, image_hash: str) -> Optional[str]:
        """The name of the open image layer showing the image of store hash ``image_hash`` (as :meth:`image_layer_of`
        chooses it), None when none is open."""
        layer = self._layer_of_hash(image_hash)
        return None if layer is None else layer.name

    def _layer_of_hash(self, image_hash: str) -> Any:
        layers = self._image_layers_of(image_hash)
        return min(layers, key=lambda layer: self._layer_rank(layer, image_hash)) if layers else None

    def _image_layers_of(self, image_hash: str) -> List[Any]:
        """The open image layers (not derived) showing the image of store hash ``image_hash``, in layer-list
        order."""
        found = []
        for layer in self.viewer.layers:
            if not isinstance(layer, Image) or is_derived(layer):
                continue
            if (layer.metadata or {}).get(HASH_KEY) == image_hash or self._state_on(layer, image_hash):
                found.append(layer)
        return found

    def _state_on(self, layer: Any, image_hash: str) -> bool:
        """Whether the dock's state of ``layer`` (its prediction) is of the image ``image_hash``."""
        state = self._get_state(layer.name)
        return state is not None and getattr(state, "image_hash", None) == image_hash

    def _layer_rank(self, layer: Any, image_hash: str) -> Tuple[bool, bool, bool]:
        """Sort key of :meth:`image_layer_of` (lower first; ``min`` keeps layer-list order among equals):
        not detached, the dock's state on it, shown."""
        return (is_detached(layer), not self._state_on(layer, image_hash), not bool(getattr(layer, "visible", True)))

    def show_region(self, region_id: Optional[str] = None, move: bool = True) -> Any:
        """Frame an accepted region (default: the selected one), live or withdrawn, in black on its image and
        (``move``) centre the view on it with some context, its image shown and the other images overlapping it
        hidden (:meth:`focus`).

        Returns:
            The Shapes layer of the frame, or None when the region's image is not open (the status line says so).
        """
        region_id = region_id or self.selected_region_id()
        record = self.records.get(region_id or "")
        if record is None:
            return None
        layer = self.image_layer_of(record)
        state = "withdrawn " if record.withdrawn else ""
        if layer is None:
            self._say(f"The image of {state}region {record.region_id} ({self._image_label(record)}) is not open: "
                      "open it, or reopen the project store, to see the region.")  # its stored source's name
            return None
        if move:
            self.clear_tile_selection()  # the view leaves the review region: Accept region must not store it unseen
        hidden = self.focus(layer.name) if move else []  # its image, not another one over it
        layer.visible = True
        if move:  # first, so that the frame's label is placed for the new zoom (label_offset)
            center, zoom = camera_for_tile(record.bbox, canvas_hw(self.viewer), margin=CONTEXT_MARGIN)
            camera = scene_camera(self.viewer)
            camera.center = center
            camera.zoom = zoom
        label = f"{record.region_id} withdrawn" if record.withdrawn else record.region_id
        frame = self._shown_layer(layer.name, record.bbox, label, record.region_id)
        if not move:
            return frame
        note = f"; {withdrawn_note(record, full=False)} (Restore brings it back)" if record.withdrawn else ""
        others = (" " + ", ".join(f"'{n}'" for n in hidden) + " hidden (they overlap it): choose one in Predict "
                  "to see it again.") if hidden else ""
        self._say(f"Showing {state}region {record.region_id} of '{layer.name}' ({SHOWN_COLOR} box){note}.{others}")
        return frame

    def _shown_layer(self, image_name: str, bbox: BBox, label: str, region_id: str) -> Any:
        """Add or update the Shapes layer framing the region shown (one rectangle just outside its pixels,
        labelled with its id); the frames of other images are emptied. The active layer stays active."""
        active = self.viewer.layers.selection.active
        hw = image_hw(self.viewer.layers[image_name]) if image_name in self.viewer.layers else None
        # SHOWN_WIDTH screen pixels just outside its pixels; its whole stroke on the image (hw): at the image's
        # edge, a black line on the canvas was lost
        frames = frames_of([bbox], [SHOWN_WIDTH], [True], hw)
        zoom = float(scene_camera(self.viewer).zoom)
        (rect,), (width,) = frame_rects(frames, zoom)
        name = f"{image_name} {SHOWN_SUFFIX}"
        self.close_shown(keep=name)
        text = {"string": "{label}", "color": SHOWN_COLOR, "anchor": "upper_left", "size": SHOWN_TEXT_SIZE,
                "translation": label_offset(self.viewer, rect, hw, width)}
        if name in self.viewer.layers and isinstance(self.viewer.layers[name], Shapes):
            layer = self.viewer.layers[name]
            layer.data = []
            layer.add_rectangles([rect], edge_color=SHOWN_COLOR, face_color="transparent", edge_width=width)
            layer.features = {"label": [label]}
            layer.text = text
        else:
            layer = self.viewer.add_shapes([rect], shape_type="rectangle", name=name, edge_color=SHOWN_COLOR,
                                           face_color="transparent", edge_width=width, opacity=1.0,
                                           features={"label": [label]}, text=text,
                                           metadata={ROLE_KEY: SHOWN_ROLE, IMAGE_KEY: image_name})
        layer.metadata[FRAMES_KEY] = {**frames, "zoom": zoom}  # kept SHOWN_WIDTH screen pixels as the view zooms
        layer.visible = True
        if active is not None and active in self.viewer.layers:  # the brush stays on the layer it was on
            self.viewer.layers.selection.active = active
        self.shown_region = region_id
        return layer

    def close_shown(self, keep: Optional[str] = None) -> None:
        """Close the layers of the black frame of the region shown, but the layer named ``keep``; no region counts as
        shown. Closed, not emptied: an empty "<image> shown region" layer stayed in the layer list, a layer framing
        nothing (walk). Each removal costs napari a garbage collection on the GUI thread (its canvas collects after a
        layer is removed), once per frame closed: a frame is closed on Withdraw (Show withdrawn off), Next, a store
        switch, or when another image's region is shown; the next region shown adds the layer again."""
        for layer in [ly for ly in self.viewer.layers if (ly.metadata or {}).get(ROLE_KEY) == SHOWN_ROLE
                      and ly.name != keep]:
            self.viewer.layers.remove(layer)
        self.shown_region = None

    def forget_shown(self) -> None:
        """Another project store is being opened: the black frame of the region shown (and its row's selection) is
        the previous store's; the frame layers are closed (walk: r0001's frame stayed on the image, the new store
        having no such region) and no region counts as shown."""
        self.close_shown()
        if self.region_list.currentRow() >= 0:
            self.region_list.setCurrentRow(-1)
            self.region_list.clearSelection()

    def _place_label(self, _event: Any = None) -> None:
        """The view zoomed: the shown frame's label moves to stay just above the frame (:func:`label_offset`)."""
        layers = self.viewer.layers
        for layer in layers:
            if (layer.metadata or {}).get(ROLE_KEY) == SHOWN_ROLE and len(layer.data) and layer.visible:
                image = (layer.metadata or {}).get(IMAGE_KEY)
                offset = label_offset(self.viewer, layer.data[0], image_hw(layers[image]) if image in layers else None,
                                      float(np.atleast_1d(layer.edge_width)[0]))
                if not np.allclose(np.asarray(layer.text.translation, float)[-2:], offset):
                    layer.text.translation = offset

    def _reframe(self, region_id: str) -> None:
        """The region framed on its image was withdrawn or restored: its frame's label says so (the view stays)."""
        if self.shown_region == region_id:
            message = self.last_message
            self.show_region(region_id, move=False)
            self._say(message)

    def _chosen(self, region_id: Optional[str], verb: str) -> Optional[str]:
        if region_id is None:
            region_id = self.selected_region_id()
            if region_id is None:
                self._say(f"Select an accepted region to {verb}.", error=True)
        return region_id

    def withdraw(self, region_id: Optional[str] = None) -> bool:
        """Withdraw ``region_id`` (default: the selected accepted region) from the project."""
        region_id = self._chosen(region_id, "withdraw")
        if region_id is None:
            return False
        try:
            self._get_store().withdraw(region_id, user=getpass.getuser())
        except Exception as exc:
            self._say(f"Could not withdraw {region_id}: {exc}", error=True)
            return False
        kept = " (listed greyed: Restore brings it back)" if self.show_withdrawn.isChecked() else \
            " (Show withdrawn lists it: Restore brings it back)"
        self._say(f"Withdrew region {region_id}: not used for training or validation; the store keeps it{kept}.")
        self.refresh_regions()
        record = self.records.get(region_id)
        still = still_trained_note(record, list(self.records.values()), self._whole_box(record)) if record else ""
        if still:  # its tissue is still in training through a live region over it (walk 22)
            self._say(f"{self.last_message} {still}")
        if self.show_withdrawn.isChecked():
            self._reframe(region_id)  # its row stays, greyed: the frame says "withdrawn"
        elif self.shown_region == region_id:
            self.close_shown()  # its row left the list: no frame of a region no longer listed (walk 18)
        self.regions_changed.emit()
        return True

    def restore(self, region_id: Optional[str] = None) -> bool:
        """Make ``region_id`` (default: the selected withdrawn region) count again for training, or validation if
        it is held out (:meth:`~napari_cdma.project.store.ProjectStore.reinstate`: who and when are recorded).

        A whole slide's window is not restored here: its correction was undone in the slide's labels when it was
        withdrawn, and the Whole slide panel accepts it again."""
        region_id = self._chosen(region_id, "restore")
        if region_id is None:
            return False
        record = self.records.get(region_id)
        if record is not None and record.source_kind == SLIDE_SOURCE:
            self._say(f"{region_id} is a window of a whole slide: its correction was undone in the slide's labels "
                      "when it was withdrawn. Open the slide and accept the window again (Whole slide panel).",
                      error=True)
            return False
        try:
            restored = self._get_store().reinstate(region_id, user=getpass.getuser())
        except Exception as exc:
            self._say(f"Could not restore {region_id}: {exc}", error=True)
            return False
        use = "validation (held out)" if restored.holdout else "training"
        self._say(f"Restored region {region_id}: it counts again for {use}.")
        self.refresh_regions()
        over = overlap_note(restored, list(self.records.values()), self._whole_box(restored))
        if over:
            self._say(f"{self.last_message} {over}")
        self._reframe(region_id)
        layer = self.image_layer_of(restored)
        if layer is not None:  # reviewed again: "Look here next" skips it, as after an Accept
            self.drop_reviewed(layer.name, restored.bbox)
        self.regions_changed.emit()
        return True
