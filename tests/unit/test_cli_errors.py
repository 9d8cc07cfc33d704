"""Issue 15: a person never sees a traceback -- one line saying what is wrong, exit 2 for bad input."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from receiptflow import cli
from receiptflow.cli import main
from receiptflow.errors import ConfigError, WarehouseError
from receiptflow.health import Readiness, serve
from receiptflow.metrics import Metrics
from receiptflow.sinks.duckdb import DuckDBSink
from receiptflow.stack import free_port


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
    def broken(*_args: object) -> int:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "load_settings", broken)
    code, out = _run(capsys, "policy", "show")
    assert code == 1 and "internal error: ZeroDivisionError" in out and "--debug" in out
    assert "Traceback" not in out
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "policy", "show"])


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--rate", "0"],
        ["simulate", "--rate", "-5"],
        ["simulate", "--stores", "0"],
        ["simulate", "--customers", "0"],
        ["simulate", "--dup-rate", "2"],
        ["simulate", "--rate", "nan"],
        ["policy", "show", "--at", "tomorrow"],
        ["dlq", "list", "--max", "-1"],
    ],
)
def test_bad_arguments_are_a_usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "error: argument" in err and "Traceback" not in err


def test_outbox_commands_never_create_or_misread_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite3"
    for action in ("status", "drain"):
        code, out = _run(capsys, "outbox", action, str(missing))
        assert code == 2 and "does not exist" in out
        assert not missing.exists()
    junk = tmp_path / "notes.txt"
    junk.write_text("this is not a database, just words " * 100)
    code, out = _run(capsys, "outbox", "status", str(junk))
    assert code == 2 and "is not a register outbox" in out and "Traceback" not in out


def _without_kafka(data_dir: Path) -> dict[str, str]:
    """A child's environment whose bootstrap address has nothing listening."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIPTFLOW_")}
    env.update(
        RECEIPTFLOW_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        RECEIPTFLOW_DATA_DIR=str(data_dir),
        RECEIPTFLOW_METRICS_PORT="0",
    )
    return env


@pytest.mark.parametrize(
    "argv",
    [
        ["topics", "create"],
        ["consume", "checkouts"],
        ["dlq", "list"],
        ["produce", "-"],
        ["sink", "run", "--idle-exit", "5"],
        ["aggregate", "run", "--idle-exit", "5"],
        ["process", "--role", "router"],
        ["process", "--role", "profiles"],
    ],
)
def test_with_the_broker_down_the_error_is_quick_one_line_and_says_what_to_do(argv: list[str], tmp_path: Path) -> None:
    env = _without_kafka(tmp_path)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "receiptflow", *argv],
        env=env,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - started
    assert done.returncode == 1
    assert took < 15, f"{argv}: the error came after {took:.0f} s"
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert env["RECEIPTFLOW_BOOTSTRAP_SERVERS"] in errors[0] and "receiptflow stack up" in errors[0]
    assert "%3|" not in done.stderr and "Traceback" not in done.stderr


