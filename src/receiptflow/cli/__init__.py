"""The ``receiptflow`` command line: one console script, one subcommand per job.

Subcommands only parse arguments, build a :class:`~receiptflow.config.Settings`, call the module that
does the work and print; long-running ones first print which broker, Redis and warehouse they use
(never a secret). Exit codes: 0 success, 1 the job failed or rejected input, 2 usage errors.

One module per command group, each holding its commands' arguments (``add_<command>``) next to
their handlers (``cmd_<command>``): :mod:`.servers` (stack, cluster, demo), :mod:`.contract`
(topics, schemas, policy), :mod:`.produce` (produce, simulate, outbox), :mod:`.process`,
:mod:`.aggregate`, :mod:`.sink`, :mod:`.read` (consume, dlq), :mod:`.status`, :mod:`.profile_commands`
(profile, profiles, segments), :mod:`.privacy` (export, erase), :mod:`.warehouse` (sql) and :mod:`.web`
(the web page); :mod:`.common` holds the consoles and argument types. Handlers import their work
lazily, so ``receiptflow --help`` stays fast. This module builds the parser in the order ``--help``
lists the commands and turns errors into one line and an exit code.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError as PydanticValidationError
from rich.markup import escape

from .. import __version__
from ..config import KAFKA_LOGGER, Settings, load_settings, redact_url
from ..errors import ConfigError, ReceiptflowError, UsageError
from ..kafka_auth import KafkaPrincipal, as_principal
from . import (
    aggregate,
    audit,
    contract,
    privacy,
    process,
    produce,
    profile_commands,
    read,
    servers,
    sink,
    status,
    warehouse,
    web,
)
from .common import err_console

__all__ = ["build_parser", "load_settings", "main"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default after its help, unless there is nothing to show (off, unset)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if unset or "%(default)" in text:
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Says what is wrong with the arguments in one line, and where to read the usage (exit status 2).

    The command's parsers are of this class too (``add_subparsers`` makes them of its parser's class).
    """

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("receiptflow")  # " profile" of "receiptflow profile"
        err_console.print(
            f"[red]error:[/red] {escape(message)} (see `{escape(_program())}{escape(command)} --help`)",
            highlight=False,
            soft_wrap=True,
        )
        self.exit(2)


def _program() -> str:
    """receiptflow as the person ran it (``.venv/bin/receiptflow``, a path on PATH, ``python -m``), so a
    command printed for them runs as printed."""
    ran = sys.argv[0] if sys.argv else ""
    if Path(ran).name == "receiptflow":
        return shlex.quote(ran)
    return f"{shlex.quote(sys.executable)} -m receiptflow"


