"""Reopening a project store in the dock (pathologist walk): a small slide's accepted windows do not
come back as a hidden copy of the slide, and a restored prediction keeps the gland ids the user saw
(real napari viewer under Xvfb, GlaS data, stores on disk); the image comes back under the name it had on
screen, not renamed from its file's name after the layers appeared."""
from __future__ import annotations

import numpy as np
from _dock import PLUGIN, WIDGET
from _dock import open_dock as _dock
from _dock import predict_and_wait as _predict_and_wait

from napari_cdma._layers import names_for
from napari_cdma._sample import SAMPLE_NAME
from napari_cdma.project.store import MAX_FULL_IMAGE_PIXELS, ProjectStore


def _slide_window(project_path, slide_path, box=(64, 64, 192, 192)):
    """Accept a window of the slide into the project store (what the Whole-slide panel's Accept stores)."""
    from napari_cdma.project.slide_regions import accept_slide_region
    from src_model.slide import open_slide

    project = ProjectStore.open(project_path)
    corrected = np.zeros((box[2] - box[0], box[3] - box[1]), np.uint8)
    corrected[20:60, 30:90] = 1
    with open_slide(slide_path) as slide:
        assert slide.levels[0].shape[0] * slide.levels[0].shape[1] <= MAX_FULL_IMAGE_PIXELS  # kept whole
        record = accept_slide_region(project, slide, box, corrected, np.zeros_like(corrected),
                                     model_version="bundled")
    return project, record


def _open_slide_and_dock(make_napari_viewer, qtbot, slide_path, project_path):
    viewer = make_napari_viewer()
    viewer.open(str(slide_path), plugin=PLUGIN)
    before = [ly.name for ly in viewer.layers]
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert dock.open_store(project_path) is not None
    qtbot.waitUntil(dock.settled, timeout=60_000)  # a reopened store's layers may be added in later turns
    return viewer, dock, before


def test_a_small_slides_windows_do_not_come_back_as_a_hidden_image(make_napari_viewer, qtbot, tmp_path,
                                                                      slide_path):
    project_path = tmp_path / "project"
    project, record = _slide_window(project_path, slide_path)
    assert len(project.whole_images()) == 1  # the small slide is kept whole in the store
    assert project.slide_images() == {record.image_hash}

    viewer, dock, before = _open_slide_and_dock(make_napari_viewer, qtbot, slide_path, project_path)
    assert [ly.name for ly in viewer.layers] == before  # nothing added: the slide panel shows the slide
    text = dock.store_label.text()
    said = text + dock.store_label.toolTip()  # the label and its details
    assert "Reopened" not in said and "press Predict" not in said and "needs Predict" not in said, said
    assert "1 slide window stored" in text and "1 slide window(s): open the slide" in said, said
    chosen = dock.predict_panel.image_layer
    assert chosen is None or chosen.visible  # never a hidden restored copy

    # withdrawn: still nothing shown, and no slide window counted
    project.withdraw(record.region_id)
    viewer2, dock2, before2 = _open_slide_and_dock(make_napari_viewer, qtbot, slide_path, project_path)
    assert [ly.name for ly in viewer2.layers] == before2
    said = dock2.store_label.text() + dock2.store_label.toolTip()
    assert "Reopened" not in said and "slide window" not in said, said


def test_an_image_accepted_as_an_image_still_comes_back(make_napari_viewer, tmp_path):
    """The same store with an ordinary image region: the image is restored as before (the slide mark
    applies to slide windows only)."""
    project_path = tmp_path / "project"
    project = ProjectStore.open(project_path)
    image = np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    corrected = np.zeros((64, 64), np.uint8)
    corrected[10:40, 10:40] = 1
    project.accept_region(image, (0, 0, 64, 64), corrected, np.zeros_like(corrected), model_version="bundled",
                          source_path=str(tmp_path / "other.tif"), image_name="other")
    assert project.slide_images() == set()
    viewer = make_napari_viewer()
    dock = _dock(viewer, project_path)
    assert "other" in viewer.layers and np.array_equal(viewer.layers["other"].data, image)
    assert "Reopened 1" in dock.store_label.text() and "Reopened 1 stored image(s)" in dock.store_label.toolTip()


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """One id of ``b`` for each id of ``a`` and the other way round (background included)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))


def test_reopening_keeps_the_gland_ids_at_an_accepted_region(make_napari_viewer, qtbot, tmp_path):
    """Predict, paint a square inside a box and accept it, close, reopen: the restored prediction layer holds
    the glands the user saw, one id each; a gland crossing the box border is not split into two."""
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "glas_testA_1")
    widget = _dock(viewer, tmp_path / "project")
    _predict_and_wait(qtbot, widget, SAMPLE_NAME)
    widget.flush_prediction_saves(60.0)
    labels = viewer.layers[names_for(SAMPLE_NAME)["prediction"]]
    box = (128, 384, 256, 512)
    y0, x0, y1, x1 = box
    data = np.asarray(labels.data)
    ring = np.zeros(data.shape, bool)
    ring[y0:y1, x0:x1] = True
    inside_ids = set(np.unique(data[y0:y1, x0:x1])) - {0}
    outside_ids = set(np.unique(data[~ring])) - {0}
    assert inside_ids & outside_ids, "the model's prediction has no gland crossing the box: the test needs one"
    labels.data[150:180, 400:430] = int(data.max()) + 1  # the user's square, a new gland
    labels.refresh()
    assert widget.review_panel.accept(bbox=box) is not None, widget.review_panel.last_message
    seen = np.array(labels.data)
    widget.flush_prediction_saves(60.0)
    viewer.close()

    other = make_napari_viewer()
    inserted = []  # the names the layers had when they were added (pathologist walk: they were renamed later)
    other.layers.events.inserted.connect(lambda e: inserted.append(e.value.name))
    _dock(other, tmp_path / "project")
    assert inserted[0] == SAMPLE_NAME and set(inserted) <= {ly.name for ly in other.layers}, inserted
    restored = np.asarray(other.layers[names_for(SAMPLE_NAME)["prediction"]].data)
    assert np.array_equal(restored > 0, seen > 0)
    assert len(np.unique(restored)) == len(np.unique(seen)), (len(np.unique(restored)), len(np.unique(seen)))
    assert _same_partition(seen, restored)
