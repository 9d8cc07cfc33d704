"""The Starlette application: the routes, the sessions and the install's state, put together.

Every page is rendered on the server and works without JavaScript (the page has none). Routes
under ``/card/{card}`` are the card holder's, and only theirs (:func:`auth.may_see_card`): no login
gets 401, another card, a support or a cashier login 403. ``/support/card/{card}`` is support's
full view, audited per look; a cashier or register login gets 403 there too. Every POST checks the
session's CSRF token first; sign-in is rate limited per client address. Sessions live in Redis
(:mod:`.sessions`, :mod:`.session_middleware`): the cookie holds only a random id.

:mod:`.routes` holds the handlers, :mod:`.access` who may use each, :mod:`.render` how a page or a
refusal is answered, :mod:`.state` the install's :class:`Web` that the handlers read from
``app.state.web``.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware

from ..config import Settings
from ..errors import ReceiptflowError
from .access import RefusedError
from .data import Backend
from .render import refused_page, unavailable_page
from .routes import ROUTES
from .session_middleware import ServerSessions
from .sessions import SessionStore
from .state import Web


def build_app(settings: Settings, backend: Backend | None = None, sessions: SessionStore | None = None) -> Starlette:
    """The ASGI application for ``settings`` (``backend``: the page's data access, ``sessions``: where its
    sessions live; by default the install's)."""
    web = Web(settings, backend, sessions)
    secure = settings.web.base_url.startswith("https://")
    session = Middleware(ServerSessions, store=web.sessions, secure=secure, unavailable=unavailable_page)
    app = Starlette(
        routes=ROUTES,
        middleware=[session],
        exception_handlers={RefusedError: refused_page, ReceiptflowError: unavailable_page},
    )
    app.state.web = web
    return app
