"""The uncertainty overlay as it is drawn on the canvas, and what "Look here next" says about layers
that are not images to predict (a slide's layers, the plugin's own layers).

The overlay test predicts the shipped sample with the bundled model in a shown viewer (Xvfb) and
compares canvas screenshots with and without the uncertainty layer, pixel by pixel over tissue.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_cdma._layers import IMAGE_KEY, ROLE_KEY, names_for, uncertainty_tint_start
from napari_cdma._sample import SAMPLE_NAME
from napari_cdma._widget_display import legend_rgb
from napari_cdma._widget_review import no_regions_note

PLUGIN, WIDGET, SAMPLE_KEY = "napari-cdma", "CDMA", "glas_testA_1"
CHANGED = 16  # a canvas pixel whose colour moved by more than this (of 255, any channel) is tinted
CLEAR = 48  # ... and clearly tinted above this


def _dock(make_napari_viewer, monkeypatch, tmp_path, show):
    monkeypatch.setenv("NAPARI_CDMA_PROJECT", str(tmp_path / "no_store"))  # no project: the bundled model
    viewer = make_napari_viewer(show=show)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return viewer, widget


def _canvas_to_image(viewer, shot_hw, image_hw):
    """Image row and column under each canvas pixel (nearest pixel centre), and which lie on the image."""
    from napari_cdma._widget_review import scene_camera

    camera = scene_camera(viewer)
    cy, cx = camera.center[-2:]
    zoom = camera.zoom
    h, w = shot_hw
    rows = np.floor(cy + (np.arange(h) + 0.5 - h / 2) / zoom + 0.5).astype(int)
    cols = np.floor(cx + (np.arange(w) + 0.5 - w / 2) / zoom + 0.5).astype(int)
    on = ((rows >= 0) & (rows < image_hw[0]))[:, None] & ((cols >= 0) & (cols < image_hw[1]))[None]
    return np.clip(rows, 0, image_hw[0] - 1), np.clip(cols, 0, image_hw[1] - 1), on


def test_overlay_tints_the_most_uncertain_tissue_and_leaves_the_rest_readable(make_napari_viewer, qtbot,
                                                                               monkeypatch, tmp_path):
    from src_model.tissue import tissue_mask

    viewer, widget = _dock(make_napari_viewer, monkeypatch, tmp_path, show=True)
    viewer.window.resize(1500, 950)  # a canvas of some size beside the dock
    viewer.open_sample(PLUGIN, SAMPLE_KEY)
    assert widget.predict(SAMPLE_NAME), widget.predict_panel.last_message
    qtbot.waitUntil(lambda: not widget.predict_panel.running, timeout=180_000)
    said = widget.predict_panel.last_message
    assert said.startswith(widget.predict_panel.predicted_line(SAMPLE_NAME)), said

    names = names_for(SAMPLE_NAME)
    unc = viewer.layers[names["uncertainty"]]
    lo, hi = (float(v) for v in unc.contrast_limits)
    tint = uncertainty_tint_start(lo, hi)
    assert lo < tint < hi
    # the legend says where the tint starts and is drawn as the layer is: glass-white up to that point
    assert f"{tint:.3f}" in widget.display_panel.legend_title.text()
    legend = legend_rgb(unc.colormap, width=100, opacity=unc.opacity)
    cut = int(100 * (tint - lo) / (hi - lo))
    assert (legend[:, : cut - 1] == 255).all() and legend[:, -1].max() < 200

    for layer in viewer.layers:
        layer.visible = layer.name in (SAMPLE_NAME, unc.name)
    viewer.reset_view()
    qtbot.wait(300)
    unc.visible = False
    qtbot.wait(200)
    base = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(np.int16)
    unc.visible = True
    qtbot.wait(200)
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(np.int16)
    diff = np.abs(shot - base).max(axis=-1)

    image = np.asarray(viewer.layers[SAMPLE_NAME].data)
    rows, cols, on = _canvas_to_image(viewer, diff.shape, image.shape[:2])
    assert on.mean() > 0.2  # the image fills a good part of the canvas
    tissue = on & tissue_mask(image)[rows][:, cols]
    value = np.asarray(unc.data)[rows][:, cols]

    # a non-trivial but bounded share of the tissue is tinted (the earlier ramp tinted 75 % of the
    # sample's tissue; the sample's model error covers ~40 % of it, so more than a quarter is expected)
    changed = float((diff > CHANGED)[tissue].mean())
    assert 0.03 < changed < 0.6, changed
    # tissue below the tint start shows the H&E as it is; the most uncertain tissue is clearly tinted
    calm = tissue & (value < tint - 0.05 * (hi - lo))
    top = tissue & (value >= hi)
    assert calm.sum() > 0.2 * tissue.sum() and top.sum() > 50
    assert (diff[calm] <= 4).mean() > 0.99, (diff[calm] > 4).mean()
    assert np.median(diff[top]) > CLEAR and (diff[top] > CHANGED).mean() > 0.95

    # the dock's review regions do not overlap and none is a sliver
    boxes = [b for _, b in widget.review_panel.tiles]
    assert boxes
    for a, b in itertools.combinations(boxes, 2):
        assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]), (a, b)
    assert all(min(y1 - y0, x1 - x0) >= 128 for y0, x0, y1, x1 in boxes)


@pytest.fixture
def slide_and_layers(make_napari_viewer, monkeypatch, tmp_path):
    """A dock with an H&E image, a (fake) whole slide with its stored uncertainty, a plugin layer and a
    grey image: metadata as the plugin's slide reader and Whole slide panel give them."""
    viewer, widget = _dock(make_napari_viewer, monkeypatch, tmp_path, show=False)
    rng = np.random.default_rng(0)
    he = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    viewer.add_image(he, name="he", rgb=True)
    slide_meta = {"cdma_slide": str(tmp_path / "s.tif")}
    store_meta = {"cdma_store": str(tmp_path / "s.cdma.zarr"), "cdma_slide": str(tmp_path / "s.tif")}
    levels = [rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)]
    viewer.add_image(levels, name="s", rgb=True, multiscale=True, metadata=slide_meta)
    viewer.add_image([lv[..., 0] for lv in levels], name="s uncertainty", multiscale=True, metadata=store_meta)
    viewer.add_image(np.zeros((64, 64), np.float32), name=names_for("he")["uncertainty"],
                     metadata={ROLE_KEY: "uncertainty", IMAGE_KEY: "he"})
    viewer.add_image(np.zeros((64, 64), np.float32), name="heat")
    viewer.add_image(levels, name="pyramid", rgb=True, multiscale=True)
    return viewer, widget


