"""The Starlette application: routes, who may use each, and the pages they render.

Every page is rendered on the server and works without JavaScript (the page has none). The
backend's calls block (Redis, Kafka, the warehouse), so they run in Starlette's thread pool. Routes
under ``/card/{card}`` are the card holder's, and only theirs (:func:`auth.may_see_card`): no login
gets 401, another card, a support or a cashier login 403. ``/support/card/{card}`` is support's
full view, audited per look; a cashier or register login gets 403 there too. Every POST checks the
session's CSRF token first; sign-in is rate limited per client address.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ..config import Settings
from ..errors import ReceiptflowError
from . import pages
from .auth import Links, Login, RateLimiter, UsedLinks, csrf_ok, may_see_card, web_key
from .data import Backend
from .i18n import LANGS, negotiate
from .texts import t

Handler = Callable[[Request], Awaitable[Response]]
CUSTOMER_PAGES = ("purchases", "mix", "nutrition", "climate", "consents", "data", "erase")
SIGNIN_LIMIT = 10  # sign-in attempts with a link that is not valid, per client address ...
SIGNIN_WINDOW = 600.0  # ... per this many seconds
REQUESTS_LIMIT = 120  # sign-in requests of any kind per client address per minute
# The page loads nothing and runs no script: the policy says so, so an injected one would not run.
# No referrer: a sign-in page's address holds its link's token.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class Web:
    """The page's state for one install: links, rate limits, templates and the backend."""

    def __init__(self, settings: Settings, backend: Backend | None = None) -> None:
        self.settings = settings
        self.key = web_key(settings)
        self.links = Links(
            self.key, settings.web_link_minutes, UsedLinks(settings.data_dir.resolve() / "web" / "used-links")
        )
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
        return f"{self.settings.web_base_url.rstrip('/')}/signin/{self.links.make(role, subject)}"


def _login(request: Request) -> Login | None:
    role, subject = request.session.get("role"), request.session.get("subject")
    return Login(role, subject) if isinstance(role, str) and isinstance(subject, str) else None


