"""The dock at napari's default window size, and what it shows with only a whole slide open.

A pathologist's walk (issue 9) found the canvas squeezed to about 240 px beside the dock in napari's default
window (about 1089 x 630), and, with only a slide open, the Predict panel's progress bar at 0 % and an empty gland
table left on screen. A real napari viewer (Xvfb), the plugin's reader on a small pyramidal TIFF built from the
GlaS test images, the bundled model.
"""
from __future__ import annotations

import numpy as np
from _dock import open_dock
from qtpy.QtCore import Qt

from napari_cdma._layers import IMAGE_KEY, ROLE_KEY, names_for, uncertainty_colormap

#: what the canvas keeps beside the dock and napari's layer list in the default window (issue 9's target)
CANVAS_MIN = 500
#: the widest a panel may need: the dock's width at that canvas, less its scroll bar, margins and group box
PANEL_MAX = 225


def _settle(qtbot, viewer):
    """Let the window lay out (a shown viewer's docks and canvas take their sizes over a few event-loop turns)."""
    from qtpy.QtWidgets import QApplication

    for _ in range(5):
        QApplication.processEvents()
        qtbot.wait(20)


def _inner(dock):
    from qtpy.QtWidgets import QScrollArea

    return dock.findChild(QScrollArea).widget()


def test_panels_fit_a_narrow_dock(make_napari_viewer, qtbot):
    """Predict, the uncertainty legend and gland table, and Review wrap their long labels and stack their wide
    rows: none needs more than PANEL_MAX px in the viewer's style (before: 252, 270 and 289 px), so the dock can
    leave the canvas CANVAS_MIN px."""
    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer)
    display = dock.display_panel
    display.set_glands([{"id": 1, "area": 12345, "mean_uncertainty": 0.5, "bbox": (0, 0, 10, 10)}])
    _settle(qtbot, viewer)
    assert not display.content.isHidden() and not display.legend_box.isHidden()  # measured as shown
    widths = {name: getattr(dock, name).minimumSizeHint().width()
              for name in ("predict_panel", "display_panel", "review_panel")}
    assert all(w <= PANEL_MAX for w in widths.values()), widths
    # and the legend (the Whole slide panel's too) once it has a range: its title wraps
    display.legend_box.show_range("x", uncertainty_colormap(), 0.5, (0.123, 0.987))
    assert display.legend_box.minimumSizeHint().width() <= PANEL_MAX


def test_the_canvas_keeps_room_beside_the_dock_in_the_default_window(make_napari_viewer, qtbot):
    """In napari's default window the canvas beside the dock and the layer list is at least CANVAS_MIN px wide
    (before: 357 px, the dock 435 px), the window is not resized, and the dock clips nothing: its content is as
    wide as its panels need."""
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    _settle(qtbot, viewer)
    size = (window.width(), window.height())
    dock = open_dock(viewer)
    _settle(qtbot, viewer)
    assert (window.width(), window.height()) == size  # the user's window is left as it was
    assert window.width() < 1200  # napari's default window, not a desktop-sized one
    canvas = viewer.window._qt_viewer.canvas.native
    assert canvas.width() >= CANVAS_MIN, (canvas.width(), dock.width(), window.width())
    inner = _inner(dock)
    assert inner.width() >= inner.minimumSizeHint().width(), (inner.width(), inner.minimumSizeHint().width())


