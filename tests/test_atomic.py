"""Files written whole (auditor/atomic.py): the user's umask decides who may read them."""
import os
import stat

import pytest

from auditor.counting import cache
from auditor.files import write_atomic
from auditor.record import dossier


@pytest.fixture
def umask():
    def set_mask(mask):
        previous.append(os.umask(mask))
    previous = []
    yield set_mask
    for mask in reversed(previous):
        os.umask(mask)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_mode_follows_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    path = write_atomic(tmp_path / "a.json", b"{}")
    assert mode(path) == expected and path.read_bytes() == b"{}"
    sealed = dossier.write(dossier.seal({"run": "x"}), tmp_path / "run" / "dossier.json")
    assert mode(sealed) == expected


def test_count_cache_entries_follow_the_umask(tmp_path, umask, monkeypatch):
    umask(0o022)
    monkeypatch.setenv("AUDITOR_CACHE_DIR", str(tmp_path / "cache"))
    cache.store("k" * 64, {"half_total": 1})
    (entry,) = (tmp_path / "cache").iterdir()
    assert mode(entry) == 0o644 and cache.load("k" * 64)["half_total"] == 1


def test_replacing_leaves_no_temporary_file_and_a_failed_write_keeps_the_old(tmp_path, monkeypatch):
    path = write_atomic(tmp_path / "f", b"old")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["f"]

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        write_atomic(path, b"half")
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["f"]


def test_a_missing_folder_is_made(tmp_path):
    path = write_atomic(tmp_path / "a" / "b" / "report.xml", b"<x/>")
    assert path.read_bytes() == b"<x/>" and [p.name for p in path.parent.iterdir()] == ["report.xml"]
