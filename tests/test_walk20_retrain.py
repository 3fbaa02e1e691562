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
    assert "Keep new model anyway if you trust it" in panel.last_message
    assert versions.set_current("v0002")
    assert not panel.keep_button.isVisibleTo(panel)
    # the verdict no longer offers the button gone, and says what happened since (walk 21: it stayed as it was)
    said = panel.result_label.text()
    assert said.startswith("v0002: not promoted") and said.endswith("v0002 has been made current by hand since.")
    assert "Keep new model anyway" not in said
    assert versions.set_current("v0001")  # rolled back again: Keep does not come back by itself
    assert not panel.keep_button.isVisibleTo(panel)


def _accept(store, n, image=None):
    """Accept ``n`` new regions (distinct boxes of one image): the store holds out its share of them."""
    import numpy as np

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) if image is None else image
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 1
    start = len(store.regions(include_withdrawn=True))
    for k in range(start, start + n):
        y, x = 32 * (k // 8), 32 * (k % 8)
        store.accept_region(image, (y, x, y + 32, x + 32), mask, mask, model_version="v0001", image_name="testA_1")
    return image


def test_the_verdict_says_how_far_automatic_promotion_is(qtbot, tmp_path, lite_checkpoint):
    """Walk 20: r0005 held out (every 5th accepted region), 81 px of gland, under the 1300 px needed; the verdict said
    'too little to promote automatically (that needs 3 scored held-out regions ...)', not how far off that was, and
    named the agreement's samples 'crops'."""
    store = _store(tmp_path, lite_checkpoint)
    image = _accept(store, 5)
    assert [r.region_id for r in store.holdout_regions()] == ["r0005"]
    panel = RetrainPanel(lambda: store)
    qtbot.addWidget(panel)
    _handle(qtbot, panel, _thin(lite_checkpoint))
    said = panel.last_message
    # the key fact first, then the held-out amount, the agreement in plain words, and how far promotion is:
    # the next held-out regions are r0010 and r0015, 10 accepted regions away
    assert said == ("v0002: not promoted; held-out score rests on 81 px of gland in 1 region: too little to compare "
                    "the models (at least 1300 px); agreement on uncorrected tissue 0.967 (in 3 samples of your "
                    "images); too little to promote automatically, which needs 3 held-out regions with at least "
                    "1300 px of gland in all: 1 so far; about 10 more accepted regions would hold out 2 more (every "
                    "5th accepted region is held out); Keep new model anyway if you trust it."), said
    assert "crops" not in said
    assert "1 so far; about 10 more accepted regions" in panel.last_record.metrics["decision"]  # kept in the store

    # four accepted later (r0006-r0009): the next held-out region is 1 away, the one after 6
    _accept(store, 4, image)
    _handle(qtbot, panel, _thin(lite_checkpoint))
    assert "1 so far; about 6 more accepted regions would hold out 2 more" in panel.last_message

    # three held out now, still too little gland in them: the next held-out region (r0020) is 6 accepted away
    _accept(store, 6, image)
    assert len(store.holdout_regions()) == 3
    _handle(qtbot, panel, _thin(lite_checkpoint, n_holdout=3, gland_px=900))
    assert ("too little to promote automatically, which needs at least 1300 px of gland in the held-out regions; "
            "each held-out region with glands adds to it: the next one is about 5 accepted regions away (every 5th "
            "accepted region is held out)") in panel.last_message, panel.last_message


def test_the_verdict_counts_with_the_stores_own_share_and_leaves_withdrawn_numbers_unused(qtbot, tmp_path,
                                                                                          lite_checkpoint):
    """Another store's share (every 4th) is the one counted, and a withdrawn region's number is not given again."""
    store = ProjectStore.open(tmp_path / "quarter", holdout_fraction=0.25)
    store.add_model(lite_checkpoint, parent=None, note="random lite", promoted=True)
    _accept(store, 3)  # r0001-r0003: none held out yet
    store.withdraw("r0003")
    panel = RetrainPanel(lambda: store)
    qtbot.addWidget(panel)
    _handle(qtbot, panel, Done(checkpoint=str(lite_checkpoint), parent_model="v0001", steps_done=3, n_holdout=0,
                               agreement=0.98, min_agreement=0.95, agreement_crops=1))
    # held out next: r0004, r0008, r0012 (r0003's number is not reused): 9 accepted regions away
    assert panel.last_message.startswith("v0002: not promoted; no held-out regions yet"), panel.last_message
    assert "(in 1 sample of your images)" in panel.last_message
    assert ("too little to promote automatically, which needs 3 held-out regions with at least 1300 px of gland in "
            "all: none so far; about 9 more accepted regions would hold out 3 more (every 4th accepted region is "
            "held out)") in panel.last_message, panel.last_message
