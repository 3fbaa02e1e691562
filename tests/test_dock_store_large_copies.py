"""Store switches with a large image's prediction, and the store summary after many switches (walks under Xvfb).

A large image's uncertainty map is shown multiscale (a pyramid: ``layer.data`` napari's multiscale data, a sequence of
levels). Switching the dock to store B detaches it as a hidden "..., from project A" copy; switching back to A compared
that copy's pixels with what A restores by ``np.asarray`` of its data: napari's multiscale data gives its smallest
level there (so the copy, holding exactly what A restores, was never closed), and a plain list of levels raises, an
error that stopped the rest of A's restore (the image's prediction state, the panels, the summary line; logged "could
not show the stored predictions"). Now level 0 is compared, and a comparison that fails keeps the copy, the restore
going on. The dock takes an image for a large one when it has more than ``predict_panel.stream_pixels`` pixels
(``WHOLE_IMAGE_PIXELS``); the test sets that to 0 (as the other streaming tests do), so the sample's GlaS image is
predicted and shown as a large one is.

The store summary under the path field reached 13 lines after several switches (walk): a note per image, each saying
how many copies the last switch closed. After A -> B -> A -> B -> A it says what A holds now, in a few lines.

A real napari viewer (pytest-xvfb), real stores on disk, the GlaS image of the sample.
"""
from __future__ import annotations

import numpy as np
from _dock import predict_and_wait, wait_settled
from test_dock_store_switch import open_a_beside_b

from napari_cdma._layers import names_for
from napari_cdma._sample import SAMPLE_NAME
from napari_cdma.project.store import ProjectStore, hash_image


def _switch(dock, root):
    assert dock.open_store(root, create=None) is not None
    wait_settled(dock)
    assert dock._store.root == root.resolve()


def test_switching_back_to_a_store_with_a_large_images_prediction_restores_it(make_napari_viewer, qtbot, tmp_path,
                                                                                glas_dir):
    viewer, dock, (a_root, b_root), b_labels = open_a_beside_b(make_napari_viewer, tmp_path, glas_dir)
    names = names_for(SAMPLE_NAME)
    dock.predict_panel.stream_pixels = 0  # predicted and shown as a large image is
    digest = dock.states[SAMPLE_NAME].image_hash
    predict_and_wait(qtbot, dock, SAMPLE_NAME, timeout=300_000)
    wait_settled(dock)
    assert dock.flush_prediction_saves(60.0)
    uncertainty = viewer.layers[names["uncertainty"]]
    assert uncertainty.multiscale
    shown = np.array(uncertainty.data[0])
    stored_labels, stored_unc = ProjectStore.open(a_root).load_prediction(digest)
    assert np.array_equal(stored_unc.astype(np.float16), shown.astype(np.float16))  # A keeps this prediction

    _switch(dock, b_root)
    copy = viewer.layers[f"{names['uncertainty']}, from project A"]
    assert copy.multiscale and not copy.visible
    assert np.array_equal(np.asarray(viewer.layers[names["prediction"]].data), b_labels)

    # back to A: its latest prediction is restored in full (before: the comparison with the multiscale copy raised and
    # the restore stopped after adding the layers: no prediction state, nothing said of it)
    _switch(dock, a_root)
    state = dock.states.get(SAMPLE_NAME)
    assert state is not None and state.image_hash == digest, [ly.name for ly in viewer.layers]
    assert np.array_equal(state.original_labels, stored_labels.astype(np.int32))
    restored = viewer.layers[names["uncertainty"]]
    assert not restored.multiscale
    assert np.array_equal(np.asarray(restored.data).astype(np.float16), shown.astype(np.float16))
    assert SAMPLE_NAME in dock.restored_predictions
    assert f"'{SAMPLE_NAME}'" in dock.store_label.toolTip(), dock.store_label.toolTip()  # the summary's details
    assert dock.review_panel.image_name == SAMPLE_NAME
    # the multiscale copy holds A's uncertainty at full resolution (its level 0): closed as a redundant copy; B's
    # copies stay
    assert copy not in viewer.layers, [ly.name for ly in viewer.layers]
    assert f"{names['uncertainty']}, from project B" in viewer.layers
    assert f"{names['prediction']}, from project B" in viewer.layers


def test_a_comparison_that_fails_keeps_the_copy_and_the_restore_goes_on(make_napari_viewer, qtbot, tmp_path,
                                                                        glas_dir, monkeypatch):
    """Whatever goes wrong comparing a detached copy with what the store restores (pixels that cannot be read), the
    copy stays and the rest of the restore is done (before: the error stopped it, the prediction's state, panels and
    summary were left out)."""
    import napari_cdma._widget_store as widget_store

    viewer, dock, (a_root, b_root), _ = open_a_beside_b(make_napari_viewer, tmp_path, glas_dir)
    names = names_for(SAMPLE_NAME)
    digest = dock.states[SAMPLE_NAME].image_hash
    _switch(dock, b_root)
    copies = [f"{names[role]}, from project A" for role in ("prediction", "uncertainty")]
    assert all(name in viewer.layers for name in copies), [ly.name for ly in viewer.layers]

    def unreadable(*args, **kwargs):
        raise ValueError("setting an array element with a sequence")

    monkeypatch.setattr(widget_store, "_same_pixels", unreadable)
    _switch(dock, a_root)
    assert all(name in viewer.layers for name in copies), [ly.name for ly in viewer.layers]  # kept
    state = dock.states.get(SAMPLE_NAME)
    assert state is not None and state.image_hash == digest
    assert SAMPLE_NAME in dock.restored_predictions
    assert f"'{SAMPLE_NAME}'" in dock.store_label.toolTip(), dock.store_label.toolTip()  # the summary's details
    assert dock.review_panel.image_name == SAMPLE_NAME


