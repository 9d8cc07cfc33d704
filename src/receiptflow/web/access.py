"""Who may use a route, checked in one place: the session's login, an erased card and a form's CSRF token.

Each handler that needs a login calls :func:`require_login` (the card's pages through
:func:`require_card`) before anything else: no login is 401, a login that may not is 403. A card
that is erased has no page action at all (410): :func:`require_card` asks the backend on every
request, and ends the card's sessions when it finds one still open (an erasure by ``receiptflow
erase`` rather than the page). Each POST
reads its form through :func:`require_csrf`: a form without the session's token is 403. A refusal is
raised as :class:`RefusedError` and shown as the message page (:func:`.render.refused_page`), as are the
other requests the page answers with a message instead (a bad sign-in link, too many attempts, an
unknown page).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from . import session_middleware
from .auth import Login, csrf_ok, may_see_card
from .state import web_of


class RefusedError(Exception):
    """A request answered with the message page: its status and the text keys of its title and text."""

    def __init__(self, status: int, title: str, text: str) -> None:
        super().__init__(f"{status}: {text}")
        self.status = status
        self.title = title
        self.text = text


def login_of(request: Request) -> Login | None:
    """The session's login, None when nobody is signed in."""
    role, subject = request.session.get("role"), request.session.get("subject")
    return Login(role, subject) if isinstance(role, str) and isinstance(subject, str) else None


def require_login(request: Request, may: Callable[[Login], bool]) -> Login:
    """The session's login when ``may`` allows it; :class:`RefusedError` 401 without a login, 403 when not allowed."""
    login = login_of(request)
    if login is None:
        raise RefusedError(401, "signin_title", "signin_needed")
    if not may(login):
        raise RefusedError(403, "forbidden", "forbidden_text")
    return login


async def require_card(request: Request, card: str) -> Login:
    """The login of ``card``'s own holder (:func:`.auth.may_see_card`), else refused as :func:`require_login`
    says; 410 when the card is erased (and its sessions end now)."""
    login = require_login(request, lambda login: may_see_card(login, card))
    await refuse_erased(request, card)
    return login


async def refuse_erased(request: Request, card: str) -> None:
    """:class:`RefusedError` 410 when ``card`` is erased, after ending every session of it."""
    if await run_in_threadpool(web_of(request).backend.erased, card):
        await session_middleware.revoke_card(request, card)
        raise RefusedError(410, "erased_title", "erased_text")


async def require_csrf(request: Request) -> dict[str, str]:
    """The request's form when it carries the session's CSRF token; :class:`RefusedError` 403 when not."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    if not csrf_ok(request.session.get("csrf"), form.get("csrf")):
        raise RefusedError(403, "forbidden", "csrf")
    return form
