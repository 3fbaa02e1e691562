"""Each review button is enabled only when it can act, and says in its tooltip what it needs while it cannot
(pathologist walk: with nothing open every button was enabled and a click only gave a message). Retrain and Roll
back stay enabled with no store open: a click says what is needed in their panel, which the dock scrolls to
(tests/test_dock_layout.py), and their tooltip says it too. A real napari viewer (Xvfb), the real dock, a GlaS
image, a small random model, a real project store on disk.
"""
from __future__ import annotations

import numpy as np
from _dock import open_dock
from qtpy.QtCore import QEvent, QPoint
from qtpy.QtGui import QHelpEvent
from qtpy.QtWidgets import QApplication

from napari_cdma._layers import names_for
from napari_cdma._widget_retrain import RETRAIN_TIP
from napari_cdma._widget_review import NEEDS, TIPS

NAV = ("prev", "next")
IMAGE_BUTTONS = ("prev", "next", "accept", "draw", "accept_drawn", "accept_image")


def _buttons(review):
    return review._buttons


def _state(review):
    """Button key -> (enabled, tooltip)."""
    return {k: (b.isEnabled(), b.toolTip()) for k, b in _buttons(review).items()}


def _hover_tip(button):
    """The tooltip the user sees when the pointer rests on ``button`` (a ToolTip event is sent first)."""
    pos = QPoint(5, 5)
    QApplication.sendEvent(button, QHelpEvent(QEvent.Type.ToolTip, pos, button.mapToGlobal(pos)))
    return button.toolTip()


def _turn(qtbot):
    for _ in range(3):
        QApplication.processEvents()
        qtbot.wait(10)


def test_buttons_follow_what_is_open(make_napari_viewer, qtbot, tmp_path, glas_dir, lite_checkpoint):
    from src_model.io import read_image

    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer)  # no store: $NAPARI_CDMA_PROJECT names a folder that does not exist yet
    review = dock.review_panel
    assert dock._store is None

    # nothing open: every review button off, saying what to do first
    state = _state(review)
    for key in IMAGE_BUTTONS:
        enabled, tip = state[key]
        assert not enabled and tip.startswith(NEEDS["open"]) and TIPS[key] in tip, (key, tip)
    assert state["withdraw"] == (False, f"{NEEDS['select_region']}\n({TIPS['withdraw']})")
    assert not state["restore"][0] and state["restore"][1].startswith(NEEDS["select_withdrawn"])
    # Retrain and Roll back: on, a click says a store is needed (and creates none), so does the tooltip
    retrain, versions = dock.retrain_panel, dock.versions_panel
    assert retrain.retrain_button.isEnabled() and versions.rollback_button.isEnabled()
    assert "Needs a project store" in _hover_tip(retrain.retrain_button)
    assert "Needs a project store" in _hover_tip(versions.rollback_button)
    retrain.retrain_button.click()
    versions.rollback_button.click()
    assert "no project store is open" in retrain.last_message and "no project store is open" in versions.last_message
    assert dock._store is None

    # an image opened: still off, now "predict it"
    image = read_image(glas_dir / "images" / "testA_1.png")[:320, :320]
    viewer.add_image(image, name="he", rgb=True)
    qtbot.waitUntil(lambda: _state(review)["next"][1].startswith(NEEDS["predict"]), timeout=5_000)
    assert not any(review._buttons[k].isEnabled() for k in IMAGE_BUTTONS), _state(review)

    # predicted (the first Predict creates the store): Next, Previous, Draw and Accept whole image can act
    dock.predict_panel.set_model_file(str(lite_checkpoint))
    assert dock.predict("he"), dock.predict_panel.last_message
    qtbot.waitUntil(lambda: not dock.predict_panel.running and dock.settled() and "he" in dock.states,
                    timeout=120_000)
    _turn(qtbot)
    assert review.tiles, review.last_message
    state = _state(review)
    for key in ("prev", "next", "draw", "accept_image"):
        assert state[key] == (True, TIPS[key]), (key, state[key])
    assert state["accept"][0] is False and state["accept"][1].startswith(NEEDS["select_tile"])
    assert state["accept_drawn"][0] is False and state["accept_drawn"][1].startswith(NEEDS["draw"])
    assert dock._store is not None and "at least one accepted region" in _hover_tip(retrain.retrain_button)
    assert _hover_tip(versions.rollback_button).endswith("Select a version in the list first.")

    # Next selects a region: Accept region can act; accepted, the region is listed
    review.next_button.click()
    assert review.accept_button.isEnabled() and review.accept_button.toolTip() == TIPS["accept"]
    review.accept_button.click()
    assert len(dock.store.regions()) == 1, review.last_message
    assert not review.accept_button.isEnabled()  # the accepted region left the list: none selected
    assert _hover_tip(retrain.retrain_button) == RETRAIN_TIP  # something to retrain on
    # a row of the accepted-region list selected: Withdraw can act
    assert not review.withdraw_button.isEnabled()
    review.region_list.setCurrentRow(0)
    assert review.withdraw_button.isEnabled() and not review.restore_button.isEnabled()

    # Draw: Accept drawn can act once a shape is drawn, and not once it is accepted
    review.draw_button.click()
    drawn = viewer.layers[names_for("he")["drawn"]]
    assert not review.accept_drawn_button.isEnabled()
    drawn.add_rectangles(np.array([[[150, 150], [150, 270], [270, 270], [270, 150]]], float))
    assert review.accept_drawn_button.isEnabled(), review.accept_drawn_button.toolTip()
    review.accept_drawn_button.click()
    assert len(dock.store.regions()) == 2, review.last_message
    assert len(drawn.data) == 0 and not review.accept_drawn_button.isEnabled()

    # every suggested region accepted: Next stays on and says so when clicked
    assert review.accept_image_button.isEnabled()
    review.accept_image_button.click()
    assert review.tiles == [] and review.next_button.isEnabled()
    review.next_button.click()
    assert "No review regions left" in review.last_message
    assert review.accept_button.toolTip().startswith(NEEDS["none_left"])

    # the image and its prediction closed: off again, "open an image"
    for name in ("he", names_for("he")["prediction"]):
        viewer.layers.remove(name)
    qtbot.waitUntil(lambda: not any(review._buttons[k].isEnabled() for k in IMAGE_BUTTONS), timeout=5_000)
    assert all(_state(review)[k][1].startswith(NEEDS["open"]) for k in IMAGE_BUTTONS), _state(review)


