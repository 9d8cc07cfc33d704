"""``receiptflow web link``: the printed URL signs in at a server of the same install; errors are one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiptflow.cli import main
from receiptflow.config import Settings
from receiptflow.web.auth import Login
from receiptflow.web.sessions import SessionStore
from receiptflow.web.state import Web

pytestmark = pytest.mark.unit


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("RECEIPTFLOW_WEB_SECRET_KEY", "RECEIPTFLOW_DEPLOYMENT", "RECEIPTFLOW_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RECEIPTFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RECEIPTFLOW_WEB_BASE_URL", "http://shop.example:8080/")
    return tmp_path / "data"


def test_the_printed_link_signs_in_once_at_the_install_s_server(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["web", "link", "2710000000000001"]) == 0
    url = capsys.readouterr().out.strip()
    assert url.startswith("http://shop.example:8080/signin/")
    server = Web(Settings(local={"data_dir": env}))  # the key generated for this install by the command above
    token = url.rsplit("/", 1)[1]
    assert server.links.redeem(token) == Login("customer", "2710000000000001")
    assert server.links.redeem(token) is None
    other_install = Web(Settings(local={"data_dir": env.parent / "other"}))
    assert other_install.links.check(token) is None


def test_a_staff_link_names_its_role(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["web", "link", "till-12", "--role", "cashier"]) == 0
    token = capsys.readouterr().out.strip().rsplit("/", 1)[1]
    assert Web(Settings(local={"data_dir": env})).links.check(token) == Login("cashier", "till-12")


def test_errors_are_one_line(env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["web", "link"]) == 2
    out = capsys.readouterr().err
    assert "web link needs a CARD" in out and len(out.strip().splitlines()) == 1
    monkeypatch.setenv("RECEIPTFLOW_DEPLOYMENT", "production")
    assert main(["web", "link", "1001"]) == 2
    out = capsys.readouterr().err
    assert "RECEIPTFLOW_WEB_SECRET_KEY is not set" in out and "Traceback" not in out


@pytest.mark.parametrize("subject", ["", "   ", "27100\u200b01"])
def test_an_empty_or_invisible_subject_gets_no_link(
    env: Path, subject: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["web", "link", subject]) == 2
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
