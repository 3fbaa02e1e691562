"""The retrain panel's result: the rule's verdict and the per-image before / after table (real store, real
checkpoint, real Qt widget under Xvfb; the Done event is built here instead of training, which
tests/test_retrain_job.py and tests/test_widget.py run for real)."""
from __future__ import annotations

import numpy as np

from napari_cdma._widget_retrain import RetrainPanel
from napari_cdma.project.events import Done, ImageScore
from napari_cdma.project.store import ProjectStore


def _store(tmp_path, lite_checkpoint):
    store = ProjectStore.open(tmp_path / "store")
    store.add_model(lite_checkpoint, parent=None, note="random lite", promoted=True)
    return store


def _table(panel):
    """The per-image table's rows: an image's name (across both columns), then its [label, value] rows."""
    t = panel.image_table
    return [[t.item(i, 0).text()] if t.columnSpan(i, 0) == 2 else [t.item(i, j).text() for j in range(2)]
            for i in range(t.rowCount())]


def _handle(qtbot, panel, event):
    """The panel handles a job event; a finished job's model is registered on a worker thread: wait for it."""
    panel._handle(event)
    qtbot.waitUntil(lambda: panel.state != "registering", timeout=30_000)


def test_done_shows_each_image_before_after_and_agreement(qtbot, tmp_path, lite_checkpoint, monkeypatch):
    import threading

    from napari_cdma.project import retrain_job

    threads = []
    real_finish = retrain_job.finish
    monkeypatch.setattr(retrain_job, "finish", lambda *a, **k: threads.append(threading.current_thread())
                        or real_finish(*a, **k))
    store = _store(tmp_path, lite_checkpoint)
    panel = RetrainPanel(lambda: store)
    qtbot.addWidget(panel)
    assert panel.steps_spin.value() == 0 and panel.steps_spin.text() == "auto"  # the recipe's steps by default
    rows = (ImageScore("testA_1.png", n_holdout=2, old_dice=0.861, new_dice=0.902, agreement=0.981),
            ImageScore("testB_4.png", agreement=0.973))
    good = Done(checkpoint=str(lite_checkpoint), parent_model="v0001", steps_done=3, n_holdout=3, old_dice=0.85,
                new_dice=0.9, better=True, agreement=0.977, min_agreement=0.95, agreement_crops=4, per_image=rows)
    _handle(qtbot, panel, good)
    assert panel.state == "done" and panel.last_record.promoted
    # the model is checked (loaded as the plugin will) and registered off the GUI thread: 0.2-0.3 s of torch
    assert threads and threading.main_thread() not in threads
    assert panel.image_table.isVisibleTo(panel) and panel.image_caption.isVisibleTo(panel)
    # one image under the other: its name alone on its row (no file extension: a short name was elided behind its
    # held-out count, walk), then its held-out regions, its Dice current -> new, and its agreement
    assert _table(panel) == [["testA_1"], ["held out", "2 regions"], ["held-out Dice", "0.861 \u2192 0.902"],
                             ["agreement", "0.981"], ["testB_4"], ["held out", "none"], ["held-out Dice", "n/a"],
                             ["agreement", "0.973"]]
    assert "No held-out region yet" not in panel.image_caption.text()  # one image has held-out regions
    # in a dock as narrow as the plugin's, the table fits its width (it was cut on the right: walk)
    panel.resize(250, 700)
    panel.show()
    qtbot.waitExposed(panel)
    t = panel.image_table
    assert sum(t.columnWidth(j) for j in range(t.columnCount())) <= t.viewport().width() + 1
    assert t.item(0, 0).toolTip() == "testA_1.png" and t.item(0, 0).text() == "testA_1"  # the file's name in its tip
    assert "agreement on uncorrected tissue 0.977 (in 4 samples of your images)" in panel.last_message

    # the same scores, but the new model changed uncorrected tissue: not promoted, and the panel says why
    regressed = Done(**{**good.__dict__, "agreement": 0.62,
                        "per_image": (ImageScore("testA_1.png", 2, 0.861, 0.902, 0.62),)})
    _handle(qtbot, panel, regressed)
    assert not panel.last_record.promoted and store.current_model_version == "v0002"
    assert "changed the prediction of uncorrected tissue" in panel.last_message
    assert panel.keep_button.isVisibleTo(panel) and len(_table(panel)) == 4
    assert _table(panel)[3][0] == "agreement" and np.isclose(float(_table(panel)[3][1]), 0.62)