def test_opening_a_store_lists_its_regions_and_the_buttons_follow(make_napari_viewer, qtbot, tmp_path, glas_dir):
    """A store opened with regions in it: its rows can be selected and withdrawn, a withdrawn one restored."""
    from napari_cdma.project.store import ProjectStore
    from src_model.io import read_image, read_mask

    image = read_image(glas_dir / "images" / "testA_1.png")
    mask = read_mask(glas_dir / "masks" / "testA_1.png")[:64, :64]
    store = ProjectStore.open(tmp_path / "project")
    first = store.accept_region(image, (0, 0, 64, 64), mask, mask, model_version="bundled", image_name="img")
    viewer = make_napari_viewer()
    dock = open_dock(viewer)
    review = dock.review_panel
    assert review.region_list.count() == 0 and not review.withdraw_button.isEnabled()
    review.show_withdrawn.setChecked(True)  # no store open: ticking it reads (and creates) none
    assert dock._store is None and review.region_list.count() == 0
    assert dock.open_store(tmp_path / "project") is not None
    qtbot.waitUntil(dock.settled, timeout=60_000)
    assert review.region_list.count() == 1 and not review.withdraw_button.isEnabled()
    review.region_list.setCurrentRow(0)
    assert review.withdraw_button.isEnabled()
    review.withdraw_button.click()
    assert ProjectStore.open(tmp_path / "project").regions() == []
    assert review.selected_region_id() == first.region_id  # listed greyed (Show withdrawn), still selected
    assert not review.withdraw_button.isEnabled() and review.restore_button.isEnabled()
    review.restore_button.click()
    assert [r.region_id for r in ProjectStore.open(tmp_path / "project").regions()] == [first.region_id]
    assert review.withdraw_button.isEnabled() and not review.restore_button.isEnabled()
