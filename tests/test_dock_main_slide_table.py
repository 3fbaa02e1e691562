"""A whole slide's numbered glands in the dock's gland table and readout (the slide helper's wiring, applied in
napari_cdma/_widget.py): a completely predicted slide store opened in napari, numbered in the background, fills the
"Uncertainty and glands" table with one row per numbered gland, and the readout gives the gland's number and the
uncertainty in the legend's units. A real napari viewer (Xvfb), the GlaS test slide, the bundled model, a real zarr
store."""
from __future__ import annotations

import numpy as np
import pytest

from napari_cdma._layers import unwrap_layer
from napari_cdma._slide_view import NUMBERED

PLUGIN, WIDGET = "napari-cdma", "CDMA"


@pytest.fixture
def full_store(tmp_path, slide_path):
    """``cdma predict-slide`` of the whole 640 x 768 test slide, chunks of 256 px."""
    from src_model.progress import drain
    from src_model.slide_predict import predict_slide

    path = tmp_path / "case.cdma.zarr"
    drain(predict_slide(slide_path, path, chunk=256))
    return path


def test_a_numbered_slide_fills_the_gland_table_and_the_readout(make_napari_viewer, qtbot, tmp_path, full_store):
    viewer = make_napari_viewer()
    image, *_ = viewer.open(str(full_store), plugin=PLUGIN)
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    panel, display = dock.slide_panel, dock.display_panel
    if not hasattr(panel, "glands_numbered"):
        pytest.skip("the Whole slide panel does not announce its numbered glands (glands_numbered) in this tree")
    assert dock.open_store(tmp_path / "project") is not None
    qtbot.waitUntil(lambda: not panel.numbering and f"{image.name} {NUMBERED}" in viewer.layers, timeout=180_000)
    numbered = viewer.layers[f"{image.name} {NUMBERED}"]
    qtbot.waitUntil(lambda: bool(display.glands), timeout=10_000)
    rows = panel.gland_rows[image.name]
    assert unwrap_layer(display.labels_layer) is unwrap_layer(numbered)  # napari may hand a proxy of it
    assert sorted(g["id"] for g in display.glands) == sorted(r["id"] for r in rows), \
        ([g["id"] for g in display.glands][:10], [r["id"] for r in rows][:10], len(display.glands), len(rows))
    assert display.table.rowCount() == len(rows) >= 5 and not display.content.isHidden()
    lab = np.asarray(numbered.data[0])
    big = max(rows, key=lambda r: r["area"])
    cy, cx = np.argwhere(lab == big["id"])[0]
    text = display.value_text((float(cy), float(cx)))
    assert text.endswith(f", gland {big['id']}"), text
    value = float(text.split("uncertainty ")[1].split(",")[0])
    assert 0.0 <= value <= 1.0, text  # the store's 255 x value read in uncertainty units
