"""Qt-free glue between engine results and napari layers.

Everything here works on a ``napari.components.ViewerModel`` (or ``napari.Viewer``) and plain
arrays: it can be used from scripts and tested without widgets. Layers are added once and
updated in place on later runs, so re-running Predict never duplicates them.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ._slide_view import outline_rect, pixel_edges

BBox = Tuple[int, int, int, int]
RankedTile = Tuple[float, BBox]


#: Review regions' outlines: colour, and width in screen pixels at every zoom (:func:`show_frames`); the selected
#: one is drawn by the review panel.
TILE_COLOR, TILE_WIDTH = "cyan", 3
ROLE_KEY = "napari_cdma_role"  # layer.metadata key naming a derived layer's role ("prediction", ...)
IMAGE_KEY = "napari_cdma_image"  # layer.metadata key naming the image layer a derived layer belongs to
HASH_KEY = "napari_cdma_image_hash"  # on image layers the dock restored from a store: the store's image hash


def is_derived(layer: Any) -> bool:
    """True for layers this plugin made from an image (prediction, uncertainty, tiles, ...)."""
    return bool((getattr(layer, "metadata", None) or {}).get(ROLE_KEY))


class LayerInputError(ValueError):
    """A layer cannot be used as model input; the message says why in user terms."""


def names_for(image_name: str) -> Dict[str, str]:
    """Names of the layers derived from an image layer.

    Args:
        image_name: name of the source image layer.

    Returns:
        Mapping of role ("prediction", "uncertainty", "disagreement", "entropy", "branch1"..,
        "tiles", "accepted", "corrections") to name.
    """
    names = {
        "prediction": f"{image_name} prediction",
        "uncertainty": f"{image_name} uncertainty",
        "disagreement": f"{image_name} disagreement",
        "entropy": f"{image_name} entropy",
        "tiles": f"{image_name} review tiles",
        "accepted": f"{image_name} accepted regions",
        "corrections": f"{image_name} accepted corrections",
        "drawn": f"{image_name} drawn regions",
    }
    for k in (1, 2, 3):
        names[f"branch{k}"] = f"{image_name} branch {k} foreground"
    return names


def max_pixels() -> int:
    """Largest image (in pixels) the plugin sends to in-memory prediction: ``src_model.io.MAX_PIXELS``."""
    from src_model.io import MAX_PIXELS  # torch-free; read at call time so tests can patch it

    return int(MAX_PIXELS)


#: dtypes of a 2-D (greyscale) image layer the dock takes as model input: the engine replicates grey into RGB
#: (:func:`src_model.io.to_rgb_uint8`). A float 2-D image is not offered: most often a map (a probability, an
#: uncertainty), not a photograph (walk 24: a grey image was silently left out of the Predict chooser).
GREY_DTYPES = (np.uint8, np.uint16)


#: A 2-D grey layer whose values are a mask's or a label image's is not model input (review 18: the GlaS mask of
#: testA_2, opened after its image, became the image Predict ran on, 0 glands, stored in the project). A grey H&E
#: photograph spans most of its range (the GlaS images made grey: about 20..255, 210-230 levels); a mask or label image
#: holds few values (0/1, 0/255) or small ones (0..N for N glands). So a grey layer is taken for a mask when a sample
#: of its pixels (:data:`MASK_SAMPLE` per side) holds at most :data:`MASK_LEVELS` distinct values, or none above
#: :data:`MASK_MAX` (a photograph that dark is black to the model anyway). Not caught: a label image of more than
#: MASK_MAX objects (offered as before); a blank grey image (one value) is taken for a mask and not offered.
MASK_MAX, MASK_LEVELS, MASK_SAMPLE = 64, 16, 256


def mask_values(layer: Any) -> Optional[Tuple[int, int]]:
    """(largest value, distinct values) of a 2-D grey image layer that looks like a mask or label image
    (:data:`MASK_MAX`, :data:`MASK_LEVELS`), read from a strided sample of at most :data:`MASK_SAMPLE` squared pixels;
    None for any other layer, and for grey data not held in memory (a dask or zarr array: no read of its chunks)."""
    data = getattr(layer, "data", None)
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.dtype not in GREY_DTYPES or not data.size:
        return None
    step_y, step_x = (max(1, -(-n // MASK_SAMPLE)) for n in data.shape)
    sample = data[::step_y, ::step_x]
    top, levels = int(sample.max()), len(np.unique(sample))
    return (top, levels) if top <= MASK_MAX or levels <= MASK_LEVELS else None


def input_hw(layer: Any) -> Optional[Tuple[int, int]]:
    """(H, W) of an image layer whose shape and type make it model input, read from its shape and dtype (and, for a
    grey one, a small sample of its pixels): single-scale, RGB(A) (H, W, 3|4) or greyscale (H, W) uint8 / uint16
    (:data:`GREY_DTYPES`) that is not a mask or label image (:func:`mask_values`); None otherwise (not an image
    layer, multiscale, a stack, a float 2-D map, a mask)."""
    from napari.layers import Image

    if not isinstance(layer, Image) or getattr(layer, "multiscale", False):
        return None
    data = layer.data
    shape = tuple(getattr(data, "shape", ()))
    if len(shape) == 3 and shape[-1] in (3, 4) and layer.rgb:
        return int(shape[0]), int(shape[1])
    dtype = getattr(data, "dtype", None)
    if len(shape) == 2 and not layer.rgb and dtype is not None and np.dtype(dtype) in GREY_DTYPES \
            and mask_values(layer) is None:
        return int(shape[0]), int(shape[1])
    return None


def not_input_note(layer: Any) -> str:
    """Why the image layer ``layer`` is not model input (:func:`input_hw` is None), in user terms."""
    shape, dtype = tuple(layer.data.shape), np.dtype(layer.data.dtype)
    if len(shape) == 2 and dtype in GREY_DTYPES and (values := mask_values(layer)) is not None:
        top, levels = values
        return (f"Layer '{layer.name}' looks like a mask or label image ({levels} value(s), at most {top}), not a "
                "photograph; choose the H&E image it belongs to.")
    if len(shape) == 2:
        return (f"Layer '{layer.name}' is a 2-D {dtype} image (a map, not a photograph?); the model takes an RGB "
                "image (H, W, 3) such as an H&E slide region, or a uint8 / uint16 greyscale one.")
    if len(shape) == 3 and shape[-1] == 1:  # napari shows it as a stack of one plane, not as a 2-D image
        return (f"Layer '{layer.name}' has shape {shape}, a one-channel stack; the model takes an RGB image "
                "(H, W, 3) or a 2-D uint8 / uint16 greyscale one (H, W): open its single plane as a 2-D image.")
    if len(shape) == 3 and shape[-1] in (3, 4) and not getattr(layer, "rgb", False):
        # an (H, W, 3|4) image that napari shows as H planes of shape (W, 3|4): napari 0.9 takes it as RGB only when
        # both sides exceed 30 px (napari.layers.image._image_utils.guess_rgb; walk 25: a 5 x 5 RGB PNG)
        kind = "RGB" if shape[-1] == 3 else "RGBA"
        guess = (" (napari opens an image as RGB by itself only when both sides are over 30 px)"
                 if min(shape[:2]) <= 30 else "")
        return (f"Layer '{layer.name}' was opened as a stack of {shape[0]} planes of {shape[2]} x {shape[1]} px, "
                f"not as an {kind} image{guess}. If it is a {shape[1]} x {shape[0]} px {kind} image, open it again "
                "with rgb=True (napari console: viewer.open(path, rgb=True) or viewer.add_image(data, rgb=True)).")
    return (f"Layer '{layer.name}' has shape {shape}; the model needs an RGB image (H, W, 3) such as an H&E slide "
            "region, or a 2-D uint8 / uint16 greyscale one (H, W).")


def input_from_layer(layer: Any, pixel_limit: Optional[int] = None) -> Tuple[np.ndarray, str]:
    """:func:`image_from_layer`'s image, with :func:`conversion_note`'s note of what the conversion did (for the
    Predict status line; only Predict reads it: the store's hashing needs no note)."""
    image = image_from_layer(layer, pixel_limit)
    return image, conversion_note(np.asarray(layer.data))


def image_from_layer(layer: Any, pixel_limit: Optional[int] = None) -> np.ndarray:
    """Validate a layer as H&E model input and convert it as the engine converts an image file.

    The conversion is the engine's own, :func:`src_model.io.to_rgb_uint8` (uint16 by its bit depth, float 0..1 x 255,
    RGBA over white, grey replicated; a float image outside 0..1 is refused): the dock clipped every non-uint8
    image to 0..255 instead, so a 16-bit H&E image was predicted as white glass, no gland and no doubt (walk 24).

    Args:
        layer: a napari layer.
        pixel_limit: largest accepted H*W (default: :func:`max_pixels`).

    Returns:
        uint8 array of shape (H, W, 3) (a greyscale layer's grey replicated).

    Raises:
        LayerInputError: not an image layer, neither RGB(A) nor uint8 / uint16 grey (:func:`input_hw`),
            multiscale, too large, or values the engine cannot convert (its message).
    """
    from napari.layers import Image

    from src_model.io import ImageReadError, to_rgb_uint8

    if layer is None:
        raise LayerInputError("No image layer selected: open an H&E image first.")
    if not isinstance(layer, Image):
        raise LayerInputError(f"Layer '{layer.name}' is a {type(layer).__name__} layer; "
                              "choose an RGB H&E image layer.")
    if layer.multiscale:
        raise LayerInputError(f"Layer '{layer.name}' is multiscale (a pyramid); open a single-scale "
                              "region of the slide to predict in the viewer.")
    shape = tuple(layer.data.shape)
    if input_hw(layer) is None:
        raise LayerInputError(not_input_note(layer))
    limit = max_pixels() if pixel_limit is None else int(pixel_limit)
    if shape[0] * shape[1] > limit:
        raise LayerInputError(f"Layer '{layer.name}' is {shape[1]} x {shape[0]} pixels, more than the "
                              f"{limit:,} pixel limit for in-viewer prediction; use the `cdma predict` "
                              "command line on the slide instead.")
    try:
        return to_rgb_uint8(np.asarray(layer.data), source=f"Layer '{layer.name}'")
    except ImageReadError as exc:
        raise LayerInputError(str(exc)) from exc


def conversion_note(data: np.ndarray) -> str:
    """What :func:`src_model.io.to_rgb_uint8` did to ``data``, said short for the Predict status line ("" for uint8
    RGB): uint16 by its effective bit depth (:func:`src_model.io.uint16_note`), "Converted from 16-bit (/ 257)." or
    "Converted from 12-bit in 16-bit storage (max 4080; \u00d7 255/4095)." (walk 25: a 12-bit camera's image was
    divided by 257, predicted nearly black, and the note said only "16-bit")."""
    notes = []
    if data.dtype == np.uint16:
        from src_model.io import uint16_colour_max, uint16_note

        notes.append(uint16_note(uint16_colour_max(data)))
    elif np.issubdtype(data.dtype, np.floating):
        notes.append("Converted from float 0..1 (x 255).")
    elif data.dtype != np.uint8:
        notes.append(f"Converted from {data.dtype}.")
    if data.ndim == 2:
        notes.append("Greyscale: predicted as grey RGB.")
    if data.ndim == 3 and data.shape[-1] == 4:
        opaque = np.iinfo(data.dtype).max if np.issubdtype(data.dtype, np.integer) else 1.0
        if data[..., 3].min() < opaque:  # else the alpha channel is dropped: nothing to say
            notes.append("Transparency laid over white.")
    return " ".join(notes)


def source_path(layer: Any) -> Optional[str]:
    """File the layer was read from (napari's ``layer.source.path``), or the sample's path."""
    path = getattr(getattr(layer, "source", None), "path", None)
    if path:
        return str(path)
    meta = getattr(layer, "metadata", None) or {}
    return str(meta["source_path"]) if meta.get("source_path") else None


def upsert_layer(viewer: Any, name: str, data: np.ndarray, layer_type: str, **kwargs: Any) -> Any:
    """Update the data of layer ``name`` if it exists with the right type, else add it.

    Args:
        viewer: napari viewer (model).
        name: layer name.
        data: layer data.
        layer_type: "image", "labels" or "shapes".
        **kwargs: layer properties, applied on creation and on update (where settable).

    Returns:
        The layer.
    """
    from napari import layers as nl

    cls = {"image": nl.Image, "labels": nl.Labels, "shapes": nl.Shapes}[layer_type]
    existing = viewer.layers[name] if name in viewer.layers else None
    if existing is not None and not isinstance(existing, cls):
        viewer.layers.remove(existing)
        existing = None
    if existing is None:
        add = getattr(viewer, f"add_{layer_type}")
        return add(data, name=name, **kwargs)
    existing.metadata.update(kwargs.get("metadata") or {})
    if layer_type == "shapes":
        if len(existing.data):  # emptying an empty Shapes layer still re-slices it (~0.1 s on a busy machine)
            existing.data = []
        if len(data):
            existing.add_rectangles(data, edge_color=kwargs.get("edge_color", "cyan"),
                                    face_color=kwargs.get("face_color", "transparent"),
                                    edge_width=kwargs.get("edge_width", 4))
    else:
        existing.data = data
    for key in ("contrast_limits", "opacity", "blending", "colormap", "visible", "gamma"):
        if key in kwargs:
            setattr(existing, key, kwargs[key])
    existing.refresh()
    return existing


# Colour ramps of the plugin's own heat maps (RGB stops, evenly spaced), usable as a ``base`` of
# :func:`fading_colormap` like napari's named colormaps. "cdma_uncertainty": light yellow-green to
# deep green, lightness falling steadily (about L* 93 -> 37), a hue far from H&E's pink and purple,
# so the most uncertain tissue is the darkest, most saturated colour on the slide.
CUSTOM_RAMPS = {"cdma_uncertainty": ((0.85, 0.95, 0.45), (0.55, 0.84, 0.38), (0.25, 0.66, 0.30), (0.0, 0.38, 0.22))}


def fading_colormap(base: str = "inferno", power: float = 1.0, gain: float = 1.5, start: float = 0.0) -> Any:
    """A napari colormap like ``base`` whose alpha rises from 0 (transparent) to 1.

    Args:
        base: name of a napari colormap or of a :data:`CUSTOM_RAMPS` entry.
        power: alpha = min(1, gain * u ** power) with u = (t - start) / (1 - start) clipped to
            [0, 1], for t in [0, 1]; a power > 1 keeps the low and middle values faint, so only
            the top of the range covers the tissue.
        gain: see ``power``.
        start: below this fraction of the range the colormap is fully transparent.

    Returns:
        ``napari.utils.Colormap`` named ``"<base>_fading"`` (plus the power and start when not
        the defaults, so that differently fading maps do not replace one another by name).
    """
    from napari.utils.colormaps import Colormap, ensure_colormap

    t = np.linspace(0.0, 1.0, 64)
    if base in CUSTOM_RAMPS:
        stops = np.asarray(CUSTOM_RAMPS[base], dtype=np.float32)
        s = np.linspace(0.0, 1.0, len(stops))
        colors = np.stack([np.interp(t, s, stops[:, k]) for k in range(3)] + [np.ones_like(t)], axis=1)
        colors = colors.astype(np.float32)
    else:
        colors = np.array(ensure_colormap(base).map(t), dtype=np.float32)
    u = np.clip((t - start) / max(1e-6, 1.0 - start), 0.0, 1.0)
    colors[:, 3] = np.clip(gain * u ** power, 0.0, 1.0)
    suffix = ("" if power == 1.0 else f"{power:g}") + ("" if start == 0.0 else f"_from{start:g}")
    return Colormap(colors, controls=t, name=f"{base}_fading{suffix}", display_name=f"{base} (fading)")


# Bright green, azure, orange and rose: they stand out on pink / purple H&E and, as thin bright lines,
# differ from the uncertainty's deep green fill, the cyan review boxes, the yellow selected box and the red
# accepted frames; neighbouring glands cycle through them. Four far-apart hues: an earlier set of two greens
# and two close blues gave a split gland's two halves (labels k and a new one) look-alike outlines.
# The fourth was white (walk 26): its outlines vanished on pale mucin and glass, and a filled white gland was
# invisible there. Rose (1, 0, 0.5), a saturated pink far from pastel eosin, is at CIELAB distance 87 from the
# mean of testA_1's pale pixels (white: 10) and 64 from its stroma, and 63 or more from every other colour of the
# dock (red accepted frames 63, magenta gland box 67, yellow, cyan, blue, black; the nearest gland colour,
# orange, 93); chosen on screenshots of testA_1 against maroon, crimson, brown, purple and violet.
GLAND_COLORS = ((0.0, 1.0, 0.0), (0.0, 0.55, 1.0), (1.0, 0.6, 0.0), (1.0, 0.0, 0.5))


def gland_colormap() -> Any:
    """Cyclic label colormap for gland outlines (0 = background, transparent)."""
    from napari.utils.colormaps import CyclicLabelColormap

    colors = np.array([(0.0, 0.0, 0.0, 0.0)] + [(*c, 1.0) for c in GLAND_COLORS], dtype=np.float32)
    return CyclicLabelColormap(colors=colors, name="glands")


#: Outline colour of a prediction written beside the image's own prediction layer (a "(version)" layer: a version
#: tried, or a new prediction written aside to keep unaccepted edits): yellow, none of :data:`GLAND_COLORS`, bright on
#: H&E, so that, both shown, the tried model's glands are told from the current model's at a glance (walk 24: they had
#: the same four colours, only thinner). Yellow is also the selected review region's frame, a straight rectangle.
TRIED_GLAND_COLOR = (1.0, 1.0, 0.0)
TRIED_CMAP_NAME = "tried glands"


def tried_gland_colormap() -> Any:
    """Label colormap of a "(version)" prediction layer: every gland :data:`TRIED_GLAND_COLOR` (0 transparent)."""
    from napari.utils.colormaps import CyclicLabelColormap

    colors = np.array([(0.0, 0.0, 0.0, 0.0), (*TRIED_GLAND_COLOR, 1.0)], dtype=np.float32)
    return CyclicLabelColormap(colors=colors, name=TRIED_CMAP_NAME)


def _role(role: str, image_name: Optional[str] = None) -> Dict[str, str]:
    return {ROLE_KEY: role, **({IMAGE_KEY: image_name} if image_name is not None else {})}


# The uncertainty overlay points the eye at the places to doubt and leaves the rest of the H&E readable.
# Over its display range (robust percentiles over tissue, lo..hi) it is fully transparent up to
# UNCERTAINTY_FADE_START of the range, then rises (alpha ~ u ** UNCERTAINTY_POWER, u the position
# between that point and hi) to UNCERTAINTY_OPACITY of deep green at hi; below 1, so nuclei stay
# visible even under the strongest tint. The alpha ramp is the colormap's, the top opacity the layer's.
# Chosen by screenshots of GlaS training images in the dock with the bundled model (train_1, train_10
# and the 8 validation images, never test): the earlier ramp (from lo, top opacity 0.85) changed the
# rendered colour (by > 16/255) of 26 % of tissue on average (12-55 %; a green haze over stroma,
# opaque green bands); this one changes 15 % (7-31 %). 35 % of the tinted tissue is a model error
# (27 % before; 8 % of all tissue is), and the tint covers 63 % of the errors (84 % before).
UNCERTAINTY_CMAP = "cdma_uncertainty"
UNCERTAINTY_POWER = 1.5
UNCERTAINTY_OPACITY = 0.7
UNCERTAINTY_FADE_START = 0.4


def uncertainty_tint_start(lo: float, hi: float) -> float:
    """The uncertainty value from which the overlay tints the H&E, for contrast limits ``(lo, hi)``."""
    return float(lo) + UNCERTAINTY_FADE_START * (float(hi) - float(lo))


def uncertainty_colormap() -> Any:
    """The colormap of the uncertainty and disagreement layers (shown at ``UNCERTAINTY_OPACITY``)."""
    return fading_colormap(UNCERTAINTY_CMAP, power=UNCERTAINTY_POWER, gain=1.0, start=UNCERTAINTY_FADE_START)


# Accepted regions are reviewed: the uncertainty layer no longer tints them, so that what is left to look at
# stands out (walk 17: reviewed tissue looked as uncertain as the rest). The map itself is not changed, nor copied:
# the layer's data (each level of a large image's pyramid) is read through :class:`UntintedLevel`, which clears the
# boxes in what napari indexes for the canvas only, and the map stays beside it in the layer's metadata.
#: layer.metadata key of an uncertainty layer whose reviewed regions are untinted: ``values`` (the model's map: the
#: layer's data, or its levels, before), ``shown`` (the :class:`UntintedLevel` of each) and ``boxes`` (region id ->
#: (y0, x0, y1, x1))
REVIEWED_KEY = "napari_cdma_reviewed"
#: what a reviewed pixel reads as on the canvas: no uncertainty, below any tint start
REVIEWED_VALUE = 0.0


class UntintedLevel:
    """The data of an uncertainty layer (or a level of its pyramid) shown untinted in reviewed boxes.

    An indexed read (napari indexes the part of the data the canvas shows: the whole of a small image, the view of a
    pyramid's level) is the map's pixels there, REVIEWED_VALUE inside ``boxes``; only what was read is copied. The
    data as a whole (``np.asarray(layer.data)``, as the gland table, the store's saves and the plugin's other readers
    take it) is the model's map, unchanged.

    Args:
        level: the map (H, W), or the full-resolution map taken every ``step`` pixels.
        step: see ``level``.
        boxes: full-resolution (y0, x0, y1, x1) boxes, a list shared by a pyramid's levels.
    """

    def __init__(self, level: Any, step: int, boxes: List[BBox]) -> None:
        self.level, self.step, self.boxes = level, int(step), boxes
        self.shape, self.dtype, self.ndim, self.size = tuple(level.shape), level.dtype, level.ndim, level.size

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        out = np.array(self.level[key], copy=True)
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):  # napari passes slices; ``[...]`` reads the whole level
            key = tuple(slice(None) for _ in self.shape)
        key = key + (slice(None),) * (2 - len(key))
        rows = np.atleast_1d(np.arange(self.shape[0])[key[0]]) * self.step  # full-resolution rows read
        cols = np.atleast_1d(np.arange(self.shape[1])[key[1]]) * self.step
        inside = np.zeros((rows.size, cols.size), bool)
        for y0, x0, y1, x1 in self.boxes:
            inside |= ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]
        if inside.any():
            out[inside.reshape(out.shape)] = REVIEWED_VALUE
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.level, dtype=dtype)


