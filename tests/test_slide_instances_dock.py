"""The numbered glands of a whole slide in the dock: a completely predicted store opened in napari shows its
glands numbered (one label per gland, a gland cut by chunk sides one label, the numbers cdma export gives), with
the per-gland table; the numbers are kept in the store and reused when it is opened again, and numbered again
after an accepted edit window. A real napari viewer (Xvfb), a real pyramidal TIFF of GlaS test images, the
bundled model, real zarr stores."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from test_widget_slide import _accept, _edit, _predict, _view

from napari_cdma._slide_view import NUMBERED
from napari_cdma._widget_slide import NUMBERED_OPACITY
from src_model.export import GlandExtractor, instances_current
from src_model.slide_store import open_store

PLUGIN, WIDGET = "napari-cdma", "CDMA"
CHUNK = 256  # the chunk of conftest.predicted_slide


def _open(make_napari_viewer, tmp_path, store_path):
    viewer = make_napari_viewer()
    image, *_ = viewer.open(str(store_path), plugin=PLUGIN)
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert dock.open_store(tmp_path / "project") is not None
    return viewer, image, dock.slide_panel


def _numbered(qtbot, panel, name):
    qtbot.waitUntil(lambda: not panel.numbering, timeout=120_000)
    assert f"{name} {NUMBERED}" in panel.viewer.layers, panel.number_status.text()
    return panel.viewer.layers[f"{name} {NUMBERED}"]


def _export_numbers(store_path):
    ex = GlandExtractor(open_store(store_path))
    n = sum(1 for _ in ex.features())
    lab = np.zeros(ex.store.glands[0].shape, np.uint32)
    for cy, cx, chunk in ex.label_chunks():
        y0, x0, y1, x1 = ex.store.chunk_box(cy, cx)
        lab[y0:y1, x0:x1] = chunk
    return lab, n


def test_a_predicted_slide_shows_numbered_glands_reused_when_reopened(make_napari_viewer, qtbot, tmp_path,
                                                                     predicted_slide):
    viewer, image, panel = _open(make_napari_viewer, tmp_path, predicted_slide)
    layer = _numbered(qtbot, panel, image.name)
    assert "numbered as Export numbers them" in panel.number_status.text()
    lab = np.asarray(layer.data[0])
    want, n = _export_numbers(predicted_slide)
    np.testing.assert_array_equal(lab, want)  # the numbers of cdma export (its GeoJSON's order)
    assert layer.multiscale and len(layer.data) == open_store(predicted_slide).info.n_levels
    assert len(np.unique(lab[lab > 0])) == n >= 5
    crossing = 0
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        assert ndi.label(lab[sl] == i)[1] == 1  # one piece
        ys, xs = np.nonzero(lab == i)
        crossing += len(set(zip((ys // CHUNK).tolist(), (xs // CHUNK).tolist(), strict=True))) > 1
    assert crossing >= 1, "a gland across a chunk side is one label"
    # under the glands' outlines; the per-gland table: one row per number, level-0 (world) boxes
    assert viewer.layers.index(layer) < viewer.layers.index(f"{image.name} glands")
    rows = panel.gland_rows[image.name]
    assert [r["id"] for r in rows] == list(range(1, n + 1))
    big = max(rows, key=lambda r: r["area"])
    y0, x0, y1, x1 = big["bbox"]
    assert big["area"] == (lab == big["id"]).sum() and (lab[y0:y1, x0:x1] == big["id"]).sum() == big["area"]
    cy, cx = np.argwhere(lab == big["id"])[0]
    assert f"gland {big['id']}" in panel.value_text((float(cy), float(cx)))
    # reopened: the store's numbers are shown as they are, nothing is written again
    files = {p: p.stat().st_mtime_ns for p in (predicted_slide / "labels" / "instances").rglob("*") if p.is_file()}
    viewer.close()
    viewer, image, panel = _open(make_napari_viewer, tmp_path, predicted_slide)
    layer = _numbered(qtbot, panel, image.name)
    assert "as the store held them" in panel.number_status.text()
    np.testing.assert_array_equal(np.asarray(layer.data[0]), want)
    instances = predicted_slide / "labels" / "instances"
    assert files == {p: p.stat().st_mtime_ns for p in instances.rglob("*") if p.is_file()}


def test_an_accepted_window_numbers_the_glands_again(make_napari_viewer, qtbot, tmp_path, predicted_slide):
    viewer, image, panel = _open(make_napari_viewer, tmp_path, predicted_slide)
    before = np.asarray(_numbered(qtbot, panel, image.name).data[0])
    _view(viewer, (320.0, 384.0), 700)  # the whole slide: its edit window too
    _predict(qtbot, panel)  # nothing to compute: the view of the store, for the edit window
    window = _edit(qtbot, panel)
    assert window is not None, panel.last_message
    edited = np.array(window.data)
    inner = np.bincount(edited.ravel(), minlength=edited.max() + 1)
    inner[np.unique(np.concatenate([edited[0], edited[-1], edited[:, 0], edited[:, -1]]))] = 0
    assert inner.any(), "a gland inside the window"
    erased = int(inner.argmax())  # the window's largest gland that lies inside it: erased
    edited[edited == erased] = 0
    window.data = edited
    assert _accept(qtbot, panel) is not None, panel.last_message
    assert not instances_current(open_store(predicted_slide))  # the store's numbers are out of date ...
    layer = _numbered(qtbot, panel, image.name)  # ... until numbered again after the accept
    assert layer.visible and layer.opacity == NUMBERED_OPACITY and instances_current(open_store(predicted_slide))
    after = np.asarray(layer.data[0])
    want, n = _export_numbers(predicted_slide)
    np.testing.assert_array_equal(after, want)
    y0, x0, _, _ = panel.window["box"]
    ys, xs = np.nonzero(edited == 0)
    assert not after[ys + y0, xs + x0].any()  # nothing numbered where the window has no gland
    assert len(np.unique(after[after > 0])) == n < len(np.unique(before[before > 0]))
    # the window withdrawn: the labels as predicted, and the numbers as they were
    assert panel.withdraw_window(panel.last_record.region_id), panel.last_message
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    assert panel.last_message.startswith("Withdrew window"), panel.last_message
    layer = _numbered(qtbot, panel, image.name)
    assert layer.visible and instances_current(open_store(predicted_slide))
    np.testing.assert_array_equal(np.asarray(layer.data[0]), before)
    assert [r["id"] for r in panel.gland_rows[image.name]] == list(range(1, len(np.unique(before[before > 0])) + 1))


def test_closing_the_viewer_stops_the_numbering(make_napari_viewer, qtbot, tmp_path, predicted_slide):
    """The numbering's process does not outlive the viewer for long, and never leaves partial numbers."""
    import psutil

    viewer, image, panel = _open(make_napari_viewer, tmp_path, predicted_slide)
    me = psutil.Process()
    numbering = lambda: [p for p in me.children(recursive=True)  # noqa: E731
                         if "--in-store" in " ".join(p.cmdline())]
    qtbot.waitUntil(lambda: bool(numbering()), timeout=60_000)
    assert panel.numbering
    procs = list(panel._numbering_box["procs"])
    assert procs and procs[0].poll() is None
    viewer.close()
    # killed at once, not at its next progress line (none comes while numbers are only checked): a worker thread
    # still reading it when Python exits aborted the process (walk 7)
    assert procs[0].wait(timeout=0.5) is not None
    qtbot.waitUntil(lambda: not numbering(), timeout=30_000)
    from src_model.export import instances_info

    meta = instances_info(open_store(predicted_slide))
    assert meta is None or instances_current(open_store(predicted_slide))  # none, or complete and current