@pytest.mark.parametrize("name, predict_says", [
    ("s", "multiscale"),
    ("s uncertainty", "multiscale"),
    ("heat", "RGB"),
    ("pyramid", "multiscale"),
])
def test_predict_does_not_offer_a_slide_layer(slide_and_layers, name, predict_says):
    """Predict lists only RGB single-scale images: a slide's layers, a pyramid, a grey image and the plugin's
    own layers are not offered. A script naming one gets why it cannot be predicted, and "Look here next"
    does not offer to "Predict" it (the walk: a slide's uncertainty layer was on screen)."""
    viewer, widget = slide_and_layers
    panel = widget.predict_panel
    assert [ly.name for ly in panel.image_choice.choices] == ["he"]
    assert not panel.set_image(name) and panel.image_layer is viewer.layers[name]
    # the review list stays the listed image's: it never offers to "Predict" the slide's layer
    assert widget.review_panel.last_message == "Predict 'he' to see its review regions."
    assert not widget.predict(name) and predict_says in panel.last_message, panel.last_message
    assert panel.image_layer is viewer.layers["he"]  # named once: the chooser's image again
    assert panel.set_image("he") and panel.image_layer is viewer.layers["he"]
    assert widget.review_panel.last_message == "Predict 'he' to see its review regions."


