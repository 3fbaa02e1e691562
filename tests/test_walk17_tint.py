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
from _dock import open_dock, wait_settled
from test_walk15_dock import FIRST, _open_two, _turn

from napari_cdma._layers import names_for, show_prediction, show_reviewed, uncertainty_values
from napari_cdma.project.store import ProjectStore, hash_image


def _alpha(layer, data=None):
    """The opacity the uncertainty layer gives each pixel of ``data`` (default: what it shows): its colormap's
    alpha over its contrast limits, times the layer's opacity. 0 = the H&E unchanged."""
    lo, hi = layer.contrast_limits
    shown = np.asarray(layer.data if data is None else data, dtype=np.float64)
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


def test_an_accepted_region_is_not_tinted_until_withdrawn(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock = _open_two(make_napari_viewer, qtbot, tmp_path, glas_dir)
    review, display = dock.review_panel, dock.display_panel
    dock.predict_panel.image_choice.value = viewer.layers[FIRST]
    _turn(qtbot)
    layer = viewer.layers[names_for(FIRST)["uncertainty"]]
    model = _stored_map(tmp_path / "project", viewer)
    before = _alpha(layer, model)
    assert np.array_equal(np.asarray(layer.data), model) and before.max() > 0.5  # tinted before any accept
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
    # the model's map is kept: in the store, behind the layer, in the gland table and under the cursor
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
    """The layer's data is the prediction's own float32 map (no copy): the untinted pixels go to a copy."""
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
    assert np.array_equal(np.asarray(layer.data)[8:30, 8:40], kept[8:30, 8:40])
    assert _alpha(layer)[30:60, 30:70].max() == 0.0
    assert np.array_equal(prediction.uncertainty, kept) and uncertainty_values(layer) is uncertainty
