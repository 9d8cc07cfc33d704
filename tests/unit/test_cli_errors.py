"""Issue 15: a person never sees a traceback -- one line saying what is wrong, exit 2 for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiptflow.cli import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err + captured.out


def test_produce_from_a_missing_file_or_a_directory_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out = _run(capsys, "produce", str(tmp_path / "nope.jsonl"))
    assert code == 2 and "nope.jsonl does not exist" in out and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1
    code, out = _run(capsys, "produce", str(tmp_path))
    assert code == 2 and "is a directory" in out


def test_invalid_settings_name_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECEIPTFLOW_METRICS_PORT", "lots")
    code, out = _run(capsys, "policy", "show")
    assert code == 2
    assert "RECEIPTFLOW_METRICS_PORT" in out and "Traceback" not in out and "pydantic" not in out
    assert len(out.strip().splitlines()) == 1


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import receiptflow.cli as cli

    def broken(*_args: object) -> int:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "load_settings", lambda: broken())
    code, out = _run(capsys, "policy", "show")
    assert code == 1 and "internal error: ZeroDivisionError" in out and "--debug" in out
    assert "Traceback" not in out
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "policy", "show"])
