"""A slide closed (or replaced) while its view is predicted: the store keeps the chunks the job wrote, nothing
of it is shown (no overlay of a closed slide, no review regions of it), and the status line says so; the Slide
chooser lists only slides, never the panel's overlays. A real napari viewer (Xvfb), real pyramidal TIFFs built
from the GlaS test images, the bundled model, real zarr stores on disk."""
from __future__ import annotations

from _slides import write_pyramidal_tiff
from test_widget_slide import PLUGIN, _predict, _slide_in_dock, _view

from napari_cdma._layers import names_for
from napari_cdma._widget_slide import NEEDS
from src_model.slide_store import open_store


def _overlays(viewer, name):
    """The panel's layers over slide ``name`` that are in the viewer."""
    wanted = {f"{name} uncertainty", f"{name} glands", names_for(name)["tiles"], names_for(name)["accepted"]}
    return sorted(ly.name for ly in viewer.layers if ly.name in wanted)


def _choices(panel):
    panel.slide_choice.reset_choices()
    return [ly.name for ly in panel.slide_choice.choices]


def test_a_slide_closed_while_its_view_is_predicted_shows_nothing(make_napari_viewer, qtbot, tmp_path, slide_path):
    viewer, slide_layer, _, panel = _slide_in_dock(make_napari_viewer, tmp_path, slide_path)
    name = slide_layer.name
    store_path = tmp_path / "case.cdma.zarr"
    _view(viewer, (200.0, 260.0), 240)
    assert panel.predict_view() is True, panel.last_message
    viewer.layers.remove(name)
    qtbot.waitUntil(lambda: not panel.running, timeout=180_000)

    assert _overlays(viewer, name) == [] and len(viewer.layers) == 0  # nothing added for the closed slide
    assert panel.tile_list.count() == 0 and panel.tiles == [] and panel.last_result is None
    assert "was closed" in panel.last_message and "nothing is shown" in panel.last_message, panel.last_message
    done = int(open_store(store_path).done().sum())  # the chunks the job wrote are in the store
    assert done > 0 and f"keeps the {done} new chunk(s)" in panel.last_message, (done, panel.last_message)
    assert _choices(panel) == [] and panel.slide_layer is None
    assert panel.predict_view() is False and panel.last_message.startswith("Open a slide first")
    # Predict view is off and says so in its tooltip (walk 20: it was on, a click said "Open a slide first")
    assert not panel.predict_button.isEnabled() and not panel.running
    assert panel.predict_button.toolTip().startswith(NEEDS["slide"])

    # opened again: the same view comes from the store (nothing recomputed), and the chooser lists only the slide
    (again,) = viewer.open(str(slide_path), plugin=PLUGIN)
    assert again.name == name and panel.slide_layer is again
    _view(viewer, (200.0, 260.0), 240)  # the first layer of an empty viewer resets the camera
    result = _predict(qtbot, panel)
    assert result["summary"].chunks_computed == 0 and len(result["chunks"]) == done
    assert _overlays(viewer, name) == sorted([f"{name} uncertainty", f"{name} glands", names_for(name)["tiles"]])
    assert panel.tile_list.count() == len(panel.tiles) > 0
    assert _choices(panel) == [name] and panel.slide_layer is again


def test_overlays_are_never_chosen_as_a_slide(make_napari_viewer, qtbot, tmp_path, slide_path, mosaic):
    """After a Predict view the chooser lists the slide alone (its uncertainty overlay names the slide in its
    metadata, and is no slide); with the slide closed the chooser holds the other slide, and a Predict view
    of that one adds nothing named after an overlay."""
    viewer, slide_layer, _, panel = _slide_in_dock(make_napari_viewer, tmp_path, slide_path)
    name = slide_layer.name
    _view(viewer, (200.0, 260.0), 240)
    _predict(qtbot, panel)
    assert f"{name} uncertainty" in viewer.layers and f"{name} glands" in viewer.layers
    assert _choices(panel) == [name] and panel.slide_layer is slide_layer

    other_path = write_pyramidal_tiff(tmp_path / "other.tif", mosaic[::-1].copy(), levels=3)
    (other,) = viewer.open(str(other_path), plugin=PLUGIN)
    assert _choices(panel) == [name, other.name]
    viewer.layers.remove(name)
    assert _choices(panel) == [other.name] and panel.slide_layer is other
    _predict(qtbot, panel)
    assert _choices(panel) == [other.name]
    assert not any(ly.name.startswith(f"{name} uncertainty ") for ly in viewer.layers)
    assert _overlays(viewer, other.name) == sorted([f"{other.name} uncertainty", f"{other.name} glands",
                                                    names_for(other.name)["tiles"]])


def test_a_slide_replaced_while_its_view_is_predicted_shows_nothing(make_napari_viewer, qtbot, tmp_path, slide_path):
    """The slide closed and opened again under its name while its view is predicted: the result is for the layer
    that was closed, so nothing is shown over the new one (a later Predict view shows it from the store)."""
    viewer, slide_layer, _, panel = _slide_in_dock(make_napari_viewer, tmp_path, slide_path)
    name = slide_layer.name
    _view(viewer, (200.0, 260.0), 240)
    assert panel.predict_view() is True, panel.last_message
    viewer.layers.remove(name)
    (again,) = viewer.open(str(slide_path), plugin=PLUGIN)
    assert again.name == name
    qtbot.waitUntil(lambda: not panel.running, timeout=180_000)
    assert "was closed or replaced" in panel.last_message, panel.last_message
    assert _overlays(viewer, name) == [] and [ly.name for ly in viewer.layers] == [name]
    assert panel.tile_list.count() == 0 and _choices(panel) == [name]
    _view(viewer, (200.0, 260.0), 240)
    result = _predict(qtbot, panel)
    assert result["summary"].chunks_computed == 0
    assert f"{name} uncertainty" in viewer.layers and panel.tile_list.count() > 0
