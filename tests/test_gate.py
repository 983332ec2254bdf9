"""The gate on both databases: happy paths, every reason code, what records say and never say."""

from __future__ import annotations

import asyncio
import inspect
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from structlog.testing import capture_logs

from accessaudit import (
    AccessContext,
    AccessDenied,
    Decision,
    EventType,
    Gate,
    ReasonCode,
    access_context,
    verify_store,
)
from accessaudit.gate._access import NO_CONTEXT_ACTOR
from accessaudit.gate._allowance import ALLOWANCE_EVENTS, records_used
from tests.gatekit import CANARY, Desk, FakeClock, accesses, agent, kinds, service
from tests.gatekit import grant as _grant

if TYPE_CHECKING:
    from collections.abc import Callable

    from accessaudit import SqlStore
    from tests.conftest import Backend


@pytest.fixture
def desk(gate: Gate) -> Desk:
    """Protected functions over the test's gate."""
    return Desk(gate)


def _all_text(store: SqlStore) -> str:
    return repr([r.event.to_dict() for r in store.read()])


def test_support_agent_with_a_live_grant_reads_and_both_records_are_committed(
    gate: Gate, desk: Desk, store: SqlStore
) -> None:
    """Allowed is committed before the body, completed after, with who, why, what and how many."""
    grant = _grant(gate)
    with access_context(agent(grant)):
        rows = desk.contacts("acme", ["c-1", "c-2"])
    assert len(rows) == 2
    assert desk.ran == ["contacts"]
    allowed, completed = accesses(store)
    assert allowed.seq < completed.seq
    event = allowed.event
    assert (event.event_type, event.decision, event.reason_code) == (
        EventType.ACCESS_ALLOWED,
        Decision.ALLOWED,
        "allowed",
    )
    assert (event.actor_id, event.role, event.purpose, event.evidence_ref) == (
        "agent-7",
        "support_agent",
        "support_request",
        grant,
    )
    assert (event.customer_id, event.resource, event.action) == ("acme", "crm.contacts", "read")
    assert event.data_categories == ("contact",)
    assert event.field_names == ("name", "email")
    assert event.subject_ids == ("c-1", "c-2")
    assert event.policy_version == gate.setup.policy.version
    assert event.request_id == "req-1"
    assert event.origin_service == "test-app"
    assert str(event.attributes["function"]).endswith("contacts")
    assert completed.event.event_type is EventType.ACCESS_COMPLETED
    assert completed.event.record_count == 2
    assert completed.event.attributes["access_event_id"] == str(event.event_id)
    assert CANARY not in _all_text(store)
    assert verify_store(store, store.key).intact


def test_each_purpose_has_a_happy_path(gate: Gate, desk: Desk, store: SqlStore) -> None:
    """A service identity, the customer's own user, an open incident, a legal request."""
    registry = gate.registry
    with access_context(service()):
        assert desk.invoices("acme", limit=3) == (0, 1, 2)
    own = AccessContext(
        actor_id="u-9", role="customer_user", purpose="service_delivery", actor_customer_id="acme"
    )
    with access_context(own):
        desk.invoices("acme")
    registry.open_incident("INC-7", customers=["acme"], opened_by="sre-1")
    sre = AccessContext(
        actor_id="sre-1", role="sre", purpose="technical_problem", evidence_ref="INC-7"
    )
    with access_context(sre):
        assert desk.contacts_of({"customer": "acme"}) == {"email": CANARY}
    registry.register_legal_request(
        "SUB-2026-1",
        authority="District Court",
        customer_id="acme",
        expires_at=gate.setup.clock() + timedelta(days=30),
        notify_after=gate.setup.clock() + timedelta(days=90),
        registered_by="legal-1",
    )
    lawyer = AccessContext(
        actor_id="legal-1", role="legal", purpose="legal_requirement", evidence_ref="SUB-2026-1"
    )
    with access_context(lawyer):
        desk.invoices("acme")
    assert desk.ran == ["invoices", "invoices", "contacts_of", "invoices"]
    assert kinds(store) == ["access.allowed:allowed", "access.completed:allowed"] * 4
    legal_allowed = accesses(store)[-2].event
    assert "notify_after" in legal_allowed.attributes  # the transparency report honours it
    assert accesses(store)[2].event.attributes.get("actor_customer_id") == "acme"


