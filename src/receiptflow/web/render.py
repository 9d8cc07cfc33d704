"""How the page answers: a template rendered in the visitor's language, with the headers every page has.

Every page carries the session's CSRF token for its forms (made when a form prints it, so a page
without one, a refusal say, leaves no session behind), says its language, is never kept by a
shared cache and forbids scripts, framing and referrers. The message page answers a refused request
(:class:`.access.RefusedError`) and a backend that is not there (a :class:`~receiptflow.errors.ReceiptflowError`, 503).
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ..errors import ReceiptflowError
from .access import RefusedError, login_of
from .i18n import negotiate
from .pages import CUSTOMER_PAGES
from .state import web_of
from .texts import t

# The page loads nothing and runs no script: the policy says so, so an injected one would not run.
# No referrer: a sign-in page's address holds its link's token.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def lang_of(request: Request) -> str:
    """The page's language: the visitor's choice (cookie), else the browser's, else the default."""
    return negotiate(request.cookies.get("lang"), request.headers.get("accept-language"))


def csrf_of(request: Request) -> str:
    """The session's CSRF token, made now when the session has none."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return token


class _Token:
    """The session's CSRF token as a template prints it: made only when a template does (:func:`csrf_of`)."""

    def __init__(self, request: Request) -> None:
        self.request = request

    def __str__(self) -> str:
        return csrf_of(self.request)

    def __html__(self) -> str:
        return csrf_of(self.request)  # URL-safe base64: nothing to escape


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """The template ``name`` as the response to ``request``."""
    lang = lang_of(request)
    template = web_of(request).env.get_template(name)
    html = template.render(
        lang=lang,
        t=lambda key, **v: t(key, lang, **v),
        login=login_of(request),
        csrf=_Token(request),
        path=request.url.path,
        quote=quote,
        pages=CUSTOMER_PAGES,
        **context,
    )
    response = HTMLResponse(html, status_code=status)
    response.headers["Content-Language"] = lang
    response.headers["Cache-Control"] = "no-store"  # a person's data: never kept by a shared cache
    response.headers.update(SECURITY_HEADERS)
    return response


def message(request: Request, status: int, title: str, text: str) -> HTMLResponse:
    """The message page: a title and one line of text."""
    return render(request, "message.html", status, title=title, text=text)


async def refused_page(request: Request, exc: Exception) -> Response:
    """The message page of a :class:`.access.RefusedError` request, in the visitor's language."""
    assert isinstance(exc, RefusedError)
    lang = lang_of(request)
    return message(request, exc.status, t(exc.title, lang), t(exc.text, lang))


async def unavailable_page(request: Request, exc: Exception) -> Response:
    """503 with the first line of the backend's error (a store or the broker that does not answer)."""
    assert isinstance(exc, ReceiptflowError)
    return message(request, 503, t("unavailable", lang_of(request)), str(exc).splitlines()[0])
