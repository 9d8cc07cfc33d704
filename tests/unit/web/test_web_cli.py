"""``receiptflow web link``: refused without who asks and why, or without its audit entry; errors are one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiptflow.cli import main
from receiptflow.web.sessions import SessionStore

pytestmark = pytest.mark.unit


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("RECEIPTFLOW_WEB_SECRET_KEY", "RECEIPTFLOW_DEPLOYMENT", "RECEIPTFLOW_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RECEIPTFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RECEIPTFLOW_WEB_BASE_URL", "http://shop.example:8080/")
    monkeypatch.setenv("RECEIPTFLOW_REDIS_URL", "redis://127.0.0.1:9/0")  # nothing listens there
    monkeypatch.delenv("RECEIPTFLOW_OPERATOR", raising=False)
    return tmp_path / "data"


def test_a_link_needs_who_asks_and_why_and_is_not_made_without_its_audit_entry(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # (Links made and audited on a real Redis: tests/integration/test_looks.py.)
    for argv in (
        ["web", "link", "2710000000000001"],
        ["web", "link", "2710000000000001", "--reason", "ticket 7"],
        ["web", "link", "till-12", "--role", "cashier", "--as", "anna"],
    ):
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
        assert "--as" in captured.err or "--reason" in captured.err
    # Nothing answers at the Redis address: the audit entry cannot be written, so no link is printed.
    monkeypatch.setenv("RECEIPTFLOW_OPERATOR", "anna")
    assert main(["web", "link", "2710000000000001", "--reason", "ticket 7"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err


def test_errors_are_one_line(env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["web", "link"]) == 2
    out = capsys.readouterr().err
    assert "web link needs a CARD" in out and len(out.strip().splitlines()) == 1
    monkeypatch.setenv("RECEIPTFLOW_DEPLOYMENT", "production")
    assert main(["web", "link", "1001", "--as", "anna", "--reason", "ticket 7"]) == 2
    out = capsys.readouterr().err
    assert "RECEIPTFLOW_WEB_SECRET_KEY is not set" in out and "Traceback" not in out


@pytest.mark.parametrize("subject", ["", "   ", "27100\u200b01"])
def test_an_empty_or_invisible_subject_gets_no_link(
    env: Path, subject: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["web", "link", subject, "--as", "anna", "--reason", "ticket 7"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no link was signed
    assert "is not a card id" in captured.err and len(captured.err.strip().splitlines()) == 1


@pytest.mark.parametrize("port", ["99999", "65536", "0", "-1"])
def test_a_port_out_of_range_is_one_line_and_a_usage_error(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, port: str
) -> None:
    import uvicorn  # noqa: PLC0415

    served: list[int] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(kw["port"]))
    assert main(["web", "--port", port]) == 2
    out = capsys.readouterr().err
    assert f"--port {port}" in out and "1-65535" in out and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1 and served == []


def test_the_highest_port_is_served(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn  # noqa: PLC0415

    served: list[int] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(kw["port"]))
    monkeypatch.setattr(SessionStore, "check", lambda self: None)  # no Redis here: the port is what is tested
    assert main(["web", "--port", "65535"]) == 0 and served == [65535]


def test_serve_refuses_at_once_when_the_session_store_does_not_answer(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn  # noqa: PLC0415

    served: list[int] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(kw["port"]))
    monkeypatch.setenv("RECEIPTFLOW_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    assert main(["web", "--port", "8080"]) == 1 and served == []
    out = capsys.readouterr().err
    problem = [line for line in out.splitlines() if "not reachable" in line]
    assert len(problem) == 1 and "session store" in problem[0] and "Traceback" not in out
