"""The page's routes and their handlers: sign-in and out, the language, the card holder's pages, support's view.

Each handler reads the install's state from the request (:func:`.state.web_of`) and first checks
who may use it (:mod:`.access`). The backend's calls block (Redis, Kafka, the warehouse), so they run
in Starlette's thread pool. Sessions are started, ended and revoked through
:mod:`.session_middleware`: sign-out ends its session, erasure every session of the card, and a
sign-in link for an erased card opens none.
"""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..errors import ErasureIncompleteError
from ..jobs.looks import MAX_REASON
from . import pages, session_middleware
from .access import RefusedError, refuse_erased, require_card, require_csrf, require_login
from .auth import Login
from .data import CustomerPage
from .i18n import LANGS
from .pages import CUSTOMER_PAGES
from .render import lang_of, render
from .state import Web, web_of


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "?"


def _card_url(card: str, rest: str = "") -> str:
    return f"/card/{quote(card, safe='')}{rest}"


async def home(request: Request) -> Response:
    """A customer's own card, support's view; nobody else has a home page."""
    login = require_login(request, lambda who: who.role in ("customer", "support"))
    return RedirectResponse(_card_url(login.subject) if login.role == "customer" else "/support", 303)


async def language(request: Request) -> Response:
    """Keep the chosen language in a cookie and go back to the page it was chosen on."""
    lang = request.path_params["lang"]
    back = request.query_params.get("next", "/")
    if not back.startswith("/") or back.startswith("//"):
        back = "/"  # only this site's pages: never an open redirect
    response = RedirectResponse(back, 303)
    if lang in LANGS:
        response.set_cookie("lang", lang, max_age=365 * 86400, httponly=True, samesite="lax")
    return response


def _refuse_when_throttled(web: Web, request: Request) -> None:
    if web.throttled(_client(request)):
        raise RefusedError(429, "signin_title", "too_many")


def _bad_link(web: Web, request: Request) -> RefusedError:
    web.failures.allow(_client(request))  # a guess: counted against the client's address
    return RefusedError(400, "signin_title", "signin_bad")


async def _refuse_erased_card(request: Request, login: Login) -> None:
    """A link made before its card was erased opens nothing (410)."""
    if login.role == "customer":
        await refuse_erased(request, login.subject)


async def signin_page(request: Request) -> Response:
    """The page a sign-in link opens: a button that signs in, if the link is valid."""
    web = web_of(request)
    _refuse_when_throttled(web, request)
    token = request.path_params["token"]
    login = web.links.check(token)
    if login is None:
        raise _bad_link(web, request)
    await _refuse_erased_card(request, login)
    # A page with a button, not a sign-in on GET: a mail scanner that opens the link uses nothing up.
    return render(request, "signin.html", token=token)


async def signin(request: Request) -> Response:
    """Redeem the link (once) and start a new session for its login."""
    web = web_of(request)
    _refuse_when_throttled(web, request)
    form = await require_csrf(request)
    token = form.get("token", "")
    named = web.links.check(token)
    if named is not None:
        await _refuse_erased_card(request, named)
    login = web.links.redeem(token)
    if login is None:
        raise _bad_link(web, request)
    # A new session under a new id for the new login (no fixation); the old one ends.
    await session_middleware.start(
        request, {"role": login.role, "subject": login.subject, "csrf": secrets.token_urlsafe(24)}
    )
    return RedirectResponse("/", 303)


async def signout(request: Request) -> Response:
    """End the session now: its record is deleted, so a copy of the cookie opens nothing either."""
    await require_csrf(request)
    await session_middleware.end(request)
    return RedirectResponse("/", 303)


async def customer_page(request: Request) -> Response:
    """One of the card holder's pages (:data:`.pages.CUSTOMER_PAGES`), or what is held when nothing is."""
    card = request.path_params["card"]
    await require_card(request, card)
    name = request.path_params.get("page", "purchases")
    if name not in CUSTOMER_PAGES:
        raise RefusedError(404, "not_found", "not_found")
    web = web_of(request)
    page = await run_in_threadpool(web.backend.customer, card)
    context: dict[str, Any] = {"card": card, "page": name, "saved": request.query_params.get("saved") == "1"}
    if page is None:
        if name in ("data", "erase", "consents"):
            return render(request, f"{name}.html", **context, view=None)
        return render(request, "nothing.html", **context)
    context["view"] = page.view
    context["gap"] = pages.product_gap(page.profile, web.settings.privacy.default_product_data_marketing)
    context.update(await _page_context(web, request, name, card, page, context["saved"]))
    return render(request, f"{name}.html", **context)


