"""Times as the dock shows them: one format everywhere, in the machine's local time.

The store keeps times as ISO 8601 in UTC (``2026-12-02T18:01:07+00:00``); the dock's live status kept the epoch
seconds of a prediction. A pathologist saw the same prediction "at 18:01" while it was live and "2026-12-02 18:01
UTC" after a reopen (walk 21), and a withdrawn region's row in UTC beside a local "at" time. Every time on screen now
goes through :func:`short_when` (status lines and list rows: ``18:01`` today, ``2 Dec 18:01`` this year, else
``2025-11-30``) or :func:`full_when` (tooltips and provenance: ``2026-12-02 18:01 UTC``, the local zone's name).
"""
from __future__ import annotations

import datetime as _dt
from typing import Any, Optional, Union

When = Union[str, float, int, _dt.datetime]


def as_local(t: When) -> Optional[_dt.datetime]:
    """``t`` (an ISO string, epoch seconds or a datetime) in the local time zone; None if it cannot be read. A time
    without a zone is taken as UTC, the zone the store writes."""
    if isinstance(t, _dt.datetime):
        moment = t
    elif isinstance(t, (int, float)) and not isinstance(t, bool):
        moment = _dt.datetime.fromtimestamp(float(t), _dt.timezone.utc)
    else:
        try:
            moment = _dt.datetime.fromisoformat(str(t))
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.astimezone()


def short_when(t: When, now: Optional[Any] = None) -> str:
    """A time, short: ``18:01`` today, ``2 Dec 18:01`` earlier this year, ``2025-11-30`` before that (local time);
    anything unreadable as it is. ``now`` (a datetime) stands in for the present."""
    moment = as_local(t)
    if moment is None:
        return str(t)
    today = as_local(now if now is not None else _dt.datetime.now(_dt.timezone.utc))
    if moment.date() == today.date():
        return moment.strftime("%H:%M")
    if moment.year == today.year:
        return f"{moment.day} {moment.strftime('%b %H:%M')}"
    return moment.strftime("%Y-%m-%d")


def full_when(t: When) -> str:
    """A time in full, to the minute, with the local zone's name: ``2026-12-02 18:01 UTC``; anything unreadable as
    it is."""
    moment = as_local(t)
    if moment is None:
        return str(t)
    zone = moment.strftime("%Z") or moment.strftime("%z")
    return f"{moment.strftime('%Y-%m-%d %H:%M')} {zone}".rstrip()


#: what :func:`time_left` says when no estimate is known (idle, or too early in a run)
NO_TIME_LEFT = "time left --"


def time_left(seconds: Optional[float]) -> str:
    """An estimate of the time a job has left, said as a duration, short (it sits beside a progress bar in the 280 px
    dock): ``~30 s left``, ``~12 min left`` (under 100 minutes), ``~1.7 h left``, ``~12 h left``;
    :data:`NO_TIME_LEFT` when unknown. The retrain panel said ``ETA 11:46``, read as a clock time (walk 24)."""
    if seconds is None or not seconds == seconds or seconds < 0:  # None, NaN or negative: no estimate
        return NO_TIME_LEFT
    s = int(round(seconds))
    if s < 60:
        return f"~{s} s left"
    m = int(round(s / 60.0))
    if m < 100:
        return f"~{m} min left"
    h = s / 3600.0
    return f"~{h:.1f} h left" if h < 9.95 else f"~{int(round(h))} h left"


#: the widest texts :func:`time_left` gives below 100 hours, in a font whose digits differ in width (a label sized
#: for them never re-lays out the dock)
TIME_LEFT_WIDEST = tuple(t for d in "0123456789" for t in (f"~{d * 2} s left", f"~{d * 2} min left",
                                                           f"~{d}.{d} h left", f"~{d * 2} h left")) + (NO_TIME_LEFT,)