def test_review_note_for_the_plugins_own_layers(slide_and_layers):
    viewer, widget = slide_and_layers
    name = names_for("he")["uncertainty"]
    widget.review_panel.clear_tiles(name)
    message = widget.review_panel.last_message
    assert "Predict '" not in message and "uncertainty layer of 'he'" in message, message
    assert no_regions_note(viewer, None) == "" and no_regions_note(viewer, "closed layer") == ""


def _gland_rows(n, seed=0):
    """Rows as the engine's gland table gives them, with areas whose text order differs from their
    number order (9 < 10 < 100) and bounding boxes spread over a 600 x 800 image."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, n + 1):
        y, x = int(rng.integers(0, 540)), int(rng.integers(0, 740))
        rows.append({"id": i, "area": int(rng.choice([9, 10, 100, 1000, 25000])) + i,
                     "mean_uncertainty": float(rng.random()), "bbox": (y, x, y + 60, x + 60)})
    return rows


def test_gland_table_sorts_goes_to_a_clicked_gland_exports_and_clears(make_napari_viewer, monkeypatch, tmp_path,
                                                                       qtbot):
    """The per-gland table (a view over a model, no per-cell objects): most uncertain gland first, a header
    click sorts by that column's numbers, clicking a row centres the view on that gland, the tooltip lists
    the row's other keys, the CSV has every gland, and an empty table clears it. Thousands of rows fill it."""
    import csv

    from qtpy.QtCore import Qt

    viewer, widget = _dock(make_napari_viewer, monkeypatch, tmp_path, show=True)
    viewer.add_image(np.zeros((600, 800), np.uint8), name="he")
    display = widget.display_panel
    display.min_gland_pixels = 0  # synthetic glands of 9 px and up: every row listed (not the walk 24 rule)
    table, model = display.table, display.table.gland_model
    rows = _gland_rows(300)
    display.set_glands(rows)
    assert table.rowCount() == len(rows) == len(display.glands)
    assert [model.headerData(c, Qt.Orientation.Horizontal) for c in range(table.columnCount())] == \
        ["id", "area", "mean unc."]
    shown_unc = [float(table.text(r, 2)) for r in range(table.rowCount())]
    assert shown_unc == sorted(shown_unc, reverse=True)  # most uncertain first
    top = max(rows, key=lambda g: g["mean_uncertainty"])
    assert table.text(0, 0) == str(top["id"]) and table.text(0, 2) == f"{top['mean_uncertainty']:.3f}"
    tip = model.data(model.index(0, 1), Qt.ItemDataRole.ToolTipRole)
    y0, x0, y1, x1 = top["bbox"]  # the box as the dock writes boxes (walk 20: "bbox y0 x0 y1 x1" needed its convention)
    assert f"box {x1 - x0} x {y1 - y0} px at x {x0}, y {y0}" in tip and f"area {top['area']}" in tip

    # a header click sorts by area as numbers (9 < 10 < 100), a second click reverses the order
    from qtpy.QtCore import QPoint

    header = table.horizontalHeader()
    orders = []
    for _ in range(2):
        qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton,
                         pos=QPoint(header.sectionViewportPosition(1) + 5, header.height() // 2))
        areas = [int(table.text(r, 1)) for r in range(table.rowCount())]
        assert areas in (sorted(areas), sorted(areas, reverse=True)), areas[:10]
        orders.append(areas)
    assert orders[0] == orders[1][::-1]
    assert sorted(orders[0], key=str) != sorted(orders[0])  # the rows tell a text sort from a number sort

    # clicking a row goes to the gland shown in that row (rows are sorted, not in id order)
    from napari_cdma._widget_review import scene_camera

    for row in (3, 0):
        table.scrollTo(model.index(row, 0))
        gland = next(g for g in rows if str(g["id"]) == table.text(row, 0))
        qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton,
                         pos=table.visualRect(model.index(row, 1)).center())
        gy0, gx0, gy1, gx1 = gland["bbox"]
        gy, gx = tuple(scene_camera(viewer).center)[-2:]
        assert gy0 <= gy < gy1 and gx0 <= gx < gx1, (row, gland, gy, gx)

    # the CSV has every gland (in id order, the box as its left, top, width and height in pixels)
    with display.export_csv(tmp_path / "glands.csv").open(newline="") as f:
        written = list(csv.DictReader(f))
    assert [int(r["id"]) for r in written] == [g["id"] for g in rows]
    y0, x0, y1, x1 = rows[5]["bbox"]
    box = [int(written[5][k]) for k in ("box_left", "box_top", "box_width", "box_height")]
    assert box == [x0, y0, x1 - x0, y1 - y0]
    assert int(written[5]["area"]) == rows[5]["area"]

    # thousands of rows, then none: the table follows
    many = _gland_rows(20000, seed=1)
    display.set_glands(many)
    assert table.rowCount() == 20000
    assert table.text(0, 0) == str(max(many, key=lambda g: g["mean_uncertainty"])["id"])
    display.set_glands([])
    assert table.rowCount() == 0 and display.glands == [] and table.text(0, 0) == ""
    assert not display.go_to_gland(1)


