"""Pathologist walk 24, leftovers: a version tried beside the current model's prediction had its glands outlined in
the same four colours (only thinner and fainter), so with both shown the two models' glands could not be told apart.
A "(version)" layer now outlines every gland in its own colour, none of the current model's.

The real dock in a napari viewer (Xvfb), the GlaS sample, the bundled model and a random lite model as a version.
"""
from __future__ import annotations

import numpy as np
from _dock import sample_with_a_version_tried

from napari_cdma._layers import names_for
from napari_cdma._sample import SAMPLE_NAME
from napari_cdma.project.store import ProjectStore


def _colours(layer, ids) -> set:
    """The RGBA colours the Labels ``layer`` draws the gland ids ``ids`` with."""
    rgba = np.asarray(layer.colormap.map(np.asarray(ids, dtype=layer.data.dtype)), dtype=float)
    return {tuple(np.round(c, 3)) for c in rgba.reshape(-1, 4)}


def test_a_tried_versions_glands_are_outlined_in_another_colour(make_napari_viewer, qtbot, tmp_path, lite_checkpoint):
    store = ProjectStore.open(tmp_path / "project")
    other = store.add_model(lite_checkpoint, parent="bundled", promoted=False)  # current: bundled
    viewer, dock = sample_with_a_version_tried(make_napari_viewer, qtbot, store.root, other.version)
    main_name = names_for(SAMPLE_NAME)["prediction"]
    main, side = viewer.layers[main_name], viewer.layers[f"{main_name} ({other.version})"]
    assert main.visible and side.visible  # both shown
    ids = list(range(1, 9))
    assert not _colours(main, ids) & _colours(side, ids), (_colours(main, ids), _colours(side, ids))
    assert len(np.unique(np.asarray(main.data))) > 1  # the current model's glands are drawn
    # "Fill glands" on and off again restyles every prediction layer: each keeps its colours
    before = _colours(main, ids), _colours(side, ids)
    dock.display_panel.set_fill(True)
    dock.display_panel.set_fill(False)
    assert (_colours(main, ids), _colours(side, ids)) == before
