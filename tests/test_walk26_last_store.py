"""Walk 26, finding 13: a fresh dock (a new napari session) showed the default store path, ~/napari-cdma-project,
not the store the pathologist used last, who had to remember and retype it. The dock now remembers the store opened
last (a small JSON file in the user's config folder, $NAPARI_CDMA_CONFIG_DIR here) and a new dock starts on it; a
store that no longer exists is shown, not opened or created; a missing or corrupt file falls back to the default.

(``dock._store``: the store open, None when none; ``dock.store`` would create one.)
Real napari viewers under Xvfb, real dock instances and real project stores in tmp folders; $HOME and the config
folder point into tmp_path, and $NAPARI_CDMA_PROJECT (which conftest sets for every test) is unset, as a
pathologist's session has it.
"""
from __future__ import annotations

import json
import shutil

import pytest
from _dock import open_dock

from napari_cdma._widget_store import CONFIG_ENV, LAST_STORE_FILE


@pytest.fixture
def plain_session(monkeypatch, tmp_path):
    """No $NAPARI_CDMA_PROJECT, $HOME and the config folder in tmp_path; returns the config folder."""
    monkeypatch.delenv("NAPARI_CDMA_PROJECT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    config = tmp_path / "config"
    monkeypatch.setenv(CONFIG_ENV, str(config))
    return config


def _new_dock(make_napari_viewer):
    return open_dock(make_napari_viewer())


def test_a_new_dock_starts_on_the_store_opened_last(make_napari_viewer, tmp_path, plain_session):
    default = tmp_path / "home" / "napari-cdma-project"
    first = _new_dock(make_napari_viewer)
    assert first.store_edit.text() == str(default)  # nothing remembered yet: the default, not created
    assert first._store is None and not default.exists()

    store_a = tmp_path / "stores" / "A"
    assert first.open_store(store_a) is not None
    saved = json.loads((plain_session / LAST_STORE_FILE).read_text())
    assert saved == {"store": str(store_a)}
    assert sorted(p.name for p in plain_session.iterdir()) == [LAST_STORE_FILE]  # written atomically: no leftovers

    # a second dock, as after a restart: the store used last is in the path field, and opened
    second = _new_dock(make_napari_viewer)
    assert second.store_edit.text() == str(store_a)  # walk 26: "/tmp/walk26/home/napari-cdma-project"
    assert second._store is not None and second._store.root.resolve() == store_a.resolve()
    assert not default.exists()


def test_a_remembered_store_that_is_gone_is_shown_not_opened_or_created(make_napari_viewer, tmp_path,
                                                                       plain_session):
    store_b = tmp_path / "stores" / "B"
    first = _new_dock(make_napari_viewer)
    assert first.open_store(store_b) is not None
    shutil.rmtree(store_b)  # moved or deleted between the sessions

    second = _new_dock(make_napari_viewer)
    assert second.store_edit.text() == str(store_b)
    assert second._store is None and not store_b.exists()  # not created behind the user's back
    assert second.store_label.text().startswith("No project store there yet"), second.store_label.text()


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"store": 3}', '{"store": ""}'])
def test_a_corrupt_settings_file_falls_back_to_the_default(make_napari_viewer, tmp_path, plain_session, content):
    plain_session.mkdir()
    (plain_session / LAST_STORE_FILE).write_text(content)
    dock = _new_dock(make_napari_viewer)
    assert dock.store_edit.text() == str(tmp_path / "home" / "napari-cdma-project")
    assert dock._store is None


def test_napari_cdma_project_wins_and_is_not_remembered(make_napari_viewer, tmp_path, plain_session, monkeypatch):
    """$NAPARI_CDMA_PROJECT names the store of the session: a new dock starts there whatever was remembered, and the
    stores opened meanwhile leave the remembered one as it was."""
    store_a, store_c = tmp_path / "stores" / "A", tmp_path / "stores" / "C"
    assert _new_dock(make_napari_viewer).open_store(store_a) is not None
    monkeypatch.setenv("NAPARI_CDMA_PROJECT", str(tmp_path / "env-store"))
    dock = _new_dock(make_napari_viewer)
    assert dock.store_edit.text() == str(tmp_path / "env-store")
    assert dock.open_store(store_c) is not None
    assert json.loads((plain_session / LAST_STORE_FILE).read_text()) == {"store": str(store_a)}
