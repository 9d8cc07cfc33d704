"""The web page: ``web serve`` (the default) and ``web link`` (audited as a look: ``--as``, ``--reason``).

Each command's arguments (``add_<command>``) stand next to its handler (``cmd_<command>``).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..config import Settings
from ..errors import UsageError
from .common import add_look_options, card_id, console, err_console, looker_of, print_endpoints

if TYPE_CHECKING:
    from .common import Subparsers

MAX_PORT = 65535


def cmd_web(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "link":
        return _link(args, settings)
    if not 1 <= args.port <= MAX_PORT:  # before uvicorn, whose bind would fail with a traceback
        raise UsageError(f"--port {args.port} is not a valid port: give one from 1-{MAX_PORT}")
    import uvicorn

    from ..web.app import build_app

    print_endpoints(settings, "web:")
    app = build_app(settings)
    app.state.web.sessions.check()  # a session store that refuses its user: one line now, not a 503 per page
    err_console.print(f"serving the page at http://{args.host}:{args.port}/ (sign-in links: {settings.web.base_url})")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", proxy_headers=False)
    return 0


def _link(args: argparse.Namespace, settings: Settings) -> int:
    from ..web.state import Web

    if args.subject is None:
        raise UsageError("web link needs a CARD (or a staff login with --role support|cashier)")
    try:
        # The rule of every command's card argument; a staff login's name is held to it as well.
        subject = card_id(args.subject)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(str(exc)) from None
    who = looker_of(args, settings)
    web = Web(settings)  # its key first: a refused key audits no link
    if args.role == "customer" and web.backend.erased(subject):
        # The page would refuse the link (410); making one would only put an erased card in the audit again.
        raise UsageError(f"card {subject} was erased: an erased card has no page, so no sign-in link is made for it")
    from ..jobs.looks import audit_look

    # A link lets whoever opens it see the card (or act as the staff login): audited before it is made.
    audit_look(settings, who, "web-link", subject, detail=f"role={args.role}")
    url = web.link(args.role, subject)
    console.print(url, soft_wrap=True, highlight=False, markup=False)
    err_console.print(f"valid for {settings.web.link_minutes} minutes, once")
    return 0


def add_web(sub: Subparsers) -> None:
    s = sub.add_parser("web", help="serve the card holder's web page, or print a one-time sign-in link for it")
    s.add_argument(
        "action",
        nargs="?",
        choices=("serve", "link"),
        default="serve",
        help="serve the page, or print a one-time sign-in link",
    )
    s.add_argument("subject", nargs="?", metavar="CARD", help="web link: the card (or the staff login's name)")
    s.add_argument(
        "--role",
        choices=("customer", "support", "cashier"),
        default="customer",
        help="web link: whom the link signs in (support and cashier links name a staff login)",
    )
    add_look_options(s, " (web link)")
    s.add_argument("--host", default="127.0.0.1", help="web serve: address to listen on")
    s.add_argument("--port", type=int, default=8080, help="web serve: port to listen on")
    s.set_defaults(func=cmd_web)
