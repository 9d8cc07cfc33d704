"""The session of each request: read from Redis before the handler, kept or ended before the answer.

:class:`ServerSessions` is an ASGI middleware in place of Starlette's signed-cookie one. It looks the
cookie's id up (:class:`.sessions.SessionStore`) and gives the handlers its data as
``request.session``, a plain dict, as Starlette's does. When the handler has answered, before the
answer leaves: a used session is kept for another idle period (its data stored if it changed), a
session that was never stored is created only if the handler put something in it (a visitor who
only reads the sign-in or refusal page leaves nothing in Redis), and a cookie whose session is gone
is cleared.

The handlers start and end sessions through :func:`start` (a new id for a new login: no fixation),
:func:`end` (sign-out: the record is deleted before the answer is made) and :func:`revoke_card`
(erasure: every session of the card, other browsers' included). A session that was ended is not
written back, by this request or one still in flight (see :mod:`.sessions`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ReceiptflowError
from .sessions import Record, SessionStore, well_formed

SESSION_COOKIE = "receiptflow_session"
_HANDLE = "receiptflow.session"


@dataclass
class _Handle:
    """What the middleware knows of the request's session."""

    store: SessionStore
    sent_id: str | None  # the cookie's id, whether or not it named a live session
    record: Record | None  # the live session it named
    data: dict[str, Any] = field(default_factory=dict)  # request.session
    before: str = "{}"  # the data as loaded, to see whether it changed
    ended: bool = False  # ended by this request: never written back
    fresh: bool = False  # a new login: a new id at commit


def _handle(request: Request) -> _Handle:
    handle: _Handle = request.scope[_HANDLE]
    return handle


def _snapshot(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, default=str)


async def start(request: Request, data: dict[str, Any]) -> None:
    """Begin a new session with ``data`` (a login) under a new id; the request's old one ends now."""
    handle = _handle(request)
    if handle.record is not None and handle.sent_id is not None:
        await run_in_threadpool(handle.store.delete, handle.sent_id, handle.record)
    handle.record = None
    handle.fresh = True
    handle.data.clear()
    handle.data.update(data)


async def end(request: Request) -> None:
    """End the request's session now (its record is deleted before this returns)."""
    handle = _handle(request)
    if handle.record is not None and handle.sent_id is not None:
        await run_in_threadpool(handle.store.delete, handle.sent_id, handle.record)
    handle.ended = True
    handle.data.clear()


async def revoke_card(request: Request, card: str) -> int:
    """End every session of ``card`` now, this request's included when it is one; how many were alive."""
    handle = _handle(request)
    ended = await run_in_threadpool(handle.store.revoke_card, card)
    if handle.record is not None and handle.record.card == card:
        handle.ended = True
        handle.data.clear()
    return ended


class ServerSessions:
    """ASGI middleware: ``request.session`` from the session store (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        store: SessionStore,
        secure: bool,
        unavailable: Callable[[Request, Exception], Awaitable[Response]],
    ) -> None:
        self.app = app
        self.store = store
        self.unavailable = unavailable  # the message page of a store that does not answer
        self.cookie_attributes = "; path=/; httponly; samesite=lax" + ("; secure" if secure else "")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        sent = HTTPConnection(scope).cookies.get(SESSION_COOKIE)
        handle = _Handle(self.store, sent, None)
        scope["session"] = handle.data
        scope[_HANDLE] = handle
        if well_formed(sent):
            assert sent is not None
            try:
                handle.record = await run_in_threadpool(self.store.load, sent)
            except ReceiptflowError as exc:
                await self._unavailable(scope, receive, send, exc)
                return
            if handle.record is not None:
                handle.data.update(handle.record.data)
                handle.before = _snapshot(handle.data)
        failed = False

        async def send_with_cookie(message: Message) -> None:
            nonlocal failed
            if failed:
                return  # the answer was replaced by the message page
            if message["type"] == "http.response.start":
                try:
                    await self._commit(handle, MutableHeaders(scope=message))
                except ReceiptflowError as exc:
                    failed = True
                    await self._unavailable(scope, receive, send, exc)
                    return
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    async def _unavailable(self, scope: Scope, receive: Receive, send: Send, exc: ReceiptflowError) -> None:
        """The message page (503) when the session store does not answer: never a traceback."""
        scope["session"] = {}
        response = await self.unavailable(Request(scope, receive), exc)
        await response(scope, receive, send)

    async def _commit(self, handle: _Handle, headers: MutableHeaders) -> None:
        """Keep, create or forget the session as the handler left it, and set the cookie to match."""
        if handle.ended or not handle.data:
            if handle.record is not None and handle.sent_id is not None and not handle.ended:
                await run_in_threadpool(self.store.delete, handle.sent_id, handle.record)  # emptied: over
            if handle.sent_id is not None:
                self._clear_cookie(headers)
            return
        if handle.record is None or handle.fresh or handle.sent_id is None:
            session_id = await run_in_threadpool(self.store.create, dict(handle.data))
            self._set_cookie(headers, session_id)
            return
        record = Record(handle.record.created, dict(handle.data))
        changed = _snapshot(handle.data) != handle.before
        if not await run_in_threadpool(self.store.keep, handle.sent_id, record, changed):
            self._clear_cookie(headers)  # ended meanwhile (sign-out elsewhere, erasure): it stays ended

    def _set_cookie(self, headers: MutableHeaders, session_id: str) -> None:
        max_age = self.store.limits.absolute
        headers.append("Set-Cookie", f"{SESSION_COOKIE}={session_id}; max-age={max_age}{self.cookie_attributes}")

    def _clear_cookie(self, headers: MutableHeaders) -> None:
        headers.append(
            "Set-Cookie",
            f"{SESSION_COOKIE}=null; expires=Thu, 01 Jan 1970 00:00:00 GMT; max-age=0{self.cookie_attributes}",
        )
