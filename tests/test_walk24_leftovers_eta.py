"""Pathologist walk 24, leftovers: the Retrain panel's time left read like a clock time.

"ETA 11:46" beside the progress bar at about 13:00 was read as "done at 11:46", in the past. The panel now says a
duration: "~12 min left". The real dock in a napari viewer (Xvfb); progress as the retrain job reports it.
"""
from __future__ import annotations

import re

import pytest
from _dock import open_dock

from napari_cdma.project.events import Progress


@pytest.mark.parametrize("seconds, text", [
    (30.2, "~30 s left"), (245, "~4 min left"), (706, "~12 min left"), (5900, "~98 min left"), (6100, "~1.7 h left"),
    (35999, "~10 h left"),
    (None, "time left --"), (float("nan"), "time left --"),
])
def test_time_left_is_a_duration(seconds, text):
    from napari_cdma._time_text import time_left

    assert time_left(seconds) == text


def test_the_retrain_panel_says_time_left_not_a_clock_time(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    panel = open_dock(viewer).retrain_panel
    idle = panel.eta_label.text()
    assert "ETA" not in idle and "--" in idle, idle
    for seconds in (706.0, 35999.0, 30.0):  # 11:46 in walk 24
        panel._show_progress(Progress(step=10, total=100, eta_s=seconds))
        text = panel.eta_label.text()
        assert not re.search(r"\d:\d\d", text) and text.endswith("left"), text
        # the whole text fits its fixed-width label (no clipped "~12 min le")
        assert panel.eta_label.fontMetrics().horizontalAdvance(text) <= panel.eta_label.width(), text
    panel._show_progress(Progress(step=10, total=100, eta_s=706.0))
    assert panel.eta_label.text() == "~12 min left"
