"""accessaudit.asgi: the access context and request details per request, errors as HTTP.

A real FastAPI app over the test's store, called through Starlette's TestClient; records are
read back from the store.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from typing import TYPE_CHECKING, Any

import pytest
from fastapi import Depends, FastAPI, Response, WebSocket, WebSocketDisconnect
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext

from accessaudit import (
    AccessContext,
    ActorType,
    Gate,
    MacKey,
    Policy,
    SqlStore,
    access_context,
    current_context,
)
from accessaudit.asgi import AccessContextMiddleware, trace_id_from_traceparent
from tests.gatekit import EXAMPLE_POLICY, Desk, accesses, grant

if TYPE_CHECKING:
    from collections.abc import Iterator, MutableMapping
    from pathlib import Path

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def _context(scope: MutableMapping[str, Any]) -> AccessContext | None:
    """The app's authentication, reduced to a header the test sets (never the role)."""
    headers = dict(scope["headers"])
    user = headers.get(b"x-test-user")
    if user is None:
        return None
    return AccessContext(
        actor_id=user.decode(),
        actor_type=ActorType.SERVICE,
        role="app",
        purpose="service_delivery",
    )


def make_app(gate: Gate) -> FastAPI:
    """Endpoints reading through the gate: async, sync (thread pool), via a dependency."""
    desk = Desk(gate)
    app = FastAPI()
    app.add_middleware(AccessContextMiddleware, context=_context)

    def actor() -> str | None:
        context = current_context()
        return None if context is None else context.actor_id

    @app.get("/async/{customer_id}")
    async def read_async(customer_id: str) -> dict[str, Any]:
        return {"n": len(await desk.fetch(customer_id))}

    @app.get("/sync/{customer_id}")
    def read_sync(customer_id: str, who: str | None = Depends(actor)) -> dict[str, Any]:
        return {"n": len(desk.invoices(customer_id)), "who": who}

    return app


@pytest.fixture
def client(gate: Gate) -> Iterator[TestClient]:
    """The app behind the middleware, served in-process."""
    with TestClient(make_app(gate)) as test_client:
        yield test_client


def test_async_and_sync_endpoints_and_dependencies_see_the_context(
    client: TestClient, store: SqlStore
) -> None:
    """The async endpoint, the sync one in the thread pool and its dependency all see it."""
    headers = {"x-test-user": "checkout", "x-request-id": "req-42", "traceparent": TRACEPARENT}
    assert client.get("/async/acme", headers=headers).json() == {"n": 1}
    answer = client.get("/sync/acme", headers=headers)
    assert answer.json() == {"n": 10, "who": "checkout"}
    assert answer.headers["x-request-id"] == "req-42"
    records = [r.event for r in accesses(store)]
    assert len(records) == 4
    assert {(e.actor_id, e.request_id, e.trace_id) for e in records} == {
        ("checkout", "req-42", TRACE)
    }
    assert {e.origin_client_addr for e in records} == {"testclient"}


def test_an_unauthenticated_denial_carries_the_request_and_is_a_problem_403(
    client: TestClient, store: SqlStore
) -> None:
    """No context: no_context, recorded with the request's ids; 403 problem+json with the seq."""
    answer = client.get("/async/acme", headers={"traceparent": TRACEPARENT})
    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    (denial,) = accesses(store)
    assert problem["reason_code"] == "no_context"
    assert problem["type"] == "urn:accessaudit:reason/no_context"
    assert (problem["record_seq"], problem["record_chain"]) == (denial.seq, denial.chain_id)
    assert problem["status"] == 403
    assert denial.event.request_id == problem["request_id"] == answer.headers["x-request-id"]
    assert denial.event.trace_id == TRACE
    assert denial.event.origin_client_addr == "testclient"


def test_a_role_header_from_the_client_is_not_trusted(client: TestClient, store: SqlStore) -> None:
    """Only the app's function makes the context: a client's x-role header changes nothing."""
    answer = client.get("/async/acme", headers={"x-role": "sre", "x-purpose": "legal"})
    assert answer.status_code == 403
    assert accesses(store)[0].event.role is None


def test_an_unusable_audit_store_is_a_503_with_retry_after(tmp_path: Path, key: MacKey) -> None:
    """AuditUnavailable: 503, Retry-After, problem+json; the endpoint's data never leaves."""
    url = f"sqlite:///{tmp_path / 'gone' / 'audit.db'}"
    with SqlStore(url, key=key, timeout=1, must_exist=False) as store:
        gate = Gate(store, Policy.load(EXAMPLE_POLICY))
        with TestClient(make_app(gate)) as client:
            answer = client.get("/sync/acme", headers={"x-test-user": "checkout"})
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    assert answer.json()["type"] == "urn:accessaudit:audit-unavailable"


