"""The retrain panel's result: the rule's verdict and the per-image before / after table (real store, real
checkpoint, real Qt widget under Xvfb; the Done event is built here instead of training, which
tests/test_retrain_job.py and tests/test_widget.py run for real)."""
from __future__ import annotations

import numpy as np

from napari_cdma._widget_retrain import IMAGE_COLUMNS, RetrainPanel
from napari_cdma.project.events import Done, ImageScore
from napari_cdma.project.store import ProjectStore


def _store(tmp_path, lite_checkpoint):
    store = ProjectStore.open(tmp_path / "store")
    store.add_model(lite_checkpoint, parent=None, note="random lite", promoted=True)
    return store


def _table(panel):
    t = panel.image_table
    return [[t.item(i, j).text() for j in range(t.columnCount())] for i in range(t.rowCount())]


def test_done_shows_each_image_before_after_and_agreement(qtbot, tmp_path, lite_checkpoint):
    store = _store(tmp_path, lite_checkpoint)
    panel = RetrainPanel(lambda: store)
    qtbot.addWidget(panel)
    assert panel.steps_spin.value() == 0 and panel.steps_spin.text() == "auto"  # the recipe's steps by default
    rows = (ImageScore("testA_1.png", n_holdout=2, old_dice=0.861, new_dice=0.902, agreement=0.981),
            ImageScore("testB_4.png", agreement=0.973))
    good = Done(checkpoint=str(lite_checkpoint), parent_model="v0001", steps_done=3, n_holdout=3, old_dice=0.85,
                new_dice=0.9, better=True, agreement=0.977, min_agreement=0.95, agreement_crops=4, per_image=rows)
    panel._handle(good)
    assert panel.state == "done" and panel.last_record.promoted
    assert panel.image_table.isVisibleTo(panel)
    assert [panel.image_table.horizontalHeaderItem(j).text() for j in range(4)] == list(IMAGE_COLUMNS)
    assert _table(panel) == [["testA_1.png", "0.861 (2)", "0.902", "0.981"], ["testB_4.png", "n/a", "n/a", "0.973"]]
    assert "agreement on uncorrected tissue 0.977 (4 crops)" in panel.last_message

    # the same scores, but the new model changed uncorrected tissue: not promoted, and the panel says why
    regressed = Done(**{**good.__dict__, "agreement": 0.62,
                        "per_image": (ImageScore("testA_1.png", 2, 0.861, 0.902, 0.62),)})
    panel._handle(regressed)
    assert not panel.last_record.promoted and store.current_model_version == "v0002"
    assert "changed the prediction of uncorrected tissue" in panel.last_message
    assert panel.keep_button.isVisibleTo(panel) and len(_table(panel)) == 1
    assert np.isclose(float(_table(panel)[0][3]), 0.62)
