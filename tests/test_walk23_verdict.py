"""Walk 23, Retrain panel: the verdict of a job whose one held-out region was accepted unedited was some 19 lines in
the 280 px dock and said "1.000 -> 0.997" twice. On screen now a few short lines (the version, promoted or not and why
in a few words, the held-out Dice once, what to do); the whole verdict in the tooltip and ``last_message``. Real store
on disk, real checkpoint, real panels under Xvfb; the Done event (with the worker's split) is written here instead of
training (as in tests/test_holdout_unedited.py's finish test)."""
from __future__ import annotations

import re
import shutil

from napari_cdma._widget_retrain import RetrainPanel
from napari_cdma._widget_versions import VersionsPanel
from napari_cdma.project.events import Done, ImageScore
from napari_cdma.project.retrain_job import HeldPart, HoldoutSplit, holdout_shortfall
from napari_cdma.project.store import ProjectStore

DOCK_WIDTH = 280


def _panel(qtbot, tmp_path, lite_checkpoint):
    store = ProjectStore.open(tmp_path / "store")
    store.add_model(lite_checkpoint, parent=None, note="random lite", promoted=True)
    panel = RetrainPanel(lambda: store)
    qtbot.addWidget(panel)
    return store, panel


def _handle(qtbot, panel, event):
    panel._handle(event)
    qtbot.waitUntil(lambda: panel.state != "registering", timeout=30_000)
    assert panel.state == "done", panel.last_message


def _walk23(tmp_path, lite_checkpoint):
    """The walk's job: r0002 held out, accepted unedited from v0001's prediction; Dice 1.000 -> 0.997 there."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(lite_checkpoint, run / "final.pt")
    split = HoldoutSplit(HeldPart(), HeldPart(1, 2000, 1.0, 0.997), {"v0001": 1}, ("r0002@1",))
    return Done(checkpoint=str(run / "final.pt"), parent_model="v0001", steps_done=3, n_holdout=1, old_dice=1.0,
                new_dice=0.997, better=False, agreement=0.99, min_agreement=0.95, agreement_crops=3,
                per_image=(ImageScore("testA_1.png", n_holdout=1, agreement=0.99),), holdout_split=split.to_json())


def _short(panel):
    """The verdict on screen, checked short: at most 4 lines, under 45% of the whole verdict, no figure twice, and
    at most 6 lines tall in the dock's width; the whole verdict in its tooltip."""
    text, full = panel.result_label.text(), panel.last_message
    assert panel.result_label.toolTip() == full
    assert len(text.splitlines()) <= 4, text
    assert len(text) <= 0.45 * len(full), (text, full)
    figures = re.findall(r"\d+\.\d+", text)
    assert len(figures) == len(set(figures)), text
    line = panel.result_label.fontMetrics().lineSpacing()
    assert panel.result_label.heightForWidth(DOCK_WIDTH) <= 6 * line, text
    return text, full


def test_the_verdict_is_short_on_screen_and_whole_in_its_tooltip(qtbot, tmp_path, lite_checkpoint):
    store, panel = _panel(qtbot, tmp_path, lite_checkpoint)
    _handle(qtbot, panel, _walk23(tmp_path, lite_checkpoint))
    full = panel.last_message
    # the whole verdict as before (walk 22's words), the Dice in it twice
    assert full.startswith("v0002: not promoted; held-out Dice 1.000 -> 0.997 on 1 region accepted unedited; ")
    assert "v0001 scores 1.000 there by construction" in full and full.count("1.000 -> 0.997") == 2, full
    assert full.endswith("Keep new model anyway if you trust it.")
    text, _ = _short(panel)
    assert text.splitlines()[0] == "v0002: not promoted: too little held out to decide.", text
    assert text.count("1.000 -> 0.997") == 1 and "accepted unedited" in text, text
    assert text.splitlines()[-1] == "Keep new model anyway if you trust it." and panel.keep_button.isVisibleTo(panel)

    # made current by hand (Versions panel): the last line says so, short still, and the tooltip whole
    versions = VersionsPanel(lambda: store)
    qtbot.addWidget(versions)
    versions.model_changed.connect(panel.model_now_current)  # as the dock's _on_model_changed will
    assert versions.set_current("v0002")
    text, full = _short(panel)
    assert full.endswith("v0002 has been made current by hand since.") and "Keep new model anyway" not in full
    assert text.startswith("v0002: not promoted: too little held out to decide.\nHeld-out Dice 1.000 -> 0.997")
    assert text.endswith("\nv0002 has been made current by hand since.") and "Keep new model" not in text, text


def test_an_unscored_verdict_is_short_too_and_other_messages_are_not_cut(qtbot, tmp_path, lite_checkpoint):
    """Walk 20's job: one held-out region with 81 px of gland (no Dice): the worker's words once, no tooltip left
    behind on the next message."""
    store, panel = _panel(qtbot, tmp_path, lite_checkpoint)
    _handle(qtbot, panel, Done(checkpoint=str(lite_checkpoint), parent_model="v0001", steps_done=3, n_holdout=1,
                               message=holdout_shortfall(1, 81) + "; promote it by hand if wanted", agreement=0.967,
                               min_agreement=0.95, agreement_crops=3))
    text, full = _short(panel)
    assert text.startswith("v0002: not promoted: too little held out to decide.\nHeld-out score rests on 81 px"), text
    assert text.count("81 px") == 1 and "which needs" in full, (text, full)
    assert panel.keep_anyway()
    assert panel.result_label.text() == panel.last_message == "Current model: v0002 (kept by hand)."
    assert panel.result_label.toolTip() == ""


