"""Crash-safe writes: the whole new file or the old one, never a part; no temp files left behind."""
import json
import os
import stat

import pytest

from src_model.fileio import atomic_write_bytes, atomic_write_json


def test_json_is_written_whole_with_the_usual_file_mode(tmp_path):
    path = atomic_write_json(tmp_path / "sub" / "index.json", {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": [1, 2], "b": 1}
    assert path.read_text(encoding="utf-8").startswith('{\n "a"')  # indent 1, sorted keys
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["index.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = atomic_write_json(tmp_path / "index.json", {"version": 1})

    def disk_full(f):
        f.write(b"{\"version\": 2")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write_bytes(path, disk_full)
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]
