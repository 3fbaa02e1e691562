"""The dock's streamed prediction (large images) in a real napari viewer, and the thread policy.

Streaming is forced on a real GlaS test image by lowering the panel's streaming threshold
(``stream_pixels``), so the path a 6000 x 6000 image takes runs here in seconds. Timing and memory
targets live in ``benchmarks/bench_dock_large.py``.
"""
from __future__ import annotations

import numpy as np
import pytest
from _dock import open_dock

from napari_cdma._layers import names_for
from napari_cdma._predict_stream import CANCELLED_SUFFIX, LIVE_SUFFIX, Rows, labels_dtype
from src_model.runtime import THREAD_ROLES, cpu_cores, torch_threads

NAME = "glas"


@pytest.fixture
def dock(make_napari_viewer, glas_dir, tmp_path, monkeypatch, request):
    """A viewer with GlaS testA_1 and the dock (no project store: the bundled model), streaming forced;
    shown on screen when the test is parametrized with ``indirect`` ``dock=True``."""
    from src_model.io import read_image

    monkeypatch.setenv("NAPARI_CDMA_PROJECT", str(tmp_path / "no_store"))
    viewer = make_napari_viewer(show=getattr(request, "param", False))
    image = read_image(glas_dir / "images" / "testA_1.png")
    viewer.add_image(image, name=NAME, rgb=True)
    widget = open_dock(viewer)
    widget.predict_panel.stream_pixels = 0  # every image streams, as a large one does
    return viewer, widget, image


def _live_names():
    names = names_for(NAME)
    return names["prediction"] + LIVE_SUFFIX, names["uncertainty"] + LIVE_SUFFIX


def test_streamed_prediction_fills_preallocated_layers_and_matches_the_engine(dock, qtbot):
    from src_model.checkpoint import bundled_model_path, load_model
    from src_model.inference import predict
    from src_model.postprocess import instance_labels

    viewer, widget, image = dock
    panel = widget.predict_panel
    assert widget.predict(NAME), panel.last_message
    # listen before the event loop runs again: the worker's events are queued to this thread, so none is missed
    rows, progress = [], []
    panel._worker.yielded.connect(lambda ev: rows.append(ev) if isinstance(ev, Rows) else None)
    # allocated before the worker has produced anything: image-sized, empty (added one per event-loop turn)
    qtbot.waitUntil(lambda: all(n in viewer.layers for n in _live_names()), timeout=5_000)
    live_labels, live_unc = (viewer.layers[n] for n in _live_names())
    assert not live_labels.data.any() and panel.running
    assert live_labels.data.shape == image.shape[:2]
    assert live_labels.data.dtype == labels_dtype(image.shape) == np.uint16
    assert live_unc.multiscale and live_unc.data[0].shape == image.shape[:2] and live_unc.data[0].dtype == np.float16

    def partial() -> bool:
        progress.append((panel.progress.value(), panel.progress.maximum(), panel.running))
        filled = np.flatnonzero(live_labels.data.any(axis=1))
        return filled.size > 0 and panel.running

    qtbot.waitUntil(partial, timeout=60_000)
    # a partial state: the first rows shown, the last not yet, the prediction still running
    assert not live_labels.data[-1].any() and panel.progress.value() < panel.progress.maximum()
    qtbot.waitUntil(lambda: progress.append((panel.progress.value(), panel.progress.maximum(), panel.running))
                    or not panel.running, timeout=120_000)
    assert panel.last_message.startswith(panel.predicted_line(NAME)), panel.last_message
    running = [(v, m) for v, m, r in progress if r and m > 0]
    assert running and all(v < m for v, m in running)  # never 100 % while work remained
    assert panel.progress.value() == panel.progress.maximum() > 0  # and 100 % at the end

    ref = predict(load_model(bundled_model_path()), image)
    # the rows the dock received are the engine's labels, exactly, each row once
    semantic = np.full(image.shape[:2], 255, np.uint8)
    for ev in rows:
        semantic[ev.r0:ev.r0 + len(ev.labels)] = ev.labels
    assert sum(len(ev.labels) for ev in rows) == image.shape[0]
    np.testing.assert_array_equal(semantic, ref.labels)
    # the live layers became the prediction layers: uncertainty to float16 rounding, one label per gland
    names = names_for(NAME)
    assert not any(ly.name.endswith(LIVE_SUFFIX) for ly in viewer.layers)
    labels, unc = viewer.layers[names["prediction"]], viewer.layers[names["uncertainty"]]
    assert labels is live_labels and unc is live_unc and labels.editable
    np.testing.assert_allclose(unc.data[0].astype(np.float32), ref.uncertainty, rtol=2.0**-10, atol=1e-4)
    whole = instance_labels(ref)
    assert ((labels.data > 0) == (whole > 0)).mean() > 0.999
    assert abs(len(np.unique(labels.data)) - len(np.unique(whole))) <= 2
    # the dock's state and review list follow at once, as after an in-memory prediction; the gland table,
    # the review boxes, the accepted boxes and the selection in the event-loop turns after the hand-over
    state = widget.states[NAME]
    boxes = [b for _, b in widget.review_panel.tiles]
    assert boxes and all(min(y1 - y0, x1 - x0) >= 128 for y0, x0, y1, x1 in boxes)
    qtbot.waitUntil(widget.settled, timeout=10_000)
    np.testing.assert_array_equal(state.original_labels, labels.data)
    ids = sorted(set(np.unique(labels.data).tolist()) - {0})
    assert [g["id"] for g in widget.display_panel.glands] == ids
    lo, hi = unc.contrast_limits
    assert 0.0 <= lo < hi <= 1.0 and (lo, hi) != (0.0, 1.0)
    # the uncertainty readout works on the multiscale layer
    assert "uncertainty" in widget.display_panel.value_text((260.0, 380.0))
    assert names["tiles"] in viewer.layers and names["accepted"] in viewer.layers
    assert len(viewer.layers[names["tiles"]].data) >= len(boxes)
    assert viewer.layers.selection.active is labels
    order = [ly.name for ly in viewer.layers]
    assert order.index(names["tiles"]) > order.index(names["prediction"])  # the boxes are drawn over the glands


