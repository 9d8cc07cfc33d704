"""The embedded schema registry's bookkeeping: version, endpoint, build marker, a port taken by others.

No registry is built or started here (tests/integration/test_schema_registry.py does that).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from receiptflow.cli import build_parser
from receiptflow.config import Settings
from receiptflow.errors import PortInUseError, StackError
from receiptflow.stack import Stack, free_port
from receiptflow.stack.registry import (
    API_PATH,
    DEFAULT_URL,
    EmbeddedRegistry,
    app_dir,
    build_complete,
    pom_path,
    registry_answers,
    registry_version,
    runner_jar,
)

pytestmark = pytest.mark.unit


def test_the_version_is_the_poms_and_the_build_folder_is_per_version(tmp_path: Path) -> None:
    pinned = re.search(r"<apicurio\.version>([^<]+)<", pom_path().read_text())
    assert pinned is not None and registry_version() == pinned.group(1) == "2.4.2.Final"
    settings = Settings(local={"cache_dir": tmp_path})
    assert app_dir(settings) == tmp_path.resolve() / "apicurio-registry-2.4.2.Final"
    assert (pom_path().parent / "settings.xml").is_file()


def test_a_build_counts_only_with_its_marker_and_the_runner(tmp_path: Path) -> None:
    assert not build_complete(tmp_path)
    runner_jar(tmp_path).parent.mkdir(parents=True)
    runner_jar(tmp_path).write_bytes(b"jar")
    assert not build_complete(tmp_path), "an interrupted build has the jar but no marker"
    (tmp_path / ".complete").write_text("apicurio-registry\n")
    assert build_complete(tmp_path)


def test_the_endpoint_comes_from_the_url_or_the_default(tmp_path: Path) -> None:
    default = EmbeddedRegistry(Settings(local={"data_dir": tmp_path}))
    assert (default.address, default.host, default.port) == (DEFAULT_URL, "127.0.0.1", 8081)
    assert DEFAULT_URL.endswith(API_PATH)
    own = EmbeddedRegistry(
        Settings(local={"data_dir": tmp_path}, kafka={"schema_registry_url": f"http://127.0.0.1:18123{API_PATH}"})
    )
    assert (own.host, own.port, own.address) == ("127.0.0.1", 18123, f"http://127.0.0.1:18123{API_PATH}")
    assert own.pid_file == tmp_path.resolve() / "run" / "registry.pid"


def test_nothing_listening_or_another_scheme_is_not_a_registry() -> None:
    assert not registry_answers(f"http://127.0.0.1:{free_port()}{API_PATH}", timeout=0.5)
    assert not registry_answers("file:///etc/passwd")


def test_a_port_taken_by_something_else_is_refused_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        registry = EmbeddedRegistry(
            Settings(local={"data_dir": tmp_path}, kafka={"schema_registry_url": f"http://127.0.0.1:{port}{API_PATH}"}),
            ready_timeout=1,
        )
        with pytest.raises(PortInUseError, match=f"port 127.0.0.1:{port} \\(schema registry\\) is taken") as caught:
            registry.up()
        assert "\n" not in str(caught.value)


def test_a_remote_registry_is_never_started(tmp_path: Path) -> None:
    registry = EmbeddedRegistry(
        Settings(local={"data_dir": tmp_path}, kafka={"schema_registry_url": f"http://192.0.2.1:8081{API_PATH}"})
    )
    assert registry.ready() is False  # TEST-NET-1: nothing answers there
    with pytest.raises(StackError, match=r"only runs on 127\.0\.0\.1"):
        registry.up()


def test_stack_reports_the_registry_only_when_ours_runs(tmp_path: Path) -> None:
    settings = Settings(
        local={"data_dir": tmp_path},
        kafka={
            "bootstrap_servers": f"127.0.0.1:{free_port()}",
            "schema_registry_url": f"http://127.0.0.1:{free_port()}{API_PATH}",
        },
        redis={"url": f"redis://127.0.0.1:{free_port()}/0"},
    )
    names = [s.name for s in Stack(settings).status()]
    assert "registry" not in names


def test_stack_up_and_fetch_take_the_registry_option() -> None:
    parser = build_parser()
    assert parser.parse_args(["stack", "up", "--with-registry"]).with_registry is True
    assert parser.parse_args(["stack", "fetch", "--with-registry"]).with_registry is True
    assert parser.parse_args(["stack", "up"]).with_registry is False
