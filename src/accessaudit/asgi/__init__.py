"""The gate in a web app: a pure ASGI middleware (Starlette, FastAPI, any ASGI framework).

::

    async def who(scope: Scope) -> AccessContext | None:     # your authentication
        user = await authenticate(scope)                     # None: not authenticated
        return None if user is None else AccessContext(actor_id=user.id, role=user.role,
                                                         purpose="service_delivery")

    app.add_middleware(AccessContextMiddleware, context=who)

For every HTTP (and websocket) request it:

- asks the app's ``context`` function for the ``AccessContext`` and puts it in force for
  the whole request: async endpoints, sync endpoints in the thread pool and dependencies
  all see it. Nothing comes from the client but what that function chooses to read: the
  middleware trusts no role or purpose header;
- puts the request's id (``X-Request-ID`` if the client sent a well-formed one, else a new
  one, echoed in the response), the W3C ``traceparent`` trace id (or, with the ``otel``
  extra installed, the current OpenTelemetry span's) and the client address in force, so
  every record of the request carries them, a denial for want of a context included;
- turns ``AccessDenied`` into 403 and ``AuditUnavailable`` into 503 with ``Retry-After``,
  as RFC 9457 ``application/problem+json`` naming the reason code and the seq of the
  committed record, if the response has not started yet.
"""

from __future__ import annotations

import inspect
import json
import re
import uuid
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Final

from accessaudit.exceptions import AccessDenied, AuditUnavailable, InvalidEvent
from accessaudit.gate.context import AccessContext, RequestInfo, access_context, request_scope

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
    ContextFunction = Callable[[Scope], AccessContext | Awaitable[AccessContext | None] | None]

__all__ = ["AccessContextMiddleware", "trace_id_from_traceparent"]

#: A request id taken from the client: short, and only characters safe in a log line.
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
PROBLEM_JSON: Final = "application/problem+json"


def trace_id_from_traceparent(value: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` header (lower-case hex), or None if invalid."""
    match = _TRACEPARENT.fullmatch((value or "").strip())
    if match is None:
        return None
    version, trace_id, parent_id, _ = match.groups()
    if version == "ff" or set(trace_id) == {"0"} or set(parent_id) == {"0"}:
        return None
    return trace_id


def _otel_trace_id() -> str | None:
    """The current OpenTelemetry span's trace id, when the ``otel`` extra is installed."""
    try:
        from opentelemetry import trace  # noqa: PLC0415 - optional: the otel extra
    except ImportError:  # pragma: no cover - the dev environment has it
        return None
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


class AccessContextMiddleware:
    """Sets the access context and request details per request; maps gate errors to HTTP.

    ``context``: the app's function (sync or async) from the ASGI scope to the
    ``AccessContext``, or None for a request nobody authenticated (its gated reads are
    then denied ``no_context``, and recorded with the request's ids).
    ``request_id_header``: where a client's request id is taken from and echoed to.
    ``trust_forwarded_for``: take the client address from ``X-Forwarded-For`` (its last
    entry, which the proxy in front of the app added): only behind exactly one proxy that
    appends to it, since clients can send anything.
    ``retry_after``: seconds, sent with 503.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        context: ContextFunction,
        request_id_header: str = "x-request-id",
        trust_forwarded_for: bool = False,
        retry_after: int = 5,
    ) -> None:
        self.app, self.context = app, context
        self.request_id_header = request_id_header.lower()
        self.trust_forwarded_for, self.retry_after = trust_forwarded_for, retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run one request of the wrapped app with its context in force."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        request = self._request(scope, headers)
        started = False

        name = self.request_id_header.encode()

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                if not any(key.lower() == name for key, _ in headers):  # the app's own wins
                    headers.append((name, (request.request_id or "").encode()))
                message["headers"] = headers
            await send(message)

        with request_scope(request):
            try:
                found = self.context(scope)
                context = await found if inspect.isawaitable(found) else found
            except InvalidEvent as e:  # the app's own values do not fit the record
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})  # policy violation
                    return
                await self._problem(send, 400, "invalid-access-context", str(e), request)
                return
            scope_of = nullcontext() if context is None else access_context(context)
            with scope_of:
                try:
                    await self.app(scope, receive, send_with_id)
                except AccessDenied as denied:
                    if started or scope["type"] != "http":
                        raise
                    await self._denied(send, denied, request)
                except AuditUnavailable:
                    if started or scope["type"] != "http":
                        raise
                    await self._problem(
                        send,
                        503,
                        "audit-unavailable",
                        "the access could not be recorded, so it did not happen; retry later",
                        request,
                        headers=[(b"retry-after", str(self.retry_after).encode())],
                    )

    def _request(self, scope: Scope, headers: dict[str, str]) -> RequestInfo:
        given = headers.get(self.request_id_header, "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        trace_id = _otel_trace_id() or trace_id_from_traceparent(headers.get("traceparent"))
        client = scope.get("client")
        address = client[0] if client else None
        if self.trust_forwarded_for and headers.get("x-forwarded-for"):
            # The last hop is the one the trusted proxy added; the ones before it are
            # whatever the client sent.
            address = headers["x-forwarded-for"].split(",")[-1].strip() or address
        if address is not None and not re.fullmatch(r"[0-9A-Za-z.:\[\]%_-]{1,64}", address):
            address = None  # not an address: never store what a client made up
        return RequestInfo(request_id=request_id, trace_id=trace_id, client_addr=address)

    async def _denied(self, send: Send, denied: AccessDenied, request: RequestInfo) -> None:
        decision, record = denied.decision, denied.record
        reason = decision.reason.value if decision is not None else "access_denied"
        extra: dict[str, Any] = {"reason_code": reason}
        if record is not None:
            extra |= {"record_seq": record.seq, "record_chain": record.chain_id}
        detail = decision.reason.meaning if decision is not None else "access denied"
        await self._problem(send, 403, f"reason/{reason}", detail, request, extra=extra)

    async def _problem(
        self,
        send: Send,
        status: int,
        kind: str,
        detail: str,
        request: RequestInfo,
        *,
        extra: dict[str, Any] | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """An RFC 9457 problem response; its detail never quotes customer data."""
        body = json.dumps(
            {
                "type": f"urn:accessaudit:{kind}",
                "title": _TITLES[status],
                "status": status,
                "detail": detail,
                "request_id": request.request_id,
                **(extra or {}),
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (self.request_id_header.encode(), (request.request_id or "").encode()),
                    *(headers or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


_TITLES: Final = {
    400: "Invalid access context",
    403: "Access denied",
    503: "Audit log unavailable",
}


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (the first of repeated ones), as text."""
    found: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        found.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return found
