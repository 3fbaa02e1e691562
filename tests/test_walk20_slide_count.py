"""Walk 20: an edit window counts its glands as the slide's numbering does; the specks it shows (it shows the
store's pixels exactly) are said apart (a window over a quarter of a slide said 153 glands, the slide 137)."""
from __future__ import annotations

import numpy as np

from napari_cdma._slide_view import small_labels
from src_model.postprocess import DEFAULT_INSTANCES


def test_specks_under_the_numbering_size_are_counted_apart():
    labels = np.zeros((200, 200), np.int32)
    labels[:60, :60] = 1  # 3600 px: a gland
    labels[100:110, 100:110] = 2  # 100 px: a speck
    labels[150:186, 150:186] = 3  # 1296 px: just under the size
    labels[0:37, 150:186] = 4  # 1332 px: just over
    assert DEFAULT_INSTANCES.min_size == 1300  # the size the numbering and export drop below
    assert small_labels(labels) == 2
    assert small_labels(np.zeros((5, 5), np.int32)) == 0
