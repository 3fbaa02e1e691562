"""Every time the dock shows goes through one format, in local time (walk 21: a prediction read "at 18:01" while live
and "2026-12-02 18:01 UTC" after a reopen; withdrawn rows were in UTC beside local "at" times). Qt-free."""
from __future__ import annotations

import datetime as dt
import time

import pytest

from napari_cdma._time_text import full_when, short_when
from napari_cdma._widget_store import restored_notes, restored_text


@pytest.fixture
def five_hours_west(monkeypatch):
    """The machine's zone set to UTC-5 ("XYZ", a POSIX zone string: no tz database needed)."""
    monkeypatch.setenv("TZ", "XYZ+5")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_times_are_shown_in_local_time(five_hours_west):
    stored = "2026-12-03T02:30:00+00:00"  # as the store writes it: UTC
    now = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.timezone.utc)  # 07:00 local, 3 Dec
    assert short_when(stored, now) == "2 Dec 21:30"  # 21:30 the day before, locally: not "today" in UTC terms
    assert full_when(stored) == "2026-12-02 21:30 XYZ"
    # the live status keeps epoch seconds: the same moment reads the same
    epoch = dt.datetime.fromisoformat(stored).timestamp()
    assert short_when(epoch, now) == short_when(stored, now) and full_when(epoch) == full_when(stored)
    # today, locally: only the time; an earlier year: only the date
    assert short_when("2026-12-03T11:59:00+00:00", now) == "06:59"
    assert short_when("2025-06-01T12:00:00+00:00", now) == "2025-06-01"
    # a time without a zone is the store's UTC; anything unreadable is said as it is
    assert full_when("2026-12-03T02:30:00") == "2026-12-02 21:30 XYZ"
    assert short_when("yesterday", now) == "yesterday"


def test_restored_predictions_say_their_time_as_the_live_status_does():
    now_iso = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    hhmm = short_when(now_iso)
    assert len(hhmm) == 5 and hhmm[2] == ":"  # today: "HH:MM", as "predicted with bundled at HH:MM." live
    assert restored_text(f"bundled, {now_iso}; kept edits, not accepted") == \
        f"bundled at {hhmm}; kept edits, not accepted"
    assert restored_text("not restored (unreadable)") == "not restored (unreadable)"
    # the summary: alone "model at time", a group "latest at" the latest of the ISO times (not the latest string)
    earlier = "2026-11-30T23:10:00+00:00"
    assert restored_notes([("a", f"bundled, {now_iso}")]) == f"'a' (bundled at {hhmm})"
    assert restored_notes([("a", f"bundled, {earlier}"), ("b", f"bundled, {now_iso}")]) == \
        f"'a', 'b' (bundled, latest at {hhmm})"
