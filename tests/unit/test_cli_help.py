"""Every subcommand's --help opens with a one-line description and names the default of every option."""

from __future__ import annotations

import argparse

import pytest

from receiptflow.cli import build_parser

pytestmark = pytest.mark.unit


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_command_is_listed_and_walked() -> None:
    commands = _commands()
    assert {"demo", "stack", "sql", "export", "erase", "segments", "dlq", "topics", "simulate"} <= set(commands)


@pytest.mark.parametrize("name", sorted(_commands()))
def test_help_has_a_description_and_shows_the_defaults(name: str) -> None:
    parser = _commands()[name]
    assert parser.description and "\n" not in parser.description.strip(), f"{name}: no one-line description"
    # argparse wraps lines, also after a hyphen: compare words.
    text = " ".join(parser.format_help().split()).replace("- ", "-")
    assert " ".join(parser.description.split()) in text
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{name} {action.dest}: no help text"
        shown = action.default is not None and action.default is not False
        if action.option_strings and shown:
            assert f"(default: {action.default})" in text, f"{name} {action.option_strings[0]}: default not shown"
