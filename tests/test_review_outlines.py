"""The review boxes' outlines on the canvas: the engine's boxes never overlap but may touch, and their drawn
outlines (each with its stroke width) must neither overlap nor cross; the selected (thicker) one is drawn just
outside its box, so the region Next shows is seen whole (issue 8: "outlined outside the region")."""
from __future__ import annotations

import itertools

import numpy as np
from _dock import open_dock

from napari_cdma._layers import TILE_WIDTH, names_for, show_review_tiles
from napari_cdma._widget_review import CURRENT_TILE_WIDTH, scene_camera
from src_model.uncertainty import review_regions


def _touching_boxes():
    """The engine's top review boxes of a map uncertain all over a tissue-filled image: boxes side by side."""
    rng = np.random.default_rng(0)
    umap = (0.6 + 0.4 * rng.random((512, 640))).astype(np.float32)
    instances = np.zeros((512, 640), np.int32)
    ranked = review_regions(None, n=10, uncertainty_map=umap, instances=instances,
                            tissue=np.ones((512, 640), bool))
    return [(float(s), tuple(int(v) for v in b)) for s, b in ranked]


def _stroke_extents(layer):
    """Each shape's outer extent (y0, x0, y1, x1) once its edge width is drawn, half each side of its line."""
    out = []
    for data, width in zip(layer.data, np.asarray(layer.edge_width, dtype=float), strict=True):
        lo, hi = np.min(data, axis=0)[-2:], np.max(data, axis=0)[-2:]
        out.append((lo[0] - width / 2, lo[1] - width / 2, hi[0] + width / 2, hi[1] + width / 2))
    return out


def _crossing_pairs(extents):
    """Pairs of outlines that share canvas area: for shapes that are not nested, their outer extents meet."""
    return [(i, j) for (i, a), (j, b) in itertools.combinations(enumerate(extents), 2)
            if min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])]


def test_review_outlines_do_not_overlap(make_napari_viewer, monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_CDMA_PROJECT", str(tmp_path / "no_store"))
    viewer = make_napari_viewer(show=False)
    widget = open_dock(viewer)
    viewer.add_image(np.zeros((512, 640, 3), np.uint8), name="he", rgb=True)
    tiles = _touching_boxes()
    assert len(tiles) >= 6
    touching = [(i, j) for (i, a), (j, b) in itertools.combinations(enumerate(t[1] for t in tiles), 2)
                if min(a[2], b[2]) >= max(a[0], b[0]) and min(a[3], b[3]) >= max(a[1], b[1])]
    assert touching  # boxes that share an edge: where outlines drawn on the edges would meet
    assert not _crossing_pairs([b for _, b in tiles])  # the engine's contract: the boxes never overlap

    # drawn on the boxes' edges (as the dock drew them), the outlines of touching boxes overlap
    layer = show_review_tiles(viewer, "he", tiles)
    assert _crossing_pairs(_stroke_extents(layer))

    review = widget.review_panel
    review.set_tiles("he", tiles)
    for row in (0, 3, -1):  # the selected box is drawn 5 screen px wide, the others 3 (at every zoom)
        review.go_to(row) if row >= 0 else review._highlight(-1)
        layer = viewer.layers[names_for("he")["tiles"]]
        assert len(layer.data) == len(tiles)
        extents = _stroke_extents(layer)
        others = [e for i, e in enumerate(extents) if i != row]
        assert not _crossing_pairs(others), (row, _crossing_pairs(others))
        for i, ((y0, x0, y1, x1), (a, b, c, d)) in enumerate(zip((t[1] for t in tiles), extents, strict=True)):
            if i == row:  # the selected outline lies wholly outside its box's pixels: the region is seen whole
                w = float(np.asarray(layer.edge_width)[i])
                assert w * scene_camera(viewer).zoom > TILE_WIDTH
                assert a + w <= y0 - 0.5 + 1e-6 and b + w <= x0 - 0.5 + 1e-6
                assert c - w >= y1 - 0.5 - 1e-6 and d - w >= x1 - 0.5 - 1e-6
            else:  # the others inside their own box's pixels (which span [y0 - 0.5, y1 - 0.5])
                assert a >= y0 - 0.5 - 1e-6 and b >= x0 - 0.5 - 1e-6 and c <= y1 - 0.5 + 1e-6 \
                    and d <= x1 - 0.5 + 1e-6
    assert np.allclose(np.asarray(layer.edge_width) * scene_camera(viewer).zoom, TILE_WIDTH, rtol=0.01)
    assert CURRENT_TILE_WIDTH > TILE_WIDTH

    # an accepted box leaves the list: the outlines redrawn stay apart
    dropped = review.drop_reviewed("he", tiles[0][1])
    assert dropped >= 1
    layer = viewer.layers[names_for("he")["tiles"]]
    assert len(layer.data) == len(tiles) - dropped and not _crossing_pairs(_stroke_extents(layer))
