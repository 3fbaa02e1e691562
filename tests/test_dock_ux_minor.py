"""Three small things a pathologist walk found in the dock: the store line kept "No project store created at ..."
after a later Predict; *Keep unaccepted edits* looked enabled with no edit to keep; the Whole slide panel showed an
empty framed box (its idle progress bar) under Edit window / Accept window.

A real napari viewer (pytest-xvfb), the real dock, GlaS images, a small random model, real project stores on disk,
a real pyramidal TIFF and its prediction store. Only the Yes / No question of Open is answered by the test
(``QMessageBox.question`` patched, as in tests/test_dock_fix_store.py: a modal dialog would wait for a click).
"""
from __future__ import annotations

import numpy as np
from _dock import open_dock, predict_and_wait, slide_in_dock, wait_settled
from qtpy.QtWidgets import QApplication, QFrame, QLabel, QProgressBar, QWidget
from test_dock_fix_store import Answers

import napari_cdma._layers as layers_module
from napari_cdma._layers import names_for
from napari_cdma._widget import KEEP_TIP
from napari_cdma.project.store import INDEX_NAME, ProjectStore

DECLINED = "No project store created at"


def _image(glas_dir, side=256):
    from src_model.io import read_image

    return read_image(glas_dir / "images" / "testA_1.png")[:side, :side]


def _open_button(dock):
    return next(b for b in dock.findChildren(type(dock.keep_edits_button)) if b.text() == "Open")


def _turn(qtbot):
    for _ in range(3):
        QApplication.processEvents()
        qtbot.wait(10)


# ---------------------------------------------------------------------------------------------- 1. the store line
def test_the_declined_open_note_goes_once_a_later_predict_keeps_its_prediction_in_the_open_store(
        make_napari_viewer, qtbot, tmp_path, monkeypatch, glas_dir, lite_checkpoint):
    viewer = make_napari_viewer()
    dock = open_dock(viewer, tmp_path / "project")
    typo = tmp_path / "projcet_typo"
    Answers(monkeypatch, yes=False)
    dock.store_edit.setText(str(typo))
    _open_button(dock).click()
    wait_settled(dock)
    assert f"{DECLINED} {typo}. {dock.store.root} stays open." in dock.store_label.text()

    viewer.add_image(_image(glas_dir), name="he", rgb=True)
    dock.predict_panel.set_model_file(str(lite_checkpoint))
    predict_and_wait(qtbot, dock, "he", timeout=120_000)
    assert dock.flush_prediction_saves(30.0)
    _turn(qtbot)
    # the prediction is in the store that stayed open; the line says what that store holds now, not the Open of
    # a while ago
    assert dock.store.latest_prediction(dock.states["he"].image_hash) is not None
    text = dock.store_label.text()
    assert DECLINED not in text and text.startswith("0 accepted regions,"), text
    assert not typo.exists()


def test_the_declined_open_note_says_so_once_a_store_exists_at_that_path(make_napari_viewer, qtbot, tmp_path,
                                                                         monkeypatch, glas_dir, lite_checkpoint):
    path = tmp_path / "new project"
    monkeypatch.setenv("NAPARI_CDMA_PROJECT", str(path))
    viewer = make_napari_viewer()
    dock = open_dock(viewer)
    Answers(monkeypatch, yes=False)
    _open_button(dock).click()
    assert f"{DECLINED} {path}. No store is open." in dock.store_label.text()

    ProjectStore.open(path)  # made meanwhile outside this dock (another napari, the command line)
    assert (path / INDEX_NAME).is_file()
    viewer.add_image(_image(glas_dir), name="he", rgb=True)
    dock.predict_panel.set_model_file(str(lite_checkpoint))
    predict_and_wait(qtbot, dock, "he", timeout=120_000)  # a store that exists is never opened by Predict
    _turn(qtbot)
    assert dock._store is None
    text = dock.store_label.text()
    assert DECLINED not in text, text
    assert f"A project store exists at {path} now" in text and "press Open" in text, text


# ---------------------------------------------------------------------------------------------- 2. Keep edits
def _keep(dock):
    button = dock.keep_edits_button
    return button.isEnabled(), button.toolTip()


