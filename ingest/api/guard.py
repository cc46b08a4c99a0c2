"""What every request goes through, whichever router serves it: the limit on refused
anonymous requests, security headers, one audit record for every refusal and error, and
no traceback or internal detail to the client.

An ASGI middleware (not Starlette's BaseHTTPMiddleware, which would buffer the live feed).
Refusals decided in a transaction (`access.audited`) are recorded there; any other status
of 400 or more (a bad parameter, an unknown path, a bad token, a rate limit, an error) is
recorded here, once, after the response: on a connection of its own, else in the log.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.api.access import audit_record, audit_state, record_once
from ingest.api.audit import Action, bounded

if TYPE_CHECKING:
    from ingest.api.access import ApiContext

__all__ = ["Guard"]

log = logging.getLogger(__name__)

_PROBES = frozenset({"/healthz", "/readyz"})  # the orchestrator's, not the clinicians'
_STATIC = "/static/"
# Everything but the pages that set their own: no script, no frame, no form, no base.
_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


class Guard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api: ApiContext = scope["app"].state.api
        request = Request(scope)
        state = audit_state(request)
        path: str = scope["path"]
        address = request.client.host if request.client else "unknown"
        status = 0
        https = api.base_url.startswith("https://")

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                _secure(MutableHeaders(scope=message), path, https)
                if status >= 400 and state.who is None and path not in _PROBES:
                    api.limits.anonymous.spend(address)  # before the client can ask again
            await send(message)

        if path not in _PROBES and api.limits.anonymous.exhausted(address):
            # This address made too many refused anonymous requests: it waits.
            state.subtype = "rate_limit"
            state.quiet = not api.limits.anonymous.first_refusal(address)
            wait = api.limits.anonymous.retry_after_s(address)
            await _answer(
                sending, 429, "too many refused requests: wait", {"Retry-After": str(wait)}
            )
        else:
            try:
                await self.app(scope, receive, sending)
            except Exception:  # an error is answered and audited, never shown
                log.exception("%s %s failed", scope["method"], bounded(path, 200))
                if status == 0:
                    await _answer(sending, 500, "internal error: it is recorded")
                else:
                    status = 500  # the answer had begun (a stream): it just ends
        if status < 400 or path in _PROBES:
            return
        (api.metrics.refused if status < 500 else api.metrics.errors).labels(str(status)).inc()
        route = scope.get("route")
        subtype = state.subtype or getattr(route, "name", None) or "request"
        action = _action(scope["method"], subtype)
        await record_once(request, audit_record(request, action, subtype, status))


def _action(method: str, subtype: str) -> Action:
    if subtype == "authenticate":
        return "E"
    if method in ("GET", "HEAD", "OPTIONS"):
        return "R"
    return "D" if method == "DELETE" else "U"


def _secure(headers: MutableHeaders, path: str, https: bool) -> None:
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    headers.setdefault("Content-Security-Policy", _CSP)
    # Patient data is never kept by a browser or a proxy; Swagger UI's files may be.
    if path.startswith(_STATIC):
        headers.setdefault("Cache-Control", "public, max-age=3600")
    else:
        headers["Cache-Control"] = "no-store"
    if https:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")


async def _answer(
    send: Send, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
