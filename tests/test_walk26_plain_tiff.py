"""Walk 26, finding 2: a plain (single-level) TIFF opened with this plugin's reader.

napari offers two readers for ``*.tif`` (this plugin's and its own) and, with no saved preference, asks which
in its "Choose reader" dialog, where this plugin ("CDMA glands") comes first and is pre-selected. The plugin
refused every TIFF that is not a pyramid, so OK gave "Reader 'napari-cdma' ... refused the file." and nothing
opened. Now a plain TIFF opens as the layer napari's own reader gives (name = stem, RGB), which Predict offers,
and a file that is not a readable TIFF raises one line naming it; pyramids still open as multiscale slides.

A real napari viewer (Xvfb), real files written from the checked-in GlaS images; the dialog is the real one,
accepted with its pre-selected choice (OK)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication, QDialogButtonBox

from napari_cdma._widget_predict import predictable

PLUGIN = "napari-cdma"


@pytest.fixture
def field(glas_dir):
    return np.asarray(Image.open(glas_dir / "images" / "testA_1.png").convert("RGB"))


@pytest.fixture
def not_tiffs(tmp_path, field):
    """A text file renamed .tif and an RGB TIFF cut in half (its strips run past the end of the file)."""
    fake = tmp_path / "fake.tif"
    fake.write_text("patient notes, not an image\n")
    whole = tmp_path / "whole.tif"
    tifffile.imwrite(whole, field, photometric="rgb")
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return fake, cut


def _accept_reader_dialog(chosen: list) -> QTimer:
    """Click OK on napari's "Choose reader" dialog when it shows, noting the pre-selected reader."""

    def poll():
        dialog = QApplication.activeModalWidget()
        if dialog is not None and dialog.objectName() == "Choose reader":
            chosen.append(dialog._get_plugin_choice())
            dialog.btn_box.button(QDialogButtonBox.StandardButton.Ok).click()

    timer = QTimer()
    timer.timeout.connect(poll)
    timer.start(50)
    return timer


def test_a_plain_rgb_tiff_opens_with_the_plugin_as_napari_opens_it(make_napari_viewer, tmp_path, field):
    path = tmp_path / "testA_1 field.tif"
    Image.fromarray(field).save(path)  # an ordinary single-level RGB TIFF, as an image program saves it
    grey = tmp_path / "grey.tiff"
    tifffile.imwrite(grey, field[..., 1])
    viewer = make_napari_viewer()

    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert type(layer).__name__ == "Image" and layer.rgb and not layer.multiscale
    assert layer.name == "testA_1 field" and layer.data.shape == field.shape and layer.data.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(layer.data), field)
    assert predictable(layer)  # the dock's Predict offers it

    (builtin,) = viewer.open(str(path), plugin="napari")  # napari's own reader: the same layer
    assert (builtin.rgb, builtin.data.shape, builtin.data.dtype) == (layer.rgb, layer.data.shape, layer.data.dtype)
    assert builtin.name.startswith(layer.name)  # napari numbers the second layer of one name
    np.testing.assert_array_equal(np.asarray(builtin.data), np.asarray(layer.data))

    (g,) = viewer.open(str(grey), plugin=PLUGIN)
    assert g.name == "grey" and not g.rgb and g.data.shape == field.shape[:2]
    np.testing.assert_array_equal(np.asarray(g.data), field[..., 1])
    assert predictable(g)

    # a stack of two RGB pages (review of the session: it opened as a 4-D grey image 3 px wide)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.stack([field[:64, :64], field[64:128, :64]]), photometric="rgb")
    (st,) = viewer.open(str(stack), plugin=PLUGIN)
    (st_builtin,) = viewer.open(str(stack), plugin="napari")
    assert st.rgb and st.data.shape == (2, 64, 64, 3) and st_builtin.rgb == st.rgb


def test_the_reader_dialog_default_opens_a_plain_tiff(make_napari_viewer, tmp_path, field):
    """File > Open: napari asks which reader, with the plugin pre-selected; OK opens the image."""
    from napari._qt.dialogs.qt_reader_dialog import handle_gui_reading
    from napari.errors import MultipleReaderError

    path = tmp_path / "field.tif"
    Image.fromarray(field).save(path)
    viewer = make_napari_viewer()
    (plain,) = viewer.open(str(path))  # a script's open: napari 0.9 reads with its own reader (plugin="napari")
    assert plain.source.reader_plugin == "napari" and plain.rgb
    viewer.layers.clear()
    with pytest.raises(MultipleReaderError) as info:  # File > Open (plugin=None), no saved preference: it asks
        viewer.open(str(path), plugin=None)
    assert {PLUGIN, "napari"} <= set(info.value.available_plugins)
    assert len(viewer.layers) == 0

    chosen: list = []
    timer = _accept_reader_dialog(chosen)
    try:
        handle_gui_reading([str(path)], viewer.window._qt_viewer, stack=False)
    finally:
        timer.stop()
    assert chosen == ["CDMA glands"]  # the plugin's reader, pre-selected above "napari builtins"
    (layer,) = viewer.layers
    assert layer.name == "field" and layer.rgb and layer.source.reader_plugin == PLUGIN
    np.testing.assert_array_equal(np.asarray(layer.data), field)


def test_a_file_that_is_not_a_readable_tiff_gives_a_clear_error_and_no_layer(make_napari_viewer, not_tiffs):
    from napari._qt.dialogs.qt_reader_dialog import handle_gui_reading

    fake, cut = not_tiffs
    viewer = make_napari_viewer()
    with pytest.raises(ValueError, match=r"^fake\.tif is not a TIFF image \(.+\): nothing opened$"):
        viewer.open(str(fake), plugin=PLUGIN)
    with pytest.raises(ValueError, match=r"^cut\.tif is not a readable TIFF image \(truncated: .+\): nothing opened$"):
        viewer.open(str(cut), plugin=PLUGIN)
    assert len(viewer.layers) == 0

    chosen: list = []
    timer = _accept_reader_dialog(chosen)  # the dialog's default (OK) shows the same line, not "refused"
    try:
        with pytest.raises(ValueError, match=r"^fake\.tif is not a TIFF image") as info:
            handle_gui_reading([str(fake)], viewer.window._qt_viewer, stack=False)
    finally:
        timer.stop()
    assert chosen == ["CDMA glands"] and "refused" not in str(info.value)
    assert len(viewer.layers) == 0


def test_a_pyramidal_tiff_still_opens_as_a_multiscale_slide(make_napari_viewer, slide_path, mosaic):
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(slide_path), plugin=PLUGIN)
    assert layer.multiscale and layer.rgb and len(layer.data) == 3 and layer.metadata["cdma_slide"] == str(slide_path)
    np.testing.assert_array_equal(np.asarray(layer.data[0]), mosaic)
