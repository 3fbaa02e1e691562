"""Finding of the pathologist's walk of the dock (walk 17): after a region (a drawn box, the whole image) was accepted,
the uncertainty layer still tinted it as before, so reviewed tissue looked as uncertain as the tissue left to review.
Inside the image's accepted regions the tint is off, back when a region is withdrawn; the model's map (the prediction's,
the store's, the gland table's and the cursor readout's) is not changed, and the readout says the region was reviewed.

A real napari viewer (pytest-xvfb), the real dock, GlaS images, a real project store on disk (a prediction saved in
it with a known uncertainty map, no model); the Qt-free part on a ``ViewerModel``.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from _dock import open_dock, predict_and_wait, wait_settled
from test_walk15_dock import FIRST, _open_two, _turn

from napari_cdma._layers import names_for, show_prediction, show_reviewed, uncertainty_values
from napari_cdma.project.store import ProjectStore, hash_image


def _shown(layer):
    """What napari reads of the uncertainty layer to draw it: the full-resolution data indexed (as napari slices it),
    not ``np.asarray(layer.data)``, which is the model's map."""
    return np.asarray((layer.data[0] if layer.multiscale else layer.data)[:, :])


def _alpha(layer, data=None):
    """The opacity the uncertainty layer gives each pixel of ``data`` (default: what it shows, :func:`_shown`): its
    colormap's alpha over its contrast limits, times the layer's opacity. 0 = the H&E unchanged."""
    lo, hi = layer.contrast_limits
    shown = np.asarray(_shown(layer) if data is None else data, dtype=np.float64)
    t = np.clip((shown - lo) / (hi - lo), 0.0, 1.0)
    return np.asarray(layer.colormap.map(t.ravel()))[:, 3].reshape(shown.shape) * layer.opacity


def _stored_map(root, viewer):
    """The uncertainty map the store at ``root`` holds for testA_1 (the model's, as the dock restored it)."""
    digest = hash_image(np.asarray(viewer.layers[FIRST].data))
    return np.asarray(ProjectStore.open(root).load_prediction(digest)[1])


def _inside(shape, bbox):
    y0, x0, y1, x1 = bbox
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _centre(bbox):
    y0, x0, y1, x1 = bbox
    return (y0 + y1) // 2, (x0 + x1) // 2


def _tints_on_screen(viewer, layer, bbox):
    """Whether the canvas, zoomed into the middle of ``bbox``, looks different with the uncertainty layer shown than
    with it hidden (a screenshot of each)."""
    from napari_cdma._widget_review import canvas_hw, scene_camera

    y0, x0, y1, x1 = bbox
    camera = scene_camera(viewer)
    camera.center = ((y0 + y1 - 1) / 2.0, (x0 + x1 - 1) / 2.0)
    camera.zoom = 2.0 * max(canvas_hw(viewer)) / min(y1 - y0, x1 - x0)  # the canvas shows half the box's side
    shots = []
    for visible in (True, False):
        layer.visible = visible
        shots.append(viewer.screenshot(canvas_only=True, flash=False).astype(int))
    layer.visible = True
    return int(np.abs(shots[0] - shots[1]).max()) > 8


