"""Finding of the pathologist's walk 18 (dock under Xvfb, through npe2): a rectangle drawn on testA_1 and not accepted,
its layer hidden with testA_1 when testA_2 was chosen in Predict, was still the Drawn chooser's, and Accept drawn stored
it as a region of testA_2 (tissue nobody had looked at). Accept drawn is off, saying why, and refuses from a script.

A real napari viewer (pytest-xvfb), the real dock, GlaS images, a real project store on disk and a real (small)
checkpoint for testA_2's prediction.
"""
from __future__ import annotations

from _dock import predict_and_wait
from test_walk15_dock import FIRST, SECOND, _open_two, _turn

from napari_cdma.project.store import ProjectStore


def test_a_rectangle_drawn_on_another_image_is_not_accepted_here(make_napari_viewer, qtbot, tmp_path, glas_dir,
                                                                   lite_checkpoint):
    viewer, dock = _open_two(make_napari_viewer, qtbot, tmp_path, glas_dir)
    review, predict = dock.review_panel, dock.predict_panel
    predict.set_model_file(str(lite_checkpoint))
    predict_and_wait(qtbot, dock, SECOND, timeout=120_000)
    predict.image_choice.value = viewer.layers[FIRST]
    _turn(qtbot)
    drawn = review.start_drawing()
    assert drawn is not None, review.last_message
    drawn.add_rectangles([[50, 50], [200, 250]])
    _turn(qtbot)
    assert review.accept_drawn_button.isEnabled()  # on the image drawn on: it can be accepted

    predict.image_choice.value = viewer.layers[SECOND]  # testA_1 and its rectangle hidden, testA_2 on screen
    _turn(qtbot)
    assert not drawn.visible and viewer.layers[SECOND].visible
    # before: Accept drawn on, and it stored "drawn rectangle r0001 of 'testA_2'"
    assert not review.accept_drawn_button.isEnabled()
    # walk 26: Drawn no longer offers another image's drawn regions (tests/test_walk26_review_drawn_choice.py)
    assert drawn.name not in [ly.name for ly in review.shapes_choice.choices if ly is not None]
    assert review.accept_drawn(drawn) == []
    assert f"drawn on '{FIRST}', not on '{SECOND}'" in review.last_message
    assert ProjectStore.open(tmp_path / "project").regions() == []
    assert len(drawn.data) == 1  # the rectangle is kept for testA_1

    predict.image_choice.value = viewer.layers[FIRST]  # back on testA_1: accepted as its region
    _turn(qtbot)
    records = review.accept_drawn(drawn)
    assert len(records) == 1 and records[0].image_name == FIRST, review.last_message


def _shown_frames(viewer):
    from napari_cdma._layers import ROLE_KEY
    from napari_cdma._widget_review import SHOWN_ROLE

    return sum(len(ly.data) for ly in viewer.layers if (ly.metadata or {}).get(ROLE_KEY) == SHOWN_ROLE)


def test_the_black_frame_goes_when_its_region_leaves_the_list_or_the_view_moves_on(make_napari_viewer, qtbot,
                                                                                    tmp_path, glas_dir):
    """Walk 18: a withdrawn region's black frame ("r0001 withdrawn") stayed drawn through Accept whole image, Accept
    drawn and a gland row's click, while its row (Show withdrawn off) was no longer listed."""
    from test_walk14_dock import _click_region
    from test_walk15_dock import _at_next

    viewer, dock, review = _at_next(make_napari_viewer, qtbot, tmp_path, glas_dir)
    record = review.accept()
    assert record is not None, review.last_message
    _click_region(review, 0)
    _turn(qtbot)
    assert review.shown_region == record.region_id and _shown_frames(viewer) == 1
    assert not review.show_withdrawn.isChecked()
    assert review.withdraw(record.region_id), review.last_message
    _turn(qtbot)
    assert _shown_frames(viewer) == 0 and review.shown_region is None  # before: "r0001 withdrawn" framed

    review.show_withdrawn.setChecked(True)  # listed greyed: its frame says so
    _turn(qtbot)
    assert review.restore(record.region_id), review.last_message
    _click_region(review, 0)
    _turn(qtbot)
    assert _shown_frames(viewer) == 1
    assert review.withdraw(record.region_id), review.last_message
    _turn(qtbot)
    frame = next(ly for ly in viewer.layers if len(getattr(ly, "data", [])) and ly.name.endswith("shown region"))
    assert list(frame.features["label"]) == [f"{record.region_id} withdrawn"]
    review.next_button.click()  # the view moves on to a review region: the frame goes with the row
    _turn(qtbot)
    assert _shown_frames(viewer) == 0 and review.current_bbox() is not None


def test_drawn_rectangles_keep_a_thin_screen_width_at_every_zoom(make_napari_viewer, qtbot, tmp_path, glas_dir):
    """Walk 18: a rectangle drawn after Next was 3 image px wide, 13 screen px at Next's zoom: wider than the selected
    region's frame, over the tissue at its edge."""
    from test_walk15_dock import _at_next

    from napari_cdma._layers import FRAME_SLACK, scene_camera
    from napari_cdma._widget_review import DRAWN_WIDTH

    viewer, dock, review = _at_next(make_napari_viewer, qtbot, tmp_path, glas_dir)
    camera = scene_camera(viewer)
    assert camera.zoom > 2
    drawn = review.start_drawing()
    drawn.add_rectangles([[50, 50], [200, 250]])  # drawn as napari draws it: at the layer's current width
    _turn(qtbot)

    def on_screen():
        return [float(w) * camera.zoom / DRAWN_WIDTH for w in drawn.edge_width]

    assert all(FRAME_SLACK[0] <= w <= FRAME_SLACK[1] for w in on_screen()), on_screen()  # before: 3 image px
    for _ in range(4):  # zoomed in step by step, then out
        camera.zoom = camera.zoom * 1.5
        _turn(qtbot, 2)
    assert all(FRAME_SLACK[0] <= w <= FRAME_SLACK[1] for w in on_screen()), on_screen()
    camera.zoom = camera.zoom / 20
    _turn(qtbot, 2)
    assert all(FRAME_SLACK[0] <= w <= FRAME_SLACK[1] for w in on_screen()), on_screen()


def test_next_after_a_drawn_region_is_accepted_starts_at_the_most_uncertain(make_napari_viewer, qtbot, tmp_path,
                                                                           glas_dir):
    """Walk 19: with no region selected yet, a drawn rectangle over the 9th of 10 regions accepted, the first Next went
    to the region in the 9th place (now the least uncertain), skipping the eight most uncertain."""
    viewer, dock = _open_two(make_napari_viewer, qtbot, tmp_path, glas_dir)
    review = dock.review_panel
    dock.predict_panel.image_choice.value = viewer.layers[FIRST]
    _turn(qtbot)
    listed = list(review.tiles)
    assert len(listed) > 2 and review.current_bbox() is None
    y0, x0, y1, x1 = listed[-1][1]  # over the region in the last place
    drawn = review.start_drawing()
    drawn.add_rectangles([[y0, x0], [y1 - 1, x1 - 1]])
    _turn(qtbot)
    assert len(review.accept_drawn(drawn)) == 1, review.last_message
    _turn(qtbot)
    assert listed[-1] not in review.tiles
    review.next_button.click()
    _turn(qtbot)
    assert review.current_bbox() == listed[0][1], review.last_message  # before: the last region