def test_with_only_a_slide_open_the_image_parts_are_hidden_until_an_image_is_predicted(
        make_napari_viewer, qtbot, tmp_path, slide_path, glas_dir):
    """With only a whole slide open there is no image to predict: no progress bar at 0 %, no empty legend and
    gland table, but one line each saying what to do. They come back when an image is predicted (the bar while it
    runs), and the legend and table go again when the prediction's layers are closed."""
    from src_model.io import read_image

    viewer = make_napari_viewer(show=True)
    viewer.open(str(slide_path), plugin="napari-cdma")
    dock = open_dock(viewer, tmp_path / "project")
    predict, display = dock.predict_panel, dock.display_panel
    _settle(qtbot, viewer)
    assert not dock.slide_panel.content.isHidden() and dock.slide_panel.no_slide.isHidden()  # the slide's panel
    assert predict.progress.isHidden() and not predict.no_image_label.isHidden()
    assert not predict.predict_button.isEnabled()  # nothing to predict
    assert display.content.isHidden() and not display.empty_label.isHidden()
    assert not display.table.isVisible() and not display.legend_box.isVisible()

    image = read_image(glas_dir / "images" / "testA_1.png")[:256, :256]
    viewer.add_image(image, name="he", rgb=True)
    assert predict.no_image_label.isHidden() and predict.image_layer.name == "he"
    assert predict.predict_button.isEnabled()
    assert predict.progress.isHidden()  # idle: nothing to show yet
    assert dock.predict("he"), predict.last_message
    assert not predict.progress.isHidden()  # while it runs
    qtbot.waitUntil(lambda: not predict.running and dock.settled(), timeout=120_000)
    assert predict.last_message.startswith(predict.predicted_line("he")), predict.last_message
    assert predict.progress.isHidden() and predict.progress.value() == predict.progress.maximum()
    _settle(qtbot, viewer)
    assert not display.content.isHidden() and display.empty_label.isHidden()
    assert display.table.isVisible() and display.legend_box.isVisible()
    assert display.table.rowCount() == len(display.glands) > 0

    names = names_for("he")
    viewer.layers.remove(names["prediction"])
    assert display.table.rowCount() == 0 and not display.glands  # no rows of a closed prediction
    # walk 26: the legend goes too (it described a prediction no longer open), and the panel says the layer was closed
    assert display.content.isHidden() and not display.empty_label.isHidden()
    assert "was closed" in display.empty_label.text(), display.empty_label.text()
    viewer.layers.remove(names["uncertainty"])
    assert display.content.isHidden() and not display.empty_label.isHidden()

    viewer.layers.remove("he")  # only the slide again: nothing to predict
    assert not predict.no_image_label.isHidden() and predict.progress.isHidden()


def test_an_image_opened_before_the_dock_is_shown_whole_once_the_dock_is_docked(make_napari_viewer, qtbot):
    """Docking narrows the canvas, which napari does not refit: the image opened before was cropped to its middle
    (pathologist walk). The dock fits the view again when it first shows."""
    from _dock import PLUGIN

    from napari_cdma._widget_review import scene_camera

    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "glas_testA_1")
    _settle(qtbot, viewer)
    open_dock(viewer)
    _settle(qtbot, viewer)
    h, w = viewer.layers[0].data.shape[:2]
    canvas = viewer.window._qt_viewer.canvas.native
    zoom = scene_camera(viewer).zoom
    assert w * zoom <= canvas.width() + 1 and h * zoom <= canvas.height() + 1, (zoom, canvas.width(), w)


def test_with_no_slide_open_the_slide_panel_is_one_line(make_napari_viewer, qtbot, slide_path):
    """The Whole slide panel's controls (about 450 px of the dock) show only while a slide is open."""
    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer)
    panel = dock.slide_panel
    _settle(qtbot, viewer)
    assert panel.content.isHidden() and not panel.no_slide.isHidden()
    assert panel.sizeHint().height() < 100
    viewer.open(str(slide_path), plugin="napari-cdma")
    _settle(qtbot, viewer)
    assert not panel.content.isHidden() and panel.no_slide.isHidden()
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    _settle(qtbot, viewer)
    assert panel.content.isHidden() and not panel.no_slide.isHidden()


