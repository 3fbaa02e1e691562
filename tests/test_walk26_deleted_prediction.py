"""Walk 26, finding 7: deleting an image's prediction layer left the dock stale: Predict's status still said
"testB_1: predicted with bundled at 17:56", and the 'Uncertainty and glands' panel still showed the legend, an empty
gland table and "2 labelled piece(s) under 1300 px not listed". Now Predict's status says the layer was closed, what
became of its edits not accepted (kept in the project store, or gone with it) and how to get it back; the panel says it
has no prediction to describe. Nothing is lost: the store's Open brings the layer back with its kept edits.

Real napari viewer and dock (Xvfb), a real project store, the GlaS sample and the bundled model.
"""
from __future__ import annotations

import numpy as np
from _dock import PLUGIN, open_dock, predict_and_wait, turn, wait_settled

from napari_cdma._layers import names_for
from napari_cdma._sample import SAMPLE_NAME


def _predicted(make_napari_viewer, qtbot, path):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "glas_testA_1")
    dock = open_dock(viewer, path)
    predict_and_wait(qtbot, dock, SAMPLE_NAME, timeout=240_000)
    assert dock.flush_prediction_saves(60)
    turn(qtbot)
    return viewer, dock


def test_deleting_an_edited_prediction_layer_says_so_and_keeps_its_edits(make_napari_viewer, qtbot, tmp_path):
    viewer, dock = _predicted(make_napari_viewer, qtbot, tmp_path / "store")
    names = names_for(SAMPLE_NAME)
    predict, display = dock.predict_panel, dock.display_panel
    assert "predicted with" in predict.status.text()
    assert display.content.isVisible() and display.table.rowCount() > 0
    layer = viewer.layers[names["prediction"]]
    layer.data[300:320, 100:130] = 77  # an edit, neither accepted nor kept
    layer.refresh()
    edited = np.array(layer.data)

    viewer.layers.remove(names["prediction"])
    turn(qtbot, 12)
    text = predict.status.text()
    assert "predicted with" not in text, text  # walk 26: "testB_1: predicted with bundled at 17:56"
    assert f"'{SAMPLE_NAME}': its prediction layer was closed" in text, text
    assert "600 edited pixel(s) not accepted are kept in the project store" in text, text
    assert "Press Open" in text and "Predict again would replace them" in text, text
    # the display panel describes nothing: no legend, readout, table or pieces note left over
    assert not display.content.isVisible() and display.empty_label.isVisible()
    assert display.empty_label.text().startswith(f"'{names['prediction']}' was closed: no prediction of "
                                                 f"'{SAMPLE_NAME}' to describe"), display.empty_label.text()
    assert display.image_name is None and display.uncertainty_layer is None and display.table.rowCount() == 0
    assert not display.pieces_label.isVisibleTo(display) and not display.source_label.isVisibleTo(display)
    # chosen again later, the image is not "not predicted yet"
    assert predict.chosen_line(viewer.layers[SAMPLE_NAME]) == text

    # nothing lost: Open brings the layer back with the edits
    assert dock.open_store(tmp_path / "store") is not None
    wait_settled(dock)
    turn(qtbot)
    np.testing.assert_array_equal(viewer.layers[names["prediction"]].data, edited)
    assert "its prediction layer was closed" not in predict.chosen_line(viewer.layers[SAMPLE_NAME])

    # Predict again: the line is about the new prediction, the panel describes it
    viewer.layers.remove(names["prediction"])
    turn(qtbot, 12)
    predict_and_wait(qtbot, dock, SAMPLE_NAME, timeout=240_000)
    turn(qtbot)
    assert "predicted with" in predict.status.text() and SAMPLE_NAME not in predict.closed_notes
    assert display.content.isVisible() and display.table.rowCount() > 0 and display.legend_box.isVisible()


def test_deleting_an_unedited_prediction_layer_points_to_the_store(make_napari_viewer, qtbot, tmp_path):
    viewer, dock = _predicted(make_napari_viewer, qtbot, tmp_path / "store")
    viewer.layers.remove(names_for(SAMPLE_NAME)["prediction"])
    turn(qtbot, 12)
    assert dock.predict_panel.status.text() == (
        f"'{SAMPLE_NAME}': its prediction layer was closed. Press Open (Project store) to bring back its latest "
        "prediction, or Predict again.")


def test_deleting_the_uncertainty_layer_drops_the_legend_not_the_table(make_napari_viewer, qtbot, tmp_path):
    viewer, dock = _predicted(make_napari_viewer, qtbot, tmp_path / "store")
    names = names_for(SAMPLE_NAME)
    display = dock.display_panel
    rows = display.table.rowCount()
    viewer.layers.remove(names["uncertainty"])
    turn(qtbot, 12)
    assert display.content.isVisible() and not display.legend_box.isVisible()  # walk 26: the legend stayed
    assert display.closed_label.isVisible()
    assert display.closed_label.text().startswith(f"'{names['uncertainty']}' was closed: no uncertainty legend")
    assert display.table.rowCount() == rows
    # the table still follows the edits of the prediction layer (the model's uncertainty kept for it)
    layer = viewer.layers[names["prediction"]]
    gland = max(display.glands, key=lambda g: g["area"])
    y0, x0, y1, x1 = gland["bbox"]
    layer.data[layer.data == gland["id"]] = 0
    layer.refresh()
    assert display.refresh_glands()
    assert display.table.rowCount() == rows - 1
    assert all(g["id"] != gland["id"] for g in display.glands)
    # the prediction layer closed too: nothing to describe
    viewer.layers.remove(names["prediction"])
    turn(qtbot, 12)
    assert not display.content.isVisible() and not display.closed_label.isVisibleTo(display)


def test_the_closed_note_says_what_became_of_the_edits():
    from napari_cdma._widget_predict import closed_prediction_note

    assert closed_prediction_note("a", 5, False, False) == (
        "'a': its prediction layer was closed, and with it 5 edited pixel(s) not accepted (no store kept them). "
        "Predict again to see its glands.")
    assert closed_prediction_note("a", 0, False, False) == (
        "'a': its prediction layer was closed. Predict again to see its glands.")
    assert "went with it" in closed_prediction_note("a", -1, False, True)
