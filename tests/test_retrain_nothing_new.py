"""Retrain with nothing new since the latest version (pathologist walk: a second press of Retrain, with no region
accepted or withdrawn since v0001, spent a minute or two on a v0002 trained on the same data, and nothing warned).

A version keeps what it was trained on (``metrics["trained_on"]``: its live accepted regions ``id@version``, trained
on and held out, and the settings); the dock's Retrain says "Nothing new since v0002 (trained at ...)" and starts
nothing until pressed again; ``cdma retrain`` refuses with exit status 3 unless ``--force``. Real store on disk, real
retraining worker, real ``cdma`` subprocess, the real dock under Xvfb."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
from _dock import open_dock
from PIL import Image

from napari_cdma._time_text import short_when
from napari_cdma.project.events import Done
from napari_cdma.project.retrain_job import finish, nothing_new, store_basis
from napari_cdma.project.store import ProjectStore

FAST_TRAIN = dict(device="cpu", patch=64, batch_labelled=2, batch_unlabelled=2)
BOXES = ((128, 224, 224, 320), (300, 50, 396, 146), (40, 400, 136, 496))


def _store(path, glas_dir, lite_checkpoint) -> ProjectStore:
    """A random lite model as v0001 (added by hand: it does not say what it was trained on, as versions made before
    this change), three accepted regions of testA_1; every 2nd region held out: r0002."""
    store = ProjectStore.open(path, holdout_fraction=0.5)
    store.add_model(lite_checkpoint, parent=None, note="random lite", promoted=True)
    image = np.asarray(Image.open(glas_dir / "images" / "testA_1.png").convert("RGB"))
    mask = (np.asarray(Image.open(glas_dir / "masks" / "testA_1.png")) > 0).astype(np.uint8)
    for y0, x0, y1, x1 in BOXES:
        store.accept_region(image, (y0, x0, y1, x1), mask[y0:y1, x0:x1], np.zeros((y1 - y0, x1 - x0), np.uint8),
                            model_version="v0001", source_path=glas_dir / "images" / "testA_1.png",
                            image_name="testA_1")
    assert [r.holdout for r in store.regions()] == [False, True, False]
    return store


def _runs(store: ProjectStore) -> list:
    runs = store.root / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []


def cdma(*args):
    return subprocess.run([sys.executable, "-m", "src_model.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_cdma_retrain_refuses_with_nothing_new_unless_forced(tmp_path, glas_dir, lite_checkpoint):
    store = _store(tmp_path / "store", glas_dir, lite_checkpoint)
    # v0001 was added by hand: it says nothing of what it was trained on, so the first run trains
    first = cdma("retrain", store.root, "--steps", 1, "--promote", "no", "--device", "cpu")
    assert first.returncode == 0, first.stderr[-2000:]
    store = ProjectStore.open(store.root)
    v2 = store.models()[-1]
    assert v2.version == "v0002"
    assert v2.metrics["trained_on"] == {"train": ["r0001@1", "r0003@1"], "holdout": ["r0002@1"], "recipe": "default",
                                        "steps": 1, "semi_supervised": False, "seed": 0}
    # the version's note names the agreement's samples as the dock does, not the engine's "crops"
    assert "crops" not in v2.note and "of the images)" in v2.note, v2.note
    runs = _runs(store)

    # the same run again: refused before anything is written, saying which version and when, and how to insist
    again = cdma("retrain", store.root, "--steps", 1, "--promote", "no", "--device", "cpu")
    assert again.returncode == 3, (again.returncode, again.stderr[-2000:])
    line = again.stderr.strip()
    assert line.count("\n") == 0, line
    assert line.startswith("cdma retrain: nothing new since v0002 (trained at "), line
    assert "on the same 2 regions, 1 held out, same settings): accept or withdraw a region first, or pass --force " \
           "to train anyway" in line
    assert json.loads(again.stdout.strip()) == {"event": "nothing_new", "version": "v0002", "created": v2.created,
                                                "n_train": 2, "n_holdout": 1}
    store = ProjectStore.open(store.root)
    assert [m.version for m in store.models()] == ["v0001", "v0002"] and _runs(store) == runs

    # --force trains anyway
    forced = cdma("retrain", store.root, "--steps", 1, "--promote", "no", "--device", "cpu", "--force")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert json.loads(forced.stdout.strip().splitlines()[-1])["version"] == "v0003"


def test_a_version_keeps_what_it_was_trained_on_and_old_versions_say_nothing(tmp_path, glas_dir, lite_checkpoint):
    """What counts as new: a region accepted, accepted again (another version) or withdrawn, other settings;
    a withdrawn region reinstated is the same data again. A store whose versions kept nothing opens as before and
    is never told 'nothing new'."""
    store = _store(tmp_path / "store", glas_dir, lite_checkpoint)
    basis = store_basis(store, steps=None, semi_supervised=False)
    assert nothing_new(store, basis) is None  # v0001 kept nothing (an older store's versions): no refusal
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(lite_checkpoint, run / "final.pt")
    record = finish(store, Done(checkpoint=str(run / "final.pt"), parent_model="v0001", steps_done=3, n_holdout=1,
                                trained_on=basis), promote=False)  # as the worker sends it
    assert record.metrics["trained_on"] == basis
    store = ProjectStore.open(store.root)  # kept in the store
    same = nothing_new(store, store_basis(store, steps=None, semi_supervised=False))
    assert same is not None and (same.version, same.n_train, same.n_holdout) == ("v0002", 2, 1)
    assert same.since("06:40") == ("nothing new since v0002 (trained at 06:40 on the same 2 regions, 1 held out, "
                                   "same settings)")
    # other settings are another training
    assert nothing_new(store, store_basis(store, steps=40, semi_supervised=False)) is None
    assert nothing_new(store, store_basis(store, steps=None, semi_supervised=True)) is None
    assert nothing_new(store, store_basis(store, recipe="plain", semi_supervised=False)) is None
    # withdrawn: something changed; reinstated: the same data again
    store.withdraw("r0003")
    assert nothing_new(store, store_basis(store, semi_supervised=False)) is None
    store.reinstate("r0003")
    assert nothing_new(store, store_basis(store, semi_supervised=False)) is not None
    # a held-out region withdrawn counts too (the new model would be judged on other regions)
    store.withdraw("r0002")
    assert nothing_new(store, store_basis(store, semi_supervised=False)) is None
    store.reinstate("r0002")
    # r0001 accepted again (its version 2): new
    region = store.regions()[0]
    y0, x0, y1, x1 = region.bbox
    crop, corrected, predicted = store.load_region("r0001")
    image = np.asarray(Image.open(glas_dir / "images" / "testA_1.png").convert("RGB"))
    store.accept_region(image, (y0, x0, y1, x1), 1 - corrected, predicted, model_version="v0002",
                        source_path=glas_dir / "images" / "testA_1.png", image_name="testA_1")
    assert store.regions()[0].version == 2
    assert nothing_new(store, store_basis(store, semi_supervised=False)) is None
    # a version without the record after it (added by hand): nothing is known, nothing is refused
    store.add_model(lite_checkpoint, parent="v0002", note="by hand")
    assert nothing_new(store, store_basis(store, semi_supervised=False)) is None


def test_the_dock_says_nothing_new_and_a_second_press_trains_anyway(make_napari_viewer, qtbot, tmp_path, glas_dir,
                                                                    lite_checkpoint):
    store = _store(tmp_path / "store", glas_dir, lite_checkpoint)
    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer, store.root)
    dock.show_panel("Retrain")
    panel = dock.retrain_panel
    panel.train_kwargs = dict(FAST_TRAIN)
    panel.steps_spin.setValue(1)
    panel.retrain_button.click()  # v0001 says nothing of its training: it trains at once
    assert panel.state == "running", panel.last_message
    qtbot.waitUntil(lambda: panel.state in ("done", "error"), timeout=240_000)
    assert panel.state == "done", panel.last_message
    record = panel.last_record
    assert record.version == "v0002" and record.metrics["trained_on"]["train"] == ["r0001@1", "r0003@1"]
    opened = panel._get_store()  # the dock's own ProjectStore of the folder
    runs = _runs(opened)

    # the walk: Retrain again with nothing accepted or withdrawn: it says so, names the version and when; no job
    panel.retrain_button.click()
    said = (f"Nothing new since v0002 (trained at {short_when(record.created)} on the same 2 regions, 1 held out, "
            f"same settings): accept or withdraw a region first, or press Retrain again to train anyway.")
    assert panel.last_message == said and panel.result_label.text() == said
    assert panel.job is None and panel.state == "done" and panel.retrain_button.isEnabled()
    assert _runs(opened) == runs and [m.version for m in opened.models()] == ["v0001", "v0002"]
    assert panel.progress.isHidden()
    assert "Nothing new since v0002" in panel.retrain_tip()  # the tooltip says it before a press, too

    # pressed again: trains anyway (cancelled here: the start is what is checked)
    panel.retrain_button.click()
    assert panel.state == "running" and panel.job is not None, panel.last_message
    panel.cancel_button.click()
    qtbot.waitUntil(lambda: panel.state in ("cancelled", "error"), timeout=120_000)
    assert panel.state == "cancelled", panel.last_message

    # after the cancel: nothing new again (the cancelled run added no version), said once more
    panel.retrain_button.click()
    assert panel.job is None and panel.last_message == said

    # a region withdrawn since: trains at once
    opened.withdraw("r0003")
    panel.retrain_button.click()
    assert panel.state == "running" and panel.job is not None, panel.last_message
    panel.cancel_button.click()
    qtbot.waitUntil(lambda: panel.state in ("cancelled", "error"), timeout=120_000)
    opened.reinstate("r0003")

    # other steps than v0002's: another training, started at once
    panel.steps_spin.setValue(2)
    panel.retrain_button.click()
    assert panel.state == "running" and panel.job is not None, panel.last_message
    panel.cancel_button.click()
    qtbot.waitUntil(lambda: panel.state in ("cancelled", "error"), timeout=120_000)
