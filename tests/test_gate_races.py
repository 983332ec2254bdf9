"""Gate logic under pressure: withdrawn evidence, shared allowances, sly ids, blank reasons."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from accessaudit import (
    AccessContext,
    AccessDenied,
    EventType,
    InvalidEvent,
    ReasonCode,
    access_context,
    carry_context,
)
from accessaudit.gate._allowance import ALLOWANCE_EVENTS, RESERVED, records_used
from accessaudit.gate.purposes import EvidenceKind
from accessaudit.gate.registry import EvidenceRegistry
from accessaudit.record.fields import MAX_LIST_ITEMS
from tests.gatekit import Desk, accesses, agent, kinds
from tests.gatekit import grant as _grant

if TYPE_CHECKING:
    from accessaudit import Gate, SqlStore
    from accessaudit.gate.evidence import Evidence


class _Sly(str):
    """An id that claims to equal anything: the gate must compare the plain text it holds."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__


def _no_allowed_after_withdrawal(store: SqlStore, ref: str) -> None:
    """In chain order, no access.allowed citing ``ref`` follows its withdrawal."""
    withdrawn = False
    for stored in store.read():
        event = stored.event
        if event.evidence_ref != ref:
            continue
        if event.event_type in (EventType.GRANT_REVOKED, EventType.INCIDENT_CLOSED):
            withdrawn = True
        assert not (withdrawn and event.event_type is EventType.ACCESS_ALLOWED), stored.seq


def test_a_revocation_between_lookup_and_commit_turns_the_decision_into_a_denial(
    gate: Gate, store: SqlStore
) -> None:
    """The grant is revoked after the gate looked it up: denied, body not run, no allowed."""
    grant = _grant(gate)
    desk = Desk(gate)
    registry = gate.registry
    other_desk = EvidenceRegistry(store, clock=gate.setup.clock)
    looked_up = registry.lookup

    def lookup_then_revoke(kind: EvidenceKind, ref: str) -> Evidence | None:
        found = looked_up(kind, ref)
        if other_desk.lookup(kind, ref) and not any(
            r.event.event_type is EventType.GRANT_REVOKED for r in store.read()
        ):
            other_desk.revoke_grant(ref, revoked_by="acme-admin")
        return found

    registry.lookup = lookup_then_revoke  # type: ignore[method-assign]
    with access_context(agent(grant)), pytest.raises(AccessDenied) as caught:
        desk.contacts("acme", ["c-1"])
    assert caught.value.reason is ReasonCode.EVIDENCE_REVOKED
    assert desk.ran == []
    assert kinds(store) == ["access.denied:evidence_revoked"]
    _no_allowed_after_withdrawal(store, grant)


def test_a_revocation_during_the_read_withholds_the_result(gate: Gate, store: SqlStore) -> None:
    """Evidence withdrawn while the body runs wins: the result is withheld and recorded so."""
    grant = _grant(gate)
    registry = EvidenceRegistry(store, clock=gate.setup.clock)

    @gate.protect("crm.contacts")
    def contacts(customer_id: str) -> list[str]:
        registry.revoke_grant(grant, revoked_by="acme-admin")
        return ["someone"]

    with access_context(agent(grant)), pytest.raises(AccessDenied, match="withheld") as caught:
        contacts("acme")
    assert caught.value.reason is ReasonCode.EVIDENCE_REVOKED
    outcome = accesses(store)[-1].event
    assert (outcome.event_type, outcome.reason_code) == (
        EventType.ACCESS_FAILED,
        "evidence_revoked",
    )
    assert (outcome.record_count, outcome.attributes["withheld"]) == (0, True)