def _level_steps(levels: Sequence[Any]) -> Optional[List[int]]:
    """How many full-resolution pixels apart each level's pixels are, for levels that are strided views of the
    first (a large image's pyramid, :func:`~._predict_stream.pyramid`); None for other pyramids."""
    base = levels[0]
    if not isinstance(base, np.ndarray) or base.ndim != 2:
        return None
    steps = []
    for level in levels:
        if not isinstance(level, np.ndarray) or not np.shares_memory(level, base) \
                or level.strides[0] % base.strides[0] or level.strides[1] % base.strides[1] \
                or level.strides[0] // base.strides[0] != level.strides[1] // base.strides[1]:
            return None
        steps.append(level.strides[0] // base.strides[0])
    return steps


def _reviewed(layer: Any) -> Optional[Dict[str, Any]]:
    """The layer's reviewed-region record, if the layer still shows it (a prediction written into the layer since
    replaced its data: the model's map again)."""
    layer = unwrap_layer(layer)  # a plugin's proxy of the layer wraps what it returns in new proxies
    kept = (getattr(layer, "metadata", None) or {}).get(REVIEWED_KEY)
    if kept is None:
        return None
    data = layer.data
    if getattr(layer, "multiscale", False):
        return kept if len(data) and data[0] is kept["shown"][0] else None
    return kept if data is kept["shown"][0] else None


def uncertainty_values(layer: Any) -> Any:
    """The model's uncertainty map behind an uncertainty layer (of a multiscale layer: its levels), as an array
    even where the layer shows reviewed regions untinted (:func:`show_reviewed`)."""
    kept = _reviewed(layer)
    if kept is None:
        return unwrap_layer(layer).data
    return kept["values"] if getattr(layer, "multiscale", False) else kept["values"][0]


def uncertainty_at(layer: Any, row: int, col: int) -> float:
    """The model's uncertainty at full-resolution pixel ``(row, col)`` of an uncertainty layer."""
    values = uncertainty_values(layer)
    return float((values[0] if getattr(layer, "multiscale", False) else values)[row, col])


def reviewed_at(layer: Any, row: int, col: int) -> Optional[str]:
    """The accepted region (its id) whose box holds full-resolution pixel ``(row, col)`` of an uncertainty layer
    shown untinted there, or None."""
    kept = _reviewed(layer)
    if kept is None:
        return None
    return next((rid for rid, (y0, x0, y1, x1) in sorted(kept["boxes"].items(), reverse=True)
                 if y0 <= row < y1 and x0 <= col < x1), None)


def show_reviewed(layer: Any, boxes: Dict[str, BBox]) -> bool:
    """Show an image's uncertainty layer without its tint inside ``boxes`` (region id -> box: its accepted
    regions), and with it again inside boxes no longer given (withdrawn): its data (each level of a large image's
    pyramid of strided views) is read through :class:`UntintedLevel`; nothing is copied. Another pyramid is left
    as it is. Returns whether the layer changed."""
    layer = unwrap_layer(layer)
    multiscale = bool(getattr(layer, "multiscale", False))
    kept = _reviewed(layer)
    if kept is None:
        layer.metadata.pop(REVIEWED_KEY, None)  # a stale record (the layer's data was replaced) holds the old map
    boxes = {str(rid): tuple(int(v) for v in box) for rid, box in boxes.items()}
    old = kept["boxes"] if kept is not None else {}
    if old == boxes:
        return False
    if not boxes:  # the last withdrawn: the layer shows the map itself again
        layer.metadata.pop(REVIEWED_KEY, None)
        layer.data = kept["values"] if multiscale else kept["values"][0]
        return True
    if kept is not None:
        kept["boxes"] = boxes
        kept["shown"][0].boxes[:] = list(boxes.values())  # shared by every level
        layer.refresh()
        return True
    values = list(layer.data) if multiscale else [layer.data]
    steps = _level_steps(values) if multiscale else [1]
    if steps is None or np.ndim(values[0]) != 2:
        return False
    shared: List[BBox] = list(boxes.values())
    kept = {"values": values, "shown": [UntintedLevel(v, k, shared) for v, k in zip(values, steps, strict=True)],
            "boxes": boxes}
    layer.metadata[REVIEWED_KEY] = kept
    layer.data = kept["shown"] if multiscale else kept["shown"][0]
    return True


def robust_range(values: np.ndarray, image: Optional[np.ndarray] = None) -> Tuple[float, float]:
    """Contrast limits of a heat map: ``src_model.contrast.display_range`` over the tissue of ``image``
    (all pixels when no image of the map's shape is given). Imports no torch."""
    from src_model.contrast import display_range
    from src_model.tissue import tissue_mask

    tissue = None
    if image is not None and tuple(np.shape(image)[:2]) == tuple(np.shape(values)):
        image = np.asarray(image)
        if image.ndim != 3 or image.dtype != np.uint8:  # a grey or 16-bit layer's pixels: as the model read them
            from src_model.io import ImageReadError, to_rgb_uint8

            try:
                image = to_rgb_uint8(image)
            except ImageReadError:
                image = None
        if image is not None and image.ndim == 3 and image.shape[2] >= 3:
            tissue = tissue_mask(image[..., :3])
    lo, hi = display_range(values, tissue)
    return float(lo), float(hi)


# Gland labels: 3 px outlines by default (the H&E under them stays readable), or filled at low
# opacity ("Fill glands"). A prediction written to a "(version)" layer is drawn thinner and fainter,
# so the one being tried cannot be mistaken for the image's own prediction layer.
OUTLINE_WIDTH = 3
FILL_OPACITY = 0.4
SECONDARY_OUTLINE_WIDTH = 1
SECONDARY_OPACITY = 0.6


def style_prediction(layer: Any, fill: bool = False, secondary: bool = False) -> None:
    """Draw a prediction Labels layer as outlines or filled glands (fainter for a version layer, and in its own colour,
    :func:`tried_gland_colormap`).

    Args:
        layer: the Labels layer.
        fill: filled glands at ``FILL_OPACITY`` instead of outlines.
        secondary: a prediction written beside the image's own prediction layer ("(version)").
    """
    colormap = getattr(getattr(layer, "colormap", None), "name", None)
    if secondary and colormap != TRIED_CMAP_NAME:
        layer.colormap = tried_gland_colormap()
    elif not secondary and colormap == TRIED_CMAP_NAME:  # the image's own prediction layer: the four gland colours
        layer.colormap = gland_colormap()
    if fill:
        contour, opacity = 0, FILL_OPACITY * (SECONDARY_OPACITY if secondary else 1.0)
    else:
        contour, opacity = (SECONDARY_OUTLINE_WIDTH if secondary else OUTLINE_WIDTH), (
            SECONDARY_OPACITY if secondary else 1.0)
    # set only when changed: napari slices a labels layer again for each change of its contour
    if getattr(layer, "contour", None) != contour:
        layer.contour = contour
    if getattr(layer, "opacity", None) != opacity:
        layer.opacity = opacity


def prediction_layers(viewer: Any) -> List[Tuple[Any, bool]]:
    """Every prediction Labels layer of the plugin, with whether it is a secondary ("(version)") one."""
    out = []
    for layer in viewer.layers:
        meta = getattr(layer, "metadata", None) or {}
        if meta.get(ROLE_KEY) == "prediction":
            main = names_for(str(meta.get(IMAGE_KEY, "")))["prediction"]
            out.append((layer, layer.name != main))
    return out


def prediction_image_layers(umap: np.ndarray, display_range: Tuple[float, float], prediction: Any = None,
                            image: Optional[np.ndarray] = None, entropy: bool = False, branches: bool = False
                            ) -> List[Tuple[str, Callable[[], np.ndarray], Dict[str, Any]]]:
    """The image layers of a prediction, as the dock shows them: ``(role, data (computed when called), layer
    properties)`` for the uncertainty map ``umap`` over ``display_range`` (see :data:`UNCERTAINTY_CMAP` for the
    colours) and, of ``prediction``, the raw branch disagreement (hidden: the uncertainty layer is the one to
    read), drawn the same way over its own robust range over ``image``'s tissue (its values rarely exceed
    0.08, so a fixed 0..1 range would leave it invisible), the entropy map (``entropy``) and each branch's
    foreground probability (``branches``)."""
    lo, hi = (float(v) for v in display_range)
    tint = dict(colormap=uncertainty_colormap(), opacity=UNCERTAINTY_OPACITY, blending="translucent", gamma=1.0)
    out: List[Tuple[str, Callable[[], np.ndarray], Dict[str, Any]]] = [
        ("uncertainty", lambda: np.asarray(umap, dtype=np.float32), dict(tint, contrast_limits=(lo, hi), visible=True))]
    if prediction is None:
        return out
    disagreement = np.asarray(prediction.disagreement, dtype=np.float32)
    out.append(("disagreement", lambda: disagreement,
                dict(tint, contrast_limits=robust_range(disagreement, image), visible=False)))
    heat = dict(contrast_limits=(0.0, 1.0), opacity=0.5, blending="translucent", gamma=0.5)
    if entropy and getattr(prediction, "entropy", None) is not None:
        out.append(("entropy", lambda: np.asarray(prediction.entropy, np.float32),
                    dict(heat, colormap="magma", visible=True)))
    probs = getattr(prediction, "branch_probs", None)
    if branches and probs is not None:
        for k in range(3):
            out.append((f"branch{k + 1}", lambda k=k: np.asarray(probs[k][1:].sum(axis=0), dtype=np.float32),
                        dict(heat, colormap="viridis", visible=False)))
    return out


def uncertainty_layer_steps(viewer: Any, image_name: str, umap: np.ndarray, display_range: Tuple[float, float],
                            out: Dict[str, Any], visible: bool = True, disagreement: Optional[np.ndarray] = None,
                            image: Optional[np.ndarray] = None) -> Iterator[None]:
    """Add or update the image's uncertainty layer: ``umap`` (H, W) as float32 over ``display_range``
    (:func:`prediction_image_layers`), and its hidden branch-disagreement layer when ``disagreement``
    (H, W) is given (contrast from its robust range over ``image``'s tissue); yields after each layer (a
    layer added is a few hundred ms of GUI work: one per event-loop turn), ``out[role]`` the layer."""
    names = names_for(image_name)
    kept = None if disagreement is None else SimpleNamespace(disagreement=disagreement)
    for role, data, props in prediction_image_layers(umap, display_range, kept, image):
        out[role] = upsert_layer(viewer, names[role], data(), "image", metadata=_role(role, image_name),
                                 **{**props, "visible": visible and props["visible"]})
        yield


def show_prediction(viewer: Any, image_name: str, prediction: Any, *, instances: Optional[np.ndarray] = None,
                    uncertainty: Optional[np.ndarray] = None,
                    display_range: Optional[Tuple[float, float]] = None, labels_name: Optional[str] = None,
                    entropy: bool = False, branches: bool = False, fill: bool = False) -> Dict[str, Any]:
    """Add or update the layers of one prediction.

    Args:
        viewer: napari viewer (model).
        image_name: name of the source image layer (layers are named after it).
        prediction: a ``src_model.inference.Prediction`` (labels (H, W) uint8, disagreement and
            entropy (H, W) float32 in [0, 1], optional uncertainty (H, W), optional branch_probs).
        instances: one label per gland (H, W) int; default: ``prediction.labels``.
        uncertainty: the map shown as "uncertainty" (default: ``prediction.uncertainty``, else
            the disagreement).
        display_range: its contrast limits (robust range over tissue); default (0, 1).
        labels_name: name of the Labels layer to write (default: the image's "prediction" layer;
            the dock passes another name so that unaccepted edits are never overwritten). A name that is
            the prediction layer's plus a suffix sends the maps to hidden layers with that suffix too.
        entropy: also show the normalised entropy map.
        branches: also show each branch's foreground probability (needs ``branch_probs``).
        fill: draw the glands filled (see :func:`style_prediction`) instead of as outlines.

    Returns:
        Mapping role -> layer, for the layers added or updated.
    """
    names = names_for(image_name)
    out: Dict[str, Any] = {}
    disagreement = np.asarray(prediction.disagreement, dtype=np.float32)
    if uncertainty is None:
        uncertainty = getattr(prediction, "uncertainty", None)
    umap = disagreement if uncertainty is None else np.asarray(uncertainty, dtype=np.float32)
    # The uncertainty map's useful values span a small part of [0, 1], so its contrast comes from its
    # own robust range over tissue (``display_range``).
    image = viewer.layers[image_name].data if image_name in viewer.layers else None
    target = labels_name or names["prediction"]
    # a side prediction's maps go to hidden layers named with its suffix (as LiveLayers.adopt names them)
    suffix = side_suffix(image_name, target)
    for role, data, props in prediction_image_layers(umap, display_range or (0.0, 1.0), prediction, image,
                                                     entropy=entropy, branches=branches):
        props = {**props, "visible": False} if suffix else props
        out[role] = upsert_layer(viewer, names[role] + suffix, data(), "image", metadata=_role(role, image_name),
                                 **props)
    labels = np.array(prediction.labels if instances is None else instances, dtype=np.int32, copy=True)
    layer = upsert_layer(viewer, target, labels, "labels", metadata=_role("prediction", image_name))
    secondary = target != names["prediction"]
    # bright, one colour per gland; a "(version)" layer's in its own colour (style_prediction)
    layer.colormap = tried_gland_colormap() if secondary else gland_colormap()
    style_prediction(layer, fill=fill, secondary=secondary)
    out["prediction"] = layer
    return out


def unaccepted_edits(current: np.ndarray, original: np.ndarray, accepted: Sequence[BBox]) -> int:
    """Pixels where a labels layer differs from the model's prediction outside accepted boxes.

    Args:
        current: the labels layer's data (H, W).
        original: the prediction as the model made it (H, W).
        accepted: (y0, x0, y1, x1) boxes already stored in the project (their edits are safe).

    Returns:
        The number of edited pixels that would be lost if the layer were overwritten.
    """
    current, original = np.asarray(current), np.asarray(original)
    if current.shape != original.shape:
        return int(current.size)  # not the model's output at all: treat every pixel as the user's
    changed = current != original
    for y0, x0, y1, x1 in accepted:
        changed[y0:y1, x0:x1] = False
    return int(changed.sum())


#: What a prediction layer held inside a box when the box was made safe: accepted (its edits are in
#: the store) or pasted (the store's corrections written over a new prediction). ``inside`` (bool
#: (h, w), or None for the whole box) limits it to a drawn polygon's pixels.
Reviewed = Tuple[BBox, Optional[np.ndarray], np.ndarray]


def unsaved_edits(current: np.ndarray, original: np.ndarray, reviewed: Sequence[Reviewed]) -> int:
    """Pixels of a prediction layer that overwriting it would lose.

    A pixel is safe when it still holds the model's prediction, or, inside a box that was accepted
    or pasted, what the layer held at that moment (the store has it). An edit made inside an
    accepted box after it was accepted is not in the store: it counts, as does an edit outside a
    drawn polygon's pixels.

    Args:
        current: the labels layer's data (H, W).
        original: the prediction as the model made it (H, W).
        reviewed: ``(bbox, inside, crop)`` in the order they happened (a later one wins).

    Returns:
        The number of pixels that differ from what is safe.
    """
    current, original = np.asarray(current), np.asarray(original)
    if current.shape != original.shape:
        return int(current.size)  # not the model's output at all: treat every pixel as the user's
    changed = current != original
    for (y0, x0, y1, x1), inside, crop in reviewed:
        crop = np.asarray(crop)
        if crop.shape != (y1 - y0, x1 - x0) or y1 > current.shape[0] or x1 > current.shape[1]:
            continue
        box = (slice(y0, y1), slice(x0, x1))
        differs = current[box] != crop
        changed[box] = differs if inside is None else np.where(inside, differs, changed[box])
    return int(changed.sum())


def shape_bbox(vertices: np.ndarray, hw: Tuple[int, int]) -> Optional[BBox]:
    """Pixel box (y0, x0, y1, x1) of a drawn shape: the pixels whose centres lie inside its extent.

    Args:
        vertices: (N, 2) (row, col) vertices in the image's data coordinates.
        hw: image height and width (the box is clipped to it).

    Returns:
        The box, or None if it holds no pixel of the image.
    """
    v = np.asarray(vertices, dtype=float)[:, -2:]
    lo, hi = v.min(axis=0), v.max(axis=0)
    y0, x0 = (max(0, int(np.ceil(c))) for c in lo)
    y1, x1 = (min(lim, int(np.floor(c)) + 1) for c, lim in zip(hi, hw, strict=True))
    return (y0, x0, y1, x1) if y1 > y0 and x1 > x0 else None


def polygon_mask(vertices: np.ndarray, bbox: BBox) -> np.ndarray:
    """Pixels of ``bbox`` whose centres lie inside a polygon (bool (h, w)); matplotlib-free."""
    from skimage.draw import polygon2mask

    y0, x0, y1, x1 = bbox
    v = np.asarray(vertices, dtype=float)[:, -2:] - (y0, x0)
    return polygon2mask((y1 - y0, x1 - x0), v)


def side_suffix(image_name: str, labels_name: str) -> str:
    """What follows the image's prediction layer name in ``labels_name`` (a side prediction's layer: a version
    tried, or a prediction written aside to keep edits; its maps go to hidden layers with the same suffix);
    "" for the image's own prediction layer or an unrelated name."""
    own = names_for(image_name)["prediction"]
    return labels_name[len(own):] if labels_name.startswith(own) else ""


def unwrap_layer(layer: Any) -> Any:
    """The layer itself, not napari's proxy of it for a plugin."""
    return getattr(layer, "__wrapped__", layer)


#: the dock's choosers' minimum width in characters (:func:`narrow_combo`): the dock fits beside the canvas at
#: napari's default window size (a longer name is elided; the list that drops down is as wide as its entries)
COMBO_CHARS = 6


def narrow_combo(combo: Any, chars: int = 12) -> None:
    """Let a QComboBox shrink below its longest entry: long layer names must not widen the dock."""
    policy = type(combo).SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
    combo.setSizeAdjustPolicy(policy)
    combo.setMinimumContentsLength(chars)


#: Style of the Shapes layers of an image's accepted regions (red edges: apart from the green / blue gland
#: outlines and the cyan review boxes) and of its review regions (cyan edges, no fill). Their edge widths are screen
#: pixels (:func:`show_frames` draws them so at every zoom): in image pixels, the outlines were thick bars over the
#: tissue at the zoom Next sets (walk 17).
ACCEPTED_WIDTH = 3
ACCEPTED_STYLE = dict(shape_type="rectangle", edge_color="red", face_color="transparent", edge_width=ACCEPTED_WIDTH,
                      opacity=0.9)
TILES_STYLE = dict(shape_type="rectangle", edge_color=TILE_COLOR, face_color="transparent", edge_width=TILE_WIDTH,
                   opacity=0.9)
#: layer.metadata key of an image's frame layers (review regions, accepted regions, the region shown): what they
#: frame, so that they can be drawn again at another zoom (:func:`frames_of`, :func:`redraw_frames`).
FRAMES_KEY = "napari_cdma_frames"
#: A frame layer is drawn again once the zoom took its widths out of this share of their screen pixels (not at each
#: step of a zoom: a Shapes layer's new data re-slices every layer, tens of ms; on a slide's too, the Whole slide
#: panel's outlines being frame layers as well).
FRAME_SLACK = (2 / 3, 1.5)
#: Steps per world unit (an image's pixel) of a frame's width (:func:`frame_rects`).
FRAME_STEPS = 1024


def scene_camera(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def frames_of(boxes: Sequence[Sequence[float]], px: Sequence[float], outside: Sequence[bool],
              image_hw: Optional[Tuple[int, int]] = None, downsample: float = 1.0) -> Dict[str, Any]:
    """What a frame layer frames (its :data:`FRAMES_KEY` metadata): the boxes (y0, x0, y1, x1; world units, each
    pixel ``downsample`` of them: an image's pixels, a slide's store pixels times its downsample) kept as the world
    edges of their pixels, each frame's width in screen pixels, whether it runs just outside the box's pixels (else
    just inside them), and the image's (H, W) in pixels when the whole stroke must stay on the image (a black frame
    on the black canvas was lost)."""
    return {"edges": [list(pixel_edges(b, downsample)) for b in boxes], "px": [float(p) for p in px],
            "outside": [bool(o) for o in outside], "image_hw": None if image_hw is None else list(image_hw),
            "downsample": float(downsample), "zoom": None}


def frame_rects(frames: Dict[str, Any], zoom: float) -> Tuple[List[np.ndarray], List[float]]:
    """The rectangles (corners, y x) and edge widths (world units) of :func:`frames_of`'s frames at ``zoom``
    (screen pixels per world unit): each :func:`~napari_cdma._slide_view.outline_rect` of its box's pixels."""
    rects, widths = [], []
    hw, ds = frames.get("image_hw"), float(frames.get("downsample", 1.0))
    for edges, px, outside in zip(frames["edges"], frames["px"], frames["outside"], strict=True):
        # a whole number of 1/1024 world units: the corners are then exact in the float32 napari keeps them in (on
        # an image), so that the frames of touching boxes, each inside its own, meet without overlapping
        width = max(1.0, round(float(px) / max(float(zoom), 1e-9) * FRAME_STEPS)) / FRAME_STEPS
        y0, x0, y1, x1 = outline_rect(edges, width, outside)
        if hw is not None:  # the whole stroke on the image, whose pixels span world [-0.5 ds, (H - 0.5) ds]
            lo = -0.5 * ds + width / 2.0
            y0, x0 = max(y0, lo), max(x0, lo)
            y1, x1 = min(y1, (hw[0] - 0.5) * ds - width / 2.0), min(x1, (hw[1] - 0.5) * ds - width / 2.0)
        rects.append(np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float))
        widths.append(width)
    return rects, widths


def show_frames(viewer: Any, image_name: str, role: str, frames: Dict[str, Any], style: Dict[str, Any]) -> Any:
    """Add or update the image's Shapes layer of ``role`` ("tiles", "accepted") with ``frames`` (:func:`frames_of`)
    drawn at the camera's zoom, their widths in screen pixels; :func:`redraw_frames` keeps them so as it zooms."""
    zoom = float(scene_camera(viewer).zoom)
    rects, widths = frame_rects(frames, zoom)
    layer = upsert_layer(viewer, names_for(image_name)[role], rects, "shapes", metadata=_role(role, image_name),
                         **{**style, "edge_width": widths or style.get("edge_width")})
    if rects:
        layer.metadata[FRAMES_KEY] = {**frames, "zoom": zoom}
    else:  # nothing framed: a layer whose shapes someone else draws (a slide's) is left to them
        layer.metadata.pop(FRAMES_KEY, None)
    return layer


def draw_frames(layer: Any, zoom: float) -> bool:
    """Draw a frame layer's frames (its :data:`FRAMES_KEY`) again at ``zoom``, with their colours; False (nothing
    done) when its shapes are no longer those frames (emptied, or drawn by other code)."""
    frames = (getattr(layer, "metadata", None) or {}).get(FRAMES_KEY)
    if not frames or len(layer.data) != len(frames["edges"]):
        return False
    rects, widths = frame_rects(frames, zoom)
    layer.data = rects  # as many shapes as before: napari keeps their colours
    layer.edge_width = widths
    frames["zoom"] = float(zoom)
    return True


def set_frames(layer: Any, frames: Dict[str, Any], zoom: float) -> bool:
    """Make a frame layer's shapes ``frames`` (:func:`frames_of`) drawn at ``zoom``, as :func:`show_frames` does on
    a layer already made, but its data set only when it frames other boxes or was drawn at a zoom out of
    :data:`FRAME_SLACK` (each data set re-slices every layer of the viewer: tens of ms on a slide's); new shapes
    take the layer's current colours. Whether its data was set."""
    zoom = float(zoom)
    meta = layer.metadata
    old = meta.get(FRAMES_KEY)
    if not frames["edges"]:
        meta.pop(FRAMES_KEY, None)
        if not len(layer.data):  # emptying an empty Shapes layer still re-slices it
            return False
        layer.data = []
        return True
    if old and old.get("zoom") and len(layer.data) == len(frames["edges"]) \
            and all(old.get(k) == v for k, v in frames.items() if k != "zoom") \
            and FRAME_SLACK[0] <= zoom / old["zoom"] <= FRAME_SLACK[1]:
        return False
    rects, widths = frame_rects(frames, zoom)
    layer.data = rects
    layer.edge_width = widths
    meta[FRAMES_KEY] = {**frames, "zoom": zoom}
    return True


def redraw_frames(viewer: Any) -> List[Any]:
    """Draw again the frame layers whose widths the camera's zoom took out of :data:`FRAME_SLACK` of their screen
    pixels; returns them."""
    zoom = float(scene_camera(viewer).zoom)
    out = []
    for layer in list(viewer.layers):
        frames = (getattr(layer, "metadata", None) or {}).get(FRAMES_KEY)
        drawn = frames.get("zoom") if frames else None
        if drawn and not FRAME_SLACK[0] <= zoom / drawn <= FRAME_SLACK[1] and draw_frames(layer, zoom):
            out.append(layer)
    return out


def overlay_layer(image_name: str, role: str, visible: bool = True) -> Any:
    """An empty Shapes layer of an image's review regions (``role`` "tiles") or accepted regions ("accepted"),
    styled and named as :func:`show_review_tiles` and :func:`show_accepted` make them, not yet in a viewer:
    a large image's prediction adds it while it runs, so that the hand-over only fills it."""
    from napari.layers import Shapes

    style = dict(TILES_STYLE if role == "tiles" else ACCEPTED_STYLE)
    return Shapes([], ndim=2, name=names_for(image_name)[role], visible=visible, metadata=_role(role, image_name),
                  **style)


def show_accepted(viewer: Any, image_name: str, boxes: Sequence[BBox]) -> Any:
    """Add or update the Shapes layer outlining the image's accepted regions (:data:`ACCEPTED_STYLE`): each red
    frame :data:`ACCEPTED_WIDTH` screen pixels wide just outside its box's pixels, none of which it covers."""
    boxes = list(boxes)
    return show_frames(viewer, image_name, "accepted", frames_of(boxes, [ACCEPTED_WIDTH] * len(boxes),
                                                                 [True] * len(boxes)), ACCEPTED_STYLE)


def not_yet_accepted(ranked: Sequence[RankedTile], accepted: Sequence[BBox], max_overlap: float = 0.5
                     ) -> List[RankedTile]:
    """Review regions less than ``max_overlap`` covered by any accepted box (those are reviewed)."""
    out = []
    for score, (y0, x0, y1, x1) in ranked:
        area = max(1, (y1 - y0) * (x1 - x0))
        covered = max((max(0, min(y1, b[2]) - max(y0, b[0])) * max(0, min(x1, b[3]) - max(x0, b[1]))
                       for b in accepted), default=0)
        if covered / area < max_overlap:
            out.append((score, (y0, x0, y1, x1)))
    return out


def tile_rectangles(tiles: Sequence[RankedTile]) -> List[np.ndarray]:
    """Rectangle corner arrays (4, 2) in (row, col) for napari Shapes, one per ranked tile."""
    rects = []
    for _, (y0, x0, y1, x1) in tiles:
        rects.append(np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float))
    return rects