def test_the_readout_reads_only_visible_layers(make_napari_viewer, monkeypatch, tmp_path):
    """Under the cursor the readout gives the uncertainty and gland of the layers on screen; a hidden
    layer (the walk: an image's overlay under a slide) is not what the user sees there."""
    viewer, widget = _dock(make_napari_viewer, monkeypatch, tmp_path, show=False)
    unc = viewer.add_image(np.full((40, 60), 0.25, np.float32), name="u")
    labels = np.zeros((40, 60), np.int32)
    labels[10:20, 10:30] = 7
    lab = viewer.add_labels(labels, name="p")
    panel = widget.display_panel
    panel.show_result("he", unc, lab, (0.0, 1.0), [])
    assert panel.value_text((15.0, 15.0)) == "Under cursor:\nuncertainty 0.250, gland 7"
    assert panel.value_text((30.0, 50.0)) == "Under cursor:\nuncertainty 0.250"
    unc.visible = False
    assert panel.value_text((15.0, 15.0)) == "Under cursor:\ngland 7"
    lab.visible = False
    assert panel.value_text((15.0, 15.0)) == "Under cursor:\n-"


def test_a_clicked_gland_is_selected_and_outlined(make_napari_viewer, monkeypatch, tmp_path, qtbot):
    """Clicking a row of the gland table shows which gland it is: its label becomes the prediction layer's
    selected label (the other glands stay drawn, the labels unchanged, the labels layer still the one to
    paint) and one rectangle just outside its box is drawn in the image's "selected gland" layer; a second
    click moves that rectangle, and a cleared or replaced table takes it away."""
    from qtpy.QtCore import Qt

    from napari_cdma._widget_display import SELECTED_ROLE, selected_gland_name
    from src_model.gland_table import gland_table

    viewer, widget = _dock(make_napari_viewer, monkeypatch, tmp_path, show=True)
    viewer.add_image(np.zeros((300, 400, 3), np.uint8), name="he", rgb=True)
    labels = np.zeros((300, 400), np.int32)
    labels[20:60, 30:90] = 3
    labels[150:260, 200:240] = 5
    labels[100:130, 300:390] = 8
    unc = viewer.add_image(np.linspace(0, 1, 300 * 400, dtype=np.float32).reshape(300, 400), name="he uncertainty")
    lab = viewer.add_labels(labels.copy(), name="he prediction")
    glands = gland_table(labels, np.asarray(unc.data))
    display = widget.display_panel
    display.show_result("he", unc, lab, (0.0, 1.0), glands)
    viewer.layers.selection.active = lab
    table, model = display.table, display.table.gland_model
    name = selected_gland_name("he")
    assert name not in viewer.layers

    boxes = []
    for row in (0, 2):
        table.scrollTo(model.index(row, 0))
        qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton,
                         pos=table.visualRect(model.index(row, 1)).center())
        gland_id = int(table.text(row, 0))
        ys, xs = np.nonzero(labels == gland_id)
        assert lab.selected_label == gland_id == display.selected_gland
        assert not lab.show_selected_label and np.array_equal(lab.data, labels)  # every gland still drawn, unchanged
        assert viewer.layers.selection.active is lab  # painting goes on in the prediction layer
        layer = viewer.layers[name]
        assert layer.metadata[ROLE_KEY] == SELECTED_ROLE and layer.metadata[IMAGE_KEY] == "he"
        assert len(layer.data) == 1 and layer.shape_type == ["rectangle"]
        (lo_y, lo_x), (hi_y, hi_x) = layer.data[0].min(axis=0), layer.data[0].max(axis=0)
        # the stroke (half its width each side of the line) lies outside the gland's pixels, close to them
        half = float(np.asarray(layer.edge_width)[0]) / 2
        assert lo_y + half <= ys.min() - 0.5 and hi_y - half >= ys.max() + 0.5
        assert lo_x + half <= xs.min() - 0.5 and hi_x - half >= xs.max() + 0.5
        assert max(ys.min() - lo_y, hi_y - ys.max(), xs.min() - lo_x, hi_x - xs.max()) < 8
        boxes.append((gland_id, layer.data[0].copy()))
    assert boxes[0][0] != boxes[1][0] and not np.allclose(boxes[0][1], boxes[1][1])  # the second click moved it
    assert sum(ly.name == name for ly in viewer.layers) == 1

    display.set_glands([])  # the table cleared: the outline goes
    assert name not in viewer.layers and display.selected_gland is None
    display.set_glands(glands)
    assert display.go_to_gland(glands[0]["id"]) and name in viewer.layers
    display.show_result("he", unc, lab, (0.0, 1.0), glands)  # a new prediction of the image
    assert name not in viewer.layers


