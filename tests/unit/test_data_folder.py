"""One data folder: absolute once, named by the commands; a missing warehouse is refused, never created."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiptflow.cli import main
from receiptflow.config import Settings

pytestmark = pytest.mark.unit


def test_the_data_dir_is_absolute_once_and_says_where_it_comes_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RECEIPTFLOW_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    default = Settings()
    assert default.local.data_dir == tmp_path.resolve() / ".receiptflow"
    assert "default" in default.data_dir_origin
    monkeypatch.chdir("/")  # a later change of directory does not move it
    assert default.local.data_dir == tmp_path.resolve() / ".receiptflow"
    assert default.resolved_warehouse_url == f"duckdb:///{tmp_path.resolve()}/.receiptflow/warehouse.duckdb"
    monkeypatch.setenv("RECEIPTFLOW_DATA_DIR", "relative/data")
    given = Settings()
    assert given.local.data_dir == Path("/relative/data") and given.data_dir_origin == "set by RECEIPTFLOW_DATA_DIR"


READERS = [
    ["export", "CARD-1", "--as", "dpo", "--reason", "test"],
    ["erase", "CARD-1", "--yes"],
    ["sql", "SELECT count(*) FROM receipts"],
    ["segments", "run", "--month", "2026-12"],
    ["profiles", "rebuild"],
]


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Another working directory, no data folder setting, and no server listening."""
    for name in ("RECEIPTFLOW_DATA_DIR", "RECEIPTFLOW_WAREHOUSE_URL", "RECEIPTFLOW_DEPLOYMENT"):
        monkeypatch.delenv(name, raising=False)
    for role in ("WRITER", "MARKETING", "SUPPORT"):
        monkeypatch.delenv(f"RECEIPTFLOW_REDIS_{role}_PASSWORD", raising=False)
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    # Nothing listens here: the refusal must come before any server is asked.
    monkeypatch.setenv("RECEIPTFLOW_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setenv("RECEIPTFLOW_REDIS_URL", "redis://127.0.0.1:9/0")
    return folder.resolve()


@pytest.mark.parametrize("argv", [*READERS, ["profile", "CARD-1"]])
def test_from_another_directory_a_command_of_the_install_refuses_and_creates_nothing(
    argv: list[str], elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(argv)
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert f"no data folder at {elsewhere / '.receiptflow'}" in err and "RECEIPTFLOW_DATA_DIR" in err, err
    assert "Traceback" not in err
    assert not (elsewhere / ".receiptflow").exists()


@pytest.mark.parametrize("argv", READERS)
def test_a_data_folder_without_a_warehouse_is_refused_not_filled_with_an_empty_one(
    argv: list[str], elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (elsewhere / ".receiptflow").mkdir()
    code = main(argv)
    err = " ".join(capsys.readouterr().err.split())
    expected = elsewhere / ".receiptflow" / "warehouse.duckdb"
    assert code == 2
    assert f"no warehouse at {expected}" in err and "RECEIPTFLOW_DATA_DIR" in err, err
    assert not expected.exists()
