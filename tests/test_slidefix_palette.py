"""The numbered glands' palette (napari_cdma._widget_slide.NUMBERED_COLORS): saturated hues that read over H&E
(no black, white, grey, brown, pink or purple), each gland number one of them, consecutive numbers apart."""
from __future__ import annotations

import colorsys

import numpy as np

from napari_cdma._widget_slide import NUMBERED_COLORS, numbered_colormap


def test_palette_has_only_saturated_hues_away_from_he():
    assert len(NUMBERED_COLORS) >= 12
    for rgb in NUMBERED_COLORS:
        h, s, v = colorsys.rgb_to_hsv(*rgb)
        hue = 360 * h
        assert s >= 0.95, (rgb, "grey, white or black")
        assert v >= 0.7, (rgb, "dark: darkens the tissue")
        assert not 255 <= hue <= 350, (rgb, "purple or pink: the colours of H&E")
        if 10 <= hue <= 50:
            assert v >= 0.95, (rgb, "a dark orange reads as brown")
    rgb = np.asarray(NUMBERED_COLORS)
    dist = np.linalg.norm(rgb[:, None] - rgb[None], axis=2) + 10 * np.eye(len(rgb))
    assert dist.min() >= 0.2, "distinct colours"
    consecutive = np.linalg.norm(rgb - np.roll(rgb, -1, axis=0), axis=1)
    assert consecutive.min() >= 0.6, "consecutive numbers (neighbours in a chunk row) far apart"


def test_the_colormap_gives_each_number_a_palette_colour():
    cmap = numbered_colormap()
    n = len(NUMBERED_COLORS)
    values = np.arange(0, 3 * n + 2)
    colors = np.asarray(cmap.map(values))
    assert colors[0, 3] == 0  # background transparent
    for g in values[1:]:
        np.testing.assert_allclose(colors[g, :3], NUMBERED_COLORS[(g - 1) % n], atol=1e-6)
        assert colors[g, 3] == 1