def test_texts_name_what_was_trained_on_and_never_score_too_little_gland(qtbot, tmp_path, lite_checkpoint):
    from napari_cdma._widget_versions import VersionsPanel
    from napari_cdma.project.events import Started
    from napari_cdma.project.retrain_job import MIN_HOLDOUT_FOR_PROMOTION, holdout_shortfall

    store = _store(tmp_path, lite_checkpoint)
    panel = RetrainPanel(lambda: store)
    qtbot.addWidget(panel)
    _handle(qtbot, panel, Started(model_version="bundled", n_labelled=4, n_unlabelled=1, n_holdout=1))
    assert panel.last_message == "Retraining bundled on 4 corrected regions + 1 unlabelled image; 1 held out."

    # the tester's run: one held-out region with ~30 px of gland (the worker does not score it)
    thin = Done(checkpoint=str(lite_checkpoint), parent_model="v0001", steps_done=3, n_holdout=1,
                message=holdout_shortfall(1, 30) + "; agreement with v0001 on uncorrected tissue 0.990 (4 crops)",
                agreement=0.99, min_agreement=0.95, agreement_crops=4,
                per_image=(ImageScore("testA_1.png", n_holdout=1, agreement=0.99),))
    _handle(qtbot, panel, thin)
    assert panel.last_message.startswith("v0002: not promoted; held-out score rests on 30 px of gland in 1 region: "
                                         "too little to compare the models")
    # the reason does not repeat what the message already said (pathologist walk)
    assert "; too little to promote automatically" in panel.last_message
    assert panel.last_message.count("held-out score rests on") == 1
    assert "n/a" not in panel.last_message and "0.000" not in panel.last_message and "Dice" not in panel.last_message
    assert _table(panel) == [["testA_1"], ["held out", "1 region"], ["held-out Dice", "too little gland"],
                             ["agreement", "0.990"]]
    assert not panel.last_record.promoted and panel.keep_button.isVisibleTo(panel)

    # enough held-out regions, none with a gland: still words, still not promoted
    empty = Done(**{**thin.__dict__, "n_holdout": MIN_HOLDOUT_FOR_PROMOTION,
                    "message": holdout_shortfall(MIN_HOLDOUT_FOR_PROMOTION, 0)})
    _handle(qtbot, panel, empty)
    assert panel.last_message.startswith("v0003: not promoted; held-out regions hold no glands to score (3 regions)")
    assert "not promoted" in panel.last_message and not panel.last_record.promoted

    # nothing held out at all
    _handle(qtbot, panel, Done(**{**thin.__dict__, "n_holdout": 0, "message": "", "per_image": ()}))
    assert panel.last_message.startswith("v0004: not promoted; no held-out regions yet: the new model cannot be "
                                         "scored")
    assert "no held-out region to decide on: too little to promote automatically" in panel.last_message

    # the versions list says which were not promoted, as the Predict chooser does
    versions = VersionsPanel(lambda: store)
    qtbot.addWidget(versions)
    versions.refresh()
    rows = [versions.version_list.item(i).text() for i in range(versions.version_list.count())]
    assert rows[1] == "* v0001  (from None, promoted)", rows
    assert all(row.endswith("(from v0001, not promoted)") for row in rows[2:]), rows
    assert versions.set_current("v0003")
    rows = [versions.version_list.item(i).text() for i in range(versions.version_list.count())]
    assert rows[3] == "* v0003  (from v0001, not promoted, made current by hand)", rows


class _FakeJob:
    """Stands in for RetrainJob: poll() hands out the queued events; ``running`` until told."""

    def __init__(self) -> None:
        self.queue = []
        self.running = True

    def poll(self):
        out, self.queue = self.queue, []
        return out