def _full_count(dock, name="he"):
    """What the dock's own full count says (the walk the button must not repeat at each edit)."""
    state = dock.states[name]
    main = names_for(name)["prediction"]
    return state.unsaved(main, np.asarray(dock.viewer.layers[main].data))


def test_keep_unaccepted_edits_is_enabled_only_with_edits_to_keep(make_napari_viewer, qtbot, tmp_path, glas_dir,
                                                                 lite_checkpoint, monkeypatch):
    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer, tmp_path / "project")
    enabled, tip = _keep(dock)
    assert not enabled and tip.startswith(KEEP_TIP) and "predict an image first" in tip

    viewer.add_image(_image(glas_dir), name="he", rgb=True)
    dock.predict_panel.set_model_file(str(lite_checkpoint))
    predict_and_wait(qtbot, dock, "he", timeout=120_000)
    _turn(qtbot)
    layer = viewer.layers[names_for("he")["prediction"]]
    assert _full_count(dock) == 0
    enabled, tip = _keep(dock)
    assert not enabled, tip  # a prediction, no edit: nothing to keep
    assert tip.startswith(KEEP_TIP) and "no edits to keep" in tip, tip

    # every full count of a layer's edits from here on is seen (the real function runs)
    walks = []
    real = layers_module.unsaved_edits

    def counted(*args, **kwargs):
        walks.append(np.shape(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr("napari_cdma._widget_edits.unsaved_edits", counted)

    # painted with the brush: enabled, the plain tooltip
    label = int(np.asarray(layer.data).max()) + 1
    layer.brush_size = 9
    layer.paint((40, 40), label)
    assert _keep(dock) == (True, KEEP_TIP)
    layer.paint((60, 40), label)
    assert dock.keep_edits_button.isEnabled()
    assert walks == [], "an edit counted by walking the whole layer"
    # undone twice: nothing left to keep; redone: something again
    layer.undo()
    assert dock.keep_edits_button.isEnabled()
    layer.undo()
    assert not dock.keep_edits_button.isEnabled() and "no edits to keep" in dock.keep_edits_button.toolTip()
    layer.redo()
    assert dock.keep_edits_button.isEnabled()
    # the eraser over the painted disc: wherever the model had background it is the model's again, but its glands
    # under the disc are now background: an edit
    layer.paint((40, 40), 0)
    # a fill of a gland
    ys, xs = np.nonzero(np.asarray(layer.data) > 0)
    if ys.size:
        layer.fill((int(ys[0]), int(xs[0])), label + 1)
    assert walks == [], "an edit counted by walking the whole layer"
    assert dock.states["he"].unsaved_px[layer.name] == _full_count(dock) > 0
    assert dock.keep_edits_button.isEnabled()
    monkeypatch.setattr("napari_cdma._widget_edits.unsaved_edits", real)
    # labels written by code, then the layer redrawn: counted (in full, at that redraw)
    before = _full_count(dock)
    layer.data[200:210, 200:210] = label + 3
    layer.refresh()
    assert dock.states["he"].unsaved_px[layer.name] == _full_count(dock) > before

    # every edit accepted (a drawn box around the whole image): nothing left to keep
    review = dock.review_panel
    review.draw_button.click()
    drawn = viewer.layers[names_for("he")["drawn"]]
    h, w = np.shape(layer.data)
    drawn.add_rectangles(np.array([[[0, 0], [0, w], [h, w], [h, 0]]], float))
    review.accept_drawn_button.click()
    assert len(dock.store.regions()) == 1, review.last_message
    _turn(qtbot)
    assert _full_count(dock) == 0
    assert not dock.keep_edits_button.isEnabled()
    # an edit inside the accepted box after the accept is not in the store: enabled again, and Keep keeps it
    layer.paint((100, 100), label + 2)
    assert dock.keep_edits_button.isEnabled()
    assert dock.states["he"].unsaved_px[layer.name] == _full_count(dock) > 0
    dock.keep_edits_button.click()
    assert "Kept" in dock.store_label.text() and "edited pixel(s) of 'he'" in dock.store_label.text()
    kept = np.array(layer.data)

    # the prediction layer closed: nothing to keep edits of
    viewer.layers.remove(layer)
    _turn(qtbot)
    enabled, tip = _keep(dock)
    assert not enabled and "predict an image first" in tip, tip
    viewer.close()

    # reopened: the kept edits come back, still not accepted, but the store holds them as they are: nothing to keep
    # until they are edited again
    viewer = make_napari_viewer()
    dock = open_dock(viewer, tmp_path / "project")
    layer = viewer.layers[names_for("he")["prediction"]]
    np.testing.assert_array_equal(layer.data, kept)
    assert not dock.keep_edits_button.isEnabled() and "kept in the store already" in _keep(dock)[1]
    assert dock.states["he"].unsaved_px[layer.name] == _full_count(dock) > 0


def test_a_reopened_prediction_without_kept_edits_has_nothing_to_keep_until_painted(make_napari_viewer, qtbot,
                                                                                  tmp_path, glas_dir,
                                                                                  lite_checkpoint):
    viewer = make_napari_viewer()
    dock = open_dock(viewer, tmp_path / "project")
    viewer.add_image(_image(glas_dir), name="he", rgb=True)
    dock.predict_panel.set_model_file(str(lite_checkpoint))
    predict_and_wait(qtbot, dock, "he", timeout=120_000)
    assert dock.flush_prediction_saves(30.0)
    viewer.close()

    viewer = make_napari_viewer()
    dock = open_dock(viewer, tmp_path / "project")
    layer = viewer.layers[names_for("he")["prediction"]]
    assert _full_count(dock) == 0 and dock.states["he"].unsaved_px == {layer.name: 0}
    assert not dock.keep_edits_button.isEnabled() and "no edits to keep" in dock.keep_edits_button.toolTip()
    layer.paint((30, 30), int(np.asarray(layer.data).max()) + 1)
    assert dock.keep_edits_button.isEnabled()
    assert dock.states["he"].unsaved_px[layer.name] == _full_count(dock) > 0


# ---------------------------------------------------------------------------------------------- 3. slide panel
def _empty_boxes(panel):
    """Visible widgets of the panel's controls drawn as an empty framed box: a progress bar with nothing to show
    (no job runs), or a framed label with no text."""
    out = []
    for w in panel.content.findChildren(QWidget):
        if not w.isVisibleTo(panel):
            continue
        if isinstance(w, QProgressBar) and not panel.running:
            out.append(w)
        elif isinstance(w, QLabel) and not w.text() and w.pixmap() is None and w.frameShape() != QFrame.Shape.NoFrame:
            out.append(w)
    return out


def test_the_slide_panel_shows_no_empty_box_under_the_edit_buttons(make_napari_viewer, qtbot, tmp_path,
                                                                   predicted_slide):
    viewer, dock, panel = slide_in_dock(make_napari_viewer, qtbot, predicted_slide, tmp_path / "project")
    _turn(qtbot)
    assert _empty_boxes(panel) == []
    assert panel.progress.isHidden()  # idle: nothing to show
    # below the Edit window / Accept window row, the bar's row is kept (nothing moves when a job starts), then comes
    # what has content: nothing else between
    below = panel.accept_button.mapTo(panel, panel.accept_button.rect().bottomLeft()).y()
    nxt = min((w for w in (panel.status, panel.legend, panel.readout, panel.number_status) if w.isVisibleTo(panel)),
              key=lambda w: w.mapTo(panel, w.rect().topLeft()).y())
    gap = nxt.mapTo(panel, nxt.rect().topLeft()).y() - below
    assert gap <= panel.progress.height() + 2 * panel.content.layout().spacing() + 2, (nxt, gap)
    legend_at = panel.legend.mapTo(panel, panel.legend.rect().topLeft()).y()

    # a job runs (Predict view, then an edit window read): the bar shows it; done, it goes and the status line says
    # how it ended
    for start in (panel.predict_view, panel.edit_window):
        assert start() is True, panel.last_message
        assert not panel.progress.isHidden() and not panel.status.isHidden() and panel.status.text()
        qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
        _turn(qtbot)
        assert panel.progress.isHidden() and panel.status.text() and not panel.status.isHidden()
        assert _empty_boxes(panel) == [], panel.last_message
        # the status line keeps its fixed rows from the start and the bar's row stays: the legend does not move
        assert panel.legend.mapTo(panel, panel.legend.rect().topLeft()).y() == legend_at
    assert panel.window is not None, panel.last_message
