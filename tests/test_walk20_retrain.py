"""Walk 20, Retrain panel: "Keep new model anyway" after that very version was made current elsewhere, and a verdict
that says how far automatic promotion is (real store on disk, real checkpoint, real panels under Xvfb; the Done
event is built here instead of training, as in tests/test_widget_retrain.py)."""
from __future__ import annotations

from napari_cdma._widget_retrain import RetrainPanel
from napari_cdma._widget_versions import VersionsPanel
from napari_cdma.project.events import Done, ImageScore
from napari_cdma.project.retrain_job import holdout_shortfall
from napari_cdma.project.store import ProjectStore


def _store(tmp_path, lite_checkpoint):
    store = ProjectStore.open(tmp_path / "store")
    store.add_model(lite_checkpoint, parent=None, note="random lite", promoted=True)
    return store


def _handle(qtbot, panel, event):
    """The panel handles a job event; a finished job's model is registered on a worker thread: wait for it."""
    panel._handle(event)
    qtbot.waitUntil(lambda: panel.state != "registering", timeout=30_000)


def _thin(lite_checkpoint, n_holdout=1, gland_px=81):
    """The walk's job: one held-out region with 81 px of gland (not scored), agreement 0.967 on 3 samples."""
    return Done(checkpoint=str(lite_checkpoint), parent_model="v0001", steps_done=3, n_holdout=n_holdout,
                message=holdout_shortfall(n_holdout, gland_px) + "; promote it by hand if wanted",
                agreement=0.967, min_agreement=0.95, agreement_crops=3,
                per_image=(ImageScore("testA_1.png", n_holdout=n_holdout, agreement=0.967),))


def test_keep_anyway_does_not_act_on_a_version_made_current_elsewhere(qtbot, tmp_path, lite_checkpoint):
    """Walk 20: v0002 not promoted, then made current with Roll back in the Versions panel; Keep stayed on and a
    click predicted again and said "Current model: v0002 (kept by hand)"."""
    store = _store(tmp_path, lite_checkpoint)
    panel = RetrainPanel(lambda: store)
    qtbot.addWidget(panel)
    _handle(qtbot, panel, _thin(lite_checkpoint))
    assert panel.last_record.version == "v0002" and not panel.last_record.promoted
    assert panel.keep_button.isVisibleTo(panel)

    versions = VersionsPanel(lambda: store)
    qtbot.addWidget(versions)
    assert versions.set_current("v0002")  # "Roll back to selected" on v0002
    changed = []
    panel.model_changed.connect(changed.append)
    panel.keep_button.click()
    assert changed == []  # nothing to predict again: the model did not change
    assert "kept by hand" not in panel.last_message
    assert panel.last_message == "v0002 is already the current model."
    assert not panel.keep_button.isVisibleTo(panel)
    assert store.current_model_version == "v0002"


def test_model_now_current_hides_keep_only_for_the_retrained_version(qtbot, tmp_path, lite_checkpoint):
    """The dock tells the panel which version became current (RetrainPanel.model_now_current): Keep goes when it is
    the retrained one, and stays when another one is (the retrained model can still be kept)."""
    store = _store(tmp_path, lite_checkpoint)
    panel = RetrainPanel(lambda: store)
    qtbot.addWidget(panel)
    _handle(qtbot, panel, _thin(lite_checkpoint))
    assert panel.keep_button.isVisibleTo(panel)

    versions = VersionsPanel(lambda: store)
    qtbot.addWidget(versions)
    versions.model_changed.connect(panel.model_now_current)  # as the dock's _on_model_changed will
    store.add_model(lite_checkpoint, parent="v0001", note="another", promoted=False)  # v0003
    assert versions.set_current("v0003")
    assert panel.keep_button.isVisibleTo(panel)  # another version: v0002 can still be kept
    assert versions.set_current("v0002")
    assert not panel.keep_button.isVisibleTo(panel)
    assert versions.set_current("v0001")  # rolled back again: Keep does not come back by itself
    assert not panel.keep_button.isVisibleTo(panel)