def test_break_glass_is_allowed_only_as_the_policy_says_and_is_flagged(
    desk: Desk, store: SqlStore
) -> None:
    """An SRE with a justification and no incident: allowed, flagged on both records."""
    glass = AccessContext(
        actor_id="sre-1",
        role="sre",
        purpose="technical_problem",
        break_glass=True,
        justification="pager: logins failing for everyone",
    )
    with access_context(glass):
        desk.contacts("acme", [])
    allowed, completed = accesses(store)
    assert allowed.event.reason_code == "break_glass"
    assert allowed.event.attributes["break_glass"] is True
    assert completed.event.attributes["break_glass"] is True
    assert allowed.event.justification == "pager: logins failing for everyone"


Scenario = tuple[ReasonCode, "Callable[[], object]"]
MISTAKES: dict[str, Callable[[Gate, Desk, FakeClock], Scenario]] = {}


def _mistake(name: str) -> Callable[[Callable[[Gate, Desk, FakeClock], Scenario]], None]:
    def register(setup: Callable[[Gate, Desk, FakeClock], Scenario]) -> None:
        MISTAKES[name] = setup

    return register


def _in(context: AccessContext | None, reason: ReasonCode, call: Callable[[], object]) -> Scenario:
    def in_context() -> object:
        if context is None:
            return call()
        with access_context(context):
            return call()

    return reason, in_context


def _sre(incident: str) -> AccessContext:
    return AccessContext(
        actor_id="sre-1", role="sre", purpose="technical_problem", evidence_ref=incident
    )


@_mistake("no context at all")
def _(gate: Gate, desk: Desk, clock: FakeClock) -> Scenario:
    return _in(None, ReasonCode.NO_CONTEXT, lambda: desk.contacts("acme", ["c-1"]))


@_mistake("misspelt purpose")
def _(gate: Gate, desk: Desk, clock: FakeClock) -> Scenario:
    ctx = agent(_grant(gate), purpose="support-request")
    return _in(ctx, ReasonCode.UNKNOWN_PURPOSE, lambda: desk.contacts("acme", ["c-1"]))


@_mistake("support agent claiming a technical problem")
def _(gate: Gate, desk: Desk, clock: FakeClock) -> Scenario:
    ctx = agent("INC-1", purpose="technical_problem")
    return _in(ctx, ReasonCode.ROLE_NOT_ALLOWED, lambda: desk.contacts("acme", ["c-1"]))


@_mistake("resource missing from the policy")
def _(gate: Gate, desk: Desk, clock: FakeClock) -> Scenario:
    undeclared = gate.protect("hr.salaries")(lambda customer_id: None)
    return _in(service(), ReasonCode.RESOURCE_NOT_IN_POLICY, lambda: undeclared("acme"))


@_mistake("sre reading billing for a technical problem")
def _(gate: Gate, desk: Desk, clock: FakeClock) -> Scenario:
    gate.registry.open_incident("INC-1", customers=["acme"], opened_by="sre-1")
    reason = ReasonCode.PURPOSE_NOT_ALLOWED_FOR_RESOURCE
    return _in(_sre("INC-1"), reason, lambda: desk.invoices("acme"))


@_mistake("customer id not passed")
def _(gate: Gate, desk: Desk, clock: FakeClock) -> Scenario:
    return _in(service(), ReasonCode.CUSTOMER_UNRESOLVED, lambda: desk.contacts_of({}))


@_mistake("support without a grant")
def _(gate: Gate, desk: Desk, clock: FakeClock) -> Scenario:
    return _in(agent(None), ReasonCode.MISSING_EVIDENCE, lambda: desk.contacts("acme", ["c-1"]))


@_mistake("grant id with a typo")
def _(gate: Gate, desk: Desk, clock: FakeClock) -> Scenario:
    _grant(gate)
    ctx = agent("grant-00000000")
    return _in(ctx, ReasonCode.EVIDENCE_NOT_FOUND, lambda: desk.contacts("acme", ["c-1"]))


@_mistake("expired grant")
def _(gate: Gate, desk: Desk, clock: FakeClock) -> Scenario:
    ctx = agent(_grant(gate))
    clock.advance(days=3)
    return _in(ctx, ReasonCode.EVIDENCE_EXPIRED, lambda: desk.contacts("acme", ["c-1"]))