def _csrf(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return token


def _lang(request: Request) -> str:
    return negotiate(request.cookies.get("lang"), request.headers.get("accept-language"))


def _render(web: Web, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    lang = _lang(request)
    login = _login(request)
    html = web.env.get_template(name).render(
        lang=lang,
        t=lambda key, **v: t(key, lang, **v),
        login=login,
        csrf=_csrf(request),
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


def _message(web: Web, request: Request, status: int, title: str, text: str) -> HTMLResponse:
    return _render(web, request, "message.html", status, title=title, text=text)


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: str(v) for k, v in form.items()}


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "?"


def build_app(settings: Settings, backend: Backend | None = None) -> Starlette:
    """The ASGI application for ``settings``."""
    web = Web(settings, backend)

    def guarded(handler: Callable[[Request, str], Awaitable[Response]]) -> Handler:
        """Only the card's own holder passes; a POST also needs the session's CSRF token."""

        async def run(request: Request) -> Response:
            card = request.path_params["card"]
            login = _login(request)
            lang = _lang(request)
            if login is None:
                return _message(web, request, 401, t("signin_title", lang), t("signin_needed", lang))
            if not may_see_card(login, card):
                return _message(web, request, 403, t("forbidden", lang), t("forbidden_text", lang))
            if request.method == "POST":
                form = await _form(request)
                if not csrf_ok(request.session.get("csrf"), form.get("csrf")):
                    return _message(web, request, 403, t("forbidden", lang), t("csrf", lang))
                request.state.form = form
            try:
                return await handler(request, card)
            except ReceiptflowError as exc:
                return _message(web, request, 503, t("unavailable", lang), str(exc).splitlines()[0])

        return run

    async def home(request: Request) -> Response:
        login = _login(request)
        lang = _lang(request)
        if login is None:
            return _message(web, request, 401, t("signin_title", lang), t("signin_needed", lang))
        if login.role == "customer":
            return RedirectResponse(f"/card/{quote(login.subject, safe='')}", 303)
        if login.role == "support":
            return RedirectResponse("/support", 303)
        return _message(web, request, 403, t("forbidden", lang), t("forbidden_text", lang))

    async def language(request: Request) -> Response:
        lang = request.path_params["lang"]
        back = request.query_params.get("next", "/")
        if not back.startswith("/") or back.startswith("//"):
            back = "/"  # only this site's pages: never an open redirect
        response = RedirectResponse(back, 303)
        if lang in LANGS:
            response.set_cookie("lang", lang, max_age=365 * 86400, httponly=True, samesite="lax")
        return response

    async def signin_page(request: Request) -> Response:
        lang = _lang(request)
        if web.throttled(_client(request)):
            return _message(web, request, 429, t("signin_title", lang), t("too_many", lang))
        token = request.path_params["token"]
        if web.links.check(token) is None:
            web.failures.allow(_client(request))
            return _message(web, request, 400, t("signin_title", lang), t("signin_bad", lang))
        # A page with a button, not a sign-in on GET: a mail scanner that opens the link uses nothing up.
        return _render(web, request, "signin.html", token=token)

    async def signin(request: Request) -> Response:
        lang = _lang(request)
        if web.throttled(_client(request)):
            return _message(web, request, 429, t("signin_title", lang), t("too_many", lang))
        form = await _form(request)
        if not csrf_ok(request.session.get("csrf"), form.get("csrf")):
            return _message(web, request, 403, t("forbidden", lang), t("csrf", lang))
        login = web.links.redeem(form.get("token", ""))
        if login is None:
            web.failures.allow(_client(request))
            return _message(web, request, 400, t("signin_title", lang), t("signin_bad", lang))
        request.session.clear()  # a new session for the new login (no fixation)
        request.session.update(role=login.role, subject=login.subject, csrf=secrets.token_urlsafe(24))
        return RedirectResponse("/", 303)

    async def signout(request: Request) -> Response:
        form = await _form(request)
        if not csrf_ok(request.session.get("csrf"), form.get("csrf")):
            return _message(web, request, 403, t("forbidden", _lang(request)), t("csrf", _lang(request)))
        request.session.clear()
        return RedirectResponse("/", 303)

    async def customer_page(request: Request, card: str) -> Response:
        lang = _lang(request)
        name = request.path_params.get("page", "purchases")
        if name not in CUSTOMER_PAGES:
            return _message(web, request, 404, t("not_found", lang), t("not_found", lang))
        page = await run_in_threadpool(web.backend.customer, card)
        context: dict[str, Any] = {"card": card, "page": name, "saved": request.query_params.get("saved") == "1"}
        if page is None:
            if name in ("data", "erase", "consents"):
                return _render(web, request, f"{name}.html", **context, view=None)
            erased = t("erased", lang) if request.session.pop("erased", False) else None
            return _render(web, request, "nothing.html", **context, erased=erased)
        view, profile = page.view, page.profile
        context["view"] = view
        context["gap"] = pages.product_gap(profile, settings.default_product_data_marketing)
        if name == "purchases":
            facts = await run_in_threadpool(web.backend.warehouse_facts, card)
            context["p"] = pages.purchases(view, profile, None if facts is None else facts["chains"], lang)
        elif name == "mix":
            context["p"] = pages.mix(view, lang)
        elif name == "nutrition":
            context["p"] = pages.nutrition(view, lang)
        elif name == "climate":
            context["p"] = pages.climate(view, lang)
        elif name == "consents":
            facts = await run_in_threadpool(web.backend.warehouse_facts, card)
            newest = None if facts is None else facts["consent"]
            email = newest["electronic_marketing"] if newest else settings.default_electronic_marketing
            product = profile.consent.product_data if profile.consent else settings.default_product_data_marketing
            # Right after a change the stores may not have it yet: show what the broker acknowledged.
            just_saved = request.session.pop("consents_saved", None)
            if context["saved"] and isinstance(just_saved, list) and len(just_saved) == 2:
                product, email = bool(just_saved[0]), bool(just_saved[1])
            context.update(product=product, email=email, known=profile.consent is not None or context["saved"])
        elif name == "erase":
            context["step"] = request.query_params.get("step", "")
        return _render(web, request, f"{name}.html", **context)

    async def consents(request: Request, card: str) -> Response:
        form = request.state.form
        product, email = form.get("product_data") == "on", form.get("email") == "on"
        change = await run_in_threadpool(web.backend.set_consents, card, product, email)
        request.session["consents_saved"] = [change.product_data_marketing, change.electronic_marketing]
        return RedirectResponse(f"/card/{quote(card, safe='')}/consents?saved=1", 303)

    async def download(request: Request, card: str) -> Response:
        doc = await run_in_threadpool(web.backend.export, card)
        return Response(
            json.dumps(doc, default=str, indent=2, ensure_ascii=False),
            media_type="application/json",
            headers={"Content-Disposition": 'attachment; filename="my-data.json"', "Cache-Control": "no-store"},
        )

    async def erase(request: Request, card: str) -> Response:
        if request.state.form.get("confirm") != "yes":
            return _render(web, request, "erase.html", 400, card=card, page="erase", step="confirm", must=True)
        await run_in_threadpool(web.backend.erase, card)
        request.session["erased"] = True  # the next page says so; a reload of it erases nothing again
        return RedirectResponse(f"/card/{quote(card, safe='')}", 303)

    async def support(request: Request) -> Response:
        login = _login(request)
        lang = _lang(request)
        if login is None:
            return _message(web, request, 401, t("signin_title", lang), t("signin_needed", lang))
        if login.role != "support":
            return _message(web, request, 403, t("forbidden", lang), t("forbidden_text", lang))
        card = request.path_params.get("card") or request.query_params.get("card")
        if not card:
            return _render(web, request, "support.html", doc=None, card=None)
        try:
            doc, audit_id = await run_in_threadpool(web.backend.support_look, card, login.subject)
        except ReceiptflowError as exc:
            return _message(web, request, 503, t("unavailable", lang), str(exc).splitlines()[0])
        text = json.dumps(doc, indent=2, ensure_ascii=False, default=str) if doc is not None else None
        return _render(web, request, "support.html", doc=text, card=card, audit_id=audit_id)

    routes = [
        Route("/", home),
        Route("/lang/{lang}", language),
        Route("/signin/{token}", signin_page),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/card/{card}", guarded(customer_page)),
        Route("/card/{card}/data.json", guarded(download)),
        Route("/card/{card}/consents", guarded(consents), methods=["POST"]),
        Route("/card/{card}/erase", guarded(erase), methods=["POST"]),
        Route("/card/{card}/{page}", guarded(customer_page)),
        Route("/support", support),
        Route("/support/card/{card}", support),
    ]
    middleware = [
        Middleware(
            SessionMiddleware,
            secret_key=web.key.decode(),
            session_cookie="receiptflow_session",
            max_age=8 * 3600,
            same_site="lax",
            https_only=settings.web_base_url.startswith("https://"),
        )
    ]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.web = web
    return app
