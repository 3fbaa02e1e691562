"""Walk 26, Retrain panel.

Finding 3: after *Keep new model anyway* and *Roll back to selected* (bundled), the Versions panel and the store said
bundled was current while the Retrain panel still said "Current model: v0001 (kept by hand)." over v0001's per-image
table. The Retrain line now follows every change of the current model, and the table is labelled as v0001's.

Finding 4: "v0001: not promoted: too little held out to decide. / Held-out Dice 0.939 -> 0.894 on 1 region. / Keep new
model anyway if you trust it." did not say the new model scored lower. The first line now says which way the held-out
score went, and the invitation to keep it is worded with a fall in mind.

Real dock in a napari viewer (Xvfb), real store on disk, real checkpoint; the job's Done event (the walk's numbers) is
handed to the panel as its poll does, instead of a minutes-long training on the shared CPUs (as test_walk23_verdict)."""
from __future__ import annotations

import shutil

from _dock import open_dock, wait_settled

from napari_cdma._widget_retrain import RetrainPanel
from napari_cdma.project.events import Done, ImageScore
from napari_cdma.project.retrain_job import HeldPart, HoldoutSplit
from napari_cdma.project.store import BUNDLED, ProjectStore


def _done(tmp_path, checkpoint, old=0.939, new=0.894, n=1, parent=BUNDLED, split=None):
    """The walk's job: testB_1 with 1 held-out region (r0005), Dice 0.939 -> 0.894, agreement 0.975."""
    run = tmp_path / f"run_{old}_{new}_{n}"
    run.mkdir()
    shutil.copy(checkpoint, run / "final.pt")
    return Done(checkpoint=str(run / "final.pt"), parent_model=parent, steps_done=5, n_holdout=n, old_dice=old,
                new_dice=new, better=new > old, agreement=0.975, min_agreement=0.95, agreement_crops=4,
                per_image=(ImageScore("testB_1.png", n_holdout=n, old_dice=old, new_dice=new, agreement=0.975),),
                holdout_split=None if split is None else split.to_json())


def _handle(qtbot, panel, event):
    panel._handle(event)  # as poll() does with the job's last event
    qtbot.waitUntil(lambda: panel.state != "registering", timeout=30_000)
    assert panel.state == "done", panel.last_message


def _lines(panel):
    return panel.result_label.text().splitlines()


def test_the_retrain_line_follows_keep_and_roll_back(make_napari_viewer, qtbot, tmp_path, lite_checkpoint):
    store = ProjectStore.open(tmp_path / "store")
    assert store.current_model_version == BUNDLED
    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer, store.root)
    panel, versions = dock.retrain_panel, dock.versions_panel
    _handle(qtbot, panel, _done(tmp_path, lite_checkpoint))
    wait_settled(dock)
    assert panel.last_record.version == "v0001" and not panel.last_record.promoted
    panel.keep_button.click()
    wait_settled(dock)
    assert dock.store.current_model_version == "v0001"
    assert panel.result_label.text() == "Current model: v0001 (kept by hand)."

    versions.version_list.setCurrentRow(0)  # "* bundled (shipped model)"
    versions.rollback_button.click()
    wait_settled(dock)
    assert dock.store.current_model_version == BUNDLED and versions.status.text() == "Current model: bundled."
    text = panel.result_label.text()
    assert "kept by hand" not in text and "v0001 (" not in text, text
    assert _lines(panel)[0] == "Rolled back to bundled, now the current model (chosen in Model versions).", text
    assert _lines(panel)[1] == "Below: v0001's retraining result; v0001 is not current.", text
    # still v0001's table, and it says so, with the two models it compares
    caption = panel.image_caption.text()
    assert panel.image_table.isVisibleTo(panel)
    assert caption.startswith("v0001's retraining, per image: held-out Dice, bundled \u2192 v0001;"), caption
    assert "v0001's verdict: v0001: not promoted;" in panel.result_label.toolTip()  # the verdict whole in its tip

    # forward to v0001 again: the line says it is current (by hand), the verdict back on screen
    versions.version_list.setCurrentRow(1)
    versions.rollback_button.click()
    wait_settled(dock)
    assert dock.store.current_model_version == "v0001"
    assert _lines(panel)[-1] == "v0001 has been made current by hand since.", panel.result_label.text()
    assert _lines(panel)[0].startswith("v0001 scored lower"), panel.result_label.text()


