"""Switching the dock to another project store (pathologist walk under Xvfb): the previous store's accepted regions
and accepted corrections stayed on the canvas after Open switched to a new, empty store, and the review status still
described the previous store's review list; and its prediction layer, with its accepted corrections pasted in, stayed
the image's prediction for the new store, whose Accept and Keep unaccepted edits then took the previous store's
corrections for its own. After a switch nothing on screen claims to belong to the new store that does not: the
previous store's region and correction overlays go; the images stay; the prediction layers stay, an edit not accepted
included (edits are never lost: kept in the previous store too), renamed after the previous store and no longer the
image's prediction for the dock; the new store shows its own prediction; the store line and the review status
describe the new store.

A real napari viewer (pytest-xvfb), real stores on disk, the GlaS image of the sample. Only the Yes / No question
("Create a project store?") is answered by the test (``QMessageBox.question`` patched: a modal dialog would wait for a
click).
"""
from __future__ import annotations

import numpy as np
import pytest
from _dock import open_dock, wait_settled
from qtpy.QtWidgets import QMessageBox

from napari_cdma._layers import IMAGE_KEY, ROLE_KEY, names_for
from napari_cdma._predict_stream import CANCELLED_SUFFIX, LIVE_SUFFIX
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
    assert dock.store_label.text().startswith("1 accepted region, 1 image"), dock.store_label.text()
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
    # ... the image stays, and the edited prediction, the edit intact, as the user's own layer named after A (it holds
    # A's correction): B has no prediction of the image, so the image has none now
    assert SAMPLE_NAME in viewer.layers and np.array_equal(viewer.layers[SAMPLE_NAME].data, image_before)
    from_a = viewer.layers[f"{names['prediction']}, from project A"]
    assert np.array_equal(np.asarray(from_a.data), edited)
    assert ROLE_KEY not in from_a.metadata and IMAGE_KEY not in from_a.metadata
    assert not from_a.visible  # hidden: shown, A's correction looked as if B held it (walk)
    # its maps too, and the gland table no longer lists A's glands (re-walk: B seemed to hold them)
    assert names["uncertainty"] not in viewer.layers and names["disagreement"] not in viewer.layers
    assert not viewer.layers[f"{names['uncertainty']}, from project A"].visible
    assert dock.display_panel.glands == [] and dock.display_panel.labels_layer is None
    assert names["prediction"] not in viewer.layers and SAMPLE_NAME not in dock.states
    assert not dock.keep_edits_button.isEnabled()  # nothing of B's to keep
    said = dock.predict_panel.last_message
    assert from_a.name in said and f"kept in {a_root}" in said, said
    # the store line describes B: no region, and nothing restored from A said as restored
    text = dock.store_label.text()
    said = text + dock.store_label.toolTip()  # the label and its details
    assert text.startswith("0 accepted regions, 0 images") and "Reopened" not in said and "restored" not in said, said
    # the review list is B's: none, as B has no prediction of the image (Predict makes one); the status says which
    # store it is now; A's review tiles are gone with A's prediction
    assert review.image_name is None and review.tiles == [], review.last_message
    assert str(b_root) in review.last_message and "Predict" in review.last_message, review.last_message
    assert names["tiles"] not in viewer.layers
    assert review.accept(bbox=BOX) is None and ProjectStore.open(b_root).regions() == []  # nothing to accept from
    # nothing of the plugin's names store A any more as the open store's
    assert not any((ly.metadata or {}).get(IMAGE_KEY) == SAMPLE_NAME and (ly.metadata or {}).get(ROLE_KEY)
                   in ("accepted", "corrections", "prediction") for ly in viewer.layers)

    # back to A: its regions are shown again over the image still open (not a second copy of the image)
    dock.store_edit.setText(str(a_root))
    open_button.click()
    wait_settled(dock)
    assert dock._store.root == a_root.resolve() and len(asked) == 1
    assert [ly.name for ly in viewer.layers if ly.name.startswith(SAMPLE_NAME + " [")] == []
    assert names["accepted"] in viewer.layers and len(viewer.layers[names["accepted"]].data) == 1
    # A's prediction again, with the edit A kept when it was left; the renamed copy, which holds the same, is closed
    # (switching back and forth piled up copies: tests/test_dock_switch_copies.py)
    assert np.array_equal(np.asarray(viewer.layers[names["prediction"]].data), edited)
    assert from_a not in viewer.layers
    assert not [ly.name for ly in viewer.layers if ", from project A" in ly.name]
    assert review.image_name == SAMPLE_NAME and len(review.tiles) == len(RANKED) - 1, review.last_message
    assert dock.store_label.text().startswith("1 accepted region, 1 image"), dock.store_label.text()


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


