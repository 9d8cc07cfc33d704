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
    assert default.data_dir == tmp_path.resolve() / ".receiptflow"
    assert "default" in default.data_dir_origin
    monkeypatch.chdir("/")  # a later change of directory does not move it
    assert default.data_dir == tmp_path.resolve() / ".receiptflow"
    assert default.resolved_warehouse_url == f"duckdb:///{tmp_path.resolve()}/.receiptflow/warehouse.duckdb"
    monkeypatch.setenv("RECEIPTFLOW_DATA_DIR", "relative/data")
    given = Settings()
    assert given.data_dir == Path("/relative/data") and given.data_dir_origin == "set by RECEIPTFLOW_DATA_DIR"


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "CARD-1"],
        ["erase", "CARD-1", "--yes"],
        ["sql", "SELECT count(*) FROM receipts"],
        ["segments", "run", "--month", "2026-12"],
        ["profiles", "rebuild"],
    ],
)
def test_from_another_directory_a_reader_of_the_warehouse_refuses_and_creates_nothing(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("RECEIPTFLOW_DATA_DIR", "RECEIPTFLOW_WAREHOUSE_URL"):
        monkeypatch.delenv(name, raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # Nothing listens here: the refusal must come before any server is asked.
    monkeypatch.setenv("RECEIPTFLOW_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setenv("RECEIPTFLOW_REDIS_URL", "redis://127.0.0.1:9/0")
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    expected = elsewhere.resolve() / ".receiptflow" / "warehouse.duckdb"
    message = " ".join(err.split())
    assert f"no warehouse at {expected}" in message and "RECEIPTFLOW_DATA_DIR" in message, err
    assert "Traceback" not in err
    assert not expected.exists()