@pytest.mark.parametrize("given_id", ["x" * 129, "id with spaces", "ünïcode", "a\tb", ""], ids=repr)
def test_a_malformed_request_id_is_replaced(
    client: TestClient, store: SqlStore, given_id: str
) -> None:
    """A client's request id outside the safe alphabet or length is not stored: a new one is."""
    headers = {b"x-test-user": b"checkout", b"x-request-id": given_id.encode("utf-8")}
    answer = client.get("/async/acme", headers=headers)
    new_id = answer.headers["x-request-id"]
    assert new_id != given_id
    assert len(new_id) == 32
    assert {r.event.request_id for r in accesses(store)} == {new_id}


def test_the_current_opentelemetry_span_gives_the_trace_id(gate: Gate, store: SqlStore) -> None:
    """With a current OTel span (the otel extra), its trace id is recorded."""
    span = NonRecordingSpan(SpanContext(trace_id=int(TRACE, 16), span_id=0x1234, is_remote=False))
    app = make_app(gate)
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/async/acme",
        "raw_path": b"/async/acme",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"x-test-user", b"checkout")],
        "client": ("10.0.0.7", 5000),
        "server": ("test", 80),
    }
    with trace.use_span(span):
        asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    assert messages[0]["status"] == 200
    records = [r.event for r in accesses(store)]
    assert {(e.trace_id, e.origin_client_addr) for e in records} == {(TRACE, "10.0.0.7")}


def test_a_grant_is_found_by_customer_and_ticket_id(gate: Gate) -> None:
    """A support tool has the ticket id: the live grant for it, or None."""
    assert gate.registry.grant_for_case("acme", "CASE-1") is None
    first = grant(gate, case_id="CASE-1")
    newer = grant(gate, case_id="CASE-1")
    grant(gate, case_id="CASE-2")
    grant(gate, customer="globex", case_id="CASE-1")
    found = gate.registry.grant_for_case("acme", "CASE-1")
    assert found is not None
    assert found.grant_id == newer
    gate.registry.revoke_grant(newer, revoked_by="acme-admin")
    found = gate.registry.grant_for_case("acme", "CASE-1")
    assert found is not None
    assert found.grant_id == first
    assert [g.case_id for g in gate.registry.grants("acme", case_id="CASE-2")] == ["CASE-2"]


def test_a_context_left_in_another_context_says_what_went_wrong() -> None:
    """Entered in one context and left in another (a sync yield dependency): a clear error."""
    scope = access_context(actor_id="a", role="app", purpose="service_delivery")
    contextvars.copy_context().run(scope.__enter__)
    with pytest.raises(RuntimeError, match="sync `yield` dependency"):
        contextvars.copy_context().run(scope.__exit__, None, None, None)


@given(
    st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
    st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
    st.sampled_from(["00", "01", "7f"]),
)
def test_a_valid_traceparent_gives_its_trace_id(trace_id: str, parent: str, version: str) -> None:
    """Any well-formed traceparent yields its trace id, unless an id is all zeros."""
    found = trace_id_from_traceparent(f"{version}-{trace_id}-{parent}-01")
    zero = set(trace_id) == {"0"} or set(parent) == {"0"}
    assert found == (None if zero else trace_id)


@given(st.text(max_size=80))
def test_any_header_value_gives_a_trace_id_or_none(value: str) -> None:
    """Hostile traceparent values never raise; anything returned is 32 lower-case hex."""
    found = trace_id_from_traceparent(value)
    assert found is None or (len(found) == 32 and set(found) <= set("0123456789abcdef"))
    assert json.dumps(found)  # and safe to store


def _invalid_context(scope: MutableMapping[str, Any]) -> AccessContext | None:
    return AccessContext(actor_id="")  # empty: the record could not hold it


def test_an_invalid_context_is_a_400_problem_or_a_closed_websocket() -> None:
    """The app's own values that the record cannot hold: 400 over HTTP, close 1008 on a socket."""
    app = FastAPI()
    app.add_middleware(AccessContextMiddleware, context=_invalid_context)

    @app.get("/x")
    def x() -> dict[str, str]:
        return {}

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()

    with TestClient(app) as client:
        answer = client.get("/x")
        assert answer.status_code == 400
        assert answer.json()["type"] == "urn:accessaudit:invalid-access-context"
        with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/ws"):
            pass
    assert closed.value.code == 1008


def test_the_apps_own_request_id_header_is_kept_and_forwarded_for_takes_the_last_hop(
    gate: Gate, store: SqlStore
) -> None:
    """No second X-Request-ID; behind a proxy, the address it appended (not the client's)."""
    app = make_app(gate)

    @app.get("/own-id")
    def own_id(response: Response) -> dict[str, str]:
        response.headers["x-request-id"] = "app-chosen"
        return {}

    app.user_middleware.clear()
    app.add_middleware(AccessContextMiddleware, context=_context, trust_forwarded_for=True)
    with TestClient(app) as client:
        answer = client.get("/own-id")
        client.get(
            "/async/acme",
            headers={"x-test-user": "checkout", "x-forwarded-for": "6.6.6.6, 10.1.2.3"},
        )
    assert answer.headers.get_list("x-request-id") == ["app-chosen"]
    assert {r.event.origin_client_addr for r in accesses(store)} == {"10.1.2.3"}