def _store_b_with_its_prediction(root, glas_dir):
    """Store B: its own latest prediction of the sample's image (other labels than A's: the mask's glands moved 40 px
    down, the gland in A's accepted box BOX gone), no region. Returns B's labels."""
    from src_model.io import read_image, read_mask

    image = read_image(glas_dir / "images" / "testA_1.png")
    labels = np.zeros(image.shape[:2], np.int32)
    labels[40:] = np.asarray(read_mask(glas_dir / "masks" / "testA_1.png"), dtype=np.int32)[:-40]
    labels[: BOX[2] + 8, : BOX[3] + 8] = 0
    uncertainty = np.random.default_rng(1).random(labels.shape).astype(np.float32)
    ProjectStore.open(root).save_prediction(hash_image(image), labels, uncertainty, model_version="bundled",
                                            image_name=SAMPLE_NAME, ranked=RANKED, display_range=(0.0, 1.0))
    return labels


def open_a_beside_b(make_napari_viewer, tmp_path, glas_dir):
    """Stores A (an accepted region) and B (its own prediction of the sample image) on disk, and a viewer whose dock
    opened A: ``(viewer, dock, (a_root, b_root), B's stored labels)``."""
    a_root, b_root = tmp_path / "project A", tmp_path / "project B"
    _store_a(a_root, glas_dir)
    b_labels = _store_b_with_its_prediction(b_root, glas_dir)
    viewer = make_napari_viewer()
    return viewer, open_dock(viewer, a_root), (a_root, b_root), b_labels


