"""Shared helpers of the dock's GUI tests: open the CDMA dock in a viewer, predict and wait."""
from __future__ import annotations

PLUGIN = "napari-cdma"
WIDGET = "CDMA"


def open_dock(viewer, store_path=None):
    """The CDMA dock added to ``viewer``, with the project store at ``store_path`` opened if given."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    if store_path is not None:
        assert widget.open_store(store_path) is not None
    wait_settled(widget)  # the dock may have opened the store of $NAPARI_CDMA_PROJECT itself
    return widget


def slide_in_dock(make_napari_viewer, qtbot, slide, store_path):
    """A shown viewer with ``slide`` opened by the plugin's reader and the dock on the project store at
    ``store_path``; returns (viewer, dock, Whole slide panel) once the panel is idle with its content shown."""
    viewer = make_napari_viewer(show=True)
    viewer.open(str(slide), plugin=PLUGIN)
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert dock.open_store(store_path) is not None
    panel = dock.slide_panel
    qtbot.waitUntil(lambda: not panel.running and panel.content.isVisible(), timeout=60_000)
    return viewer, dock, panel


def wait_settled(widget, timeout=60.0):
    """Run the event loop until the dock has no GUI work left (a reopened store's layers are all shown)."""
    import time

    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while not widget.settled():
        assert time.monotonic() < end, "the dock did not settle"
        QApplication.processEvents()
        time.sleep(0.005)


def predict_and_wait(qtbot, widget, image_name, timeout=60_000):
    """Press Predict for ``image_name`` and wait until a new prediction state for it exists."""
    before = widget.states.get(image_name)
    assert widget.predict(image_name), widget.predict_panel.last_message
    # and the hand-over steps a large image's prediction leaves for later event-loop turns
    qtbot.waitUntil(lambda: not widget.predict_panel.running and widget.settled(), timeout=timeout)
    assert widget.states.get(image_name) is not before, widget.predict_panel.last_message


def store_with_predictions(root, images, glas_dir, ranked):
    """A project store at ``root`` holding each image of ``images`` (name -> RGB array) whole, with its GlaS mask as
    its prediction (model "bundled"), a random uncertainty map and review regions ``ranked``."""
    import numpy as np

    from napari_cdma.project.store import ProjectStore, hash_image
    from src_model.io import read_mask

    store = ProjectStore.open(root)
    for name, image in images.items():
        store.add_unlabelled_image(image)
        labels = np.asarray(read_mask(glas_dir / "masks" / f"{name}.png"), dtype=np.int32)
        uncertainty = np.random.default_rng(0).random(labels.shape).astype(np.float32)
        store.save_prediction(hash_image(image), labels, uncertainty, model_version="bundled", image_name=name,
                              ranked=ranked, display_range=(0.0, 1.0))
    return store


def turn(qtbot, n=8):
    """Let the event loop run ``n`` short turns (the dock's deferred steps and napari's redraws)."""
    from qtpy.QtWidgets import QApplication

    for _ in range(n):
        QApplication.processEvents()
        qtbot.wait(10)


def two_images_in_store(make_napari_viewer, tmp_path, glas_dir, names, ranked):
    """The GlaS images ``names`` (full size) open in a shown viewer, in that order (the last on top), and a dock on a
    store holding each with its mask as its prediction (:func:`store_with_predictions`).

    Returns (viewer, dock, store)."""
    from src_model.io import read_image

    images = {n: read_image(glas_dir / "images" / f"{n}.png") for n in names}
    store = store_with_predictions(tmp_path / "project", images, glas_dir, ranked)
    viewer = make_napari_viewer(show=True)
    for name, image in images.items():
        viewer.add_image(image, name=name, rgb=True)
    return viewer, open_dock(viewer, store.root), store


def choose_image(qtbot, dock, viewer, name):
    """Choose ``name`` in Predict's chooser, as the user does, and wait until the dock has followed."""
    dock.predict_panel.image_choice.value = viewer.layers[name]
    turn(qtbot)
    wait_settled(dock)
    assert dock.predict_panel.image_layer.name == name


def sample_in_dock(make_napari_viewer, store_path=None):
    """A viewer with the GlaS sample (testA_1) open and the dock on the project store at ``store_path`` if given;
    returns (viewer, dock)."""
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "glas_testA_1")
    return viewer, open_dock(viewer, store_path)