def test_progress_keeps_every_loss_but_repaints_at_most_once_per_refresh_interval(qtbot, tmp_path, lite_checkpoint,
                                                                                   monkeypatch):
    from napari_cdma import _widget_retrain
    from napari_cdma.project.events import Cancelled, Progress

    clock = [1000.0]
    monkeypatch.setattr(_widget_retrain.time, "monotonic", lambda: clock[0])
    store = _store(tmp_path, lite_checkpoint)
    panel = RetrainPanel(lambda: store)
    qtbot.addWidget(panel)
    shown = []
    real_show = panel._show_progress
    monkeypatch.setattr(panel, "_show_progress", lambda ev: (shown.append(ev.step), real_show(ev)))
    panel.job = _FakeJob()
    panel.timer.stop()  # polled by hand below, with a fake clock

    # 10 polls, 0.1 s apart, 3 steps each: every loss reaches the curve, the widgets refresh once
    for k in range(10):
        panel.job.queue = [Progress(step=3 * k + i, total=100, eta_s=60.0, metrics={"loss": 1.0 / (3 * k + i)})
                           for i in (1, 2, 3)]
        panel.poll()
        clock[0] += 0.1
    assert len(panel.loss_plot.values) == 30
    assert shown == [3]  # the first poll refreshed; the next 0.9 s did not
    clock[0] += _widget_retrain.UI_REFRESH_S
    panel.job.queue = [Progress(step=31, total=100, eta_s=30.0, metrics={"loss": 0.03})]
    panel.poll()
    assert shown == [3, 31] and panel.progress.value() == 31 and panel.eta_label.text() == "~30 s left"

    # a step that arrives between refreshes is still shown when the job ends
    clock[0] += 0.1
    panel.job.queue = [Progress(step=32, total=100, metrics={"loss": 0.02}), Cancelled()]
    panel.poll()
    assert shown[-1] == 32 and panel.progress.value() == 0 and panel.state == "cancelled"
    assert panel.eta_label.text() == _widget_retrain._fmt_eta(None)  # no stale "~30 s left" after Cancel
    assert len(panel.loss_plot.values) == 32


def test_with_nothing_held_out_the_table_says_why_every_dice_is_na(qtbot, tmp_path, lite_checkpoint):
    """Pathologist walk: 4 accepted regions, none held out, the table showed only "n/a" with no reason; and
    "glas_testA_1.png (none held out)" was elided to "glas_...1.png (none held out)"."""
    store = _store(tmp_path, lite_checkpoint)
    panel = RetrainPanel(lambda: store)
    qtbot.addWidget(panel)
    rows = (ImageScore("glas_testA_1.png", agreement=0.98), ImageScore("glas_testB_1.png", agreement=0.97))
    _handle(qtbot, panel, Done(checkpoint=str(lite_checkpoint), parent_model="v0001", steps_done=25, n_holdout=0,
                               agreement=0.975, min_agreement=0.95, agreement_crops=4, per_image=rows))
    assert panel.state == "done"
    assert _table(panel) == [["glas_testA_1"], ["held out", "none"], ["held-out Dice", "n/a"], ["agreement", "0.980"],
                             ["glas_testB_1"], ["held out", "none"], ["held-out Dice", "n/a"], ["agreement", "0.970"]]
    caption = panel.image_caption.text()
    assert "No held-out region yet: every 5th accepted region is held out" in caption, caption

    # the store's own rule is the one said
    other = ProjectStore.open(tmp_path / "quarter", holdout_fraction=0.25)
    other.add_model(lite_checkpoint, parent=None, note="random lite", promoted=True)
    panel2 = RetrainPanel(lambda: other)
    qtbot.addWidget(panel2)
    _handle(qtbot, panel2, Done(checkpoint=str(lite_checkpoint), parent_model="v0001", steps_done=25, n_holdout=0,
                                agreement=0.975, min_agreement=0.95, agreement_crops=4, per_image=rows[:1]))
    assert "every 4th accepted region is held out" in panel2.image_caption.text()

    # at the dock's default width (280 px less margins) both names read whole, not elided
    panel.resize(250, 900)
    panel.show()
    qtbot.waitExposed(panel)
    qtbot.wait(50)
    t = panel.image_table
    assert [t.item(0, 0).text(), t.item(4, 0).text()] == ["glas_testA_1", "glas_testB_1"]