def _cancel_midway(viewer, widget, qtbot):
    """Start a streamed prediction, click Cancel once the first rows are shown; the live labels layer."""
    panel = widget.predict_panel
    assert widget.predict(NAME), panel.last_message
    qtbot.waitUntil(lambda: _live_names()[0] in viewer.layers, timeout=5_000)
    live_labels = viewer.layers[_live_names()[0]]
    qtbot.waitUntil(lambda: live_labels.data.any(), timeout=60_000)
    assert panel.running
    panel.cancel_button.click()
    return live_labels


def test_cancel_stops_and_leaves_no_finished_looking_layer(dock, qtbot):
    viewer, widget, _ = dock
    panel = widget.predict_panel
    live_labels = _cancel_midway(viewer, widget, qtbot)
    # at once: hidden and marked cancelled, so nothing on screen looks like a finished prediction
    assert not live_labels.visible and live_labels.name.endswith(CANCELLED_SUFFIX)
    qtbot.waitUntil(lambda: not panel.running, timeout=30_000)
    assert panel.last_message == "Prediction cancelled." and panel.progress.value() == 0
    qtbot.waitUntil(lambda: not any(LIVE_SUFFIX in ly.name or CANCELLED_SUFFIX in ly.name for ly in viewer.layers),
                    timeout=10_000)
    assert names_for(NAME)["prediction"] not in viewer.layers and NAME not in widget.states
    assert panel.predict_button.isEnabled() and not panel.cancel_button.isEnabled()


@pytest.mark.parametrize("dock", [True], indirect=True, ids=["shown"])
def test_canvas_redraws_after_a_cancelled_prediction(dock, qtbot):
    """Cancel, the half-filled layers removed, then redraws (screenshots, zooms) in a shown viewer: under
    Xvfb (Mesa's software renderer) the second redraw after the removal segfaulted while the removed
    layers' GL programs were deleted."""
    viewer, widget, _ = dock
    panel = widget.predict_panel
    _cancel_midway(viewer, widget, qtbot)
    qtbot.waitUntil(lambda: not panel.running and [ly.name for ly in viewer.layers] == [NAME], timeout=30_000)
    qtbot.wait(200)
    first = viewer.screenshot(canvas_only=True, flash=False)
    for zoom in (1.5, 1 / 1.5):
        viewer.camera.zoom *= zoom
        qtbot.wait(200)  # the zoom's redraws, through the event loop
        viewer.screenshot(canvas_only=False, flash=False)  # the window, its canvas painted by Qt
    shot = viewer.screenshot(canvas_only=True, flash=False)
    # the image is drawn, and after zooming in and back out the canvas is as it was
    assert shot[..., :3].std() > 10
    assert shot.shape == first.shape and np.abs(shot.astype(int) - first.astype(int)).max() <= 2
    # and a new prediction of the image still runs to its end
    assert widget.predict(NAME), panel.last_message
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    assert panel.last_message.startswith(panel.predicted_line(NAME)), panel.last_message
    assert viewer.screenshot(canvas_only=True, flash=False)[..., :3].std() > 10