def test_a_clicked_sliver_is_shown_with_tissue_around_it(make_napari_viewer, monkeypatch, tmp_path):
    """A gland a few px wide (a piece an edit left at a box edge) is shown with at least MIN_GLAND_VIEW px of the
    image around it, not zoomed until its outline fills the canvas (walk: a 2-3 px strip filled the view)."""
    from napari_cdma._widget_display import MIN_GLAND_VIEW
    from napari_cdma._widget_review import canvas_hw, scene_camera
    from src_model.gland_table import gland_table

    viewer, widget = _dock(make_napari_viewer, monkeypatch, tmp_path, show=True)
    viewer.add_image(np.zeros((300, 400, 3), np.uint8), name="he", rgb=True)
    labels = np.zeros((300, 400), np.int32)
    labels[150:153, 100:130] = 9  # 3 x 30 px
    unc = viewer.add_image(np.full((300, 400), 0.5, np.float32), name="he uncertainty")
    lab = viewer.add_labels(labels, name="he prediction")
    display = widget.display_panel
    display.min_gland_pixels = 0  # a sliver smaller than a real gland, listed for this test
    display.show_result("he", unc, lab, (0.0, 1.0), gland_table(labels, np.asarray(unc.data)))
    assert display.go_to_gland(9)
    h, w = canvas_hw(viewer)
    zoom = scene_camera(viewer).zoom
    assert min(h, w) / zoom >= MIN_GLAND_VIEW  # data px on screen along the shorter side
    cy, cx = tuple(scene_camera(viewer).center)[-2:]
    assert 150 <= cy <= 153 and 100 <= cx <= 130