def test_the_short_why_comes_from_the_rules_code_not_from_the_words_of_its_reason(qtbot, tmp_path, lite_checkpoint):
    """Review: the short verdict picked its why by matching words of the rule's reason (a reworded reason would have
    changed it silently). The rule gives a code (Why) and whether the user may keep the model anyway; the version
    keeps both; the short verdict says the code's words whatever the reason says."""
    from napari_cdma.project.retrain_job import WHY_SHORT, Why, rule_decision, verdict_short

    store, panel = _panel(qtbot, tmp_path, lite_checkpoint)
    ev = _walk23(tmp_path, lite_checkpoint)
    split = HoldoutSplit.from_json(ev.holdout_split)
    decision = rule_decision(ev, split=split)
    assert (decision.promote, decision.why, decision.keep_anyway) == (False, Why.TOO_LITTLE, True)
    _handle(qtbot, panel, ev)
    metrics = panel.last_record.metrics
    assert metrics["decision_code"] == "too_little" and metrics["keep_anyway"] is True
    held = "held-out Dice 1.000 -> 0.997 on 1 region accepted unedited"
    for why in Why:
        for keep in (False, True):
            lines = verdict_short("v0002", False, why, held, keep).splitlines()
            assert lines[0] == f"v0002: not promoted: {WHY_SHORT[why]}.", lines
            assert lines[1] == "Held-out Dice 1.000 -> 0.997 on 1 region accepted unedited."
            assert lines[2] == ("Keep new model anyway if you trust it." if keep else "The current model stays.")
    assert verdict_short("v0002", True, Why.NOT_BETTER, held).splitlines()[::2] == [
        "v0002: promoted: better on held-out regions.", "It is now the current model."]
    # the code alone picks the words (no reason given at all)
    assert WHY_SHORT[Why.CHANGED_UNCORRECTED] == "it changed uncorrected tissue"
    assert verdict_short("v0003", False, Why.CHANGED_UNCORRECTED, held).startswith(
        "v0003: not promoted: it changed uncorrected tissue.")


def test_the_versions_list_says_which_held_out_dice_it_shows(qtbot, tmp_path, lite_checkpoint):
    """Review: the Versions list said "held-out Dice 0.997" of a version whose one held-out region was accepted
    unedited (its truth the current model's own prediction), as if it were a score of fixing errors. With a split the
    row says the edited regions' Dice and the unedited ones' apart, short enough for the dock; the tooltip says
    what each is, with the parent's figures; a version without a split reads as before."""
    from napari_cdma.project.retrain_job import finish

    store, panel = _panel(qtbot, tmp_path, lite_checkpoint)
    _handle(qtbot, panel, _walk23(tmp_path, lite_checkpoint))  # v0002: edited none, unedited 1.000 -> 0.997
    both = HoldoutSplit(HeldPart(3, 5000, 0.80, 0.85), HeldPart(2, 2000, 1.0, 0.99), {"v0001": 2}, ("r1@1", "r2@1"))
    finish(store, Done(checkpoint=str(lite_checkpoint), parent_model="v0001", steps_done=3, n_holdout=5,
                       old_dice=0.88, new_dice=0.91, better=True, agreement=0.99, min_agreement=0.95,
                       holdout_split=both.to_json()), promote=False)  # v0003
    finish(store, Done(checkpoint=str(lite_checkpoint), parent_model="v0001", steps_done=3, n_holdout=3,
                       old_dice=0.80, new_dice=0.85, better=True, agreement=0.99, min_agreement=0.95),
           promote=False)  # v0004: no split
    versions = VersionsPanel(lambda: store)
    qtbot.addWidget(versions)
    versions.refresh()
    items = [versions.version_list.item(i) for i in range(versions.version_list.count())]
    rows = {item.text().split()[1 if item.text().startswith("*") else 0]: item for item in items}
    assert rows["v0002"].text() == "  v0002  unedited Dice 0.997  (from v0001, not promoted)"
    assert rows["v0003"].text() == "  v0003  edited 0.850, unedited 0.990  (from v0001, not promoted)"
    assert rows["v0004"].text() == "  v0004  held-out Dice 0.850  (from v0001, not promoted)"
    assert rows["v0004"].toolTip() == rows["v0004"].text()
    tip = rows["v0003"].toolTip()
    assert tip.startswith(rows["v0003"].text() + "\n"), tip
    assert ("Held-out Dice 0.850 on the 3 edited held-out regions (v0001: 0.800); 0.990 on the 2 held-out regions "
            "accepted unedited (v0001: 1.000), the check that it did not get worse on confirmed tissue") in tip, tip
    assert tip.endswith("; pooled over all 5: 0.910."), tip
    assert "1 held-out region accepted unedited (v0001: 1.000)" in rows["v0002"].toolTip()
    # the version and its score fit the dock's width on one line (the rest wraps)
    metrics = versions.version_list.fontMetrics()
    for item in items:
        head = item.text().split("  (")[0]
        assert metrics.horizontalAdvance(head) <= DOCK_WIDTH - 40, head
