"""Walk 26, finding 12: an eraser stroke through gland 9 left six disconnected fragments of it, and the gland table
showed one row, "9 | 1654 | 0.937", with nothing to say the gland was now in pieces. Now the note under the table
says "Gland 9 is in 6 pieces ..." and the row's tooltip says it too; made again after each pause in the edits, counting
only the glands whose row changed.

Real napari viewer and dock (Xvfb), a real project store, the GlaS sample and the bundled model.
"""
from __future__ import annotations

import numpy as np
from _dock import PLUGIN, open_dock, predict_and_wait, turn
from qtpy.QtCore import Qt
from scipy import ndimage as ndi

from napari_cdma._layers import names_for
from napari_cdma._sample import SAMPLE_NAME


def test_a_gland_erased_into_pieces_is_said_to_be_in_pieces(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "glas_testA_1")
    dock = open_dock(viewer, tmp_path / "store")
    predict_and_wait(qtbot, dock, SAMPLE_NAME, timeout=240_000)
    turn(qtbot)
    display = dock.display_panel
    layer = viewer.layers[names_for(SAMPLE_NAME)["prediction"]]
    assert display.table.rowCount() > 0 and "pieces (one number" not in display.pieces_label.text()
    rows = display.table.rowCount()

    # the eraser through the largest gland, across and down its middle (3 px wide)
    gland = max(display.glands, key=lambda g: g["area"])
    gid = gland["id"]
    y0, x0, y1, x1 = gland["bbox"]
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    before = np.array(layer.data)
    cut = before.copy()
    box = cut[y0:y1, x0:x1]
    box[(box == gid) & (np.abs(np.arange(y0, y1) - cy)[:, None] <= 1)] = 0
    box[(box == gid) & (np.abs(np.arange(x0, x1) - cx)[None, :] <= 1)] = 0
    n = int(ndi.label(cut == gid, structure=np.ones((3, 3), bool))[1])
    assert n >= 2, n
    layer.data = cut  # as the eraser leaves it (the table follows the layer's redraw)
    # walk 26: nothing said, one row "9 | 1654 | 0.937"
    qtbot.waitUntil(lambda: display.pieces_label.text().startswith(f"Gland {gid} is in {n} pieces"), timeout=10_000)
    assert display.split_glands == {gid: n}
    assert display.pieces_label.isVisible()
    assert display.table.rowCount() == rows  # still one row: the pieces keep one number
    model = display.table.gland_model
    row = next(r for r in range(model.rowCount()) if model.gland(r)["id"] == gid)
    tip = model.data(model.index(row, 0), Qt.ItemDataRole.ToolTipRole)
    assert f"in {n} pieces" in tip, tip
    # only the glands whose row changed are counted again
    counted = dict(display._pieces_cache)
    assert {k[0] for k in counted} == {g["id"] for g in display.glands}

    # a stroke of the brush joins the pieces again (napari's paint event, as the brush makes it)
    layer.brush_size = 5
    for y in range(y0, y1):
        if cut[y, cx - 3] == gid and cut[y, cx + 3] == gid:
            layer.paint((y, cx), gid, refresh=True)
    for x in range(x0, x1):
        if cut[cy - 3, x] == gid and cut[cy + 3, x] == gid:
            layer.paint((cy, x), gid, refresh=True)
    joined = int(ndi.label(np.asarray(layer.data) == gid, structure=np.ones((3, 3), bool))[1])
    expected = {gid: joined} if joined > 1 else {}
    qtbot.waitUntil(lambda: display.split_glands.get(gid) == expected.get(gid), timeout=10_000)
    # undone: in one piece again, nothing said
    layer.data = before
    qtbot.waitUntil(lambda: gid not in display.split_glands, timeout=10_000)
    assert "pieces (one number" not in display.pieces_label.text()


def test_the_note_names_several_glands_in_pieces():
    from napari_cdma._widget_display import split_text

    assert split_text({9: 6}).startswith("Gland 9 is in 6 pieces (one number, not joined)")
    text = split_text({3: 2, 9: 6, 4: 2, 5: 3, 7: 2})
    assert text.startswith("Glands in pieces: 9 (6), 5 (3), 3 (2), 4 (2) and 1 more"), text
