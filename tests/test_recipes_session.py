"""Recipes in the simulated annotation sessions' records (benchmarks/annotation_session.py): a session is
never resumed under a recipe whose parameters changed, sections say which parameters their records ran,
and the side-by-side table reads gains and forgetting per seed off the records."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from src_model.recipes import RECIPES

SCRIPTS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def session():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import annotation_session
    finally:
        sys.path.remove(str(SCRIPTS))
    return annotation_session


def _record(recipe, seed, rnd, session_dice, untouched_dice, params=None):
    return {"split": "trainval", "recipe": recipe, "start": "ten", "row": "ranked_sup", "seed": seed, "round": rnd,
            "recipe_params": (params or RECIPES[recipe]).to_dict(), "session": {"dice": session_dice},
            "untouched": {"dice": untouched_dice}}


def test_a_session_is_not_resumed_when_its_recipe_changed(session, tmp_path):
    old = dataclasses.replace(RECIPES["default"], encoder_lr=RECIPES["default"].encoder_lr * 2)
    folder = tmp_path / "annotation_session" / "records"
    folder.mkdir(parents=True)
    (folder / "r0.json").write_text(json.dumps(_record("default", 0, 0, 0.7, 0.8, params=old)))
    args = SimpleNamespace(out=tmp_path, rounds=3)
    with pytest.raises(SystemExit, match=r"rounds \[0\] ran recipe 'default' with other parameters"):
        session.run_session(("trainval", "default", "ten", "ranked_sup", 0), tmp_path / "no-data", args)


def test_a_section_names_the_current_recipe_its_records_ran(session):
    current = [_record("plain", 0, 0, 0.7, 0.8)]
    assert session.recipe_note("plain", current) is None
    ran = dataclasses.replace(RECIPES["more_steps"], name="plain", description="as it was")
    note = session.recipe_note("plain", current + [_record("plain", 1, 0, 0.7, 0.8, params=ran)])
    assert "now `more_steps`" in note and "min_steps=120" in note and "the current parameters" in note
    assert "lr=" not in note.replace("encoder_lr", "")  # only what differs from the current recipe


def test_side_by_side_gain_and_worst_untouched_change_per_seed(session):
    records = [_record("more_steps", 0, rnd, s, u) for rnd, s, u in
               ((0, 0.70, 0.80), (1, 0.72, 0.794), (2, 0.74, 0.81), (3, 0.75, 0.82))]
    records += [_record("more_steps", 1, rnd, s, u) for rnd, s, u in ((0, 0.60, 0.90), (1, 0.61, 0.90))]
    row = [line for line in session.comparison_lines(records) if "`more_steps`" in line]
    assert row == ["| trainval | ten | ranked_sup | `more_steps` | 0, 1 | 3, 1 | +5.0, +1.0 | +3.0 | -0.60, +0.00 "
                   "| no |"]
    records[1]["untouched"]["dice"] = 0.796  # -0.4 point: within the 0.5-point limit
    row = [line for line in session.comparison_lines(records) if "`more_steps`" in line]
    assert row[0].endswith("| -0.40, +0.00 | yes |")
