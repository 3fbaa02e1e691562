"""Switching the dock to another project store (pathologist walk under Xvfb): the previous store's accepted regions
and accepted corrections stayed on the canvas after Open switched to a new, empty store, and the review status still
described the previous store's review list. After a switch nothing on screen claims to belong to the new store that
does not: the previous store's region and correction overlays go; the images and prediction layers stay, an edit not
accepted included (edits are never lost); the store line and the review status describe the new store.

A real napari viewer (pytest-xvfb), real stores on disk, the GlaS image of the sample. Only the Yes / No question
("Create a project store?") is answered by the test (``QMessageBox.question`` patched: a modal dialog would wait for a
click).
"""
from __future__ import annotations

import numpy as np
from _dock import open_dock, wait_settled
from qtpy.QtWidgets import QMessageBox

from napari_cdma._layers import IMAGE_KEY, ROLE_KEY, names_for
from napari_cdma._sample import SAMPLE_NAME
from napari_cdma.project.store import INDEX_NAME, ProjectStore, hash_image

BOX = (0, 0, 64, 64)
#: the stored prediction's review regions: the first lies in the accepted box (reviewed in store A, not in B)
RANKED = [(0.9, (0, 0, 64, 64)), (0.8, (128, 128, 192, 192)), (0.7, (256, 256, 320, 320)),
          (0.6, (64, 384, 128, 448)), (0.5, (320, 64, 384, 128))]


def _store_a(root, glas_dir):
    """Store A: one accepted region of the sample's image and its latest prediction (no model needed)."""
    from src_model.io import read_image, read_mask

    image = read_image(glas_dir / "images" / "testA_1.png")
    mask = read_mask(glas_dir / "masks" / "testA_1.png")
    store = ProjectStore.open(root)
    y0, x0, y1, x1 = BOX
    store.accept_region(image, BOX, mask[y0:y1, x0:x1], mask[y0:y1, x0:x1], model_version="bundled",
                        image_name=SAMPLE_NAME, source_path=str(glas_dir / "images" / "testA_1.png"))
    labels = np.asarray(mask, dtype=np.int32)
    uncertainty = np.random.default_rng(0).random(labels.shape).astype(np.float32)
    store.save_prediction(hash_image(image), labels, uncertainty, model_version="bundled", image_name=SAMPLE_NAME,
                          ranked=RANKED, display_range=(0.0, 1.0))
    return store


def _answer_yes(monkeypatch):
    asked = []

    def question(parent, title, text, buttons=None, default=None):
        asked.append(text)
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "question", question)
    return asked


def _overlays_of_store(viewer):
    """Names of the layers showing a store's accepted regions or accepted corrections."""
    return [ly.name for ly in viewer.layers if (ly.metadata or {}).get(ROLE_KEY) in ("accepted", "corrections")]