def test_a_prediction_of_the_previous_store_is_not_the_new_stores(make_napari_viewer, qtbot, tmp_path, glas_dir):
    """Store A's prediction layer holds A's accepted correction (pasted in when A restored it) and an edit not
    accepted. After Open on store B: the layer stays, edits included, renamed after A and no longer the image's
    prediction for B; B shows its own stored prediction of the image; Accept in B stores B's prediction, not A's
    correction (before: A's corrected box went into B, as if accepted there); Keep unaccepted edits has nothing of A's
    to keep in B; A kept the edit (reopening A shows it)."""
    from src_model.io import read_mask

    viewer, dock, (a_root, b_root), b_labels = open_a_beside_b(make_napari_viewer, tmp_path, glas_dir)
    names = names_for(SAMPLE_NAME)
    prediction = viewer.layers[names["prediction"]]
    y0, x0, y1, x1 = BOX
    a_correction = np.asarray(read_mask(glas_dir / "masks" / "testA_1.png"))[y0:y1, x0:x1]
    assert np.array_equal(np.asarray(prediction.data)[y0:y1, x0:x1] > 0, a_correction > 0)  # A's, pasted in
    assert a_correction.any() and not b_labels[y0:y1, x0:x1].any()
    edited = np.array(prediction.data)
    edited[200:240, 500:540] = int(edited.max()) + 1
    prediction.data = edited.copy()
    digest = dock.states[SAMPLE_NAME].image_hash

    assert dock.open_store(b_root, create=None) is not None
    wait_settled(dock)
    assert dock._store.root == b_root.resolve()
    # Accept of A's corrected box in B stores what B's prediction says there, not A's correction; Keep unaccepted
    # edits has nothing of A's to keep in B
    review = dock.review_panel
    record = review.accept(bbox=BOX)
    assert record is not None, review.last_message
    _, corrected, predicted = ProjectStore.open(b_root).load_region(record.region_id)
    assert not corrected.any() and not predicted.any(), "store A's correction went into store B"
    assert not dock.keep_edits_button.isEnabled() and dock.keep_edits() == {}
    assert not ProjectStore.open(b_root).latest_prediction(digest).edited
    # A's layer stays with the edit, named after A, no longer a layer of the image's for the dock
    from_a = [ly for ly in viewer.layers if ly.name == f"{names['prediction']}, from project A"]
    assert len(from_a) == 1, [ly.name for ly in viewer.layers]
    assert np.array_equal(np.asarray(from_a[0].data), edited)
    assert ROLE_KEY not in from_a[0].metadata and IMAGE_KEY not in from_a[0].metadata
    # the image's prediction is B's
    assert names["prediction"] in viewer.layers and viewer.layers[names["prediction"]] is not from_a[0]
    assert np.array_equal(np.asarray(viewer.layers[names["prediction"]].data), b_labels)
    assert np.array_equal(dock.states[SAMPLE_NAME].original_labels, b_labels)
    assert review.image_name == SAMPLE_NAME and review.labels_choice.value is viewer.layers[names["prediction"]]
    # the edit not accepted was kept in A, where it was made: reopening A shows it
    a = ProjectStore.open(a_root)
    assert a.latest_prediction(digest).edited and np.array_equal(a.load_prediction_edits(digest), edited)
    assert dock.open_store(a_root) is not None
    wait_settled(dock)
    assert np.array_equal(np.asarray(viewer.layers[names["prediction"]].data), edited)


@pytest.mark.parametrize("streamed", [False, True])
def test_a_predict_running_at_a_switch_is_cancelled_not_given_to_the_new_store(make_napari_viewer, qtbot, tmp_path,
                                                                               glas_dir, streamed):
    """A Predict started in store A reads A's accepted corrections (in its worker) to paste them into its result.
    Open on store B before it ends: the run is cancelled, and the Predict panel's status line says so and that
    Predict predicts the image for B (before: the result came after the switch with A's correction pasted in, became
    the image's prediction for B and B's latest prediction, and Accept in B stored A's correction as B's). Predict
    again in B shows B's prediction without A's correction. The predict job is held (its read of the corrections
    waits for the test) so that the switch comes while it runs, whatever the machine's speed. ``streamed``: as a
    large image is predicted (its layers filled while it runs; removed, as a cancelled run's are)."""
    import threading

    from _dock import predict_and_wait

    a_root, b_root = tmp_path / "project A", tmp_path / "project B"
    _store_a(a_root, glas_dir)
    ProjectStore.open(b_root)  # B exists, empty: no question asked
    viewer = make_napari_viewer()
    dock = open_dock(viewer, a_root)
    names, panel = names_for(SAMPLE_NAME), dock.predict_panel
    if streamed:
        panel.stream_pixels = 0
    digest = dock.states[SAMPLE_NAME].image_hash
    read, release = threading.Event(), threading.Event()
    read_corrections = panel.corrections_for

    def held(image_hash):  # in the worker: A's corrections read, then held until the switch is done
        corrections = read_corrections(image_hash)
        read.set()
        release.wait(120)
        return corrections

    panel.corrections_for = held
    assert dock.predict(SAMPLE_NAME), panel.last_message
    try:
        qtbot.waitUntil(read.is_set, timeout=300_000)
        assert panel.running
        assert dock.open_store(b_root, create=None) is not None
        wait_settled(dock)
    finally:
        release.set()
    qtbot.waitUntil(lambda: not panel.running and dock.settled(), timeout=120_000)
    qtbot.wait(300)
    assert dock._store.root == b_root.resolve()
    # nothing of the run became B's: no prediction of the image for B, none kept in B, nothing for B's Accept
    assert names["prediction"] not in viewer.layers and SAMPLE_NAME not in dock.states, \
        [ly.name for ly in viewer.layers]
    assert not any(LIVE_SUFFIX in ly.name or CANCELLED_SUFFIX in ly.name for ly in viewer.layers)
    b = ProjectStore.open(b_root)
    assert b.latest_prediction(digest) is None, "the run's prediction, with A's correction, was kept in store B"
    record = dock.review_panel.accept(bbox=BOX)
    if record is not None:
        _, corrected, _ = ProjectStore.open(b_root).load_region(record.region_id)
        assert not np.array_equal(corrected, ProjectStore.open(a_root).load_region(
            ProjectStore.open(a_root).regions()[0].region_id)[1]), "store A's correction went into store B"
    assert ProjectStore.open(b_root).regions() == []
    # the status line says why and what to do
    said = panel.last_message
    assert "cancelled" in said and str(b_root) in said and "Predict" in said, said
    assert panel.status.text() == said
    assert panel.predict_button.isEnabled() and not panel.cancel_button.isEnabled()
    # A's own prediction layer, restored before the run, stays detached as after any switch
    assert f"{names['prediction']}, from project A" in viewer.layers

    # Predict again: the image's prediction for B, with no correction pasted (B has none)
    panel.corrections_for = read_corrections
    predict_and_wait(qtbot, dock, SAMPLE_NAME, timeout=300_000)
    wait_settled(dock)
    assert names["prediction"] in viewer.layers and dock.states[SAMPLE_NAME].image_hash == digest
    assert "accepted correction" not in panel.last_message, panel.last_message
    assert dock.states[SAMPLE_NAME].reviewed.get(names["prediction"]) == []


