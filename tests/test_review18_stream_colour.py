"""Review 18 finding 2: while a tried version predicted a large (streamed) image, its live labels layer was drawn with
the current model's four gland colours, and only turned into the tried colour (a "(version)" layer's) at the
hand-over. The live layer of a prediction going beside the image's own is drawn in the tried colour from the start.

The real dock in a napari viewer (Xvfb), the GlaS sample streamed (``stream_pixels`` 0: the path a large image takes),
the bundled model and a random lite model as a version.
"""
from __future__ import annotations

from _dock import predict_and_wait, sample_in_dock, try_version

from napari_cdma._layers import TRIED_CMAP_NAME, names_for
from napari_cdma._predict_stream import LIVE_SUFFIX
from napari_cdma._sample import SAMPLE_NAME
from napari_cdma.project.store import ProjectStore


def test_a_tried_versions_live_layer_has_the_tried_colour_while_it_predicts(make_napari_viewer, qtbot, tmp_path,
                                                                            lite_checkpoint):
    store = ProjectStore.open(tmp_path / "project")
    other = store.add_model(lite_checkpoint, parent="bundled", promoted=False)  # current: bundled
    viewer, dock = sample_in_dock(make_napari_viewer, store.root)
    dock.predict_panel.stream_pixels = 0  # every image streams, as a large one does
    live_name = names_for(SAMPLE_NAME)["prediction"] + LIVE_SUFFIX
    seen = []  # the live labels layer's colormap and opacity as it is added (styled before it is added)

    def inserted(event):
        layer = event.value
        if layer.name == live_name:
            seen.append((layer.colormap.name, float(layer.opacity)))

    viewer.layers.events.inserted.connect(inserted)
    predict_and_wait(qtbot, dock, SAMPLE_NAME)  # the current model: the image's own layer, four colours
    assert len(seen) == 1 and seen[0][0] == "glands", seen
    own_opacity = seen[0][1]
    try_version(qtbot, dock, SAMPLE_NAME, other.version)
    assert len(seen) == 2, seen
    assert seen[1][0] == TRIED_CMAP_NAME, seen  # was "glands" until the hand-over
    assert seen[1][1] < own_opacity, seen  # fainter, as a "(version)" layer
    side = viewer.layers[f"{names_for(SAMPLE_NAME)['prediction']} ({other.version})"]
    assert side.colormap.name == TRIED_CMAP_NAME  # and still after the hand-over
    assert viewer.layers[names_for(SAMPLE_NAME)["prediction"]].colormap.name == "glands"


def test_a_prediction_going_aside_to_keep_edits_streams_in_the_tried_colour(make_napari_viewer, qtbot, tmp_path):
    """The current model again on an image whose prediction layer holds edits not accepted: the new prediction goes
    beside it (the edits are kept), and its live layer is drawn as such from the start, not in the four colours."""
    viewer, dock = sample_in_dock(make_napari_viewer, tmp_path / "project")
    dock.predict_panel.stream_pixels = 0  # every image streams, as a large one does
    live_name = names_for(SAMPLE_NAME)["prediction"] + LIVE_SUFFIX
    seen = []
    viewer.layers.events.inserted.connect(
        lambda event: seen.append(event.value.colormap.name) if event.value.name == live_name else None)
    predict_and_wait(qtbot, dock, SAMPLE_NAME)
    own = viewer.layers[names_for(SAMPLE_NAME)["prediction"]]
    own.paint((100, 100), 99, refresh=True)  # a brush stroke: a new gland, not accepted
    qtbot.waitUntil(lambda: dock._goes_aside(SAMPLE_NAME), timeout=10_000)
    predict_and_wait(qtbot, dock, SAMPLE_NAME)
    assert seen == ["glands", TRIED_CMAP_NAME], seen
    assert (own.data[100, 100] == 99) and own.colormap.name == "glands"  # the edits kept, in the image's own layer


def test_the_live_layers_guess_is_undone_when_the_dock_writes_the_images_own_layer():
    """The tried colour is a guess made when the prediction starts (a model other than the current one, on an image
    with a prediction layer); the dock decides at the hand-over (e.g. the layer was that model's own prediction): a
    prediction adopted as the image's own layer gets the four gland colours, fully opaque as the image's own."""
    import numpy as np
    from napari.components import ViewerModel

    from napari_cdma._layers import gland_colormap, style_prediction
    from napari_cdma._predict_stream import LiveLayers

    viewer = ViewerModel()
    main = names_for("x")["prediction"]
    assert LiveLayers(viewer, "x", (64, 80), tried=True).side is False  # no prediction layer yet: the image's own
    own = viewer.add_labels(np.zeros((64, 80), np.int32), name=main, colormap=gland_colormap())
    style_prediction(own, fill=True)
    live = LiveLayers(viewer, "x", (64, 80), tried=True)
    while not live.build_step():
        pass
    assert live.labels_layer.colormap.name == TRIED_CMAP_NAME
    assert live.labels_layer.opacity < own.opacity
    viewer.layers.remove(main)
    layers = live.adopt(main, (0.0, 1.0), secondary=False)
    assert layers["prediction"].name == main
    assert layers["prediction"].colormap.name == "glands"
    assert layers["prediction"].opacity == own.opacity