async def _page_context(
    web: Web, request: Request, name: str, card: str, page: CustomerPage, saved: bool
) -> dict[str, Any]:
    """What page ``name`` shows of the card's data beyond its view."""
    lang = lang_of(request)
    view, profile = page.view, page.profile
    if name == "purchases":
        facts = await run_in_threadpool(web.backend.warehouse_facts, card)
        return {"p": pages.purchases(view, profile, None if facts is None else facts["chains"], lang)}
    if name == "mix":
        return {"p": pages.mix(view, lang)}
    if name == "nutrition":
        return {"p": pages.nutrition(view, lang)}
    if name == "climate":
        return {"p": pages.climate(view, lang)}
    if name == "consents":
        facts = await run_in_threadpool(web.backend.warehouse_facts, card)
        newest = None if facts is None else facts["consent"]
        email = newest["electronic_marketing"] if newest else web.settings.privacy.default_electronic_marketing
        product = (
            profile.consent.product_data if profile.consent else web.settings.privacy.default_product_data_marketing
        )
        # Right after a change the stores may not have it yet: show what the broker acknowledged.
        just_saved = request.session.pop("consents_saved", None)
        if saved and isinstance(just_saved, list) and len(just_saved) == 2:
            product, email = bool(just_saved[0]), bool(just_saved[1])
        return {"product": product, "email": email, "known": profile.consent is not None or saved}
    if name == "erase":
        return {"step": request.query_params.get("step", "")}
    return {}


async def consents(request: Request) -> Response:
    """Send the card holder's consent change; the page then shows what the broker acknowledged."""
    card = request.path_params["card"]
    await require_card(request, card)
    form = await require_csrf(request)
    product, email = form.get("product_data") == "on", form.get("email") == "on"
    change = await run_in_threadpool(web_of(request).backend.set_consents, card, product, email)
    request.session["consents_saved"] = [change.product_data_marketing, change.electronic_marketing]
    return RedirectResponse(_card_url(card, "/consents?saved=1"), 303)


async def download(request: Request) -> Response:
    """Everything held about the card, as ``receiptflow export`` writes it."""
    card = request.path_params["card"]
    await require_card(request, card)
    doc = await run_in_threadpool(web_of(request).backend.export, card)
    return Response(
        json.dumps(doc, default=str, indent=2, ensure_ascii=False),
        media_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="my-data.json"', "Cache-Control": "no-store"},
    )


async def erase(request: Request) -> Response:
    """Erase the card once its holder confirmed it; every session of the card ends with it."""
    card = request.path_params["card"]
    await require_card(request, card)
    form = await require_csrf(request)
    if form.get("confirm") != "yes":
        return render(request, "erase.html", 400, card=card, page="erase", step="confirm", must=True)
    try:
        await run_in_threadpool(web_of(request).backend.erase, card)
    except ErasureIncompleteError:
        await session_middleware.revoke_card(request, card)  # recorded as erased: no session of it stays open
        raise
    await session_middleware.revoke_card(request, card)
    return RedirectResponse("/erased", 303)  # a page of its own: a reload erases nothing and needs no session


async def erased(request: Request) -> Response:
    """Said once the card is erased (no login: its sessions have ended)."""
    return render(request, "erased.html")


async def support(request: Request) -> Response:
    """Support's full view of a card, audited per look (no look without its audit entry)."""
    login = require_login(request, lambda who: who.role == "support")
    card = request.path_params.get("card") or request.query_params.get("card")
    reason = " ".join(request.query_params.get("reason", "").split())
    if not card:
        return render(request, "support.html", doc=None, card=None, reason="")
    if not reason or len(reason) > MAX_REASON or not reason.isprintable():
        # Every staff look names its reason in the audit: ask for one it can record, show nothing.
        return render(request, "support.html", 400, doc=None, card=card, reason="", need_reason=True)
    backend = web_of(request).backend
    doc, audit_id = await run_in_threadpool(backend.support_look, card, login.subject, reason)
    text = json.dumps(doc, indent=2, ensure_ascii=False, default=str) if doc is not None else None
    return render(request, "support.html", doc=text, card=card, reason=reason, audit_id=audit_id)


ROUTES = [
    Route("/", home),
    Route("/lang/{lang}", language),
    Route("/signin/{token}", signin_page),
    Route("/signin", signin, methods=["POST"]),
    Route("/signout", signout, methods=["POST"]),
    Route("/erased", erased),
    Route("/card/{card}", customer_page),
    Route("/card/{card}/data.json", download),
    Route("/card/{card}/consents", consents, methods=["POST"]),
    Route("/card/{card}/erase", erase, methods=["POST"]),
    Route("/card/{card}/{page}", customer_page),
    Route("/support", support),
    Route("/support/card/{card}", support),
]
