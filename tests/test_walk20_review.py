"""Leftovers of the walks of the dock's Review panel: a rectangle drawn with Draw was yellow, the colour of the selected
review region's frame, so it looked like a selected suggestion.

A real napari viewer (pytest-xvfb), the real dock, GlaS images and a real project store on disk (test_walk15's set-up).
"""
from __future__ import annotations

import numpy as np
from napari.utils.colormaps.standardize_color import transform_color
from test_walk15_dock import FIRST, _at_next, _turn

from napari_cdma._layers import (
    ACCEPTED_STYLE,
    CUSTOM_RAMPS,
    GLAND_COLORS,
    TILE_COLOR,
    UNCERTAINTY_CMAP,
    names_for,
)
from napari_cdma._widget_display import SELECTED_COLOR
from napari_cdma._widget_review import CURRENT_TILE_COLOR, SHOWN_COLOR


def _rgb(color):
    return np.asarray(transform_color(color)[0][:3], dtype=float)


def test_a_drawn_rectangle_is_not_drawn_in_any_colour_of_the_dock(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock, review = _at_next(make_napari_viewer, qtbot, tmp_path, glas_dir)
    tiles = viewer.layers[names_for(FIRST)["tiles"]]
    selected = np.asarray(tiles.edge_color)[review.tile_list.currentRow()][:3]
    drawn = review.start_drawing()
    drawn.add_rectangles([[50, 50], [200, 250]])  # as napari draws one: in the layer's current colour
    _turn(qtbot)
    edge = np.asarray(drawn.edge_color[0][:3], dtype=float)
    # before: yellow, the selected review region's frame (a drawn rectangle looked like a selected suggestion)
    assert np.abs(edge - selected).max() > 0.3, (edge, selected)
    overlays = [CURRENT_TILE_COLOR, TILE_COLOR, ACCEPTED_STYLE["edge_color"], SHOWN_COLOR, SELECTED_COLOR,
                *GLAND_COLORS, *CUSTOM_RAMPS[UNCERTAINTY_CMAP]]  # nor the uncertainty tint's greens
    for other in overlays:
        assert np.abs(edge - _rgb(other)).max() > 0.3, (edge, other)