def show_review_tiles(viewer: Any, image_name: str, tiles: Sequence[RankedTile]) -> Any:
    """Add or update the Shapes layer outlining the ranked review tiles (edges only, no fill)."""
    return upsert_layer(viewer, names_for(image_name)["tiles"], tile_rectangles(tiles), "shapes",
                        metadata=_role("tiles", image_name), **TILES_STYLE)


def camera_for_tile(bbox: BBox, canvas_hw: Tuple[int, int], margin: float = 1.05) -> Tuple[Tuple[float, float], float]:
    """Camera centre and zoom that make a tile fill the canvas.

    Args:
        bbox: (y0, x0, y1, x1) in data pixels (world = data for an unscaled layer).
        canvas_hw: canvas height and width in screen pixels.
        margin: >1 leaves a small border around the tile.

    Returns:
        ``((cy, cx), zoom)`` for ``viewer.camera.center`` and ``viewer.camera.zoom``.
    """
    y0, x0, y1, x1 = bbox
    h, w = max(1, y1 - y0), max(1, x1 - x0)
    ch, cw = max(1, canvas_hw[0]), max(1, canvas_hw[1])
    zoom = min(ch / (h * margin), cw / (w * margin))
    # napari pixel centres sit on integer coordinates: the tile spans [y0 - 0.5, y1 - 0.5].
    return ((y0 + y1 - 1) / 2.0, (x0 + x1 - 1) / 2.0), float(zoom)


