"""Walk 26, finding 5: a gland split by an eraser line, then one half filled with napari's next label (max + 1), could
give both halves the same colour (the prediction layer cycles through four colours by label id), so the split looked
undone. A fill that makes a new gland out of part of a gland now gives it a colour that differs from the gland's other
part as well as from the glands it touches. Real napari viewer under Xvfb, the real dock and a real project store with
the GlaS testA_1 mask as its stored prediction (tests/test_walk26_cosmetics_glands.py's set-up)."""
from __future__ import annotations

import numpy as np
from _dock import turn
from scipy import ndimage as ndi
from test_walk26_cosmetics_glands import _colour, _reopened

ERASER = 3  # brush size of the eraser line, px


def _fill_click(layer, point, label):
    """The fill tool's click at ``point``: napari's mouse callback (napari.layers.labels._labels_mouse_bindings.draw)
    calls the fill inside block_history, so the paint event comes once the pixels are written (a bare Labels.fill
    sends it before it writes them)."""
    layer.selected_label = label
    with layer.block_history():
        layer.fill(point, label)


def _erase_across(layer, gland):
    """An eraser stroke (label 0, one undo item) along the row through the middle of ``gland``, over its pixels
    there and one brush width beyond; returns the row."""
    data = np.asarray(layer.data)
    ys, _ = np.nonzero(data == gland)
    row = int((ys.min() + ys.max()) // 2)
    xs = np.nonzero(data[row] == gland)[0]
    layer.brush_size = ERASER
    layer.selected_label = 0
    with layer.block_history():  # one drag of the eraser
        for x in range(max(0, int(xs.min()) - ERASER), min(data.shape[1], int(xs.max()) + ERASER + 1)):
            layer.paint((row, x), 0)
    return row


def test_a_gland_split_by_erasing_and_filling_one_half_with_the_next_label_shows_two_colours(
        make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock, layer = _reopened(make_napari_viewer, tmp_path, glas_dir)
    start = np.array(layer.data, copy=True)
    new_id = int(start.max()) + 1  # napari's "new label" (M)
    # the largest gland of the new label's colour (testA_1: gland 6, as 10 is azure like 2 and 6)
    same = [g for g in np.unique(start).tolist() if g and _colour(layer, g) == _colour(layer, new_id)]
    gland = max(same, key=lambda g: int(np.count_nonzero(start == g)))
    viewer.layers.selection.active = layer

    row = _erase_across(layer, gland)
    turn(qtbot)
    erased = np.array(layer.data, copy=True)
    pieces, n = ndi.label(erased == gland)  # napari's fill is 4-connected, as ndi.label's default
    assert n >= 2, "the eraser line split the gland"
    sizes = ndi.sum(np.ones_like(pieces), pieces, index=range(1, n + 1))
    upper = 1 + int(np.argmax([s if np.nonzero(pieces == k + 1)[0].mean() < row else 0 for k, s in enumerate(sizes)]))
    y, x = np.argwhere(pieces == upper)[len(np.argwhere(pieces == upper)) // 2]

    _fill_click(layer, (int(y), int(x)), new_id)
    turn(qtbot)
    after = np.asarray(layer.data)
    half = pieces == upper
    filled = set(np.unique(after[half]).tolist())
    assert len(filled) == 1, filled
    label = filled.pop()
    assert label != gland and label not in set(np.unique(erased).tolist())  # a gland of its own
    rest = (erased == gland) & ~half
    assert set(np.unique(after[rest]).tolist()) == {gland}  # the other half keeps its label
    # walk 26: labels 10 and 6 (or 9 and 1) both drawn in the same colour, the split invisible on the canvas
    assert _colour(layer, label) != _colour(layer, gland), (label, gland)
    grown = ndi.binary_dilation(half, structure=np.ones((3, 3)))
    for other in set(np.unique(after[grown & ~half]).tolist()) - {0}:  # nor like a gland it touches
        assert _colour(layer, label) != _colour(layer, other), (label, other)
    assert np.array_equal(after[~half], erased[~half])  # no other gland renumbered
    assert layer.selected_label == label

    layer.undo()  # one undo takes the fill off, the relabelling with it
    assert np.array_equal(np.asarray(layer.data), erased)
    layer.redo()
    assert np.array_equal(np.asarray(layer.data), after)


def test_a_fill_of_a_whole_gland_with_a_new_label_is_not_renumbered(make_napari_viewer, qtbot, tmp_path, glas_dir):
    """A fill that gives a whole gland (nothing of it left) the next label renames that gland: it is not a split, and
    the label the user chose stays (unless it touches a gland of its colour)."""
    viewer, dock, layer = _reopened(make_napari_viewer, tmp_path, glas_dir)
    start = np.array(layer.data, copy=True)
    new_id = int(start.max()) + 1
    grown = {g: ndi.binary_dilation(start == g, structure=np.ones((3, 3))) for g in np.unique(start).tolist() if g}
    lonely = [g for g, m in grown.items()
              if _colour(layer, g) == _colour(layer, new_id)
              and all(_colour(layer, o) != _colour(layer, new_id) for o in set(np.unique(start[m]).tolist()) - {0, g})]
    assert lonely, "a gland of the new label's colour touching none of that colour"
    gland = lonely[0]
    y, x = np.argwhere(start == gland)[0]
    _fill_click(layer, (int(y), int(x)), new_id)
    turn(qtbot)
    after = np.asarray(layer.data)
    assert set(np.unique(after[start == gland]).tolist()) == {new_id}