def test_a_switch_during_a_predictions_hand_over_finishes_it_for_the_previous_store(make_napari_viewer, qtbot,
                                                                                   tmp_path, glas_dir):
    """Open on store B just as a Predict in store A is handed over (its last steps, A's accepted-region overlay and
    review outlines among them, left for later event-loop turns): those steps are done for A before the switch, so
    the prediction is detached with A's other layers and nothing of A's is drawn over the image for B (before: A's
    accepted box and review outlines came back after the switch)."""
    a_root, b_root = tmp_path / "project A", tmp_path / "project B"
    _store_a(a_root, glas_dir)
    ProjectStore.open(b_root)
    viewer = make_napari_viewer()
    dock = open_dock(viewer, a_root)
    names, panel = names_for(SAMPLE_NAME), dock.predict_panel
    digest = dock.states[SAMPLE_NAME].image_hash
    switched = []

    def switch(_result):  # after the dock's own slot: its hand-over steps are queued, none done
        assert dock._turns
        switched.append(dock.open_store(b_root, create=None))

    panel.finished.connect(switch)
    assert dock.predict(SAMPLE_NAME), panel.last_message
    qtbot.waitUntil(lambda: bool(switched), timeout=300_000)
    panel.finished.disconnect(switch)
    qtbot.waitUntil(lambda: not panel.running and dock.settled(), timeout=120_000)
    qtbot.wait(300)
    assert switched[0] is not None and dock._store.root == b_root.resolve()
    assert _overlays_of_store(viewer) == [], [ly.name for ly in viewer.layers]
    assert names["tiles"] not in viewer.layers and names["prediction"] not in viewer.layers
    assert SAMPLE_NAME not in dock.states and dock.review_panel.tiles == []
    assert f"{names['prediction']}, from project A" in viewer.layers
    assert ProjectStore.open(b_root).latest_prediction(digest) is None
    assert ProjectStore.open(a_root).latest_prediction(digest) is not None
