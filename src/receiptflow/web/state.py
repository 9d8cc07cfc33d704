"""The page's state for one install: settings, sign-in links, sessions, rate limits, templates and the backend.

One :class:`Web` is made per application and held on ``app.state.web``; the handlers read it from
the request (:func:`web_of`), so nothing else is shared between requests.
"""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request

from ..config import Settings
from .auth import Links, RateLimiter, UsedLinks, web_key
from .data import Backend
from .sessions import SessionStore

SIGNIN_LIMIT = 10  # sign-in attempts with a link that is not valid, per client address ...
SIGNIN_WINDOW = 600.0  # ... per this many seconds
REQUESTS_LIMIT = 120  # sign-in requests of any kind per client address per minute


class Web:
    """The page's state for one install: links, sessions, rate limits, templates and the backend."""

    def __init__(
        self, settings: Settings, backend: Backend | None = None, sessions: SessionStore | None = None
    ) -> None:
        self.settings = settings
        self.key = web_key(settings)
        self.links = Links(
            self.key, settings.web.link_minutes, UsedLinks(settings.local.data_dir.resolve() / "web" / "used-links")
        )
        self.sessions = sessions or SessionStore.from_settings(settings, self.key)
        self.failures = RateLimiter(SIGNIN_LIMIT, SIGNIN_WINDOW)
        self.requests = RateLimiter(REQUESTS_LIMIT, 60.0)
        self.backend = backend or Backend(settings)
        self.env = Environment(
            loader=PackageLoader("receiptflow.web", "templates"), autoescape=select_autoescape(default=True)
        )

    def throttled(self, client: str) -> bool:
        """Whether a sign-in request from ``client`` is refused now (it counts as one request)."""
        return self.failures.full(client) or not self.requests.allow(client)

    def link(self, role: str, subject: str) -> str:
        """The sign-in URL for ``subject`` in ``role``, as people open it."""
        return f"{self.settings.web.base_url.rstrip('/')}/signin/{self.links.make(role, subject)}"


def web_of(request: Request) -> Web:
    """The state of the application that serves ``request``."""
    web: Web = request.app.state.web
    return web
