"""Every command the project prints for a person runs as printed, from the repository root.

A short demo runs on the session's servers (its own data dir and topic prefix, passed in the
environment as a person's shell or ``.env`` would); then each line under "Look at the data next"
and each command of the README's blocks marked ``<!-- runnable -->`` runs with ``bash -c``, exactly
as written, from the repository root, and must succeed.

Not run, on purpose (``NOT_RUN``): commands that run until stopped or take minutes (``make demo``,
``make test``, ``process``, ``sink run``); the README's runnable blocks hold none of them today, the
list keeps that choice explicit if one is added.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from receiptflow.config import Settings

from .support import env_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NOT_RUN = ("make demo", "make test", "make chaos", "receiptflow process", "receiptflow sink run", "receiptflow demo")
TROUBLE = re.compile(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b|\bwarning:", re.I)
RUNNABLE = re.compile(r"<!-- runnable -->\s*\n```(?:bash|sh)\n(.*?)```", re.S)


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands: list[str] = []
    for block in RUNNABLE.findall(text):
        for line in block.splitlines():
            command = line.split("  #", 1)[0].strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def printed_next(demo_output: str) -> list[str]:
    """The lines under "Look at the data next": indented, up to the first line that is not."""
    lines = demo_output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Look at the data next"))
    commands = []
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        commands.append(line.strip())
    return commands


def run_as_printed(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
    )


def test_the_demo_and_the_readme_commands_run_as_printed(settings: Settings) -> None:
    env = env_for(settings)
    env["COLUMNS"] = "80"  # a narrow terminal: printed commands must not be wrapped
    # Enough sales that some chain-days publish cells of at least k baskets (the printed query reads them).
    short = ("--duration", "8", "--rate", "30", "--stores", "4", "--customers", "40", "--seed", "7")
    demo = subprocess.run(
        [sys.executable, "-m", "receiptflow", "demo", *short],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    # A healthy run prints no warnings, errors or tracebacks (a person would think something broke).
    troubles = [line for line in (demo.stdout + demo.stderr).splitlines() if TROUBLE.search(line)]
    assert not troubles, troubles[:10]
    from_demo = printed_next(demo.stdout)
    assert len(from_demo) >= 4, demo.stdout[-2000:]
    assert any(" sql " in c for c in from_demo) and any(" profile " in c for c in from_demo)
    from_readme = readme_commands()
    assert len(from_readme) >= 5, "the README has no runnable block"
    # `stack down` last: what it stops (nothing here, the servers are the session's) ends the rest.
    commands = sorted(from_demo + from_readme, key=lambda c: c.endswith("stack down"))
    to_run = [c for c in commands if not any(skip in c for skip in NOT_RUN)]
    ran = 0
    for command in to_run:
        assert "|" not in command, f"a printed command pipes into another: {command}"
        done = run_as_printed(command, env)
        assert done.returncode == 0, f"{command!r} failed ({done.returncode}): {done.stderr[-2000:]}"
        assert "Traceback" not in done.stderr, command
        ran += 1
        if " sql " in command:
            assert "rows" in done.stdout and " €" in done.stdout, done.stdout[-2000:]
    assert ran == len(to_run) >= 9
