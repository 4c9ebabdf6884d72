"""The local Prefect server's home is private: it holds saved blocks and the key that decrypts them."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from rollbook.paths import prefect_home
from rollbook.server import secure_home


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_home_and_database_are_created_private(tmp_path: Path) -> None:
    home = tmp_path / "a" / "home"
    database = secure_home(home)
    assert database == home / "prefect.db" and database.stat().st_size == 0  # SQLite fills an empty file
    assert (mode(home), mode(database)) == (0o700, 0o600)


def test_an_older_world_readable_home_is_tightened(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    for name in ("prefect.db", "prefect.db-wal", "prefect.db-shm"):
        (home / name).write_bytes(b"x")
        (home / name).chmod(0o644)
    secure_home(home)
    assert mode(home) == 0o700
    assert {name: mode(home / name) for name in ("prefect.db", "prefect.db-wal", "prefect.db-shm")} == dict.fromkeys(
        ("prefect.db", "prefect.db-wal", "prefect.db-shm"), 0o600
    )
    assert (home / "prefect.db").read_bytes() == b"x"  # tightened, never truncated


def test_prefect_home_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "explicit"))
    assert prefect_home() == tmp_path / "explicit"
    monkeypatch.delenv("PREFECT_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert prefect_home() == tmp_path / "xdg" / "rollbook" / "prefect"
