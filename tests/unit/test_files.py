"""Owner-only files and directories, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from receiptflow.files import create_owner_only, owner_only, private_dir, write_owner_only


@pytest.fixture
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("usual_umask")
def test_owner_only_sets_0600_and_skips_missing_files(tmp_path: Path) -> None:
    made = tmp_path / "warehouse.duckdb"
    made.write_bytes(b"x")
    assert _mode(made) == 0o644
    owner_only(made, tmp_path / "warehouse.duckdb.wal")
    assert _mode(made) == 0o600
    assert not (tmp_path / "warehouse.duckdb.wal").exists()


@pytest.mark.usefixtures("usual_umask")
def test_create_owner_only_and_private_dir(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "outbox"
    private_dir(folder)
    assert _mode(folder) == 0o700
    folder.chmod(0o755)
    private_dir(folder)  # an existing folder is made private too
    assert _mode(folder) == 0o700
    path = folder / "register.sqlite3"
    create_owner_only(path)
    assert _mode(path) == 0o600 and path.read_bytes() == b""
    path.write_bytes(b"kept")
    path.chmod(0o644)
    create_owner_only(path)  # exists: only its mode changes
    assert _mode(path) == 0o600 and path.read_bytes() == b"kept"


@pytest.mark.usefixtures("usual_umask")
def test_write_owner_only_replaces_the_file_whole_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "users.acl"
    path.write_text("old password\n")
    path.chmod(0o644)
    write_owner_only(path, "user profiles on\n")
    assert _mode(path) == 0o600
    assert path.read_text() == "user profiles on\n"
    assert [p.name for p in tmp_path.iterdir()] == ["users.acl"]  # no temporary file left beside it