def test_a_promoted_verdict_stands_and_a_roll_back_after_it_is_said(make_napari_viewer, qtbot, tmp_path,
                                                                      lite_checkpoint):
    """A promotion makes v0001 current through the dock (model_changed -> model_now_current): its verdict stands (on
    HEAD before walk 26 it was rewritten "v0001 has been made current by hand since."); a roll back is said, and a roll
    forward says the verdict again."""
    store = ProjectStore.open(tmp_path / "store")
    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer, store.root)
    panel, versions = dock.retrain_panel, dock.versions_panel
    _handle(qtbot, panel, _done(tmp_path, lite_checkpoint, 0.80, 0.86, 3))  # better on 3 held-out regions
    wait_settled(dock)
    assert panel.last_record.promoted and dock.store.current_model_version == "v0001"
    verdict = panel.result_label.text()
    assert verdict.endswith("\nIt is now the current model."), verdict
    assert versions.roll_back(BUNDLED)
    wait_settled(dock)
    assert _lines(panel)[0] == "Rolled back to bundled, now the current model (chosen in Model versions).", verdict
    assert versions.roll_back("v0001")
    wait_settled(dock)
    assert panel.result_label.text() == verdict


def test_the_verdict_says_the_new_model_scored_lower(make_napari_viewer, qtbot, tmp_path, lite_checkpoint):
    """The walk's numbers in the dock: 1 held-out region, Dice 0.939 -> 0.894."""
    store = ProjectStore.open(tmp_path / "store")
    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer, store.root)
    panel = dock.retrain_panel
    _handle(qtbot, panel, _done(tmp_path, lite_checkpoint))
    assert _lines(panel) == [
        "v0001 scored lower on your held-out region: Dice 0.939 -> 0.894; too little held out to decide anyway.",
        "Not promoted: the current model stays.",
        "Keep new model anyway only if its glands look better to you despite the lower score."], _lines(panel)
    full = panel.result_label.toolTip()
    assert full == panel.last_message
    assert full.startswith("v0001: not promoted; held-out Dice 0.939 -> 0.894 on 1 region (v0001 scored lower on "
                           "your held-out region); "), full
    assert full.endswith("; Keep new model anyway only if its glands look better to you despite the lower score."), full
    assert "if you trust it" not in full and panel.keep_button.isVisibleTo(panel)


def test_a_rise_on_too_little_is_said_as_thin_evidence(qtbot, tmp_path, lite_checkpoint):
    store = ProjectStore.open(tmp_path / "store")
    panel = RetrainPanel(lambda: store)
    qtbot.addWidget(panel)
    _handle(qtbot, panel, _done(tmp_path, lite_checkpoint, 0.894, 0.939, 2))
    assert _lines(panel) == [
        "v0001 scored higher on your 2 held-out regions: Dice 0.894 -> 0.939, but that is thin evidence: too little "
        "held out to decide.",
        "Not promoted: the current model stays.",
        "Keep new model anyway if you trust it."], _lines(panel)
    assert "(v0001 scored higher on your 2 held-out regions)" in panel.last_message

    # the same figures to three decimals: neither lower nor higher, the verdict as before
    _handle(qtbot, panel, _done(tmp_path, lite_checkpoint, 0.9391, 0.9389, 1))
    assert _lines(panel)[0] == "v0002: not promoted: too little held out to decide.", _lines(panel)
    assert _lines(panel)[2] == "Keep new model anyway if you trust it."


def test_with_unedited_held_out_regions_the_trend_is_the_edited_ones(qtbot, tmp_path, lite_checkpoint):
    """The rule judges "better" on the edited held-out regions when some were accepted unedited (walk 22): the
    trend is theirs, and the unedited ones' Dice is said once, on the second line."""
    store = ProjectStore.open(tmp_path / "store")
    panel = RetrainPanel(lambda: store)
    qtbot.addWidget(panel)
    split = HoldoutSplit(HeldPart(1, 5000, 0.85, 0.80), HeldPart(1, 4000, 1.0, 0.995), {BUNDLED: 1}, ("r0002@1",))
    _handle(qtbot, panel, _done(tmp_path, lite_checkpoint, 0.93, 0.90, 2, split=split))
    assert _lines(panel) == [
        "v0001 scored lower on your edited held-out region: Dice 0.850 -> 0.800; too little held out to decide anyway.",
        "Not promoted; 1.000 -> 0.995 on 1 region accepted unedited.",
        "Keep new model anyway only if its glands look better to you despite the lower score."], _lines(panel)
