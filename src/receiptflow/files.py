"""Files that hold personal data are readable by their owner only.

The DuckDB warehouse files, the register outboxes and the Redis data directory hold card ids and
purchases: they are made mode 0600 (directories 0700) whatever the process umask is. Engines that
create their files themselves (DuckDB, SQLite, Redis) are handled after the fact (:func:`owner_only`)
or by creating the file first with the right mode (:func:`create_owner_only`); SQLite gives its
journal and WAL files the mode of the database file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def owner_only(*paths: Path) -> None:
    """Set mode 0600 on each of ``paths`` that exists (a missing one, e.g. a WAL, is skipped)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mode & 0o777 != FILE_MODE:
                path.chmod(FILE_MODE)


def private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if needed and make ``path`` itself mode 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    if path.stat().st_mode & 0o777 != DIR_MODE:
        path.chmod(DIR_MODE)


def create_owner_only(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (then only its mode is set)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        owner_only(path)
        return
    os.close(fd)


def write_owner_only(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, mode 0600 from the start (not chmod-ed after writing).

    Written to a temporary name beside it and renamed over it, so a reader sees the old or the new
    file whole, never a half-written one.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, path)
