"""What a project store brings back into the viewer: its images and accepted regions as layers.

The store keeps no predictions (only the predicted crop of each accepted region), so reopening a
store shows each stored image, a Shapes layer of its accepted boxes and a Labels layer of its
accepted corrections; the prediction comes back when the user presses Predict.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, Iterable, List

import numpy as np

from ._layers import (
    HASH_KEY,
    IMAGE_KEY,
    ROLE_KEY,
    LayerInputError,
    image_from_layer,
    is_derived,
    names_for,
    show_accepted,
)
from .project.store import ProjectStore, RegionRecord, StoreError, hash_image


def open_image_hashes(viewer: Any) -> Dict[str, str]:
    """Store hash -> name of each open RGB image layer (the plugin's own layers left out).

    Layers the dock restored or predicted carry their hash in their metadata (the predict worker
    computes it off the GUI thread); others are hashed here, on the calling thread, as the model
    would read them (uint8 RGB): a few ms for a GlaS-sized image, 0.4 s for 6000 x 6000 px (busy 2-core machine).
    Layers that cannot be model input (multiscale, too large, not RGB) are skipped.
    """
    from napari.layers import Image

    out: Dict[str, str] = {}
    for layer in viewer.layers:
        if not isinstance(layer, Image) or is_derived(layer):
            continue
        digest = (layer.metadata or {}).get(HASH_KEY)
        if not digest:
            try:
                digest = hash_image(image_from_layer(layer))
            except LayerInputError:
                continue
        out.setdefault(str(digest), layer.name)
    return out


def regions_by_image(regions: Iterable[RegionRecord]) -> Dict[str, List[RegionRecord]]:
    """Live regions grouped by their image hash."""
    out: Dict[str, List[RegionRecord]] = defaultdict(list)
    for r in regions:
        out[r.image_hash].append(r)
    return dict(out)


def _free_name(viewer: Any, name: str, digest: str) -> str:
    return name if name not in viewer.layers else f"{name} ({digest[:8]})"


def restore_layers(viewer: Any, store: ProjectStore, known: Dict[str, str]) -> Dict[str, str]:
    """Add the store's images that are not open, and each image's accepted boxes and corrections.

    Args:
        viewer: napari viewer (model).
        store: the opened project store.
        known: store hash -> name of an image layer already showing it (not added again).

    Returns:
        Store hash -> image layer name, for every stored image now shown (``known`` included).
    """
    names = dict(known)
    by_image = regions_by_image(store.regions())
    # Stored images all sit at the origin: only the first is shown when nothing else is, the others
    # come back hidden (tick their eye to compare) rather than stacked over the open image.
    show = not any(getattr(ly, "visible", False) and not is_derived(ly) for ly in viewer.layers)
    # Whole images only: a slide-sized source keeps context crops, which are not shown as images.
    for digest, image in store.whole_images(skip_damaged=True):
        if digest in names:
            continue
        source = next((r.source_path for r in by_image.get(digest, []) if r.source_path), None)
        name = _free_name(viewer, Path(source).stem if source else f"stored image {digest[:8]}", digest)
        meta = {HASH_KEY: digest, **({"source_path": source} if source else {})}
        viewer.add_image(image, name=name, rgb=True, metadata=meta, visible=show)
        show = False
        names[digest] = name
    for digest, regions in by_image.items():
        name = names.get(digest)
        if name is None or name not in viewer.layers:
            continue
        visible = bool(viewer.layers[name].visible)
        show_accepted(viewer, name, [r.bbox for r in regions]).visible = visible
        shape = viewer.layers[name].data.shape[:2]
        corrections = np.zeros(shape, dtype=np.int32)
        for r in regions:
            y0, x0, y1, x1 = r.bbox
            try:
                corrections[y0:y1, x0:x1] = store.load_region(r.region_id)[1]
            except StoreError:  # a damaged region: its box is still shown, its pixels cannot be
                continue
        layer_name = names_for(name)["corrections"]
        if layer_name in viewer.layers:
            viewer.layers[layer_name].data = corrections
        else:
            layer = viewer.add_labels(corrections, name=layer_name, opacity=0.6, visible=visible,
                                      metadata={ROLE_KEY: "corrections", IMAGE_KEY: name})
            layer.contour = 2
    return names
