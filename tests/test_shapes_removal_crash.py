"""Removing a Shapes layer must not crash napari once the dock is open (napari_cdma._shapes_keepalive).

With napari 0.9.2 / vispy 0.17 on Mesa's software OpenGL, a shown viewer crashed with a segmentation fault at the
first draw after a Shapes layer was removed and another layer added; the walk hit it through the dock (Next, a
store switch that removes the review-region layers, then Predict). The check runs in a real subprocess with the
viewer's window shown (the test session's Xvfb display), since a crash would kill the test process itself.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    import napari
    from qtpy.QtWidgets import QApplication

    def pump(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.01)

    viewer = napari.Viewer(show=True)
    if sys.argv[1] == "dock":
        from napari_cdma._widget import CdmaWidget
        dock = CdmaWidget(viewer, store_path=sys.argv[2])
        viewer.window.add_dock_widget(dock, name="CDMA")
    rng = np.random.default_rng(0)
    viewer.add_image((rng.random((300, 400, 3)) * 255).astype(np.uint8), name="tissue", rgb=True)
    pump(0.5)
    for round_ in range(2):
        shapes = viewer.add_shapes([np.array([[0, 0], [128, 128]])], shape_type="rectangle", name="regions",
                                   edge_width=4, face_color="transparent")
        pump(0.5)
        viewer.layers.remove(shapes)
        pump(0.5)
        viewer.add_image(np.zeros((300, 400), np.float32), name=f"map {round_}", contrast_limits=(0, 1))
        pump(1.0)
    print("drawn after removals", flush=True)
    viewer.close()
""")


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs the X display the GUI tests run under")
def test_removing_a_shapes_layer_with_the_dock_open_does_not_crash_the_viewer(tmp_path):
    env = dict(os.environ, NAPARI_CONFIG=str(tmp_path / "napari.yaml"), PYTHONFAULTHANDLER="1")
    env.pop("QT_QPA_PLATFORM", None)  # the real (Xvfb) display: the crash needs the GL canvas drawn
    run = subprocess.run([sys.executable, "-c", SCRIPT, "dock", str(tmp_path / "project")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "drawn after removals" in run.stdout, (run.returncode, run.stderr[-3000:])


def test_a_dock_opened_through_npe2_watches_its_viewer_once(recwarn):
    """npe2 hands the dock napari's PublicOnlyProxy of the viewer, which refuses new attributes: the first
    watch must still be recorded (no warning, True), and a second dock must not connect a second handler."""
    from napari.components import ViewerModel
    from napari.utils._proxies import PublicOnlyProxy

    from napari_cdma._shapes_keepalive import keep_removed_shapes_visuals

    viewer = ViewerModel()
    before = len(viewer.layers.events.removing.callbacks)
    assert keep_removed_shapes_visuals(PublicOnlyProxy(viewer)) is True
    assert keep_removed_shapes_visuals(PublicOnlyProxy(viewer)) is True
    assert keep_removed_shapes_visuals(viewer) is True
    assert len(viewer.layers.events.removing.callbacks) == before + 1
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]
