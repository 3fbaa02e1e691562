"""Pathologist walk 26b, problem B: after Keep unaccepted edits (or the keep at a prediction layer's close) the store
summary said "Kept 1610 edited pixel(s) of ... in the store"; Predict again then saved a new latest prediction without
those edits, and the summary still said they were kept until the store was reopened. Now the summary says the kept
edits were replaced by the new prediction. Real napari viewer (pytest-xvfb), real store on disk, the lite model.
"""
from __future__ import annotations

from _dock import predict_and_wait, sample_in_dock

from napari_cdma._layers import names_for
from napari_cdma._sample import SAMPLE_NAME


def test_the_summary_does_not_say_edits_are_kept_once_predict_replaced_them(make_napari_viewer, qtbot, tmp_path,
                                                                          lite_checkpoint):
    viewer, dock = sample_in_dock(make_napari_viewer, tmp_path / "project")
    dock.predict_panel.set_model_file(str(lite_checkpoint))
    predict_and_wait(qtbot, dock, SAMPLE_NAME)
    dock.flush_prediction_saves(30)
    layer = viewer.layers[names_for(SAMPLE_NAME)["prediction"]]
    layer.paint((310, 140), 78, refresh=True)
    kept = dock.keep_edits()[SAMPLE_NAME]
    assert kept > 0 and f"Kept {kept} edited pixel(s)" in dock.store_label.text()

    predict_and_wait(qtbot, dock, SAMPLE_NAME)  # Predict again: the store's latest prediction is the new one
    assert dock.flush_prediction_saves(30)
    qtbot.waitUntil(lambda: "predicted again" in dock.store_label.text(), timeout=10_000)
    text = dock.store_label.text()
    assert f"Kept {kept} edited pixel(s)" not in text, text
    assert f"the {kept} edited pixel(s) kept of it are replaced by the new prediction" in text, text