def test_simulate_with_the_broker_down_keeps_the_sales_and_says_where(tmp_path: Path) -> None:
    env = _without_kafka(tmp_path)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "receiptflow", "simulate", "--duration", "1", "--rate", "5", "--customers", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1 and time.monotonic() - started < 60
    outbox = tmp_path / "outbox" / "simulator-1.sqlite3"
    error = next(line for line in done.stderr.splitlines() if line.startswith("error:"))
    assert f"kept in the outbox {outbox}" in error and f"receiptflow outbox drain {outbox}" in error
    assert "Traceback" not in done.stderr and "%3|" not in done.stderr
    kept = int(error.split(" records are kept")[0].rsplit(" ", 1)[1])
    assert kept >= 5 + 3  # five sales and three sign-up consents at least
    # What it says is kept is there.
    status = subprocess.run(
        [sys.executable, "-m", "receiptflow", "outbox", "status", str(outbox)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status.returncode == 0 and f"{outbox}: {kept} pending" in status.stdout.replace("\n", ""), status.stdout


def test_a_metrics_port_in_use_is_a_clear_error() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"metrics port 127.0.0.1:{port} is in use .* --metrics-port"):
            serve(Metrics(), Readiness("router"), port)
    finally:
        taken.close()


HOLD_DUCKDB = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(60)"


def test_a_duckdb_warehouse_held_by_another_process_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys, time; c = duckdb.connect({str(path)!r}); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(WarehouseError, match=r"in use by another process .* stop that process first"):
            DuckDBSink(path, erasure_salt=b"test-erasure-salt-0123456789").setup()
    finally:
        holder.kill()
        holder.wait()


def test_with_redis_down_the_error_says_where_and_what_to_do(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("RECEIPTFLOW_REDIS_URL", f"redis://:not-to-be-shown@127.0.0.1:{port}/0")
    monkeypatch.setenv("RECEIPTFLOW_DATA_DIR", str(tmp_path))
    code, out = _run(capsys, "profile", "6390000000001")
    assert code == 1 and len(out.strip().splitlines()) == 1
    # What is wrong and what to do first; the client's own words, if at all, at the end.
    assert out.startswith(
        f"error: Redis at redis://:***@127.0.0.1:{port}/0 is not reachable: start it with "
        "`.venv/bin/receiptflow stack up`, or set RECEIPTFLOW_REDIS_URL"
    ), out
    assert "not-to-be-shown" not in out
    assert out.index("Error 111") > out.index("RECEIPTFLOW_REDIS_URL")


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["dlq", "list", "--from-offset", "-5"], "argument --from-offset: '-5' is not a whole number of at least 0"),
        (["dlq", "replay", "--from-offset", "-1"], "argument --from-offset: '-1' is not a whole number of at least 0"),
        (["sink", "replay", "--from-time", "yesterday-ish"], "argument --from-time: 'yesterday-ish' is not a time"),
        (["sink", "replay", "--from-time", "2026-12-24T08:00"], "'2026-12-24T08:00' has no zone"),
        (["profile", ""], "argument card: '' is not a card id"),
        (["profile", "   "], "argument card: '   ' is not a card id"),
        (["export", ""], "argument card: '' is not a card id"),
        (["erase", " ", "--yes"], "argument card: ' ' is not a card id"),
        (["simulate", "--rate", "1e12"], "'1e12' is not a rate above 0 and at most 100,000 checkouts per second"),
        (["demo", "--rate", "100001"], "'100001' is not a rate above 0 and at most 100,000 checkouts per second"),
    ],
)
def test_an_argument_a_command_cannot_use_is_refused_before_any_server_is_asked(
    capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    # Refused while the arguments are parsed: no server is asked, and the usage status is 2.
    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(argv)
    assert info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and said in line, line
    assert line.endswith(f"(see `{sys.executable} -m receiptflow {argv[0]} --help`)"), line


@pytest.mark.parametrize(
    "program", [[sys.executable, "-m", "receiptflow"], [str(Path(sys.executable).parent / "receiptflow")]]
)
def test_the_help_an_argument_error_points_to_runs_as_printed(program: list[str], tmp_path: Path) -> None:
    refused = subprocess.run(
        [*program, "profile", ""], env=_without_kafka(tmp_path), capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode == 2, refused.stderr
    printed = refused.stderr.split("(see `", 1)[1].split("`)", 1)[0]
    assert printed.split()[-2:] == ["profile", "--help"], printed
    shown = subprocess.run(
        printed, shell=True, env=_without_kafka(tmp_path), capture_output=True, text=True, timeout=60, check=False
    )
    assert shown.returncode == 0 and "usage: receiptflow profile" in shown.stdout, shown.stderr


def test_the_rate_bound_is_in_the_help() -> None:
    for command in ("simulate", "demo"):
        sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
        text = " ".join(sub.choices[command].format_help().split())
        assert "checkouts per second, at most 100,000" in text, command


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["sink", "replay"], "sink replay needs --from-time TIME or --from-beginning"),
        (["sink", "replay", "--from-beginning", "--topic", "checkouts"], "not checkouts"),
    ],
)
def test_sink_replay_without_a_starting_point_is_a_usage_error_before_kafka_is_asked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], said: str
) -> None:
    for name, value in _without_kafka(tmp_path).items():
        monkeypatch.setenv(name, value)
    code, out = _run(capsys, *argv)
    assert code == 2 and said in out and "Kafka" not in out, out
