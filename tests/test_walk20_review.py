"""Leftovers of the walks of the dock's Review panel: a rectangle drawn with Draw was yellow, the colour of the selected
review region's frame, so it looked like a selected suggestion; the emptied "shown region" layer stayed in the layer
list after its black frame was closed; the "Look here next" rows wrapped in the middle of a coordinate pair.

A real napari viewer (pytest-xvfb), the real dock, GlaS images and a real project store on disk (test_walk15's set-up).
"""
from __future__ import annotations

import numpy as np
from napari.utils.colormaps.standardize_color import transform_color
from qtpy.QtGui import QFontMetricsF, QTextLayout, QTextOption
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
from napari_cdma._widget_review import CURRENT_TILE_COLOR, SHOWN_COLOR, SHOWN_SUFFIX


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


def _shown_layers(viewer):
    return [ly.name for ly in viewer.layers if ly.name.endswith(SHOWN_SUFFIX)]


def test_the_shown_region_layer_leaves_the_layer_list_when_its_frame_is_closed(make_napari_viewer, qtbot, tmp_path,
                                                                                 glas_dir):
    from test_walk14_dock import _click_region

    viewer, dock, review = _at_next(make_napari_viewer, qtbot, tmp_path, glas_dir)
    record = review.accept()
    assert record is not None, review.last_message
    _click_region(review, 0)
    _turn(qtbot)
    assert len(_shown_layers(viewer)) == 1 and review.shown_region == record.region_id
    active = viewer.layers.selection.active
    assert not review.show_withdrawn.isChecked()
    assert review.withdraw(record.region_id), review.last_message  # its row leaves the list, its frame goes
    _turn(qtbot)
    assert _shown_layers(viewer) == []  # before: an empty "testA_1 shown region" layer stayed listed
    assert viewer.layers.selection.active is active  # the brush stays where it was

    review.show_withdrawn.setChecked(True)  # listed again, greyed: a click frames it again
    _turn(qtbot)
    _click_region(review, 0)
    _turn(qtbot)
    (name,) = _shown_layers(viewer)
    assert len(viewer.layers[name].data) == 1 and viewer.layers[name].visible
    assert list(viewer.layers[name].features["label"]) == [f"{record.region_id} withdrawn"]
    review.next_button.click()  # the view moves on to a review region: the frame and its layer go
    _turn(qtbot)
    assert _shown_layers(viewer) == [] and review.current_bbox() is not None


def _lines(text, font, width):
    """The lines ``text`` is cut into at ``width`` px, wrapped at word boundaries as a list row with word wrap is."""
    layout = QTextLayout(text, font)
    option = QTextOption()
    option.setWrapMode(QTextOption.WrapMode.WordWrap)
    layout.setTextOption(option)
    layout.beginLayout()
    lines = []
    while True:
        line = layout.createLine()
        if not line.isValid():
            break
        line.setLineWidth(width)
        lines.append(text[line.textStart():line.textStart() + line.textLength()])
    layout.endLayout()
    return [ln.replace("\u00a0", " ").strip() for ln in lines]


def test_look_here_next_rows_do_not_break_inside_a_coordinate(make_napari_viewer, qtbot, tmp_path, glas_dir):
    from napari_cdma._widget_review import box_text

    viewer, dock, review = _at_next(make_napari_viewer, qtbot, tmp_path, glas_dir)
    tip = review.tile_list.toolTip()
    assert tip.startswith("Regions ranked by score (width x height px at x, y)") and "power mean" in tip
    font = review.tile_list.font()
    metrics = QFontMetricsF(font)
    dock_width = review.tile_list.viewport().width()
    assert review.tile_list.count() == len(review.tiles) > 0
    for k, (score, bbox) in enumerate(review.tiles):
        text = review.tile_list.item(k).text()
        y0, x0, y1, x1 = bbox
        # the same words as before: rank, "score 0.69", width x height px at x, y
        assert text.replace("\u00a0", " ") == f"{k + 1}. score {score:.2f}, {box_text(bbox)}", text
        pieces = [f"score {score:.2f}", f"{x1 - x0} x {y1 - y0} px", f"x {x0}, y {y0}"]
        for width in sorted({dock_width, *range(60, 420, 3)}):
            lines = _lines(text, font, width)
            for piece in pieces:
                if metrics.horizontalAdvance(piece) + 4 < width:  # it fits on a line: it is not cut
                    assert any(piece in line for line in lines), (width, piece, lines)
