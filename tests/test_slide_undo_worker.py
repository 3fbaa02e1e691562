"""Predict view and Export undo the windows withdrawn from the project in the slide's store in their own worker
thread, first, never on the GUI thread: a window withdrawn while the panel did not watch (its timer stopped) is
undone in the slide's labels and pyramid by the time the job ends, an edit window open over it is read again in the
worker and shows the restored labels in place (no layer removed), and the export does not hold it. A real napari
viewer (Xvfb), a real pyramidal TIFF built from the GlaS test images, real zarr stores on disk."""
from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import numpy as np
from test_slide_edit_worker import _ticking
from test_widget_slide import _accept, _assert_same_glands, _edit, _exported, _labels, _predicted_in_dock

from napari_cdma._layers import names_for
from napari_cdma._slide_view import window_instances
from napari_cdma.project import slide_regions
from src_model.slide_store import open_store


def _withdrawn_unwatched(qtbot, panel, dock, store_path):
    """Accept an edit (glands erased and added) over the view, then withdraw it from the project store while the
    panel does not watch: the store still holds it. Returns the edit window's layer id."""
    layer = _edit(qtbot, panel)
    assert layer is not None, panel.last_message
    edited = np.array(layer.data)
    edited[8:40, 8:72] = np.where(edited[8:40, 8:72] > 0, 0, edited.max() + 1)
    layer.data = edited
    record = _accept(qtbot, panel)
    assert record is not None, panel.last_message
    panel._watch.stop()  # the panel does not notice the withdrawal: the job must undo it
    dock.store.withdraw(record.region_id)
    return record, layer.unique_id


def _undo_threads(monkeypatch):
    """Record the thread of each undoing of withdrawn windows in a slide's store (the project's
    ``restore_withdrawn``, which every undoing calls)."""
    threads = []
    real = slide_regions.restore_withdrawn

    def recording(*args, **kwargs):
        threads.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(slide_regions, "restore_withdrawn", recording)
    return threads


def _assert_undone(viewer, panel, store_path, predicted, window_id):
    for level, want in enumerate(predicted):  # the slide's labels and their pyramid as predicted
        np.testing.assert_array_equal(np.asarray(open_store(store_path).glands[level][:]), want)
    w = panel.window  # the open edit window is the same layer and shows the restored labels, one label per gland
    assert w is not None and viewer.layers[w["name"]].unique_id == window_id
    y0, x0, y1, x1 = w["box"]
    _assert_same_glands(np.asarray(viewer.layers[w["name"]].data), window_instances(predicted[0][y0:y1, x0:x1]))
    np.testing.assert_array_equal(np.asarray(w["predicted"]), predicted[0][y0:y1, x0:x1])
    assert "edit window over it now shows the slide's labels" in panel.last_message, panel.last_message


def _withdrawn_case(make_napari_viewer, qtbot, tmp_path, slide_path, monkeypatch):
    """The slide predicted in the dock, an accepted window withdrawn but not undone yet, the undo's threads and
    the layers removed recorded from now on."""
    viewer, slide_layer, dock, panel = _predicted_in_dock(make_napari_viewer, qtbot, tmp_path, slide_path)
    store_path = tmp_path / "case.cdma.zarr"
    predicted = _labels(open_store(store_path))
    record, window_id = _withdrawn_unwatched(qtbot, panel, dock, store_path)
    case = SimpleNamespace(viewer=viewer, slide_layer=slide_layer, panel=panel, store_path=store_path,
                           predicted=predicted, record=record, window_id=window_id,
                           threads=_undo_threads(monkeypatch), removed=[])
    viewer.layers.events.removed.connect(lambda e: case.removed.append(e.value.name))
    return case


