"""Finding of walk 17: a withdrawn region's tissue was tinted again, but the review regions its accept had taken off
"Look here next" stayed off, so nothing pointed the pathologist back at tissue that is unreviewed again. Withdraw lists
them again (and draws their frames); Restore takes them off again, as an Accept does.

A real napari viewer (pytest-xvfb), the real dock, GlaS images and a real project store on disk (test_walk15's set-up).
"""
from __future__ import annotations

from test_walk15_dock import FIRST, _open_two, _turn

from napari_cdma._layers import names_for


def test_a_withdrawn_region_is_listed_again_and_restore_takes_it_off(make_napari_viewer, qtbot, tmp_path, glas_dir):
    viewer, dock = _open_two(make_napari_viewer, qtbot, tmp_path, glas_dir)
    review = dock.review_panel
    dock.predict_panel.image_choice.value = viewer.layers[FIRST]
    _turn(qtbot)
    listed = list(review.tiles)
    assert len(listed) > 1
    review.next_button.click()
    _turn(qtbot)
    review.step(1)  # the second region: the one after it is selected when it comes back
    _turn(qtbot)
    bbox = review.current_bbox()
    record = review.accept()
    assert record is not None, review.last_message
    _turn(qtbot)
    assert bbox not in [b for _, b in review.tiles] and len(review.tiles) < len(listed)
    review.next_button.click()  # another region selected while the accepted one is withdrawn
    _turn(qtbot)
    selected = review.current_bbox()
    assert selected is not None and selected != bbox

    assert review.withdraw(record.region_id), review.last_message
    _turn(qtbot)
    assert review.tiles == listed  # back in its rank
    assert review.tile_list.count() == len(listed)
    assert review.current_bbox() == selected  # the selection kept
    tiles_layer = viewer.layers[names_for(FIRST)["tiles"]]
    assert len(tiles_layer.data) == len(listed)

    assert review.restore(record.region_id), review.last_message
    _turn(qtbot)
    assert bbox not in [b for _, b in review.tiles]
    assert len(viewer.layers[names_for(FIRST)["tiles"]].data) == len(review.tiles) < len(listed)