def test_an_accepted_region_is_not_tinted_until_withdrawn(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock = _open_two(make_napari_viewer, qtbot, tmp_path, glas_dir)
    review, display = dock.review_panel, dock.display_panel
    dock.predict_panel.image_choice.value = viewer.layers[FIRST]
    _turn(qtbot)
    layer = viewer.layers[names_for(FIRST)["uncertainty"]]
    model = _stored_map(tmp_path / "project", viewer)
    before = _alpha(layer, model)
    assert np.array_equal(np.asarray(layer.data), model) and before.max() > 0.5  # tinted before any accept
    assert _tints_on_screen(viewer, layer, (0, 0, 64, 64))
    glands_before = {g["id"]: g["mean_uncertainty"] for g in display.glands}

    review.next_button.click()
    _turn(qtbot)
    record = review.accept()
    assert record is not None, review.last_message
    _turn(qtbot)
    inside = _inside(layer.data.shape, record.bbox)
    shown = _alpha(layer)
    # before: the accepted region was tinted exactly as before (max alpha 0.7)
    assert shown[inside].max() == 0.0
    assert np.array_equal(shown[~inside], before[~inside])  # the rest as tinted as it was
    assert not _tints_on_screen(viewer, layer, record.bbox)
    # the model's map is kept: in the store, as the layer's data, in the gland table and under the cursor
    assert np.array_equal(np.asarray(layer.data), model)
    assert np.array_equal(_stored_map(tmp_path / "project", viewer), model)
    assert np.array_equal(np.asarray(uncertainty_values(layer)), model)
    dock._refresh_glands()
    after = {g["id"]: g["mean_uncertainty"] for g in display.glands}
    assert {k: v for k, v in after.items() if k in glands_before} == \
        {k: v for k, v in glands_before.items() if k in after}
    y, x = _centre(record.bbox)
    text = display.value_text((float(y), float(x)))
    assert text.splitlines()[0].endswith(f"reviewed {record.region_id}"), text
    assert f"uncertainty {model[y, x]:.3f}" in text, text
    outside = next((r, c) for r, c in ((5, 5), (layer.data.shape[0] - 5, layer.data.shape[1] - 5))
                   if not inside[r, c])
    assert "reviewed" not in display.value_text(tuple(float(v) for v in outside))

    assert review.withdraw(record.region_id), review.last_message
    _turn(qtbot)
    assert np.array_equal(_alpha(layer), before)  # tinted again
    assert _tints_on_screen(viewer, layer, record.bbox)
    assert "reviewed" not in display.value_text((float(y), float(x)))
    assert np.array_equal(np.asarray(layer.data), model)


def test_the_whole_image_accepted_is_untinted_and_stays_so_on_reopen(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock = _open_two(make_napari_viewer, qtbot, tmp_path, glas_dir)
    review = dock.review_panel
    dock.predict_panel.image_choice.value = viewer.layers[FIRST]
    _turn(qtbot)
    layer = viewer.layers[names_for(FIRST)["uncertainty"]]
    model = _stored_map(tmp_path / "project", viewer)
    record = review.accept_whole_image()
    assert record is not None, review.last_message
    _turn(qtbot)
    assert _alpha(layer).max() == 0.0  # before: the whole image tinted as before

    # the store reopened in a new viewer: the restored layer shows the region untinted as well
    image = np.asarray(viewer.layers[FIRST].data)
    again = make_napari_viewer(show=True)
    again.add_image(image, name=FIRST, rgb=True)
    dock2 = open_dock(again, tmp_path / "project")
    wait_settled(dock2)
    _turn(qtbot)
    restored = again.layers[names_for(FIRST)["uncertainty"]]
    assert _alpha(restored).max() == 0.0
    assert np.array_equal(np.asarray(uncertainty_values(restored)), model)
    assert dock2.review_panel.withdraw(record.region_id), dock2.review_panel.last_message
    _turn(qtbot)
    assert np.array_equal(_alpha(restored), _alpha(restored, model))


def test_untinting_never_writes_into_the_prediction():
    """The layer's data is the prediction's own float32 map (no copy): the untinted pixels are only in what napari
    reads to draw."""
    from napari.components import ViewerModel

    viewer = ViewerModel()
    rng = np.random.default_rng(1)
    viewer.add_image(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8), name="im", rgb=True)
    uncertainty = rng.random((64, 80)).astype(np.float32)
    prediction = SimpleNamespace(labels=np.zeros((64, 80), np.uint8), uncertainty=uncertainty,
                                 disagreement=np.zeros((64, 80), np.float32))
    kept = uncertainty.copy()
    layer = show_prediction(viewer, "im", prediction, display_range=(0.0, 1.0))["uncertainty"]
    assert show_reviewed(layer, {"r0001": (8, 8, 40, 40), "r0002": (30, 30, 60, 70)})
    assert np.array_equal(prediction.uncertainty, kept)
    assert _alpha(layer)[8:40, 8:40].max() == 0.0 and _alpha(layer)[30:60, 30:70].max() == 0.0
    assert show_reviewed(layer, {"r0002": (30, 30, 60, 70)})  # r0001 withdrawn: tinted again outside r0002
    assert np.array_equal(_shown(layer)[8:30, 8:40], kept[8:30, 8:40])
    assert _alpha(layer)[30:60, 30:70].max() == 0.0
    assert np.array_equal(prediction.uncertainty, kept) and uncertainty_values(layer) is uncertainty
    assert np.array_equal(np.asarray(layer.data), kept)  # the data taken whole is the map


def test_a_large_images_pyramid_is_untinted_without_a_copy():
    """A large image's uncertainty layer is a pyramid of strided views of one float16 map (the prediction streamed
    into it): its accepted boxes are cleared in what napari reads for the view, the map is neither copied nor
    written."""
    from napari.components import ViewerModel

    from napari_cdma._layers import reviewed_at, uncertainty_at
    from napari_cdma._predict_stream import pyramid

    viewer = ViewerModel()
    umap = (np.random.default_rng(2).random((3000, 2600)) * 0.6 + 0.4).astype(np.float16)
    kept = umap.copy()
    layer = viewer.add_image(pyramid(umap), multiscale=True, name="big uncertainty", contrast_limits=(0.3, 1.0))
    box = (100, 200, 1100, 1300)
    assert show_reviewed(layer, {"r0001": box})
    for level, step in zip(layer.data, (1, 2, 4, 8), strict=False):  # what napari reads of each level
        read = np.asarray(level[:, :])
        rows, cols = np.arange(read.shape[0]) * step, np.arange(read.shape[1]) * step
        inside = ((rows >= 100) & (rows < 1100))[:, None] & ((cols >= 200) & (cols < 1300))[None, :]
        assert (read[inside] == 0).all()
        assert np.array_equal(read[~inside], kept[::step, ::step][~inside])
    assert uncertainty_values(layer)[0] is umap and np.array_equal(umap, kept)
    assert np.array_equal(np.asarray(layer.data[0]), kept)  # a level taken whole is the map (code reading it)
    assert reviewed_at(layer, 500, 500) == "r0001" and uncertainty_at(layer, 500, 500) == float(kept[500, 500])
    assert show_reviewed(layer, {})  # withdrawn: the map itself again
    assert layer.data[0] is umap and np.array_equal(np.asarray(layer.data[0][100:1100, 200:1300]),
                                                   kept[100:1100, 200:1300])


def test_a_streamed_prediction_is_untinted_in_its_accepted_region(make_napari_viewer, qtbot, tmp_path, glas_dir):
    """The same in the dock, for an image predicted as a large one is (streamed: a multiscale layer; the bundled
    model on testA_1)."""
    from src_model.io import read_image

    viewer = make_napari_viewer(show=True)
    viewer.add_image(read_image(glas_dir / "images" / f"{FIRST}.png"), name=FIRST, rgb=True)
    dock = open_dock(viewer, tmp_path / "project")
    dock.predict_panel.stream_pixels = 0  # streamed, as a large image is
    predict_and_wait(qtbot, dock, FIRST, timeout=180_000)
    _turn(qtbot)
    layer = viewer.layers[names_for(FIRST)["uncertainty"]]
    assert layer.multiscale
    model = np.array(layer.data[0][:, :])
    review, display = dock.review_panel, dock.display_panel
    review.next_button.click()
    _turn(qtbot)
    record = review.accept()
    assert record is not None, review.last_message
    _turn(qtbot)
    inside = _inside(model.shape, record.bbox)
    shown = _shown(layer)
    # before: the accepted region was tinted as before
    assert _alpha(layer, shown)[inside].max() == 0.0 and _alpha(layer, model)[inside].max() > 0
    assert np.array_equal(shown[~inside], model[~inside])
    assert np.array_equal(np.asarray(uncertainty_values(layer)[0]), model)
    y, x = _centre(record.bbox)
    text = display.value_text((float(y), float(x)))
    assert f"reviewed {record.region_id}" in text and f"uncertainty {model[y, x]:.3f}" in text, text
    assert review.withdraw(record.region_id), review.last_message
    _turn(qtbot)
    assert np.array_equal(_shown(layer), model)  # tinted again
