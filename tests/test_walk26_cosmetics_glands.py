"""Walk 25: a gland painted beside a gland of the same colour looked like one gland with it (the prediction layer
cycles through four colours; napari's "new label" is the largest label plus one, whatever its colour). A stroke that
paints a new gland now gives it the next unused label whose colour differs from those of the glands it touches; no
other gland is renumbered, one undo takes the new gland off, and Accept stores it as a gland of its own. Real napari
viewer under Xvfb, real project store with the GlaS testA_1 mask as its stored prediction."""
from __future__ import annotations

import numpy as np
from _dock import open_dock, store_with_predictions, turn
from scipy import ndimage as ndi

from napari_cdma._layers import names_for

NAME = "testA_1"
BRUSH = 9


def _colour(layer, label):
    return tuple(np.round(np.asarray(layer.colormap.map(label), float).ravel()[:4], 3))


def _beside_a_same_coloured_gland(data, colour_of, new_id):
    """(gland, (y, x)): a gland of the colour of ``new_id`` and a background point 2 px beyond its edge, at least
    ``BRUSH`` px from every other gland and from the image's border, where a brush dab touches that gland alone."""
    h, w = data.shape
    for gland in sorted(set(np.unique(data).tolist()) - {0}):
        if colour_of(gland) != colour_of(new_id):
            continue
        to_gland = ndi.distance_transform_edt(data != gland)
        to_others = ndi.distance_transform_edt((data == 0) | (data == gland))
        ok = (data == 0) & (np.abs(to_gland - (BRUSH // 2 + 2)) < 0.5) & (to_others > 2 * BRUSH)
        ok[:BRUSH], ok[-BRUSH:], ok[:, :BRUSH], ok[:, -BRUSH:] = False, False, False, False
        if ok.any():
            y, x = np.argwhere(ok)[0]
            return gland, (int(y), int(x))
    raise AssertionError("no gland of the new label's colour with room beside it")


def _reopened(make_napari_viewer, tmp_path, glas_dir):
    """(viewer, dock, prediction layer) of testA_1 with its mask as the store's prediction, reopened."""
    from src_model.io import read_image

    image = read_image(glas_dir / "images" / f"{NAME}.png")
    store = store_with_predictions(tmp_path / "project", {NAME: image}, glas_dir, ranked=[])
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name=NAME, rgb=True)
    dock = open_dock(viewer, store.root)
    return viewer, dock, viewer.layers[names_for(NAME)["prediction"]]


def test_a_new_gland_painted_beside_a_gland_of_its_colour_gets_another_colour(make_napari_viewer, qtbot, tmp_path,
                                                                             glas_dir):
    viewer, dock, layer = _reopened(make_napari_viewer, tmp_path, glas_dir)
    before = np.array(layer.data, copy=True)
    new_id = int(before.max()) + 1  # napari's "new label" (M)
    gland, point = _beside_a_same_coloured_gland(before, lambda v: _colour(layer, v), new_id)

    viewer.layers.selection.active = layer
    layer.brush_size = BRUSH
    layer.selected_label = new_id
    with layer.block_history():  # one stroke of two dabs, as napari's brush groups a drag
        layer.paint(point, new_id)
        layer.paint((point[0] + 1, point[1]), new_id)
    turn(qtbot)
    after = np.asarray(layer.data)
    changed = after != before
    painted = set(np.unique(after[changed]).tolist())
    assert len(painted) == 1, painted
    label = painted.pop()
    grown = ndi.binary_dilation(changed, structure=np.ones((3, 3)))
    assert set(np.unique(after[grown & ~changed]).tolist()) == {0, gland}  # the new gland touches that gland
    assert _colour(layer, label) != _colour(layer, gland), (label, gland)  # and is drawn in another colour
    assert label not in set(np.unique(before).tolist())  # a label of its own
    assert np.array_equal(after[~changed], before[~changed])  # no other gland renumbered
    assert layer.selected_label == label  # the next strokes go on painting it
    assert dock._unsaved_count(dock.states[NAME], layer) == changed.sum()  # Keep counts the new gland

    layer.undo()  # one undo takes the whole new gland off
    assert np.array_equal(np.asarray(layer.data), before)
    layer.redo()
    assert np.array_equal(np.asarray(layer.data), after)

    ys, xs = np.nonzero(changed | (before == gland))
    h, w = before.shape
    box = (max(0, int(ys.min()) - 3), max(0, int(xs.min()) - 3), min(h, int(ys.max()) + 4), min(w, int(xs.max()) + 4))
    record = dock.review_panel.accept(bbox=box)
    assert record is not None, dock.review_panel.last_message
    _, corrected, _ = dock.store.load_region(record.region_id)
    y0, x0, y1, x1 = box
    new_part, old_part = changed[y0:y1, x0:x1], (before == gland)[y0:y1, x0:x1]
    assert len(np.unique(corrected[new_part])) == 1 and len(np.unique(corrected[old_part])) == 1
    assert corrected[new_part][0] != corrected[old_part][0] and 0 not in (corrected[new_part][0],
                                                                          corrected[old_part][0])


def test_a_stroke_of_a_gland_already_there_keeps_its_label(make_napari_viewer, qtbot, tmp_path, glas_dir):
    """Painting with the label of a gland already in the layer is an edit of that gland: it is not renumbered, even
    beside a gland of its colour."""
    viewer, dock, layer = _reopened(make_napari_viewer, tmp_path, glas_dir)
    before = np.array(layer.data, copy=True)
    ids = sorted(set(np.unique(before).tolist()) - {0})
    existing = ids[-1]
    gland, point = _beside_a_same_coloured_gland(before, lambda v: _colour(layer, v), existing)
    assert gland != existing or len(ids) == 1
    layer.brush_size = BRUSH
    layer.paint(point, existing)
    turn(qtbot)
    changed = np.asarray(layer.data) != before
    assert changed.any() and set(np.unique(np.asarray(layer.data)[changed]).tolist()) == {existing}