def region_arrays(image: np.ndarray, corrected_labels: np.ndarray, original_labels: np.ndarray,
                  bbox: BBox) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops of one accepted region.

    Args:
        image: uint8 (H, W, 3).
        corrected_labels: the edited label map (H, W).
        original_labels: the model's label map before edits (H, W).
        bbox: (y0, x0, y1, x1).

    Returns:
        ``(image_crop (h, w, 3), corrected (h, w), predicted (h, w))``, copies; labels keep their
        integer type (one id per gland can exceed 255; the store keeps up to uint32).
    """
    y0, x0, y1, x1 = bbox
    return (np.array(image[y0:y1, x0:x1], copy=True),
            np.array(corrected_labels[y0:y1, x0:x1], copy=True),
            np.array(original_labels[y0:y1, x0:x1], copy=True))


def ids_like(reference: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """``reference`` (a stored correction, int (h, w)) in the ids a layer shows it with: each of its glands takes
    the id ``shown`` has most often over it (0 stays 0). A correction pasted with new (or joined) ids then equals the
    layer where nothing was edited since, and an edit (erased, painted, merged or split) still differs."""
    ref = np.asarray(reference).astype(np.int64, copy=False)
    shown = np.asarray(shown).astype(np.int64, copy=False)
    out = np.zeros(ref.shape, np.int32)
    ids, inverse = np.unique(ref, return_inverse=True)
    inverse = inverse.reshape(ref.shape)
    for k, gland in enumerate(ids):
        if gland == 0:
            continue
        under = shown[inverse == k]
        under = under[under > 0]
        if under.size:
            values, counts = np.unique(under, return_counts=True)
            out[inverse == k] = values[np.argmax(counts)]
        else:  # erased whole since: any id differs from the layer's 0
            out[inverse == k] = -1
    return out


def _border_joins(labels: np.ndarray, box: BBox, local: np.ndarray, n: int) -> np.ndarray:
    """Which outside gland each pasted gland of a box joins: ``out[k]`` is the id (in ``labels``) that pasted
    gland ``k`` (1..n, ``local``'s indices; 0 is background) takes, 0 where it keeps a fresh one.

    Only 4-neighbour pixel pairs across the box's border count (gland on both sides). Pairs are matched
    longest shared border first: each pasted gland takes at most one outside gland's id and each outside
    gland is taken by at most one pasted gland, so a gland split inside the box stays split; ties go to the
    smaller index, then the smaller id. Reads the box's border rows and columns only.

    Args:
        labels: the labels the box is pasted into (H, W), its outside as it is before this paste.
        box: ``(y0, x0, y1, x1)`` inside ``labels``.
        local: (y1 - y0, x1 - x0) pasted gland indices 0..n.
        n: the number of pasted glands.
    """
    y0, x0, y1, x1 = box
    h, w = labels.shape[:2]
    inside, outside = [], []
    if y0 > 0:
        inside.append(local[0, :])
        outside.append(labels[y0 - 1, x0:x1])
    if y1 < h:
        inside.append(local[-1, :])
        outside.append(labels[y1, x0:x1])
    if x0 > 0:
        inside.append(local[:, 0])
        outside.append(labels[y0:y1, x0 - 1])
    if x1 < w:
        inside.append(local[:, -1])
        outside.append(labels[y0:y1, x1])
    out = np.zeros(n + 1, np.int64)
    if not inside:
        return out
    a = np.concatenate(inside).astype(np.int64)
    b = np.concatenate(outside).astype(np.int64)
    both = (a > 0) & (b > 0)
    if not both.any():
        return out
    a, b = a[both], b[both]
    base = int(b.max()) + 1
    keys, counts = np.unique(a * base + b, return_counts=True)  # (pasted, outside) pairs, one int64 key each
    pasted, others = keys // base, keys % base
    taken = set()
    for i in np.lexsort((others, pasted, -counts)):  # longest shared border first
        k, other = int(pasted[i]), int(others[i])
        if out[k] == 0 and other not in taken:
            out[k] = other
            taken.add(other)
    return out


def paste_corrections(labels: np.ndarray, corrections: Sequence[Tuple[BBox, np.ndarray]]) -> int:
    """Write accepted corrected masks into a new prediction's labels, inside their boxes (in place).

    A new model's prediction would otherwise hide what the pathologist accepted; the store keeps
    the corrections, so the layer shows them. A pasted gland that touches the box's border where a
    gland lies right across it (outside the box) takes that gland's id, so a gland crossing the box's
    edge stays one gland (walk 22: an accepted box made one gland two labels along its edges); see
    :func:`_border_joins` for which one. Every other pasted gland gets an id above every id already in
    ``labels`` (it does not take the colour of a predicted gland).

    Args:
        labels: int label map (H, W), changed in place.
        corrections: ``((y0, x0, y1, x1), corrected (h, w))`` pairs, oldest first (a later one
            wins where boxes overlap, as it was accepted over the earlier one; its glands can join
            the earlier one's across its border).

    Returns:
        How many corrections were pasted (those that do not fit their box are skipped).
    """
    pasted = 0
    top = None  # above every id in labels (read once: the pastes below only add ids up to it)
    for (y0, x0, y1, x1), mask in corrections:
        mask = np.asarray(mask)
        if mask.shape != (y1 - y0, x1 - x0) or y1 > labels.shape[0] or x1 > labels.shape[1]:
            continue
        if top is None:
            top = int(labels.max()) if labels.size else 0
        local, present = _gland_indices(mask)
        joins = _border_joins(labels, (y0, x0, y1, x1), local, len(present) - 1)
        fresh = present & (joins == 0)
        new_ids = np.where(fresh, top + np.cumsum(fresh), joins)  # in the mask's id order, as before
        top += int(fresh.sum())
        labels[y0:y1, x0:x1] = new_ids.astype(labels.dtype)[local]
        pasted += 1
    return pasted


def _gland_indices(mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """A correction's pixels as indices (0 = background, glands in the order of their ids) and which
    indices are glands. Small non-negative ids index as they are (no sort of the box's pixels: a 2048 px
    box is 4 M of them); others go through :func:`numpy.unique`."""
    if mask.dtype == bool:
        mask = mask.view(np.uint8)
    if mask.dtype.kind in "iu" and mask.size:
        lo, hi = int(mask.min()), int(mask.max())
        if lo >= 0 and hi <= 4 * mask.size:
            present = np.bincount(mask.ravel().astype(np.intp, copy=False), minlength=hi + 1) > 0
            present[0] = False
            return mask, present
    ids, inverse = np.unique(mask, return_inverse=True)
    index = np.where(ids == 0, 0, np.cumsum(ids != 0))
    present = np.zeros(int(index.max(initial=0)) + 1, bool)
    present[1:] = True
    return index[inverse.reshape(mask.shape)], present


def raise_overlays(viewer: Any, image_name: str) -> None:
    """Move an image's review overlays above its prediction layers.

    A new "(version)" prediction or uncertainty layer is added on top of the list and would hide
    the accepted boxes and corrections; this puts, from the bottom up, the accepted corrections,
    the review tiles, the user's drawn regions and the accepted boxes back on top.
    """
    names = names_for(image_name)
    order = [n for n in (names["corrections"], names["tiles"], names["drawn"], names["accepted"]) if n in viewer.layers]
    if [ly.name for ly in viewer.layers][len(viewer.layers) - len(order):] == order:
        return  # already on top in that order (a large image's prediction adds them so): each move redraws
    for name in order:
        index = viewer.layers.index(viewer.layers[name])
        viewer.layers.move(index, len(viewer.layers))