def test_a_multiscale_copy_that_differs_or_cannot_be_compared_stays(make_napari_viewer, tmp_path, glas_dir):
    """The comparison of a detached copy with the restored layer: a multiscale copy is compared at its level 0;
    another shape or other pixels are not the same; a comparison that fails keeps the copy (nothing lost)."""
    from napari_cdma._widget_store import _same_pixels

    base = np.random.default_rng(1).random((64, 80)).astype(np.float32)
    pyramid = [base, base[::2, ::2], base[::4, ::4]]
    assert _same_pixels(pyramid, base, "uncertainty", multiscale=(True, False))
    assert _same_pixels(pyramid, [base.copy(), base[::2, ::2]], "uncertainty", multiscale=(True, True))
    other = base.copy()
    other[3, 4] += 0.5
    assert not _same_pixels(pyramid, other, "uncertainty", multiscale=(True, False))
    assert not _same_pixels(pyramid, base[:32], "uncertainty", multiscale=(True, False))
    assert not _same_pixels([], base, "uncertainty", multiscale=(True, False))

    class Unreadable:
        def __array__(self, *args, **kwargs):
            raise OSError("the pyramid's file went away")

    assert not _same_pixels([Unreadable()], base, "uncertainty", multiscale=(True, False))


def _stores_of_three_images(a_root, b_root, glas_dir):
    """Stores A (an accepted region and a latest prediction of each of three GlaS images) and B (its own latest
    prediction of each, other labels, no region), as a walker's two projects. Returns the images' names."""
    from src_model.io import read_image, read_mask

    a, b = ProjectStore.open(a_root), ProjectStore.open(b_root)
    names = []
    for k, stem in enumerate(("testA_1", "testA_2", "testB_4")):
        name = SAMPLE_NAME if stem == "testA_1" else stem
        image = read_image(glas_dir / "images" / f"{stem}.png")
        mask = np.asarray(read_mask(glas_dir / "masks" / f"{stem}.png"), dtype=np.int32)
        source = str(glas_dir / "images" / f"{stem}.png")
        a.accept_region(image, (0, 0, 64, 64), mask[:64, :64], mask[:64, :64], model_version="bundled",
                        image_name=name, source_path=source)
        rng = np.random.default_rng(k)
        for store, labels in ((a, mask), (b, np.roll(mask, 40, axis=0))):
            store.save_prediction(hash_image(image), labels, rng.random(mask.shape).astype(np.float32),
                                  model_version="bundled", image_name=name, source_path=source,
                                  ranked=[(0.9, (128, 128, 192, 192))], display_range=(0.0, 1.0))
        names.append(name)
    return names


def test_the_store_summary_stays_short_over_many_switches(make_napari_viewer, qtbot, tmp_path, glas_dir):
    """A -> B -> A -> B -> A with three images: the summary states what A holds now, in a few lines (before: a note
    per image, each with the copies the last switch closed, grew to 13 lines in the walker's dock)."""
    from _dock import open_dock

    a_root, b_root = tmp_path / "project A", tmp_path / "project B"
    images = _stores_of_three_images(a_root, b_root, glas_dir)
    viewer = make_napari_viewer()
    dock = open_dock(viewer, a_root)
    assert all(name in viewer.layers for name in images), [ly.name for ly in viewer.layers]
    texts, details = [dock.store_label.text()], [dock.summary.details()]  # the label, and its tooltip's details
    for root in (b_root, a_root, b_root, a_root):
        _switch(dock, root)
        texts.append(dock.store_label.text())
        details.append(dock.summary.details())
    text, detail = texts[-1], details[-1]
    # A's facts, now: its accepted regions, its model, the predictions restored of its images
    assert text.startswith("3 accepted regions, 3 images\nModel bundled"), text
    assert detail.startswith("3 accepted region(s) (0 held out) from 3 image(s)"), detail
    assert "current model: bundled" in detail and all(f"'{name}'" in detail for name in images), detail
    assert texts[1].startswith("0 accepted regions,") and all(f"'{name}'" in details[1] for name in images), details[1]
    # a few lines, the same at each return to A: no history of the switches, no note repeated per image
    assert len(text.splitlines()) <= 3 and "hidden cop" not in detail and "switch" not in detail, detail
    assert text == texts[2] and detail == details[2], (details[2], detail)
    # (before: 529 characters after each return, 11 lines at a 360 px wide label, against 262 and 6 now; the first
    # open adds "Reopened 3 stored image(s) ..."; walk 25: the label says it in 3 short lines, the rest in its tooltip)
    assert all(len(t) <= 360 for t in details), [len(t) for t in details]
