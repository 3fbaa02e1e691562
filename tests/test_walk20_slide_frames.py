"""The Whole slide panel's outlines (review regions, accepted windows) are frame layers of the image review's one
mechanism (:func:`~napari_cdma._layers.frames_of`, :func:`~napari_cdma._layers.redraw_frames`): the panel had a
second copy of the rule keeping them a few screen pixels wide. Slide boxes are store pixels times a downsample
factor; their frames run inside a review region's pixels and just outside an accepted window's.

A real napari viewer (pytest-xvfb), the real dock, a real slide file and store, the bundled model.
"""
from __future__ import annotations

import numpy as np
from test_slide_panel_view import outlined_slide

from napari_cdma._layers import FRAME_SLACK, FRAMES_KEY, frame_rects, frames_of
from napari_cdma._slide_view import pixel_edges
from napari_cdma._widget_slide import OUTLINE_PX


def test_frames_of_takes_store_boxes_with_their_downsample():
    """A slide's box (store pixels times ``downsample``, world units) is framed around the world edges of its store
    pixels: store pixel i spans world [(i - 0.5) * ds, (i + 0.5) * ds]; the width stays screen pixels."""
    ds = 4.0
    world = (40.0, 80.0, 120.0, 200.0)  # store box (10, 20, 30, 50) x 4
    frames = frames_of([world, world], [3.0, 3.0], [True, False], downsample=ds)
    assert frames["edges"] == [list(pixel_edges(world, ds))] * 2 == [[38.0, 78.0, 118.0, 198.0]] * 2
    zoom = 0.25  # one world pixel is a quarter screen pixel: a 3 px frame is 12 world units wide
    (out, inside), widths = frame_rects(frames, zoom)
    assert widths == [12.0, 12.0]
    np.testing.assert_allclose(out.min(axis=0), [38.0 - 6.0, 78.0 - 6.0])  # just outside the store pixels
    np.testing.assert_allclose(out.max(axis=0), [118.0 + 6.0, 198.0 + 6.0])
    np.testing.assert_allclose(inside.min(axis=0), [38.0 + 6.0, 78.0 + 6.0])  # just inside them
    np.testing.assert_allclose(inside.max(axis=0), [118.0 - 6.0, 198.0 - 6.0])
    # image callers are unchanged: boxes in image pixels, pixel i spanning [i - 0.5, i + 0.5]
    assert frames_of([(10, 20, 30, 50)], [3.0], [True])["edges"] == [[9.5, 19.5, 29.5, 49.5]]


def _on_screen(layer, zoom):
    return np.asarray(layer.edge_width, dtype=float) * zoom


def test_slide_outlines_are_frame_layers_redrawn_by_the_shared_zoom_path(make_napari_viewer, qtbot, tmp_path,
                                                                         slide_path):
    """After Predict view and an accepted window, the slide's outline layers carry what they frame (FRAMES_KEY:
    review regions inside, the accepted window outside, OUTLINE_PX screen pixels); a zoom far out redraws them once
    through the dock's one zoom path, their widths OUTLINE_PX screen pixels again, the drawn zoom recorded; a zoom
    within the slack sets no data (each Shapes data set re-slices every layer), nor does showing the same windows
    again."""
    viewer, panel, record, tiles, accepted = outlined_slide(make_napari_viewer, qtbot, tmp_path, slide_path)
    for layer, outside in ((tiles, False), (accepted, True)):
        frames = layer.metadata.get(FRAMES_KEY)
        assert frames is not None, layer.name
        assert frames["px"] == [OUTLINE_PX] * len(layer.data) and frames["outside"] == [outside] * len(layer.data)
    assert accepted.metadata[FRAMES_KEY]["edges"] == [[v - 0.5 for v in record.bbox]]  # world edges of its pixels
    sets = {tiles.name: 0, accepted.name: 0}
    for layer in (tiles, accepted):
        layer.events.data.connect(lambda _e=None, name=layer.name: sets.__setitem__(name, sets[name] + 1))

    zoom = viewer.camera.zoom * FRAME_SLACK[1] * 0.9  # within the slack: nothing drawn again
    viewer.camera.zoom = zoom
    qtbot.wait(10)
    assert sets == {tiles.name: 0, accepted.name: 0}
    zoom = viewer.camera.zoom / 20  # out of it: each layer drawn again, once
    viewer.camera.zoom = zoom
    qtbot.wait(10)
    assert all(n >= 1 for n in sets.values()), sets
    for layer in (tiles, accepted):
        assert layer.metadata[FRAMES_KEY]["zoom"] == zoom
        np.testing.assert_allclose(_on_screen(layer, zoom), OUTLINE_PX, rtol=1e-3)
    half = float(np.asarray(accepted.edge_width)[0]) / 2.0
    y0, x0, y1, x1 = record.bbox
    np.testing.assert_allclose(np.asarray(accepted.data[0]).min(axis=0), [y0 - 0.5 - half, x0 - 0.5 - half])
    for (_, (y0, x0, y1, x1)), corners in zip(panel.tiles, tiles.data, strict=True):
        lo, hi = np.asarray(corners).min(axis=0), np.asarray(corners).max(axis=0)
        assert np.all(lo >= [y0 - 0.5, x0 - 0.5]) and np.all(hi <= [y1 - 0.5, x1 - 0.5])
    before = dict(sets)
    assert panel.show_accepted_windows().name == accepted.name  # the same windows again: no data set
    panel._list_tiles()
    assert sets == before
    np.testing.assert_allclose(accepted.edge_color[0], [1.0, 0.0, 0.0, 1.0])  # red, as accepted image regions
