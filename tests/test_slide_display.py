"""The whole slide as the dock shows an image: its uncertainty overlay visible over its own range over tissue
(read from a coarse level of the slide's store) with a legend, glands as objects in the edit window (a
split kept when accepted into the store's gland / background labels), and a Predict chooser that lists
only RGB images to predict. Real napari viewers (Xvfb), real slide files and stores, the bundled model."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from test_widget_slide import PLUGIN, WIDGET, _predict, _slide_in_dock, _view

from napari_cdma._layers import UNCERTAINTY_OPACITY, names_for, uncertainty_colormap, uncertainty_tint_start
from napari_cdma._slide_view import RANGE_KEY, carve_splits, store_display_range, window_instances
from src_model.slide_store import StoreInfo, create_store, open_store


def _store(path, mosaic, chunk=128, levels=3, done=None, glass=()):
    """A store of the mosaic, every chunk (or those in ``done``) written: uncertainty 0.1 .. 0.5 over tissue
    (a ramp along x), 0.95 over the glass columns ``x >= 700``; chunks in ``glass`` marked glass."""
    h, w = mosaic.shape[:2]
    store = create_store(path, StoreInfo(slide="case.tif", slide_level=0, downsample=1.0, height=h, width=w,
                                         chunk=chunk, n_levels=levels, settings={"min_tissue": 0.05}))
    image = mosaic.copy()
    image[:, 700:] = 250  # glass
    unc = np.broadcast_to(np.linspace(0.1, 0.5, w, dtype=np.float32), (h, w)).copy()
    unc[:, 700:] = 0.95
    for cy, cx in store.all_chunks():
        if done is not None and (cy, cx) not in done:
            continue
        y0, x0, y1, x1 = store.chunk_box(cy, cx)
        tissue = 0.0 if (cy, cx) in glass else 1.0
        store.write_chunk(cy, cx, image[y0:y1, x0:x1], np.zeros((y1 - y0, x1 - x0), np.uint8),
                          np.round(255 * unc[y0:y1, x0:x1]).astype(np.uint8), tissue)
    return store


# --------------------------------------------------------------------------- Qt-free

def test_store_range_comes_from_tissue_of_predicted_chunks_at_a_coarse_level(tmp_path, mosaic):
    assert store_display_range(_store(tmp_path / "empty.zarr", mosaic, done=set())) is None
    store = _store(tmp_path / "s.zarr", mosaic)
    lo, hi, level = store_display_range(store)
    assert level == 1  # the finest level above 0 within the budget (640 x 768 / 4 pixels)
    # the ramp over tissue only (it reaches 0.465 where the glass starts): the glass (0.95) is left out
    top = 0.1 + 0.4 * 700 / 767
    assert 0.1 <= lo < 0.12 and top - 0.01 < hi <= top
    # a smaller budget reads a coarser level, then a spread-out subset of its chunks; still the ramp
    lo2, hi2, level2 = store_display_range(store, max_pixels=30 * 32 * 32)
    assert level2 == 2 and 0.1 <= lo2 < 0.13 and top - 0.02 < hi2 <= top
    lo3, hi3, level3 = store_display_range(store, max_pixels=8 * 32 * 32)
    assert level3 == 2 and 0.1 <= lo3 < hi3 <= top
    # only predicted tissue chunks count: two chunks of the left, and a glass-marked one ignored
    part = _store(tmp_path / "p.zarr", mosaic, done={(0, 0), (1, 0), (0, 1)}, glass={(0, 1)})
    lo4, hi4, _ = store_display_range(part)
    assert 0.1 <= lo4 < hi4 <= 0.1 + 0.4 * 128 / 768 + 0.01


def _two_discs():
    """Two discs of radius 60 joined by a bar 15 px thick, and a 10 x 10 speck."""
    yy, xx = np.mgrid[:200, :300]
    mask = ((yy - 100) ** 2 + (xx - 80) ** 2 < 3600) | ((yy - 100) ** 2 + (xx - 210) ** 2 < 3600)
    mask |= (np.abs(yy - 100) < 8) & (xx > 80) & (xx < 210)
    mask[5:15, 5:15] = True
    return mask


def test_edit_window_labels_one_gland_each_and_a_split_survives_accept():
    mask = _two_discs()
    inst = window_instances(mask)
    np.testing.assert_array_equal(inst > 0, mask)  # nothing removed or filled: the store's pixels exactly
    assert inst.max() == 3 and inst[100, 80] != inst[100, 210] and inst[10, 10] not in (inst[100, 80], 0)
    assert not window_instances(np.zeros((20, 20), np.uint8)).any()
    # specks of one or a few pixels (the slide store keeps them) get labels too, numbered without gaps, so
    # the edit window's "n gland(s)" (its largest label) is the count (the walk saw 78 said, 67 labels)
    specks = mask.copy()
    for y, x in ((5, 290), (195, 150), (190, 290), (150, 20)):
        specks[y, x] = True
    specks[150:152, 150:152] = True
    numbered = window_instances(specks)
    np.testing.assert_array_equal(numbered > 0, specks)
    np.testing.assert_array_equal(np.unique(numbered), np.arange(numbered.max() + 1))
    # unchanged, or a boundary moved between glands that touched already: nothing carved
    np.testing.assert_array_equal(carve_splits(inst, inst), inst)
    moved = inst.copy()
    a, b = inst[100, 80], inst[100, 210]
    col = int(np.nonzero(inst[100] == b)[0][0])
    moved[92:108, col:col + 6] = a
    np.testing.assert_array_equal(carve_splits(moved, inst), moved)
    # a gland split by painting its upper half with a new label: two glands, 1 px apart
    split = inst.copy()
    upper = (inst == a) & (np.arange(200)[:, None] < 100)
    split[upper] = 9
    carved = carve_splits(split, inst)
    assert set(np.unique(carved[carved != split])) == {0}  # only background added
    lost = (carved == 0) & (split > 0)
    assert lost.sum() <= 2 * 121 and (split[lost] == 9).all()  # a line along the cut, of the larger label
    pieces, n = ndi.label(carved > 0, structure=np.ones((3, 3)))
    assert n == 3  # the speck, the lower disc + bar + right disc, the upper half
    np.testing.assert_array_equal(window_instances(carved) > 0, carved > 0)
    # two new labelled squares side by side: the right one loses its first column
    squares = np.zeros((50, 100), np.int32)
    squares[10:40, 10:50] = 1
    squares[10:40, 50:90] = 2
    want = squares > 0
    want[10:40, 50] = False
    np.testing.assert_array_equal(carve_splits(squares, np.zeros_like(squares)) > 0, want)


# --------------------------------------------------------------------------- in napari

def _tinted_share(viewer, layer):
    """Share of the slide's pixels on the canvas whose colour the layer changes by more than 16 (of 255) in
    some channel: a screenshot with the layer shown against one without."""
    shown = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    layer.visible = False
    hidden = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    layer.visible = True
    changed = np.abs(shown - hidden).max(axis=2) > 16
    tissue = (hidden.min(axis=2) < 230) & (hidden.max(axis=2) > 40)  # the slide, not glass or the background
    assert tissue.mean() > 0.3  # the view shows the slide
    return float(changed[tissue].mean())


def test_predicted_view_is_tinted_on_screen_and_predict_lists_only_rgb_images(make_napari_viewer, qtbot, tmp_path,
                                                                              slide_path, mosaic):
    viewer, slide_layer, dock, panel = _slide_in_dock(make_napari_viewer, tmp_path, slide_path, show=True)
    he = viewer.add_image(mosaic[:200, :300].copy(), name="he", rgb=True, visible=False)
    viewer.add_image(np.zeros((64, 64), np.float32), name="grey", visible=False)
    viewer.layers.selection.active = slide_layer
    _view(viewer, (200.0, 260.0), 240)
    _predict(qtbot, panel)
    unc = viewer.layers[f"{slide_layer.name} uncertainty"]
    assert unc.visible
    tinted = _tinted_share(viewer, unc)
    assert 0.01 < tinted < 0.6, tinted  # part of the tissue, not none of it and not all of it
    # Predict lists the RGB image only: not the slide, its store's layers, the review boxes, a grey image
    predict = dock.predict_panel
    predict.image_choice.reset_choices()
    assert list(predict.image_choice.choices) == [he]
    for name in (slide_layer.name, unc.name, f"{slide_layer.name} glands", names_for(slide_layer.name)["tiles"]):
        assert name in viewer.layers and not predict.set_image(name)
    # a script that names the slide gets why it cannot be predicted, not a prediction of the chosen image
    assert not dock.predict(slide_layer.name) and "multiscale" in predict.last_message and not predict.running
    assert predict.set_image("he") and predict.image_layer is he


def test_a_store_opened_by_the_reader_shows_its_uncertainty_as_an_image_overlay(make_napari_viewer, tmp_path,
                                                                                 mosaic):
    store = _store(tmp_path / "case.cdma.zarr", mosaic)
    viewer = make_napari_viewer()
    layers = viewer.open(str(store.path), plugin=PLUGIN)
    unc = next(ly for ly in layers if ly.name.endswith("uncertainty"))
    lo, hi, level = store_display_range(open_store(store.path))
    assert unc.visible and unc.opacity == UNCERTAINTY_OPACITY and unc.blending == "translucent"
    assert unc.colormap.name == uncertainty_colormap().name
    np.testing.assert_allclose(unc.contrast_limits, [255 * lo, 255 * hi], rtol=1e-6)
    assert tuple(unc.metadata[RANGE_KEY]) == (lo, hi, level)
    # the Whole slide panel's legend reads it as the dock's image legend reads an image's
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    legend = dock.slide_panel.legend
    assert not legend.isHidden()
    assert f"tint from {uncertainty_tint_start(lo, hi):.3f}" in legend.legend_title.text()
    assert legend.lo_label.text() == f"{lo:.3f}" and legend.hi_label.text() == f"{hi:.3f}"
    assert "store level 1" in legend.legend.toolTip()
    # and the value under the cursor (the ramp at x = 350: 0.1 + 0.4 * 350 / 767)
    text = dock.slide_panel.value_text((100.0, 350.0))
    assert text.startswith("Under cursor:\nuncertainty ") and not dock.slide_panel.readout.isHidden()
    assert abs(float(text.split("uncertainty ")[1].split(",")[0]) - (0.1 + 0.4 * 350 / 767)) < 0.01, text
    assert dock.slide_panel.value_text((100.0, 5000.0)) == "Under cursor:\n-"  # off the slide