def test_reads_racing_a_revocation_never_follow_it(gate: Gate, store: SqlStore) -> None:
    """Eight readers and a revoker at once: every allowed record precedes the revocation."""
    grant = _grant(gate)
    revoker = EvidenceRegistry(store, clock=gate.setup.clock)
    under_way = threading.Semaphore(0)  # released by each body that runs
    reasons: list[ReasonCode | None] = []

    @gate.protect("crm.contacts")
    def contacts(customer_id: str) -> list[str]:
        under_way.release()
        return ["someone"]

    def read() -> None:
        # Until refused: every reader sees the revocation land while it keeps reading.
        for _ in range(10_000):
            try:
                contacts("acme")
            except AccessDenied as e:
                reasons.append(e.reason)
                return

    def revoke() -> None:
        for _ in range(8):  # some reads are under way or done before the revocation
            assert under_way.acquire(timeout=30)
        revoker.revoke_grant(grant, revoked_by="acme-admin")

    with access_context(agent(grant)), ThreadPoolExecutor(9) as pool:
        futures = [pool.submit(carry_context(read)) for _ in range(8)]
        futures.append(pool.submit(revoke))
        for future in futures:
            future.result()
    _no_allowed_after_withdrawal(store, grant)
    assert reasons == [ReasonCode.EVIDENCE_REVOKED] * 8
    records = kinds(store)
    assert records.count("access.allowed:allowed") >= 8
    # Each reader's refusal: denied up front, or its result withheld (revoked mid-read).
    refused = ("access.denied:evidence_revoked", "access.failed:evidence_revoked")
    assert sum(records.count(kind) for kind in refused) == 8


def test_break_glass_citing_a_closed_incident_is_still_break_glass(
    gate: Gate, store: SqlStore
) -> None:
    """Allowed because the incident is closed: its closure is no reason to decide again."""
    gate.registry.open_incident("INC-1", customers=["acme"], opened_by="sre-1")
    gate.registry.close_incident("INC-1", closed_by="sre-1")
    glass = AccessContext(
        actor_id="sre-1",
        role="sre",
        purpose="technical_problem",
        evidence_ref="INC-1",
        break_glass=True,
        justification="pager: outage",
    )
    with access_context(glass):
        assert Desk(gate).contacts("acme", []) == []
    assert kinds(store) == ["access.allowed:break_glass", "access.completed:break_glass"]


def test_a_revocation_stamped_later_than_the_gates_clock_still_counts(
    gate: Gate, store: SqlStore
) -> None:
    """A revoking host whose clock runs ahead: the gate denies, and records the denial."""
    grant = _grant(gate)
    ahead = EvidenceRegistry(store, clock=lambda: gate.setup.clock() + timedelta(minutes=5))
    ahead.revoke_grant(grant, revoked_by="acme-admin")
    with access_context(agent(grant)), pytest.raises(AccessDenied) as caught:
        Desk(gate).contacts("acme", [])
    assert caught.value.reason is ReasonCode.EVIDENCE_REVOKED
    assert kinds(store) == ["access.denied:evidence_revoked"]


def test_evidence_that_keeps_changing_ends_in_a_recorded_denial(
    gate: Gate, store: SqlStore
) -> None:
    """A lookup that never sees the revocation: after three tries, a denial is recorded."""
    grant = _grant(gate)
    stale = gate.registry.lookup(EvidenceKind.GRANT, grant)
    gate.registry.revoke_grant(grant, revoked_by="acme-admin")
    gate.registry.lookup = lambda kind, ref: stale  # type: ignore[method-assign]
    desk = Desk(gate)
    with access_context(agent(grant)), pytest.raises(AccessDenied, match="3 attempts") as caught:
        desk.contacts("acme", [])
    assert caught.value.reason is ReasonCode.EVIDENCE_REVOKED
    assert desk.ran == []
    assert kinds(store) == ["access.denied:evidence_revoked"]


