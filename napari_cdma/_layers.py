"""Qt-free glue between engine results and napari layers.

Everything here works on a ``napari.components.ViewerModel`` (or ``napari.Viewer``) and plain
arrays: it can be used from scripts and tested without widgets. Layers are added once and
updated in place on later runs, so re-running Predict never duplicates them.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

BBox = Tuple[int, int, int, int]
RankedTile = Tuple[float, BBox]


ROLE_KEY = "napari_cdma_role"  # layer.metadata key naming a derived layer's role ("prediction", ...)


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
        Mapping of role ("prediction", "disagreement", "entropy", "branch1".., "tiles") to name.
    """
    names = {
        "prediction": f"{image_name} prediction",
        "disagreement": f"{image_name} disagreement",
        "entropy": f"{image_name} entropy",
        "tiles": f"{image_name} review tiles",
    }
    for k in (1, 2, 3):
        names[f"branch{k}"] = f"{image_name} branch {k} foreground"
    return names


def max_pixels() -> int:
    """Largest image (in pixels) the plugin sends to in-memory prediction: ``src_model.io.MAX_PIXELS``."""
    from src_model.io import MAX_PIXELS  # torch-free; read at call time so tests can patch it

    return int(MAX_PIXELS)


def image_from_layer(layer: Any, pixel_limit: Optional[int] = None) -> np.ndarray:
    """Validate a layer as H&E model input and return it as uint8 RGB.

    Args:
        layer: a napari layer.
        pixel_limit: largest accepted H*W (default: :func:`max_pixels`).

    Returns:
        uint8 array of shape (H, W, 3).

    Raises:
        LayerInputError: not an image layer, not RGB(A), multiscale, or too large.
    """
    from napari.layers import Image

    if layer is None:
        raise LayerInputError("No image layer selected: open an H&E image first.")
    if not isinstance(layer, Image):
        raise LayerInputError(f"Layer '{layer.name}' is a {type(layer).__name__} layer; "
                              "choose an RGB H&E image layer.")
    if layer.multiscale:
        raise LayerInputError(f"Layer '{layer.name}' is multiscale (a pyramid); open a single-scale "
                              "region of the slide to predict in the viewer.")
    shape = tuple(layer.data.shape)
    if len(shape) != 3 or shape[-1] not in (3, 4) or not layer.rgb:
        raise LayerInputError(f"Layer '{layer.name}' has shape {shape}; the model needs an RGB image "
                              "(H, W, 3) such as an H&E slide region.")
    limit = max_pixels() if pixel_limit is None else int(pixel_limit)
    if shape[0] * shape[1] > limit:
        raise LayerInputError(f"Layer '{layer.name}' is {shape[1]} x {shape[0]} pixels, more than the "
                              f"{limit:,} pixel limit for in-viewer prediction; use the `cdma predict` "
                              "command line on the slide instead.")
    data = np.asarray(layer.data)[..., :3]
    if data.dtype != np.uint8:
        hi = float(np.nanmax(data)) if data.size else 0.0
        scale = 255.0 if hi <= 1.0 else 1.0
        data = np.clip(np.nan_to_num(data.astype(np.float32)) * scale, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(data)


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


def fading_colormap(base: str = "inferno") -> Any:
    """A napari colormap like ``base`` whose alpha rises from 0 (transparent) to 1.

    Args:
        base: name of a napari colormap.

    Returns:
        ``napari.utils.Colormap`` named ``"<base> (fading)"``.
    """
    from napari.utils.colormaps import Colormap, ensure_colormap

    colors = np.array(ensure_colormap(base).map(np.linspace(0.0, 1.0, 64)), dtype=np.float32)
    colors[:, 3] = np.clip(np.linspace(0.0, 1.0, 64) * 1.5, 0.0, 1.0)
    return Colormap(colors, name=f"{base}_fading", display_name=f"{base} (fading)")


def _role(role: str) -> Dict[str, str]:
    return {ROLE_KEY: role}


def show_prediction(viewer: Any, image_name: str, prediction: Any, *, entropy: bool = False,
                    branches: bool = False) -> Dict[str, Any]:
    """Add or update the layers of one prediction.

    Args:
        viewer: napari viewer (model).
        image_name: name of the source image layer (layers are named after it).
        prediction: a ``src_model.inference.Prediction`` (labels (H, W) uint8, disagreement and
            entropy (H, W) float32 in [0, 1], optional branch_probs (3, C, H, W)).
        entropy: also show the normalised entropy map.
        branches: also show each branch's foreground probability (needs ``branch_probs``).

    Returns:
        Mapping role -> layer, for the layers added or updated.
    """
    names = names_for(image_name)
    out: Dict[str, Any] = {}
    # Disagreement is small where the branches mostly agree; gamma < 1 lifts low values so the
    # overlay is visible while the contrast limits stay the true (0, 1) range. The colormap fades
    # to transparent at 0, so confident tissue stays readable under the overlay.
    heat = dict(contrast_limits=(0.0, 1.0), opacity=0.5, blending="translucent", gamma=0.5)
    out["disagreement"] = upsert_layer(viewer, names["disagreement"],
                                       np.asarray(prediction.disagreement, dtype=np.float32), "image",
                                       colormap=fading_colormap("inferno"), metadata=_role("disagreement"),
                                       **{**heat, "opacity": 0.85})
    if entropy and getattr(prediction, "entropy", None) is not None:
        out["entropy"] = upsert_layer(viewer, names["entropy"], np.asarray(prediction.entropy, np.float32),
                                      "image", colormap="magma", visible=True,
                                      metadata=_role("entropy"), **heat)
    branch_probs = getattr(prediction, "branch_probs", None)
    if branches and branch_probs is not None:
        for k in range(3):
            fg = np.asarray(branch_probs[k][1:].sum(axis=0), dtype=np.float32)
            out[f"branch{k + 1}"] = upsert_layer(viewer, names[f"branch{k + 1}"], fg, "image",
                                                 colormap="viridis", visible=False,
                                                 metadata=_role(f"branch{k + 1}"), **heat)
    labels = np.asarray(prediction.labels).astype(np.uint8, copy=True)
    out["prediction"] = upsert_layer(viewer, names["prediction"], labels, "labels", opacity=0.45,
                                     metadata=_role("prediction"))
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
                        shape_type="rectangle", edge_color="cyan", face_color="transparent",
                        edge_width=4, opacity=0.9, metadata=_role("tiles"))


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
        ``(image_crop (h, w, 3), corrected (h, w) uint8, predicted (h, w) uint8)``, copies.
    """
    y0, x0, y1, x1 = bbox
    return (np.array(image[y0:y1, x0:x1], copy=True),
            np.array(corrected_labels[y0:y1, x0:x1], dtype=np.uint8, copy=True),
            np.array(original_labels[y0:y1, x0:x1], dtype=np.uint8, copy=True))