def build_parser() -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = Parser(
        prog="receiptflow",
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"receiptflow {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    servers.add_stack(sub)
    servers.add_cluster(sub)
    contract.add_topics(sub)
    contract.add_schemas(sub)
    contract.add_policy(sub)
    produce.add_produce(sub)
    process.add_process(sub)
    aggregate.add_aggregate(sub)
    sink.add_sink(sub)
    produce.add_simulate(sub)
    produce.add_outbox(sub)
    read.add_dlq(sub)
    status.add_status(sub)
    read.add_consume(sub)
    profile_commands.add_profile(sub)
    profile_commands.add_profiles(sub)
    profile_commands.add_segments(sub)
    privacy.add_export(sub)
    privacy.add_erase(sub)
    audit.add_audit(sub)
    warehouse.add_sql(sub)
    warehouse.add_warehouse(sub)
    web.add_web(sub)
    servers.add_demo(sub)
    # Each command's --help opens with the line the command list shows, and names its defaults.
    for listed in sub._choices_actions:
        parser = sub.choices[listed.dest]
        parser.description = parser.description or listed.help
        parser.formatter_class = HelpFormatter
    return p


# The Kafka principal a command authenticates as (receiptflow.kafka_auth), unless it is the admin's;
# None: the command gives each of its workers its own (process, the web page's consents and erasure).
_PRINCIPALS: dict[str, KafkaPrincipal | None] = {
    "process": None,
    "web": None,
    "aggregate": KafkaPrincipal.AGGREGATOR,
    "sink": KafkaPrincipal.SINK,
    "simulate": KafkaPrincipal.REGISTERS,
    "outbox": KafkaPrincipal.REGISTERS,
    "export": KafkaPrincipal.SUPPORT,
    "erase": KafkaPrincipal.SUPPORT,
}


def kafka_principal(args: argparse.Namespace) -> KafkaPrincipal | None:
    """Whom the command logs in to Kafka as: its component's principal, the admin for operators' commands."""
    if args.command == "produce":
        return KafkaPrincipal.CONSENT_WRITER if args.kind == "consent" else KafkaPrincipal.REGISTERS
    return _PRINCIPALS.get(args.command, KafkaPrincipal.ADMIN)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The long-running processes' heartbeat (one line every 30 s) shows at INFO even when the rest is quiet.
    logging.getLogger("receiptflow.heartbeat").setLevel(logging.INFO)
    # librdkafka reports every failed connection attempt; the commands say what is wrong themselves.
    KAFKA_LOGGER.setLevel(logging.INFO if args.verbose else logging.CRITICAL)
    settings: Settings | None = None
    try:
        try:
            settings = load_settings()
        except PydanticValidationError as exc:
            raise ConfigError(_settings_problem(exc)) from exc
        principal = kafka_principal(args)
        if principal is not None:
            settings = as_principal(settings, principal)
        code: int = args.func(args, settings)
        return code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        if isinstance(exc, UsageError | ConfigError):
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            return 2
        if isinstance(exc, ReceiptflowError):
            message = _server_problem(exc, settings)
            err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
            return 1
        # A defect of ours: one line for the person, the traceback only on request.
        err_console.print(
            f"[red]internal error:[/red] {type(exc).__name__}: {escape(str(exc))} "
            "(run again with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        return 1


def _server_problem(exc: ReceiptflowError, settings: Settings | None) -> str:
    """The error's line: when a server does not answer, which one and what to do first, and the
    client's own words (``Error 111 connecting to ...``) only at the end."""
    cause = exc.__cause__
    local = settings is None or not settings.is_production
    start = "start it with `.venv/bin/receiptflow stack up`" if local else "check that it is up"
    if type(cause).__module__.startswith("redis") and type(cause).__name__ == "AuthenticationError":
        # The usual reason on an embedded install: another data folder, whose role passwords Redis never saw.
        secrets = settings.local.data_dir / "secrets" if settings is not None else "the data folder"
        return (
            f"{exc} -- Redis refused the login: the embedded stack keeps its role passwords in {secrets}; run from "
            "the folder where `stack up` ran, set RECEIPTFLOW_DATA_DIR, or give the role's "
            "RECEIPTFLOW_REDIS_<ROLE>_PASSWORD"
        )
    if type(cause).__module__.startswith("redis") and "Connection" in type(cause).__name__:
        where = f"Redis at {redact_url(settings.redis.url)}" if settings is not None else "Redis"
        return f"{where} is not reachable: {start}, or set RECEIPTFLOW_REDIS_URL ({exc})"
    if type(cause).__module__.startswith("psycopg") and "OperationalError" in type(cause).__name__:
        url = redact_url(settings.resolved_warehouse_url) if settings is not None else None
        where = f"the warehouse at {url}" if url is not None else "the warehouse"
        return f"{where} is not reachable: {start}, or set RECEIPTFLOW_WAREHOUSE_URL ({exc})"
    return str(exc)


def _settings_problem(exc: PydanticValidationError) -> str:
    """One line naming each bad RECEIPTFLOW_ variable and what is wrong with it."""
    parts = []
    for error in exc.errors():
        name = "RECEIPTFLOW_" + "_".join(str(p) for p in error["loc"]).upper()
        parts.append(f"{name}: {error['msg']}")
    return "; ".join(parts) + " (fix the environment or .env)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