def _assert_the_job_undid_it(qtbot, case, done, timeout):
    """The running job ends having undone the withdrawn window off the GUI thread (its message starts with
    ``done`` and names it), the store and the layers as before the window was accepted, no layer removed."""
    panel, viewer = case.panel, case.viewer
    qtbot.waitUntil(lambda: not panel.running, timeout=timeout)
    assert case.threads and threading.get_ident() not in case.threads, case.threads  # never on the GUI thread
    assert panel.last_message.startswith(done), panel.last_message
    assert f"Withdrawn window(s) {case.record.region_id} undone" in panel.last_message, panel.last_message
    _assert_undone(viewer, panel, case.store_path, case.predicted, case.window_id)
    assert case.removed == [], case.removed
    np.testing.assert_array_equal(np.asarray(viewer.layers[f"{case.slide_layer.name} glands"].data[0][:]),
                                  case.predicted[0])


def test_predict_view_undoes_withdrawn_windows_in_its_worker(make_napari_viewer, qtbot, tmp_path, slide_path,
                                                             monkeypatch):
    case = _withdrawn_case(make_napari_viewer, qtbot, tmp_path, slide_path, monkeypatch)
    viewer, slide_layer, panel = case.viewer, case.slide_layer, case.panel
    assert not np.array_equal(np.asarray(open_store(case.store_path).glands[0][:]), case.predicted[0])
    seen = []  # the store glands' slices, the accepted windows' outline set, a 10 ms timer's ticks, in order
    viewer.layers[f"{slide_layer.name} glands"].events.set_data.connect(lambda _e: seen.append("glands"))
    viewer.layers[names_for(slide_layer.name)["accepted"]].events.data.connect(lambda _e: seen.append("outline"))
    timer, _, _ = _ticking()
    timer.timeout.connect(lambda: seen.append("tick"))

    assert panel.predict_view() is True, panel.last_message
    assert panel.running and not panel.export_button.isEnabled()
    assert panel.export_geojson(tmp_path / "x.geojson") is False and "prediction is running" in panel.last_message
    _assert_the_job_undid_it(qtbot, case, "Predicted", 180_000)
    assert panel.window_list.count() == 0  # the accepted windows follow the project
    timer.stop()
    # the result is shown in turns of the event loop of its own: the viewer runs between the store's refresh and
    # the outlines (the withdrawn window's removed)
    assert "glands" in seen and "outline" in seen, seen
    last_glands = len(seen) - 1 - seen[::-1].index("glands")
    assert "tick" in seen[last_glands:seen.index("outline", last_glands)], seen
    assert len(viewer.layers[names_for(slide_layer.name)["accepted"]].data) == 0


def test_export_undoes_withdrawn_windows_in_its_worker(make_napari_viewer, qtbot, tmp_path, slide_path, monkeypatch):
    from src_model.export import rasterize

    case = _withdrawn_case(make_napari_viewer, qtbot, tmp_path, slide_path, monkeypatch)
    panel, predicted = case.panel, case.predicted

    geojson = tmp_path / "case.geojson"
    assert panel.export_geojson(geojson) is True, panel.last_message
    assert panel.running and panel.last_message.startswith("Exporting")
    assert panel.predict_view() is False and "export is running" in panel.last_message
    _assert_the_job_undid_it(qtbot, case, "Exported", 120_000)
    back = rasterize(json.loads(geojson.read_text())["features"], predicted[0].shape) > 0
    truth = _exported(predicted[0])
    assert (back & truth).sum() / (back | truth).sum() >= 0.99  # the withdrawn window is not exported


def test_export_refuses_when_the_project_store_cannot_be_opened(make_napari_viewer, qtbot, tmp_path, slide_path):
    """Windows were accepted into the store but the project store cannot be opened: nothing is exported (a
    withdrawn window could be in it), and the panel says why, without starting a job."""
    viewer, slide_layer, dock, panel = _predicted_in_dock(make_napari_viewer, qtbot, tmp_path, slide_path)
    _withdrawn_unwatched(qtbot, panel, dock, tmp_path / "case.cdma.zarr")

    def no_store():
        raise RuntimeError("no project store")

    panel._get_store = no_store
    geojson = tmp_path / "case.geojson"
    assert panel.export_geojson(geojson) is False
    assert not panel.running and not geojson.exists()
    assert panel.last_message.startswith("Not exported: withdrawn windows could not be undone"), panel.last_message
