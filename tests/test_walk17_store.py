"""Findings of the pathologist's walk 17 (dock under Xvfb): the Predict status said one fact two ways ("Predicted
'testA_2' with bundled." at the end of a run, "testA_2: predicted with bundled at 00:45." when the image was chosen
again).

A real napari viewer (pytest-xvfb), the real dock, GlaS images, a real project store on disk.
"""
from __future__ import annotations

import re

from _dock import open_dock, predict_and_wait
from test_walk15_dock import SECOND, _turn


# ------------------------------------------- the Predict status says a prediction one way
def test_the_end_of_a_prediction_reads_as_the_chosen_image_line(make_napari_viewer, qtbot, tmp_path, glas_dir,
                                                                 lite_checkpoint):
    from src_model.io import read_image

    viewer = make_napari_viewer()
    layer = viewer.add_image(read_image(glas_dir / "images" / f"{SECOND}.png")[:256, :256], name=SECOND, rgb=True)
    dock = open_dock(viewer, tmp_path / "project")
    panel = dock.predict_panel
    panel.set_model_file(str(lite_checkpoint))
    label = panel.model_combo.currentText()
    predict_and_wait(qtbot, dock, SECOND, timeout=120_000)
    _turn(qtbot)
    ended = panel.status.text()
    # before: "Predicted 'testA_2' with <model>."
    assert re.fullmatch(rf"{SECOND}: predicted with {re.escape(label)} at \d\d:\d\d\.", ended), (ended, label)
    assert ended == panel.chosen_line(layer)  # what the line says when the image is chosen again
    assert panel.progress.value() == panel.progress.maximum()  # the bar of a run that ended well ends full
