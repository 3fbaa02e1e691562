"""Pathologist walk 26, finding 9: hiding testB_1's prediction turned Accept region and Accept whole image off, but
the reason was only in their tooltips; the status line kept saying "Review region 1 of 8 ...", and a click on the
disabled button did nothing. Now the status line says why as soon as the prediction is hidden (or covered), a click on
a disabled button says what it needs, and once the prediction is shown again the line says that Accept acts again.

A real napari viewer (pytest-xvfb), the real dock, a real store on disk holding two GlaS images and a prediction of
each (their masks; no model).
"""
from __future__ import annotations

from _dock import (
    FIRST,
    settle,
    two_images_first_chosen,
)
from qtpy.QtCore import Qt

from napari_cdma._layers import names_for


def test_the_status_line_says_why_accept_is_off(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock, _ = two_images_first_chosen(make_napari_viewer, qtbot, tmp_path, glas_dir)
    review = dock.review_panel
    prediction = viewer.layers[names_for(FIRST)["prediction"]]
    review.next_button.click()
    settle(qtbot, dock)
    assert review.status.text().startswith("Review region 1 of 2"), review.status.text()
    assert review.accept_button.isEnabled()

    prediction.visible = False  # its eye icon
    settle(qtbot, dock)
    assert not review.accept_button.isEnabled()
    hidden = f"'{prediction.name}', the corrections Accept stores, is hidden"
    assert hidden in review.status.text(), review.status.text()

    review._say("something else")  # the line moved on; a click on the disabled button says it again
    qtbot.mouseClick(review.accept_image_button, Qt.MouseButton.LeftButton)
    assert hidden in review.status.text(), review.status.text()

    prediction.visible = True
    settle(qtbot, dock)
    assert review.accept_button.isEnabled()
    assert hidden not in review.status.text() and "on screen again" in review.status.text(), review.status.text()

    # its own image dragged above it: the line says what to do
    layers = viewer.layers
    layers.move(layers.index(layers[FIRST]), len(layers))
    settle(qtbot, dock)
    assert not review.accept_button.isEnabled()
    assert f"move '{prediction.name}' above '{FIRST}' in the layer list" in review.status.text(), review.status.text()
