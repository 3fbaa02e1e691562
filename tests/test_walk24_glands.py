"""Pathologist walk 24, the gland table: what counts as a gland.

After a split and an Accept the table listed 1 and 2 px specks first (``1 | 1 | 0.998``), Accept said the leftovers
"got labels of their own", and the CSV wrote them as glands of the bundled model, hand-painted glands included. Now
a gland is an object of at least the engine's minimum size (the whole-slide path's rule), smaller pieces keep their
gland's label and are counted under the table, and the CSV names the accepted region a gland lies in.

The real dock in a napari viewer (Xvfb), the GlaS sample testA_1 and a small random model from the project store.
"""
from __future__ import annotations

import csv

import numpy as np
from _dock import PLUGIN, wait_settled
from _dock import open_dock as _dock
from _dock import predict_and_wait as _predict_and_wait

from napari_cdma._layers import names_for
from napari_cdma._sample import SAMPLE_NAME
from src_model.gland_table import MIN_GLAND_PIXELS
from src_model.postprocess import DEFAULT_INSTANCES

SAMPLE_KEY = "glas_testA_1"


def test_one_rule_is_the_engines_minimum_size():
    assert MIN_GLAND_PIXELS == DEFAULT_INSTANCES.min_size == 1300


def test_accept_mints_no_speck_and_the_table_and_csv_list_glands_only(make_napari_viewer, qtbot, tmp_path,
                                                                        lite_checkpoint):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, SAMPLE_KEY)
    store_path = tmp_path / "project"
    widget = _dock(viewer, store_path)
    widget.store.add_model(lite_checkpoint, parent="bundled", promoted=True)
    widget.open_store(store_path)
    wait_settled(widget)
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    review, display = widget.review_panel, widget.display_panel
    labels = viewer.layers[names_for(SAMPLE_NAME)["prediction"]]

    # the pathologist's corrections in a box: the model's glands there erased, a gland g7 painted (60 x 60) and cut
    # by a line 4 px from its edge (a 240 px leftover), a gland g9 painted (60 x 100) and split in halves of 3000 and
    # 2900 px, and a 1 px stroke of label g8 left alone
    box = (90, 90, 320, 320)
    top = int(np.asarray(labels.data).max())
    g7, g8, g9 = top + 7, top + 8, top + 9  # labels of no gland of the model's elsewhere
    painted = np.zeros((box[2] - box[0], box[3] - box[1]), labels.data.dtype)
    painted[10:70, 10:70] = g7
    painted[10:70, 65] = 0
    painted[110:170, 10:110] = g9
    painted[140, 10:110] = 0
    painted[200, 200] = g8
    labels.data[box[0]:box[2], box[1]:box[3]] = painted
    labels.refresh()

    record = review.accept(bbox=box)
    assert record is not None, review.last_message
    # one new gland (the half of gland 9), not the 240 px leftover of gland 7 (walk 24: "2 separated piece(s)")
    assert "1 separated piece(s) of glands got labels of their own" in review.last_message, review.last_message
    data = np.asarray(labels.data)[box[0]:box[2], box[1]:box[3]]
    assert set(np.unique(data[10:70, 66:70]).tolist()) == {g7}  # the leftover keeps its gland's label
    assert data[200, 200] == g8
    # nothing painted was lost: the layer and the stored correction hold every painted pixel
    assert np.array_equal(data > 0, painted > 0)
    _, corrected, _ = widget.store.load_region(record.region_id)
    assert np.array_equal(corrected > 0, painted > 0)

    qtbot.waitUntil(lambda: any(g["id"] == g9 for g in display.glands), timeout=10_000)
    ids = {g["id"] for g in display.glands}
    assert {g7, g9} <= ids and g8 not in ids, sorted(ids)
    assert all(g["area"] >= MIN_GLAND_PIXELS for g in display.glands), [g["area"] for g in display.glands]
    # on screen: no row under the minimum; the pieces left out are counted under the table
    table = display.table
    shown = [int(table.model().index(r, 1).data()) for r in range(table.model().rowCount())]
    assert shown and min(shown) >= MIN_GLAND_PIXELS, shown
    assert not display.pieces_label.isHidden() and f"under {MIN_GLAND_PIXELS} px" in display.pieces_label.text()
    assert display.small_pieces >= 1

    # the CSV: glands only; those in the accepted region name it and claim no model
    path = display.export_csv(tmp_path / "glands.csv")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(int(r["area"]) >= MIN_GLAND_PIXELS for r in rows)
    by_id = {int(r["id"]): r for r in rows}
    for gid in (g7, g9):
        assert by_id[gid]["accepted_region"] == record.region_id and by_id[gid]["model"] == "", by_id[gid]
    new = [r for r in rows if r["accepted_region"] and int(r["id"]) not in (g7, g9)]
    assert [int(r["area"]) for r in new] == [2900], new  # the half of gland 9 with fewer pixels
    for r in rows:
        if not r["accepted_region"]:
            assert r["model"] == display.model_label
