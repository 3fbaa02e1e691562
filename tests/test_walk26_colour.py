"""Walk 26, finding 6: the fourth gland colour was white, so its outlines vanished on pale mucin and glass and a
filled white gland (Fill glands) was invisible on the pale tissue of testA_1.

A real napari viewer, the sample testA_1 and its GlaS mask drawn as the dock draws a prediction (gland_colormap,
style_prediction); colours compared in CIELAB (skimage).
"""
from __future__ import annotations

import numpy as np
from napari.utils.colormaps.standardize_color import transform_color
from PIL import Image
from skimage.color import rgb2lab

from napari_cdma._layers import TRIED_GLAND_COLOR, gland_colormap, style_prediction
from napari_cdma._sample import SAMPLE_PATH
from napari_cdma._widget_display import SELECTED_COLOR
from napari_cdma._widget_review import CURRENT_TILE_COLOR, DRAWN_COLOR, SHOWN_COLOR

PALE_L = 80.0  # CIELAB lightness above which a testA_1 pixel is pale: mucin, lumen or glass (67 % of the image)


def _lab(rgb):
    return rgb2lab(np.asarray(rgb, dtype=float).reshape(-1, 1, 3))[:, 0, :]


def _sample_and_mask(glas_dir):
    image = np.asarray(Image.open(SAMPLE_PATH).convert("RGB"))
    mask = np.asarray(Image.open(glas_dir / "masks" / "testA_1.png")).astype(np.int32)
    assert mask.shape == image.shape[:2] and mask.max() >= 4  # a gland of each of the four colours
    return image, mask


def test_every_gland_colour_stands_out_on_pale_mucin_stroma_and_from_the_docks_other_colours(make_napari_viewer,
                                                                                             glas_dir):
    image, mask = _sample_and_mask(glas_dir)
    viewer = make_napari_viewer()
    viewer.add_image(image, rgb=True, name="testA_1")
    layer = viewer.add_labels(mask, name="testA_1 prediction", colormap=gland_colormap())
    style_prediction(layer)
    colours = [np.asarray(layer.get_color(k), dtype=float)[:3] for k in range(1, 5)]  # the four, cyclic by id
    assert np.allclose(layer.get_color(5)[:3], colours[0])
    lab = _lab(image.reshape(-1, 3) / 255.0).reshape(image.shape)
    pale = lab[..., 0] > PALE_L
    pale_mean = lab[pale].mean(axis=0)  # mucin and glass: L 92.5
    stroma_mean = lab[(mask == 0) & ~pale].mean(axis=0)  # pink / purple stroma between the glands
    others = {"yellow (tried glands, the selected region)": TRIED_GLAND_COLOR, "yellow frame": CURRENT_TILE_COLOR,
              "cyan (review regions)": "cyan", "magenta (the gland box)": SELECTED_COLOR, "red (accepted)": "red",
              "blue (drawn)": DRAWN_COLOR, "black (a region shown)": SHOWN_COLOR}
    for k, rgb in enumerate(colours, start=1):
        c = _lab(rgb)[0]
        # white: 10 from the pale pixels' mean (its outline vanished on mucin); now every colour 64 or more
        assert np.linalg.norm(c - pale_mean) > 40, (k, rgb, "lost on pale mucin / glass")
        assert np.linalg.norm(c - stroma_mean) > 40, (k, rgb, "lost on the stroma")
        for j, other in enumerate(colours[k:], start=k + 1):
            assert np.linalg.norm(c - _lab(other)[0]) > 40, (k, j, rgb, other)
        for what, other in others.items():
            other_rgb = np.asarray(transform_color(other)[0][:3], dtype=float)
            assert np.linalg.norm(c - _lab(other_rgb)[0]) > 40, (k, rgb, what)


def test_a_filled_gland_of_every_colour_changes_the_pale_tissue_on_screen(make_napari_viewer, qtbot, glas_dir):
    """Fill glands (the layer's opacity 0.4 over the H&E): for each of the four colours, a layer of that label over
    the whole of testA_1 changes the rendered colour of its pale pixels, as the canvas shows them, by a clear CIELAB
    distance (a white fill: about 5, invisible)."""
    image, _ = _sample_and_mask(glas_dir)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, rgb=True, name="testA_1")
    layer = viewer.add_labels(np.ones(image.shape[:2], np.int32), name="testA_1 prediction", colormap=gland_colormap())
    style_prediction(layer, fill=True)
    viewer.reset_view()
    qtbot.wait(50)
    layer.visible = False
    hidden = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float) / 255.0
    layer.visible = True
    hidden_lab = _lab(hidden.reshape(-1, 3)).reshape(hidden.shape)
    pale = hidden_lab[..., 0] > PALE_L
    assert pale.mean() > 0.2, "the canvas shows testA_1's pale tissue"
    changes = []
    for k in range(1, 5):
        layer.data = np.full(image.shape[:2], k, np.int32)
        qtbot.wait(20)
        shown = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float) / 255.0
        shown_lab = _lab(shown.reshape(-1, 3)).reshape(shown.shape)
        changes.append(float(np.linalg.norm(shown_lab[pale] - hidden_lab[pale], axis=1).mean()))
    assert min(changes) > 20, changes
