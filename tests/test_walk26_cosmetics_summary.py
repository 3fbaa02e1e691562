"""Walk 25: after reopening a store of two predicted images with accepted regions and a trained version, the store
summary under the path field took 13 lines of the 280 px dock. It now says in three short lines what the store holds,
the current model and what the reopen brought back; the details (held-out regions, each restored prediction's model,
time and remarks) are in its tooltip. Real napari viewer under Xvfb, real project store on disk."""
from __future__ import annotations

import numpy as np
from _dock import open_dock, store_with_predictions, turn

from napari_cdma.project.store import BUNDLED

NAMES = ("testA_1", "testA_2")
BOX = (0, 0, 64, 64)


def _store(root, glas_dir, checkpoint):
    """Both images predicted (their masks), one accepted region each, and a trained version made current."""
    from src_model.io import read_image, read_mask

    images = {n: read_image(glas_dir / "images" / f"{n}.png") for n in NAMES}
    store = store_with_predictions(root, images, glas_dir, ranked=[(0.5, BOX)])
    y0, x0, y1, x1 = BOX
    for name, image in images.items():
        mask = np.asarray(read_mask(glas_dir / "masks" / f"{name}.png"), np.int32)[y0:y1, x0:x1]
        store.accept_region(image, BOX, mask, np.zeros_like(mask), model_version=BUNDLED, image_name=name)
    store.add_model(checkpoint, parent=BUNDLED, promoted=True)
    return store


def test_the_summary_of_a_reopened_store_is_three_short_lines(make_napari_viewer, qtbot, tmp_path, glas_dir,
                                                             lite_checkpoint):
    store = _store(tmp_path / "project", glas_dir, lite_checkpoint)
    current = store.current_model_version
    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer, store.root)
    turn(qtbot, 12)
    label = dock.store_label
    text, tip = label.text(), label.toolTip()

    lines = label.heightForWidth(label.width()) / label.fontMetrics().lineSpacing()
    assert lines < 4, (lines, label.width(), text)  # at the dock's default width (walk: 13 lines)
    assert "2 accepted regions, 2 images" in text, text
    assert f"Model {current} (1 trained)" in text, text
    assert "Reopened 2 images" in text, text
    # the details, in the tooltip
    assert "2 accepted region(s) (0 held out) from 2 image(s), 1 trained version(s)" in tip, tip
    assert "Predictions restored from the store: 'testA_1', 'testA_2' (bundled" in tip, tip
    assert f"stale: the current model is {current}" in tip, tip
    assert "Keep unaccepted edits" in tip  # what the label's own tooltip said stays

    viewer.layers.remove(NAMES[0])  # the summary follows the layers
    turn(qtbot)
    assert "Reopened 1 image" in label.text() and "'testA_1'" not in label.toolTip(), label.toolTip()
