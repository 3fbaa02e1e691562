"""The retrain protocol's typed events survive the JSON line between worker and dock."""
from __future__ import annotations

import json

import pytest

from napari_cdma.project.events import (
    FINAL_EVENTS,
    Cancelled,
    Done,
    Evaluating,
    Failed,
    Progress,
    Started,
    parse_event,
    to_json,
)

EVENTS = [
    Started(model_version="v0001", n_labelled=4, n_unlabelled=7, n_holdout=1, pid=12, config={"steps": 3}),
    Progress(step=2, total=3, eta_s=1.5, metrics={"loss": 0.7, "sup": 0.5}),
    Evaluating(n_holdout=1),
    Done(checkpoint="/s/runs/x/final.pt", parent_model="v0001", steps_done=3, n_holdout=1,
         old_dice=0.81, new_dice=0.83, better=True, message="held-out Dice 0.810 -> 0.830 on 1 regions"),
    Done(checkpoint="/s/f.pt", parent_model="bundled", steps_done=3, n_holdout=0),
    Cancelled(steps_done=5, forced=True, returncode=-9),
    Failed(message="ValueError: no accepted regions", returncode=1),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_event_round_trips_through_one_json_line(event):
    line = to_json(event)
    assert "\n" not in line and json.loads(line)["event"] == event.kind
    assert parse_event(json.loads(line)) == event


def test_final_events_and_unknown_input():
    assert [isinstance(e, FINAL_EVENTS) for e in EVENTS] == [False, False, False, True, True, True, True]
    # a newer worker's extra fields are ignored; missing required ones and unknown kinds are refused
    assert parse_event({"event": "evaluating", "n_holdout": 2, "new_field": 1}) == Evaluating(n_holdout=2)
    with pytest.raises(ValueError, match="malformed 'done'"):
        parse_event({"event": "done", "checkpoint": "x"})
    with pytest.raises(ValueError, match="unknown retrain event"):
        parse_event({"event": "finished"})
    with pytest.raises(ValueError, match="unknown retrain event"):
        parse_event({})