def test_switching_store_removes_the_previous_stores_overlays_and_keeps_edits(make_napari_viewer, qtbot, tmp_path,
                                                                              monkeypatch, glas_dir):
    a_root, b_root = tmp_path / "project A", tmp_path / "project B"
    _store_a(a_root, glas_dir)
    monkeypatch.setenv("NAPARI_CDMA_PROJECT", str(a_root))  # the dock opens store A itself, as in the walk
    viewer = make_napari_viewer()
    dock = open_dock(viewer)
    names = names_for(SAMPLE_NAME)
    assert dock._store is not None and dock._store.root == a_root.resolve()
    assert SAMPLE_NAME in viewer.layers and names["prediction"] in viewer.layers, [ly.name for ly in viewer.layers]
    assert names["accepted"] in viewer.layers and names["corrections"] in viewer.layers
    assert len(viewer.layers[names["accepted"]].data) == 1
    assert dock.store_label.text().startswith("1 accepted region(s)"), dock.store_label.text()
    review = dock.review_panel
    assert review.image_name == SAMPLE_NAME and len(review.tiles) == 4, review.last_message  # one box accepted

    # an edit in the prediction layer, not accepted
    prediction = viewer.layers[names["prediction"]]
    edited = np.array(prediction.data)
    edited[200:240, 500:540] = int(edited.max()) + 1
    prediction.data = edited.copy()
    image_before = np.array(viewer.layers[SAMPLE_NAME].data)

    # Open on another folder: asked, created, switched to
    asked = _answer_yes(monkeypatch)
    dock.store_edit.setText(str(b_root))
    open_button = next(b for b in dock.findChildren(type(dock.keep_edits_button)) if b.text() == "Open")
    open_button.click()
    wait_settled(dock)
    assert len(asked) == 1 and (b_root / INDEX_NAME).is_file()
    assert dock._store.root == b_root.resolve()

    # store A's accepted regions and corrections are gone from the canvas...
    assert _overlays_of_store(viewer) == [], [ly.name for ly in viewer.layers]
    # ... the image and the edited prediction stay, the edit intact
    assert SAMPLE_NAME in viewer.layers and np.array_equal(viewer.layers[SAMPLE_NAME].data, image_before)
    assert names["prediction"] in viewer.layers
    assert np.array_equal(np.asarray(viewer.layers[names["prediction"]].data), edited)
    assert dock._unsaved_count(dock.states[SAMPLE_NAME], viewer.layers[names["prediction"]]) > 0
    # the store line describes B: no region, and nothing restored from A said as restored
    text = dock.store_label.text()
    assert text.startswith("0 accepted region(s)") and "Reopened" not in text and "restored" not in text, text
    # the review list is B's: every review region of the prediction on screen, none accepted in B; the status says
    # which store it is now
    assert review.image_name == SAMPLE_NAME and len(review.tiles) == len(RANKED), review.last_message
    assert str(b_root) in review.last_message, review.last_message
    assert "5 review region(s)" in review.last_message, review.last_message
    # the review-tiles layer follows the list (store A's accepted box no longer skips the first region)
    if names["tiles"] in viewer.layers:
        assert len(viewer.layers[names["tiles"]].data) == len(RANKED)
    # nothing of the plugin's names store A any more as the open store's
    assert not any((ly.metadata or {}).get(IMAGE_KEY) == SAMPLE_NAME and (ly.metadata or {}).get(ROLE_KEY)
                   in ("accepted", "corrections") for ly in viewer.layers)

    # back to A: its regions are shown again over the image still open (not a second copy of the image)
    dock.store_edit.setText(str(a_root))
    open_button.click()
    wait_settled(dock)
    assert dock._store.root == a_root.resolve() and len(asked) == 1
    assert [ly.name for ly in viewer.layers if ly.name.startswith(SAMPLE_NAME + " [")] == []
    assert names["accepted"] in viewer.layers and len(viewer.layers[names["accepted"]].data) == 1
    assert np.array_equal(np.asarray(viewer.layers[names["prediction"]].data), edited)  # never replaced
    assert dock.store_label.text().startswith("1 accepted region(s)"), dock.store_label.text()


def test_an_edited_corrections_layer_of_the_previous_store_stays_as_the_users(make_napari_viewer, qtbot, tmp_path,
                                                                                 monkeypatch, glas_dir):
    """An accepted-corrections layer edited by the user is not closed by a switch (edits are never lost): it stays,
    no longer tagged as the open store's corrections, named after the store it came from."""
    a_root, b_root = tmp_path / "project A", tmp_path / "project B"
    _store_a(a_root, glas_dir)
    ProjectStore.open(b_root)  # B exists: no question asked
    viewer = make_napari_viewer()
    dock = open_dock(viewer, a_root)
    names = names_for(SAMPLE_NAME)
    corrections = viewer.layers[names["corrections"]]
    corrections.brush_size = 9
    corrections.paint((320, 320), 7)  # what the brush does (an edit of the user's)
    edited = np.array(corrections.data)
    assert np.count_nonzero(edited == 7) > 0
    assert dock.open_store(b_root, create=None) is not None
    wait_settled(dock)
    assert names["accepted"] not in viewer.layers and names["corrections"] not in viewer.layers
    kept = [ly for ly in viewer.layers if ly.name == f"{SAMPLE_NAME} corrections edited, from project A"]
    assert len(kept) == 1, [ly.name for ly in viewer.layers]
    assert np.array_equal(np.asarray(kept[0].data), edited)
    assert ROLE_KEY not in kept[0].metadata and IMAGE_KEY not in kept[0].metadata
    assert _overlays_of_store(viewer) == []
    # closing the image leaves the user's layer open (it is no longer one of the image's derived layers)
    viewer.layers.remove(SAMPLE_NAME)
    for _ in range(5):
        qtbot.wait(20)
    assert kept[0] in viewer.layers
