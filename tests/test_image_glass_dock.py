"""Open glass on the dock's image path, in a real napari viewer: a GlaS field on a canvas of glass gets no gland,
no uncertainty and no review region on the glass, predicted whole or streamed; a GlaS field alone is predicted as
without the rule. The rule is switched off (``src_model.tissue.clear_open_glass``, which the worker looks up at each
run) only to show what it prevents."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from _dock import open_dock, predict_and_wait

from napari_cdma._layers import names_for
from napari_cdma._predict_stream import streams
from src_model.io import read_image
from src_model.tissue import tissue_mask

NAME = "field"


@pytest.fixture
def dock(make_napari_viewer, tmp_path, monkeypatch):
    """A viewer with the dock (no project store: the bundled model)."""
    monkeypatch.setenv("NAPARI_CDMA_PROJECT", str(tmp_path / "no_store"))
    viewer = make_napari_viewer()
    return viewer, open_dock(viewer)


def _predict(qtbot, viewer, widget, image, stream, monkeypatch, rule=True):
    """Predict ``image`` (added as the layer NAME if it is not there) through the dock, the rule on or off;
    (gland labels, uncertainty, review-region boxes) as the dock shows them, and the threads the rule ran in."""
    import src_model.tissue as tissue

    threads = []

    def traced(real, on):
        def run(*args):
            threads.append(threading.current_thread())
            return real(*args) if on else 0
        return run

    if NAME not in viewer.layers:
        viewer.add_image(image, name=NAME, rgb=True)
    panel = widget.predict_panel
    panel.stream_pixels = 0 if stream else image.shape[0] * image.shape[1]
    assert streams(image.shape, panel.stream_pixels) == stream
    with monkeypatch.context() as m:
        m.setattr(tissue, "image_open_glass", traced(tissue.image_open_glass, True))
        m.setattr(tissue, "clear_open_glass", traced(tissue.clear_open_glass, rule))
        predict_and_wait(qtbot, widget, NAME, timeout=180_000)
    names = names_for(NAME)
    unc = viewer.layers[names["uncertainty"]]
    unc = unc.data[0] if unc.multiscale else unc.data
    boxes = [box for _, box in widget.states[NAME].ranked]
    return np.array(viewer.layers[names["prediction"]].data), np.asarray(unc, np.float32), boxes, threads


def _other_maps(viewer):
    """The image's other map layers (disagreement, entropy, branches) that the dock shows, role -> data."""
    names = names_for(NAME)
    return {role: np.asarray(viewer.layers[names[role]].data, np.float32)
            for role in ("disagreement", "entropy", "branch1", "branch2", "branch3") if names[role] in viewer.layers}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_no_gland_uncertainty_or_review_region_on_the_glass_around_a_field(dock, qtbot, glas_dir, monkeypatch,
                                                                         stream):
    viewer, widget = dock
    field = read_image(glas_dir / "images" / "testA_1.png")
    glass = field[~tissue_mask(field)]  # the canvas: the field's own glass pixels, drawn at random
    canvas = glass[np.random.default_rng(0).integers(0, len(glass), 1100 * 1300)].reshape(1100, 1300, 3)
    (y, x), (h, w) = (300, 260), field.shape[:2]
    canvas[y:y + h, x:x + w] = field
    inside = np.zeros(canvas.shape[:2], bool)
    inside[y:y + h, x:x + w] = True

    if not stream:  # the optional maps too (a streamed image shows none of them)
        widget.predict_panel.entropy_check.setChecked(True)
        widget.predict_panel.branches_check.setChecked(True)
    labels, unc, _, _ = _predict(qtbot, viewer, widget, canvas, stream, monkeypatch, rule=False)
    # what the rule is for: without it the model finds gland on the glass, and uncertainty all over it
    assert (labels[~inside] > 0).sum() > 100 and (unc[~inside] > 0).mean() > 0.9
    off = labels > 0
    others = _other_maps(viewer)
    assert sorted(others) == ([] if stream else ["branch1", "branch2", "branch3", "disagreement", "entropy"])
    assert all((m[~inside] > 0).mean() > 0.5 for m in others.values())

    labels, unc, boxes, threads = _predict(qtbot, viewer, widget, canvas, stream, monkeypatch)
    assert not labels[~inside].any() and not unc[~inside].any()
    # nor in the hidden disagreement layer, the entropy or a branch's gland probability, only off the glass
    glass_px = ~inside & ~tissue_mask(canvas)
    for role, m in _other_maps(viewer).items():
        assert not m[glass_px].any(), role
        assert (m[inside] > 0).mean() > 0.5, role
    assert threads and threading.main_thread() not in threads  # in the worker, never on the GUI thread
    assert boxes and all(inside[y0:y1, x0:x1].any() for y0, x0, y1, x1 in boxes)  # every review region on the field
    on = labels > 0
    assert not (on & ~off).any()  # the rule only removes gland
    # the field's glands lose a little, where its border cuts a lumen open to the glass: glass pixels, and a few of
    # tissue that the gland post-processing drops with them
    removed = off & ~on & inside
    assert removed.sum() < 0.05 * off[inside].sum() and (removed & tissue_mask(canvas)).sum() < 0.25 * removed.sum()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_glas_field_alone_is_predicted_as_without_the_rule(dock, qtbot, glas_dir, monkeypatch, stream):
    viewer, widget = dock
    field = read_image(glas_dir / "images" / "testA_1.png")  # lumens up to 27 000 px, some cut by its border
    with_rule = _predict(qtbot, viewer, widget, field, stream, monkeypatch)
    without = _predict(qtbot, viewer, widget, field, stream, monkeypatch, rule=False)
    assert (with_rule[0] > 0).sum() > 10_000
    np.testing.assert_array_equal(with_rule[0], without[0])
    np.testing.assert_array_equal(with_rule[1], without[1])
    assert with_rule[2] == without[2]