@_mistake("revoked grant")
def _(gate: Gate, desk: Desk, clock: FakeClock) -> Scenario:
    grant = _grant(gate)
    gate.registry.revoke_grant(grant, revoked_by="acme-admin")
    return _in(agent(grant), ReasonCode.EVIDENCE_REVOKED, lambda: desk.contacts("acme", ["c-1"]))


@_mistake("valid case, another customer's data")
def _(gate: Gate, desk: Desk, clock: FakeClock) -> Scenario:
    ctx = agent(_grant(gate, customer="globex"))
    reason = ReasonCode.EVIDENCE_CUSTOMER_MISMATCH
    return _in(ctx, reason, lambda: desk.contacts("acme", ["c-1"]))


@_mistake("contact grant used on billing")
def _(gate: Gate, desk: Desk, clock: FakeClock) -> Scenario:
    ctx = agent(_grant(gate))
    return _in(ctx, ReasonCode.EVIDENCE_SCOPE_EXCEEDED, lambda: desk.invoices("acme"))


@_mistake("incident closed yesterday")
def _(gate: Gate, desk: Desk, clock: FakeClock) -> Scenario:
    gate.registry.open_incident("INC-2", all_customers=True, opened_by="sre-1")
    gate.registry.close_incident("INC-2", closed_by="sre-1")
    clock.advance(days=1)
    return _in(_sre("INC-2"), ReasonCode.EVIDENCE_EXPIRED, lambda: desk.contacts("acme", []))


@_mistake("legal request for another customer")
def _(gate: Gate, desk: Desk, clock: FakeClock) -> Scenario:
    gate.registry.register_legal_request(
        "SUB-9",
        authority="Court",
        customer_id="globex",
        expires_at=clock.now + timedelta(days=5),
        registered_by="legal-1",
    )
    ctx = AccessContext(
        actor_id="legal-1", role="legal", purpose="legal_requirement", evidence_ref="SUB-9"
    )
    reason = ReasonCode.EVIDENCE_CUSTOMER_MISMATCH
    return _in(ctx, reason, lambda: desk.contacts("acme", ["c-1"]))


@_mistake("more subject ids than a record can hold")
def _(gate: Gate, desk: Desk, clock: FakeClock) -> Scenario:
    many = [f"c-{i}" for i in range(1001)]
    return _in(service(), ReasonCode.INVALID_REQUEST, lambda: desk.contacts("acme", many))


@pytest.mark.parametrize("mistake", MISTAKES)
def test_each_mistake_is_denied_with_its_reason_and_recorded(
    mistake: str, gate: Gate, desk: Desk, clock: FakeClock, store: SqlStore
) -> None:
    """The body never runs; the denial is committed first; the message says how to fix it."""
    reason, call = MISTAKES[mistake](gate, desk, clock)
    with pytest.raises(AccessDenied) as caught:
        call()
    denied = caught.value
    assert isinstance(denied, PermissionError)
    assert denied.reason is reason
    assert f"denied, {reason.value}: " in str(denied)
    assert f"to fix: {reason.fix}" in str(denied)
    assert desk.ran == []
    records = accesses(store)
    assert [r.event.event_type for r in records] == [EventType.ACCESS_DENIED]
    assert records[0].event.reason_code == reason.value
    assert records[0].event.decision is Decision.DENIED
    assert denied.record is not None
    assert denied.record.seq == records[0].seq
    assert f"recorded as seq {records[0].seq}" in str(denied)
    assert verify_store(store, store.key).intact


def test_a_read_without_context_is_recorded_against_no_one(desk: Desk, store: SqlStore) -> None:
    """The denial names the missing context, the resource and the customer."""
    with pytest.raises(AccessDenied, match="no_context"):
        desk.contacts("acme", ["c-1"])
    (denied,) = accesses(store)
    assert denied.event.actor_id == NO_CONTEXT_ACTOR
    assert denied.event.purpose is None
    assert (denied.event.customer_id, denied.event.subject_ids) == ("acme", ("c-1",))