def test_a_slide_opened_with_the_dock_docked_is_shown_whole(make_napari_viewer, qtbot, slide_path):
    """napari fits the view to the first layer, then its layer controls widen and narrow the canvas: the slide was
    cropped left and right (walk: x 31-736 of 768 visible). The dock fits the view again."""
    from napari_cdma._widget_review import scene_camera

    viewer = make_napari_viewer(show=True)
    open_dock(viewer)
    _settle(qtbot, viewer)
    viewer.open(str(slide_path), plugin="napari-cdma")
    _settle(qtbot, viewer)
    layer = viewer.layers[0]
    data = layer.data[0] if layer.multiscale else layer.data
    h, w = (np.asarray(data.shape[:2]) * np.asarray(layer.scale[-2:])).tolist()
    canvas = viewer.window._qt_viewer.canvas.native
    zoom = scene_camera(viewer).zoom
    assert w * zoom <= canvas.width() + 1 and h * zoom <= canvas.height() + 1, (zoom, canvas.width(), w)


def _field(combo) -> int:
    """Width of a closed QComboBox's text field."""
    from qtpy.QtWidgets import QStyle, QStyleOptionComboBox

    option = QStyleOptionComboBox()
    combo.initStyleOption(option)
    return combo.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                        QStyle.SubControl.SC_ComboBoxEditField, combo).width()


def _shown_whole(combo) -> bool:
    """Whether a closed QComboBox shows its current text without eliding it."""
    return combo.fontMetrics().horizontalAdvance(combo.currentText()) <= _field(combo)


def test_the_closed_choosers_tell_their_choices_apart_in_the_default_dock(make_napari_viewer, qtbot):
    """In napari's default window the model chooser shows a version's note whole when closed (walk: "v0001 (not
    promot"), and the corrections chooser shows which kind of layer it holds (walk: the sample's prediction and
    accepted-corrections layers both read "GlaS testA_1 ("): the kind comes first, the whole name in the
    tooltip."""
    import numpy as np

    from napari_cdma._sample import SAMPLE_NAME

    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer)
    predict, review = dock.predict_panel, dock.review_panel
    predict.set_model_versions(["v0001"], current="v0001", notes={"v0001": "not promoted"})
    names = names_for(SAMPLE_NAME)
    for role in ("prediction", "corrections"):  # as the dock makes them (name and metadata)
        viewer.add_labels(np.zeros((8, 8), np.int32), name=names[role],
                          metadata={ROLE_KEY: role, IMAGE_KEY: SAMPLE_NAME})
    review.labels_choice.reset_choices()
    _settle(qtbot, viewer)
    assert predict.model_combo.currentText() == "v0001 (not promoted)"
    assert _shown_whole(predict.model_combo), predict.model_combo.width()
    combo = review.labels_choice.native
    shown = []
    for role, kind in (("prediction", "prediction"), ("corrections", "accepted corrections")):
        review.labels_choice.value = viewer.layers[names[role]]
        _settle(qtbot, viewer)
        assert combo.currentText() == f"{kind}: {SAMPLE_NAME}" and combo.toolTip() == combo.currentText()
        visible = combo.fontMetrics().elidedText(combo.currentText(), Qt.TextElideMode.ElideRight, _field(combo))
        assert visible.startswith(kind), visible  # the kind is on screen, whatever is cut
        shown.append(visible)
    assert shown[0] != shown[1]


def test_retrain_scrolls_its_progress_into_view(make_napari_viewer, qtbot):
    """The Retrain box sits far down the dock: clicking Retrain brings its progress bar into the dock's view (walk:
    progress, ETA and loss curve were out of sight while it ran)."""
    from qtpy.QtCore import QPoint

    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer)
    _settle(qtbot, viewer)
    port, bar = dock._scroll.viewport(), dock.retrain_panel.progress

    def in_view() -> bool:
        top = bar.mapTo(port, QPoint(0, 0)).y()
        return 0 <= top and top + bar.height() <= port.height()

    assert not in_view()  # the dock opens at its top
    dock.retrain_panel.retrain_button.click()  # no store open: it says so, and shows the panel
    qtbot.waitUntil(in_view, timeout=5_000)
    assert "no project store is open" in dock.retrain_panel.last_message
    dock.versions_panel.rollback_button.click()  # the same for Roll back (re-walk: "Select a model version first.")
    assert "no project store is open" in dock.versions_panel.last_message
    assert dock._store is None  # neither created one
