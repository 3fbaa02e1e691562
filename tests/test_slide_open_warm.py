"""What the GUI thread no longer does when a slide with a predicted store is opened with the dock open
(benchmarks/bench_slide_open.py, stack samples and cProfile of the stalls):

* the first slide's open imported 321 modules inside napari's open (the plugin's reader, tifffile, dask, distributed,
  the store modules, ...: 2.3 s of a 2.5 s freeze at load 4-6): the Whole slide panel imports them in a thread of its
  own (``napari_cdma._slide_view.warm_slide_reader``), and opening a slide then imports none of them;
* each store overlay's first slice (uncertainty, glands, numbered glands) read its zarr chunks on the GUI thread as it
  was drawn (0.1-0.3 s of each 0.2-0.4 s stall): the worker that opens the store reads those levels
  (``held_levels``), the overlay is first drawn from them, and reads the store live once drawn.

A real napari viewer (Xvfb), a real pyramidal TIFF of GlaS test images, a real store (written, not predicted)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import zarr
from _slides import written_store
from test_slide_open_stall import _discs, _Turns
from test_widget_slide import PLUGIN, WIDGET

from napari_cdma._slide_view import NUMBERED

ROOT = Path(__file__).resolve().parents[1]
#: packages napari's first open of a slide imported on the GUI thread (bench_slide_open)
HEAVY = ("tifffile", "dask", "distributed", "src_model", "napari_cdma", "PIL", "openslide", "skimage", "scipy")

WARM_THEN_OPEN = """
import sys, threading
import numpy as np
import napari_cdma._slide_view as sv

warm = getattr(sv, "warm_slide_reader", None)  # (missing before: the open imported them)
if warm is not None:
    thread = warm()
    assert thread.name == sv.SLIDE_WARM_THREAD and thread is not threading.current_thread()
    thread.join()
before = set(sys.modules)
from napari_cdma._reader import get_reader
path = sys.argv[1]
layers = get_reader(path)(path)
np.asarray(layers[0][0][-1][:8, :8])  # the slide's first pixels read
new = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in sys.argv[2].split(","))
print(new)
"""


def test_the_warm_up_imports_what_opening_a_slide_imports(slide_path):
    """In a fresh process, once the panel's warm-up thread has run, the reader's open of a slide (and its first read)
    imports none of the packages the first open imported on the GUI thread."""
    out = subprocess.run([sys.executable, "-c", WARM_THEN_OPEN, str(slide_path), ",".join(HEAVY)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-2000:]


def test_the_panel_warms_the_reader_off_the_gui_thread(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    panel = dock.slide_panel
    qtbot.waitUntil(lambda: getattr(panel, "reader_warming", None) is not None and not panel.reader_warming.is_alive(),
                    timeout=30_000)
    assert panel.reader_warming is not threading.main_thread()


def test_store_overlays_are_first_drawn_from_levels_the_worker_read(make_napari_viewer, qtbot, tmp_path, slide_path,
                                                                     mosaic, monkeypatch):
    store_path = tmp_path / "case.cdma.zarr"
    written_store(slide_path, store_path, mosaic, _discs(*mosaic.shape[:2]), 256)
    reads = []  # (thread, array) of every read of the slide's store's arrays
    prefix = store_path.as_uri()
    for method in ("__getitem__", "__array__"):
        real = getattr(zarr.Array, method)

        def spy(self, *a, _real=real, **k):
            if str(self.store_path).startswith(prefix):
                reads.append((threading.current_thread(), str(self.store_path)))
            return _real(self, *a, **k)

        monkeypatch.setattr(zarr.Array, method, spy)
    viewer = make_napari_viewer()
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert dock.open_store(tmp_path / "project") is not None
    panel = dock.slide_panel

    for attempt in ("opened", "opened again"):
        turns = _Turns(viewer)
        reads.clear()
        (slide,) = viewer.open(str(slide_path), plugin=PLUGIN)
        name = slide.name
        overlays = (f"{name} uncertainty", f"{name} glands", f"{name} {NUMBERED}")
        qtbot.waitUntil(lambda shown=turns.shown, want=overlays: all(ly in shown for ly in want)
                        and panel.tile_list.count() > 0 and not panel.numbering and not panel._steps, timeout=120_000)
        # the store's arrays were read in workers only: the overlays' first slices came from what they read
        on_gui = [path for thread, path in reads if thread is threading.main_thread()]
        assert reads and not on_gui, (attempt, on_gui)
        # the layers as before: added hidden, drawn in later turns, shown, the glands outlined over the numbered ones
        layers = [ly.name for ly in viewer.layers]
        for layer in overlays:
            turn, visible = turns.inserted[layer]
            assert not visible and turns.shown[layer] > turn and viewer.layers[layer].visible, (attempt, layer)
        assert layers.index(overlays[2]) < layers.index(overlays[1]) and viewer.layers[overlays[1]].contour > 0
        # once drawn, each level reads the store live (chunks written since show at the next refresh)
        for layer in overlays:
            levels = list(viewer.layers[layer].data)
            assert all(getattr(lv, "held", None) is False for lv in levels), (attempt, layer)  # HeldLevel, dropped
        glands = viewer.layers[overlays[1]]
        np.testing.assert_array_equal(np.asarray(glands.data[0][:]), _discs(*mosaic.shape[:2]))
        assert any(thread is threading.main_thread() for thread, _ in reads)  # read from the store, now
        turns.timer.stop()
        viewer.layers.clear()