def test_labels_dtype_holds_every_gland():
    from napari.components import ViewerModel

    from napari_cdma._predict_stream import LiveLayers

    assert labels_dtype((6000, 6000)) == np.uint16  # at most 45000 glands of 800 px
    assert labels_dtype((12000, 12000)) == np.int32
    live = LiveLayers(ViewerModel(), "x", (64, 80))
    while not live.build_step():
        pass
    live.write_labels(8, 16, np.full((4, 4), 7, np.int32))
    assert live.labels_layer.data.dtype == np.uint16 and live.labels_layer.data[8:12, 16:20].min() == 7
    live.write_labels(0, 0, np.full((2, 2), 70_000, np.int32))  # more glands than uint16 counts: widened
    assert live.labels_layer.data.dtype == np.int32 and live.labels_layer.data[0, 0] == 70_000
    assert live.labels_layer.data[8, 16] == 7 and live.labels_layer.data.sum() == 4 * 70_000 + 16 * 7


def test_thread_policy_shares_the_cores():
    for cores in (1, 2, 3, 4, 8, 16, 64):
        viewer, retrain, cli = (torch_threads(role, cores) for role in THREAD_ROLES)
        assert viewer >= 1 and retrain >= 1 and cli == cores
        # viewer inference and a retraining job together never ask for more than the machine has
        assert viewer + retrain <= max(2, cores)
        if cores >= 3:
            assert viewer + retrain < cores  # a core left for the GUI thread
    assert torch_threads("viewer") == torch_threads("viewer", cpu_cores())
    with pytest.raises(ValueError, match="role must be one of"):
        torch_threads("gpu")