def test_a_forged_grant_row_is_not_honoured(
    backend: Backend, gate: Gate, desk: Desk, store: SqlStore
) -> None:
    """A grant copied in by SQL under another id fails its integrity check: evidence_tampered."""
    grant = _grant(gate, customer="globex")
    backend.drop_guards()
    # The owner rewrites the grant's customer without the HMAC key.
    backend.sql(
        "UPDATE accessaudit_events SET customer_id = 'acme' WHERE evidence_ref = :g", g=grant
    )
    with access_context(agent(grant)), pytest.raises(AccessDenied) as caught:
        desk.contacts("acme", ["c-1"])
    assert caught.value.reason is ReasonCode.EVIDENCE_TAMPERED
    assert desk.ran == []
    listed = {g.grant_id: g for g in gate.registry.grants()}
    assert listed[grant].intact is False


def test_a_grant_allowance_counts_records_and_withholds_what_exceeds_it(
    gate: Gate, desk: Desk, store: SqlStore
) -> None:
    """max_records: asked-for ids count up front; a bigger result is withheld, not returned."""
    grant = _grant(gate, max_records=4)
    with access_context(agent(grant)):
        desk.contacts("acme", ["a", "b"])  # 2 of 4
        denied = "allows 4 records; 2 read so far or held by accesses in progress, 3 more"
        with pytest.raises(AccessDenied, match=denied):
            desk.contacts("acme", ["c", "d", "e"])
        assert list(desk.stream("acme", 1)) == [f"{CANARY}-0"]  # 3 of 4
        generator = desk.stream("acme", 5)
        assert next(generator) == f"{CANARY}-0"  # 4 of 4
        with pytest.raises(AccessDenied, match="withheld") as caught:
            next(generator)
    assert caught.value.reason is ReasonCode.EVIDENCE_SCOPE_EXCEEDED
    failed = accesses(store)[-1].event
    assert failed.event_type is EventType.ACCESS_FAILED
    assert (failed.record_count, failed.attributes["withheld"]) == (1, True)
    assert records_used(store.evidence_uses(grant, event_types=ALLOWANCE_EVENTS)) == 4
    with access_context(agent(grant)), pytest.raises(AccessDenied, match="4 read so far"):
        desk.contacts("acme", [])


def test_results_over_the_allowance_are_withheld(gate: Gate, store: SqlStore) -> None:
    """A function returning more records than the grant has left returns nothing."""
    grant = _grant(gate, max_records=2)

    @gate.protect("crm.contacts")
    def everyone(customer_id: str) -> list[str]:
        return ["a", "b", "c"]

    with access_context(agent(grant)), pytest.raises(AccessDenied, match="the result has 3"):
        everyone("acme")
    assert kinds(store)[-1] == "access.failed:evidence_scope_exceeded"
    assert records_used(store.evidence_uses(grant, event_types=ALLOWANCE_EVENTS)) == 0


def test_a_failing_body_is_recorded_by_exception_type_only(desk: Desk, store: SqlStore) -> None:
    """access.failed names the exception's type; its message (with data) stays out."""
    with access_context(service()), pytest.raises(KeyError, match=CANARY):
        desk.broken("acme")
    _, failed = accesses(store)
    assert failed.event.event_type is EventType.ACCESS_FAILED
    assert failed.event.attributes["error_type"] == "builtins.KeyError"
    assert CANARY not in _all_text(store)


def test_generators_are_gated_when_iterated_and_counted(desk: Desk, store: SqlStore) -> None:
    """Nothing happens at the call; the decision comes at the first item; items are counted."""
    generator = desk.stream("acme", 3)
    assert accesses(store) == []
    with access_context(service()):
        assert list(generator) == [f"{CANARY}-{i}" for i in range(3)]
        early = desk.stream("acme", 10)
        next(early)
        early.close()
    counts = [(r.event.event_type.value, r.event.record_count) for r in accesses(store)]
    assert counts == [
        ("access.allowed", None),
        ("access.completed", 3),
        ("access.allowed", None),
        ("access.completed", 1),
    ]
    assert accesses(store)[-1].event.attributes["stopped_early"] is True


def test_generators_pass_send_and_throw_through(gate: Gate, store: SqlStore) -> None:
    """A wrapped generator behaves like the original for send() and throw()."""

    @gate.protect("crm.contacts")
    def echo(customer_id: str) -> Any:
        received = yield "ready"
        while True:
            try:
                received = yield f"got {received}"
            except ValueError:
                received = "recovered"

    with access_context(service()):
        generator = echo("acme")
        assert next(generator) == "ready"
        assert generator.send("x") == "got x"
        assert generator.throw(ValueError("ignored")) == "got recovered"
        generator.close()
    assert kinds(store) == ["access.allowed:allowed", "access.completed:allowed"]


