"""Walk 24: for about 10 s of a reopen the review line said "Predict '<image>' to see its review regions." while the
Predict line said it was looking for the image's prediction in the project store. The review line now says it is
looking for the review regions too, then lists them. Real dock, real napari viewers under Xvfb, real store, the GlaS
sample predicted with a small real checkpoint."""
from __future__ import annotations

from _dock import sample_predicted_then_reopened


def test_while_a_reopen_restores_the_review_line_never_says_predict(make_napari_viewer, qtbot, tmp_path,
                                                                    lite_checkpoint):
    from qtpy.QtWidgets import QApplication

    _, again = sample_predicted_then_reopened(make_napari_viewer, qtbot, tmp_path / "project", lite_checkpoint)
    review = again.review_panel
    seen = []
    while not again.settled():
        QApplication.processEvents()
        seen.append(review.status.text())
    wrong = [text for text in seen if "to see its review regions" in text]
    assert not wrong, wrong[:3]
    assert any("looking for its review regions" in text for text in seen), sorted(set(seen))
    assert "review region(s) of" in review.status.text(), review.status.text()