def test_retrain_worker_takes_the_retrain_share():
    """The retraining worker (run as its own process, since it renices itself) sets the policy's threads."""
    import subprocess
    import sys

    code = ("import torch; from napari_cdma.project.retrain_worker import _lower_priority_and_threads as f; "
            "n = f(); print(n, torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == [str(torch_threads("retrain"))] * 2


def _built(shape=(64, 80), viewer=None):
    from napari.components import ViewerModel

    from napari_cdma._predict_stream import LiveLayers

    live = LiveLayers(viewer if viewer is not None else ViewerModel(), "x", shape)
    while not live.build_step():
        pass
    return live


def test_hand_off_copies_the_models_labels_from_the_layer_before_pasting_corrections():
    """While a large image streams, the layer holds the model's own labels and no second image-sized copy is
    kept (72 MB of a 6000 x 6000 image's peak memory); the hand-off copies them (the dock's state) before it
    pastes corrections, and they stay the model's when corrections are pasted or the layer painted."""
    live = _built()
    live.write_labels(0, 0, np.ones((8, 80), np.uint8))  # class labels of a first band
    live.write_labels(0, 0, np.arange(64 * 80, dtype=np.int32).reshape(64, 80) % 5)  # final glands (a block)
    assert live.model_labels is None  # nothing kept beside the layer while it streams
    layer = live.labels_layer
    model = layer.data.copy()
    # a correction pasted into the layer at the hand-off: not in the model's labels. Column c holds gland c % 5,
    # so across the box's edges the pasted gland meets gland 1 most (its right column and 2 px): it takes id 1
    box, mask = (10, 21, 14, 26), np.ones((4, 5), np.uint8)
    original, n = live.paste([(box, mask)])
    assert n == 1 and original is live.model_labels
    np.testing.assert_array_equal(original, model)
    assert (layer.data[10:14, 21:26] == 1).all()
    outside = np.ones(layer.data.shape, bool)
    outside[10:14, 21:26] = False
    np.testing.assert_array_equal(layer.data[outside], model[outside])
    layer.data[0, 0] = 9  # painting the adopted layer leaves the model's labels alone
    assert original[0, 0] == model[0, 0]


def test_hand_off_without_corrections_returns_a_copy_of_the_layer():
    live = _built()
    live.write_labels(0, 0, np.arange(64 * 80, dtype=np.int32).reshape(64, 80) % 5)
    layer = live.labels_layer
    layer.editable = True  # as the hand-over's adopt leaves it
    original, n = live.paste([])
    assert n == 0 and original is live.model_labels and original is not layer.data
    assert not layer.editable  # copied in a thread: no stroke before the copy is done
    live.finish_copy()
    assert layer.editable
    np.testing.assert_array_equal(original, layer.data)
    layer.data[0, 1] = 9  # painting the adopted layer leaves the model's labels alone
    assert original[0, 1] == 1


def test_model_labels_are_widened_with_the_layer():
    live = _built()
    live.write_labels(0, 0, np.full((2, 2), 70_000, np.int32))
    assert live.labels_layer.data.dtype == np.int32
    original, _ = live.paste([])
    live.finish_copy()
    assert original.dtype == np.int32 and original[0, 0] == 70_000
    np.testing.assert_array_equal(original, live.labels_layer.data)


def test_live_layers_leave_the_users_selection_alone():
    """Adding the live layers does not select them (selecting a layer rebuilds napari's controls panel,
    a long GUI-thread stall for each; and the user's selection is theirs)."""
    from napari.components import ViewerModel

    viewer = ViewerModel()
    image = viewer.add_image(np.zeros((64, 80), np.uint8), name="x")
    assert viewer.layers.selection.active is image
    live = _built(viewer=viewer)
    assert viewer.layers.selection.active is image and set(viewer.layers.selection) == {image}
    assert live.labels_layer in viewer.layers and live.unc_layer in viewer.layers
    added = viewer.add_image(np.zeros((4, 4), np.uint8), name="later")  # napari's own behaviour is back
    assert viewer.layers.selection.active is added


def test_labels_layer_waits_for_naparis_modules_imported_off_the_gui_thread(monkeypatch):
    """The labels layer is added once the warm-up thread (importing what napari's first labels layer needs)
    is done; until then each step returns at once and adds nothing."""
    import threading

    from napari.components import ViewerModel

    from napari_cdma import _predict_stream
    from napari_cdma._predict_stream import LiveLayers

    release = threading.Event()
    warm = threading.Thread(target=release.wait, daemon=True)
    warm.start()
    monkeypatch.setattr(_predict_stream, "_warming", [warm])
    viewer = ViewerModel()
    live = LiveLayers(viewer, "x", (64, 80))
    assert len(viewer.layers) == 0  # nothing added at the click: each layer comes in a turn of its own
    live.build_step()
    assert live.unc_layer in viewer.layers and not live.unc_layer.visible  # added hidden, shown a turn later
    live.build_step()
    assert live.unc_layer.visible
    for _ in range(5):
        assert not live.build_step() and live.labels_layer is None
    release.set()
    warm.join(5)
    seen = []
    while not live.build_step():
        seen.append(len(viewer.layers))
        layer = live.labels_layer
        if layer is not None:  # added styled and hidden, shown at the last step
            assert not layer.visible and layer.contour == 0 and layer.colormap.name == "glands"
    assert seen[-1] == 2 and all(n in (1, 2) for n in seen)
    assert live.labels_layer in viewer.layers and live.labels_layer.visible


def test_warm_up_imports_the_modules_once():
    import sys

    from napari_cdma._predict_stream import WARM_MODULES, warm_up

    thread = warm_up()
    thread.join(120)
    assert warm_up() is thread and not thread.is_alive()
    assert all(name in sys.modules for name in WARM_MODULES)


def test_opening_the_dock_imports_what_a_prediction_needs_off_the_gui_thread(dock, qtbot):
    """The dock starts both warm-up threads once it is on screen (torch, the engine, zarr; napari's labels
    modules), once per process; ``warmed`` says when they are done."""
    import sys

    from napari_cdma import _predict_stream
    from napari_cdma._predict_stream import ENGINE_MODULES, warm_engine, warmed

    qtbot.waitUntil(lambda: bool(_predict_stream._warming and _predict_stream._warming_engine),
                    timeout=10_000)  # started by the dock
    thread = warm_engine()
    thread.join(300)
    assert warm_engine() is thread and not thread.is_alive()
    assert all(name in sys.modules for name in ENGINE_MODULES)
    _predict_stream._warming[0].join(120)
    assert warmed()


def _run_job(image, stream):
    from napari_cdma._predict_stream import Block, predict_job
    from src_model.checkpoint import bundled_model_path

    unc = np.zeros(image.shape[:2], np.float16) if stream else None
    job, events = predict_job(str(bundled_model_path()), image, unc), []
    while True:
        try:
            events.append(next(job))
        except StopIteration as stop:
            return stop.value, [e for e in events if isinstance(e, Rows)], [e for e in events if isinstance(e, Block)]


def test_black_frame_padding_is_never_gland(glas_dir):
    """The bundled model labels pure black frame padding (some scans have it) as gland almost everywhere; the
    dock's prediction sets it to background, streamed or whole, before glands are found."""
    from napari_cdma._predict_stream import black_padding
    from src_model.io import read_image

    tissue = read_image(glas_dir / "images" / "testA_1.png")[:256, :320]
    image = np.zeros((256 + 96, 320 + 96, 3), np.uint8)
    image[48:-48, 48:-48] = tissue
    image[:48, :48] = 9  # near-black counts as padding too
    frame = np.ones(image.shape[:2], bool)
    frame[48:-48, 48:-48] = False
    assert (black_padding(image) == frame).all()

    (status, prediction, extra), _, _ = _run_job(image, stream=False)
    assert status == "ok" and not prediction.labels[frame].any() and not extra["instances"][frame].any()
    assert extra["instances"][~frame].any()  # the glands of the tissue are still found
    (status, _, streamed), rows, blocks = _run_job(image, stream=True)
    assert status == "ok" and rows and blocks
    semantic = np.zeros(image.shape[:2], np.uint8)
    for ev in rows:
        semantic[ev.r0:ev.r0 + len(ev.labels)] = ev.labels
    np.testing.assert_array_equal(semantic, prediction.labels)  # streamed rows: the same labels
    final = np.zeros(image.shape[:2], np.int32)
    for ev in blocks:
        final[ev.y0:ev.y0 + ev.labels.shape[0], ev.x0:ev.x0 + ev.labels.shape[1]] = ev.labels
    assert not final[frame].any() and final[~frame].any()
    assert {g["id"] for g in streamed["glands"]} == set(np.unique(final).tolist()) - {0}
    # in the live layer's dtype already (cast in the worker, not on the GUI thread)
    assert all(ev.labels.dtype == labels_dtype(image.shape) for ev in blocks)


def test_streamed_prediction_shortens_the_thread_switch_interval_while_it_runs():
    """While a large image's worker runs, the GUI thread gets the GIL back within 1 ms (not Python's 5 ms)
    after each call that released it; the interval is restored when the job ends or is closed, or when
    the live layers are hidden (Cancel: the worker's generator is only closed when the worker is collected)."""
    import sys

    from napari.components import ViewerModel

    from napari_cdma._predict_stream import SWITCH_INTERVAL_S, LiveLayers, hold_switch, predict_job
    from src_model.checkpoint import bundled_model_path

    before = sys.getswitchinterval()
    assert before > SWITCH_INTERVAL_S
    image = np.full((64, 80, 3), 128, np.uint8)
    job = predict_job(str(bundled_model_path()), image, np.zeros((64, 80), np.float16))
    next(job)  # the first progress event: the job is running
    assert sys.getswitchinterval() == SWITCH_INTERVAL_S
    job.close()
    assert sys.getswitchinterval() == before
    job = predict_job(str(bundled_model_path()), image)  # a whole (small) image: unchanged
    next(job)
    assert sys.getswitchinterval() == before
    job.close()
    # cancelled: the live layers are hidden while the job's generator is still open
    live = LiveLayers(ViewerModel(), "x", (64, 80))
    job = predict_job(str(bundled_model_path()), image, live.uncertainty)
    next(job)
    assert sys.getswitchinterval() == SWITCH_INTERVAL_S
    live.hide()
    assert sys.getswitchinterval() == before
    hold_switch(live.uncertainty)  # a late hold of a released prediction is ignored
    assert sys.getswitchinterval() == before
    job.close()
    assert sys.getswitchinterval() == before


def _all_steps(live):
    while not live.built:
        live.build_step()
    return live


def test_review_region_layers_are_added_while_predicting_and_filled_at_the_hand_over():
    """A large image's review-region and accepted-region Shapes layers are added (empty, drawn once, then
    hidden) while it is predicted; the hand-over shows them and the dock's upsert fills the same layers."""
    from napari.components import ViewerModel

    from napari_cdma._layers import ROLE_KEY, scene_camera, show_accepted, show_review_tiles
    from napari_cdma._predict_stream import LiveLayers

    viewer = ViewerModel()
    names = names_for("x")
    live = LiveLayers(viewer, "x", (64, 80))
    shown = []
    while not live.built:
        live.build_step()
        shown.extend(ly.name for ly in live.overlays if ly.visible)
    tiles, accepted = (viewer.layers[names[r]] for r in ("tiles", "accepted"))
    assert live.overlays == [tiles, accepted] and {names["tiles"], names["accepted"]} <= set(shown)
    assert not tiles.visible and not accepted.visible and len(tiles.data) == 0 and len(accepted.data) == 0
    assert (tiles.metadata[ROLE_KEY], accepted.metadata[ROLE_KEY]) == ("tiles", "accepted")
    layers = live.adopt(names["prediction"], (0.1, 0.5), secondary=False)
    assert tiles.visible and accepted.visible and layers["prediction"].name == names["prediction"]
    boxes = [(0.9, (0, 0, 20, 30)), (0.5, (30, 40, 60, 80))]
    assert show_review_tiles(viewer, "x", boxes) is tiles and len(tiles.data) == 2
    assert show_accepted(viewer, "x", [(5, 5, 15, 15)]) is accepted and len(accepted.data) == 1
    np.testing.assert_array_equal(tiles.data[1].min(axis=0), [30, 40])
    # the accepted frame is 3 screen pixels wide at the camera's zoom (walk 17), the raw review tiles 3 px
    zoom = scene_camera(viewer).zoom
    assert tiles.edge_width[0] == 3 and np.isclose(accepted.edge_width[0] * zoom, 3, rtol=0.01)
    assert tuple(accepted.edge_color[0][:3]) == (1, 0, 0)
    assert len([ly for ly in viewer.layers if ly.name == names["tiles"]]) == 1


def test_cancelled_prediction_removes_the_review_region_layers_it_added_and_keeps_earlier_ones():
    from napari.components import ViewerModel

    from napari_cdma._layers import show_review_tiles
    from napari_cdma._predict_stream import LiveLayers

    viewer = ViewerModel()
    names = names_for("x")
    earlier = show_review_tiles(viewer, "x", [(0.9, (0, 0, 20, 30))])  # an earlier prediction's boxes
    live = _all_steps(LiveLayers(viewer, "x", (64, 80)))
    assert [ly.name for ly in live.overlays] == [names["accepted"]]  # only the layer the image lacked
    live.hide()
    assert not live.overlays[0].visible and live.overlays[0].name.endswith(CANCELLED_SUFFIX)
    assert earlier.visible and earlier.name == names["tiles"]
    live.remove()
    assert [ly.name for ly in viewer.layers] == [names["tiles"]] and viewer.layers[0] is earlier
    assert len(earlier.data) == 1


def test_streamed_job_starts_once_its_live_layers_are_added():
    """The worker of a large image loads nothing and predicts nothing before the live layers are added (their
    ``started`` event): it only reports that it is starting; then it runs as usual."""
    import threading

    from napari.components import ViewerModel

    from napari_cdma._predict_stream import LiveLayers, Stage, predict_job
    from src_model.checkpoint import bundled_model_path

    image = np.full((96, 112, 3), 200, np.uint8)
    live = LiveLayers(ViewerModel(), "x", image.shape[:2])
    assert isinstance(live.started, threading.Event) and not live.started.is_set()
    job = predict_job(str(bundled_model_path()), image, live.uncertainty, start=live.started)
    for _ in range(3):
        assert next(job) == Stage("starting", 0, 0)
    while not live.built:
        assert not live.started.is_set()
        live.build_step()
    assert live.started.is_set()
    events = []
    with pytest.raises(StopIteration) as stop:
        while True:
            events.append(next(job))
    assert stop.value.value[0] == "ok"
    assert any(isinstance(e, Rows) for e in events) and Stage("starting", 0, 0) not in events