def test_async_functions_and_async_generators(desk: Desk, store: SqlStore) -> None:
    """Coroutines stay coroutines; async generators are gated at first item and counted."""
    assert inspect.iscoroutinefunction(desk.fetch)
    assert inspect.isasyncgenfunction(desk.astream)

    async def main() -> tuple[list[str], list[str]]:
        with access_context(service()):
            fetched = await desk.fetch("acme")
            streamed = [item async for item in desk.astream("acme", 2)]
        return fetched, streamed

    assert asyncio.run(main()) == ([CANARY], [f"{CANARY}-0", f"{CANARY}-1"])
    counts = [(r.event.event_type.value, r.event.record_count) for r in accesses(store)]
    assert counts == [
        ("access.allowed", None),
        ("access.completed", 1),
        ("access.allowed", None),
        ("access.completed", 2),
    ]

    async def denied() -> None:
        await desk.fetch("acme")

    with pytest.raises(AccessDenied, match="no_context"):
        asyncio.run(denied())
    assert desk.ran == ["fetch", "astream"]


def test_the_wrapped_function_keeps_its_signature_and_name(desk: Desk) -> None:
    """The inspect module and help() see the original; methods work as methods."""
    assert (
        str(inspect.signature(desk.invoices))
        == "(customer_id: 'str', limit: 'int' = 10) -> 'tuple[int, ...]'"
    )
    assert desk.invoices.__name__ == "invoices"


def test_methods_can_be_protected(gate: Gate, store: SqlStore) -> None:
    """The instance is just another argument; the customer comes from the instance."""

    class Repository:
        def __init__(self, customer_id: str) -> None:
            self.customer_id = customer_id

        @gate.protect("crm.contacts", customer=lambda args: args["self"].customer_id)
        def names(self, limit: int) -> list[str]:
            return ["n"] * limit

    with access_context(service()):
        assert Repository("acme").names(2) == ["n", "n"]
    assert accesses(store)[0].event.customer_id == "acme"


def test_declaring_a_missing_parameter_fails_at_decoration(gate: Gate) -> None:
    """A typo in the customer parameter's name is caught when the module loads."""
    with pytest.raises(TypeError, match="has no parameter 'customer'"):

        @gate.protect("crm.contacts", customer="customer")
        def read(customer_id: str) -> None:
            return None


def test_the_guard_form_records_like_the_decorator(gate: Gate, store: SqlStore) -> None:
    """In ``with gate.guard(...) as access:`` the block is the protected code."""
    with access_context(service()):
        with gate.guard("crm.contacts", customer_id="acme", subject_ids=["c-1"]) as access:
            access.record_count = 1
        with pytest.raises(ZeroDivisionError), gate.guard("crm.contacts", customer_id="acme"):
            _ = 1 / 0

        async def main() -> None:
            async with gate.guard("crm.contacts", customer_id=42) as access:
                access.record_count = 5

        asyncio.run(main())
    assert kinds(store) == [
        "access.allowed:allowed",
        "access.completed:allowed",
        "access.allowed:allowed",
        "access.failed:allowed",
        "access.allowed:allowed",
        "access.completed:allowed",
    ]
    assert accesses(store)[-1].event.customer_id == "42"
    assert accesses(store)[-1].event.record_count == 5


def test_records_are_logged_to_structlog_after_commit(gate: Gate, desk: Desk) -> None:
    """One structlog event per committed record, named by its type, flat keys, no data."""
    with capture_logs() as logs:
        with access_context(service()):
            desk.contacts("acme", ["c-1"])
        with pytest.raises(AccessDenied):
            desk.contacts("acme", ["c-1"])
    assert [log["event"] for log in logs] == ["access.allowed", "access.completed", "access.denied"]
    assert logs[0]["resource"] == "crm.contacts"
    assert logs[0]["customer_id"] == "acme"
    assert logs[1]["record_count"] == 1
    assert logs[2]["reason_code"] == "no_context"
    assert all(isinstance(log["seq"], int) for log in logs)
    assert CANARY not in repr(logs)