def test_concurrent_reads_never_take_more_than_the_allowance(gate: Gate, store: SqlStore) -> None:
    """Eight threads on a max_records=1 grant: one gets data, seven are denied."""
    grant = _grant(gate, max_records=1)
    desk = Desk(gate)
    start = threading.Barrier(8)
    got: list[int] = []
    reasons: list[ReasonCode | None] = []

    def read() -> None:
        start.wait()
        try:
            got.append(len(desk.contacts("acme", ["c-1"])))
        except AccessDenied as e:
            reasons.append(e.reason)

    with access_context(agent(grant)), ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(carry_context(read)) for _ in range(8)]:
            future.result()
    assert got == [1]
    assert reasons == [ReasonCode.EVIDENCE_SCOPE_EXCEEDED] * 7
    assert records_used(store.evidence_uses(grant, event_types=ALLOWANCE_EVENTS)) == 1
    assert kinds(store).count("access.denied:evidence_scope_exceeded") == 7


def test_an_access_in_flight_holds_the_allowance_until_its_outcome(
    gate: Gate, store: SqlStore
) -> None:
    """The allowed record reserves what is left; the outcome gives back what was not used."""
    grant = _grant(gate, max_records=3)
    inside, release = threading.Event(), threading.Event()

    @gate.protect("crm.contacts")
    def slow(customer_id: str) -> list[str]:
        inside.set()
        assert release.wait(30)
        return ["one"]

    desk = Desk(gate)
    with access_context(agent(grant)), ThreadPoolExecutor(1) as pool:
        first = pool.submit(carry_context(slow), "acme")
        assert inside.wait(30)
        with pytest.raises(AccessDenied, match="3 read so far"):
            desk.contacts("acme", [])
        release.set()
        assert first.result() == ["one"]
        assert [c["id"] for c in desk.contacts("acme", ["a", "b"])] == ["a", "b"]
    allowed = [r.event for r in accesses(store) if r.event.event_type is EventType.ACCESS_ALLOWED]
    assert [e.attributes[RESERVED] for e in allowed] == [3, 2]
    assert records_used(store.evidence_uses(grant, event_types=ALLOWANCE_EVENTS)) == 3


def test_an_id_that_equals_everything_borrows_nothing(gate: Gate, store: SqlStore) -> None:
    """A str subclass with a permissive __eq__ is compared as the text it holds."""
    globex_grant = _grant(gate, customer="globex")
    desk = Desk(gate)
    with access_context(agent(globex_grant)), pytest.raises(AccessDenied) as caught:
        desk.contacts(_Sly("acme"), [])
    assert caught.value.reason is ReasonCode.EVIDENCE_CUSTOMER_MISMATCH
    sly_context = agent(_Sly(globex_grant), actor_customer_id=_Sly("acme"))
    assert type(sly_context.evidence_ref) is str
    assert type(sly_context.actor_customer_id) is str
    with access_context(sly_context), pytest.raises(AccessDenied):
        desk.contacts("acme", [])
    assert desk.ran == []
    assert all(type(r.event.customer_id) is str for r in store.read())


def test_a_blank_justification_is_no_justification(gate: Gate, store: SqlStore) -> None:
    """Break-glass with a justification of only whitespace is denied as unjustified."""
    glass = AccessContext(
        actor_id="sre-1",
        role="sre",
        purpose="technical_problem",
        break_glass=True,
        justification=" \t\n ",
    )
    assert glass.justification is None
    with access_context(glass), pytest.raises(AccessDenied, match="needs a justification"):
        Desk(gate).contacts("acme", [])
    assert kinds(store) == ["access.denied:missing_evidence"]


def test_declarations_over_the_record_limits_fail_when_decorated(gate: Gate) -> None:
    """Too many declared fields or categories is an error at decoration, not at every call."""
    too_many = [f"f{i}" for i in range(MAX_LIST_ITEMS + 1)]
    with pytest.raises(InvalidEvent, match=f"fields: has {MAX_LIST_ITEMS + 1} items"):
        gate.protect("crm.contacts", fields=too_many)
    with pytest.raises(InvalidEvent, match=f"data_categories: has {MAX_LIST_ITEMS + 1} items"):
        gate.protect("crm.contacts", data_categories=too_many)
