"""Walk 24: for about 10 s of a reopen the review line said "Predict '<image>' to see its review regions." while the
Predict line said it was looking for the image's prediction in the project store. The review line now says it is
looking for the review regions too, then lists them. Real dock, real napari viewers under Xvfb, real store, the GlaS
sample predicted with a small real checkpoint."""
from __future__ import annotations

from _dock import open_dock, predict_and_wait

from napari_cdma._sample import SAMPLE_NAME
from napari_cdma.project.store import BUNDLED

PLUGIN = "napari-cdma"


def test_while_a_reopen_restores_the_review_line_never_says_predict(make_napari_viewer, qtbot, tmp_path,
                                                                    lite_checkpoint):
    from qtpy.QtWidgets import QApplication

    path = tmp_path / "project"
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "glas_testA_1")
    dock = open_dock(viewer, path)
    dock.store.add_model(lite_checkpoint, parent=BUNDLED, promoted=True)
    assert dock.open_store(path) is not None
    predict_and_wait(qtbot, dock, SAMPLE_NAME)
    assert dock.flush_prediction_saves(60)
    viewer.close()

    other = make_napari_viewer()
    _, again = other.window.add_plugin_dock_widget(PLUGIN, "CDMA segmentation")
    assert again.open_store(path) is not None
    review = again.review_panel
    seen = []
    while not again.settled():
        QApplication.processEvents()
        seen.append(review.status.text())
    wrong = [text for text in seen if "to see its review regions" in text]
    assert not wrong, wrong[:3]
    assert any("looking for its review regions" in text for text in seen), sorted(set(seen))
    assert "review region(s) of" in review.status.text(), review.status.text()