def try_version(qtbot, dock, image_name, version):
    """Choose model ``version`` in Predict's list (tried, not made current) and predict ``image_name`` with it."""
    panel = dock.predict_panel
    panel.model_combo.setCurrentIndex(panel._find(("version", version)))
    predict_and_wait(qtbot, dock, image_name)


def sample_with_a_version_tried(make_napari_viewer, qtbot, store_path, version):
    """The GlaS sample predicted by the current model of the store at ``store_path``, then by ``version`` tried beside
    it (:func:`try_version`); returns (viewer, dock)."""
    from napari_cdma._sample import SAMPLE_NAME

    viewer, dock = sample_in_dock(make_napari_viewer, store_path)
    predict_and_wait(qtbot, dock, SAMPLE_NAME)
    try_version(qtbot, dock, SAMPLE_NAME, version)
    return viewer, dock


def sample_predicted_then_reopened(make_napari_viewer, qtbot, store_path, checkpoint):
    """The GlaS sample predicted by ``checkpoint`` made the current model of a new store at ``store_path``, its saves
    flushed and its viewer closed; then the store opened again by a dock in a new viewer. Returns (viewer, dock) at
    once, while the dock is still restoring (not settled), for the caller to watch the restore."""
    from napari_cdma._sample import SAMPLE_NAME
    from napari_cdma.project.store import BUNDLED

    viewer, dock = sample_in_dock(make_napari_viewer, store_path)
    dock.store.add_model(checkpoint, parent=BUNDLED, promoted=True)
    assert dock.open_store(store_path) is not None
    predict_and_wait(qtbot, dock, SAMPLE_NAME)
    assert dock.flush_prediction_saves(60)
    viewer.close()

    other = make_napari_viewer()
    _, again = other.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert again.open_store(store_path) is not None
    return other, again


def offered(dock) -> list:
    """The names of the layers Predict's image chooser offers, its choices read afresh."""
    choice = dock.predict_panel.image_choice
    choice.reset_choices()
    return [layer.name for layer in choice.choices]


def predicted_with_a_copy(make_napari_viewer, qtbot, rgb, copy, copy_name, name="testA_2"):
    """A dock in a new viewer predicts the uint8 RGB image ``rgb`` (layer ``name``), then ``copy`` (the same image in
    another storage, layer ``copy_name``); returns (dock, labels of ``rgb``, labels of ``copy``) once the gland table
    lists the copy's glands, so Predict's status line is the copy's."""
    import numpy as np

    from napari_cdma._layers import names_for

    viewer = make_napari_viewer()
    dock = open_dock(viewer)
    viewer.add_image(rgb, rgb=True, name=name)
    predict_and_wait(qtbot, dock, name)
    labels = np.asarray(viewer.layers[names_for(name)["prediction"]].data).copy()
    viewer.add_image(copy, rgb=True, name=copy_name)
    predict_and_wait(qtbot, dock, copy_name)
    labels_copy = np.asarray(viewer.layers[names_for(copy_name)["prediction"]].data).copy()
    qtbot.waitUntil(lambda: bool(dock.display_panel.glands), timeout=10_000)
    return dock, labels, labels_copy


#: two GlaS images (the second above the first in the layer list) and review regions for each, as the walk 26 review
#: tests use them
FIRST, SECOND = "testA_1", "testA_2"
TWO_RANKED = [(0.9, (0, 0, 64, 64)), (0.8, (128, 128, 192, 192))]


def settle(qtbot, dock):
    """A few turns of the event loop, then wait until the dock has settled."""
    turn(qtbot)
    wait_settled(dock)


def to_top(layers, name):
    """Move layer ``name`` to the top of the layer list, as a drag in the layer list does."""
    layers.move(layers.index(layers[name]), len(layers))


def two_images_first_chosen(make_napari_viewer, qtbot, tmp_path, glas_dir, names=(FIRST, SECOND), ranked=None):
    """:func:`two_images_in_store` with ``names`` (default FIRST, SECOND and :data:`TWO_RANKED`), settled, the first
    image chosen in Predict. Returns (viewer, dock, store)."""
    viewer, dock, store = two_images_in_store(make_napari_viewer, tmp_path, glas_dir, names,
                                              TWO_RANKED if ranked is None else ranked)
    settle(qtbot, dock)
    choose_image(qtbot, dock, viewer, names[0])
    return viewer, dock, store
