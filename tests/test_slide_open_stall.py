"""A slide with a predicted store, opened while the dock is open: napari's open returns before any of the panel's
overlays is added, the store is opened and its uncertainty range read in worker threads (never on the GUI thread), and
the overlays (uncertainty, glands' outlines, numbered glands) are added hidden and drawn in later turns of the event
loop, one at a time; opened again after it was closed, the same. (Opening an 8192 px slide did all of it inside
napari's open on the GUI thread: a 1.3-1.6 s freeze quiet, 4-6 s at load 7; benchmarks/bench_slide_open.py.) A real
napari viewer (Xvfb), a real pyramidal TIFF of GlaS test images, a real store (written, not predicted: fast), the
numbering in its own process."""
from __future__ import annotations

import threading

import numpy as np
from _slides import written_store
from qtpy.QtCore import QTimer
from test_widget_slide import PLUGIN, WIDGET

import napari_cdma._slide_view as slide_view
import src_model.slide_store as slide_store
from napari_cdma._layers import names_for
from napari_cdma._slide_view import NUMBERED


def _discs(h, w):
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros((h, w), np.uint8)
    for cy, cx in [(80, 90), (200, 400), (420, 150), (500, 600), (300, 700)]:
        out[(yy - cy) ** 2 + (xx - cx) ** 2 < 35 ** 2] = 1
    return out


class _Turns:
    """Counts the turns of the event loop (a 0 ms timer fires once a turn) and records, for each layer inserted,
    the turn and whether it was visible then, and for each layer shown later, the turn it was shown in."""

    def __init__(self, viewer):
        self.turn = 0
        self.timer = QTimer()
        self.timer.setInterval(0)
        self.timer.timeout.connect(self._tick)
        self.timer.start()
        self.inserted = {}  # name -> (turn, visible when inserted)
        self.shown = {}  # name -> turn it became visible
        viewer.layers.events.inserted.connect(self._on_inserted)

    def _tick(self):
        self.turn += 1

    def _on_inserted(self, event):
        layer = event.value
        self.inserted[layer.name] = (self.turn, bool(layer.visible))
        layer.events.visible.connect(lambda _e=None, ly=layer: ly.visible and self.shown.setdefault(ly.name,
                                                                                                   self.turn))


def test_opening_a_predicted_slide_adds_its_overlays_over_later_turns(make_napari_viewer, qtbot, tmp_path,
                                                                      slide_path, mosaic, monkeypatch):
    written_store(slide_path, tmp_path / "case.cdma.zarr", mosaic, _discs(*mosaic.shape[:2]), 256)
    ranges = []  # the threads the uncertainty's display range was read on (the real function, recorded)
    real_range = slide_view.store_display_range
    monkeypatch.setattr(slide_view, "store_display_range",
                        lambda store, *a, **k: ranges.append(threading.current_thread()) or real_range(store, *a, **k))
    opened = []  # the threads the store was opened on (0.1 s quiet, more than 1 s at load 9 on the GUI thread)
    real_open = slide_store.open_store
    monkeypatch.setattr(slide_store, "open_store",
                        lambda *a, **k: opened.append(threading.current_thread()) or real_open(*a, **k))
    viewer = make_napari_viewer()
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert dock.open_store(tmp_path / "project") is not None
    panel = dock.slide_panel

    for attempt in ("opened", "opened again"):
        turns = _Turns(viewer)
        (slide,) = viewer.open(str(slide_path), plugin=PLUGIN)
        name = slide.name
        unc, glands, numbered = f"{name} uncertainty", f"{name} glands", f"{name} {NUMBERED}"
        # napari's open has returned: the slide is the panel's, framed, and nothing of its store is added yet
        assert panel.slide_layer is slide and panel.store_edit.text() == str(tmp_path / "case.cdma.zarr"), attempt
        assert [ly.name for ly in viewer.layers] == [name], attempt
        assert panel._reopening is not None, attempt  # being read, in a worker

        shown = turns.shown
        qtbot.waitUntil(lambda want=(unc, glands, numbered), shown=shown: all(ly in shown for ly in want)
                        and panel.tile_list.count() > 0 and not panel.numbering and not panel._steps,
                        timeout=120_000)
        # the range was read, and the store opened, in workers, never on the GUI thread
        assert ranges and all(t is not threading.main_thread() for t in ranges), (attempt, ranges)
        assert opened and all(t is not threading.main_thread() for t in opened), (attempt, opened)
        # each overlay added hidden, and drawn in a later turn; no two of them added or drawn in the same turn
        for layer in (unc, glands, numbered):
            turn, visible = turns.inserted[layer]
            assert not visible and turns.shown[layer] > turn, (attempt, layer, turns.inserted, turns.shown)
        events = [turns.inserted[ly][0] for ly in (unc, glands, numbered)] + \
                 [turns.shown[ly] for ly in (unc, glands, numbered)]
        assert len(set(events)) == len(events), (attempt, turns.inserted, turns.shown)
        assert turns.inserted[unc][0] > turns.inserted[name][0]  # after the slide's own turn
        # what the panel shows in the end is as before: outlined glands over the numbered ones, the legend,
        # the review regions
        layers = [ly.name for ly in viewer.layers]
        assert viewer.layers[glands].contour > 0 and viewer.layers[glands].metadata.get("napari_cdma_live")
        assert layers.index(numbered) < layers.index(glands) and names_for(name)["tiles"] in layers
        assert all(viewer.layers[ly].visible for ly in (unc, glands, numbered))
        assert panel.legend.isVisibleTo(panel) and panel.edit_button.isEnabled()
        np.testing.assert_array_equal(np.asarray(viewer.layers[glands].data[0][:]), _discs(*mosaic.shape[:2]))
        turns.timer.stop()
        viewer.layers.clear()
        ranges.clear()
        opened.clear()
