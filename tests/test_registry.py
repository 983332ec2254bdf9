"""Evidence through the library: refusals that say what to fix, and damaged records."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from accessaudit import (
    AccessEvent,
    ActorType,
    EventType,
    EvidenceError,
    EvidenceKind,
    EvidenceRegistry,
    Grant,
    MacKeyError,
    SqlStore,
)
from tests import tampering
from tests.strategies import make_event

if TYPE_CHECKING:
    from tests.conftest import Backend
    from tests.gatekit import FakeClock


@pytest.fixture
def registry(store: SqlStore, clock: FakeClock) -> EvidenceRegistry:
    """Evidence in the test's store, on the test's clock."""
    return EvidenceRegistry(store, clock=clock)


def _grant(registry: EvidenceRegistry, clock: FakeClock, **changes: Any) -> Grant:
    values: dict[str, Any] = {
        "customer_id": "acme",
        "case_id": "CASE-1",
        "data_categories": ["contact"],
        "expires_at": clock.now + timedelta(days=1),
        "issued_by": "agent-7",
    }
    return registry.issue_grant(**{**values, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"data_categories": []}, "at least one data category"),
        ({"expires_at": datetime(2030, 1, 1)}, "must have a timezone"),
        ({"expires_at": None}, "is not in the future"),
        ({"max_records": 0}, "max_records must be a positive integer, got 0"),
    ],
)
def test_bad_grants_are_refused_and_nothing_is_recorded(
    registry: EvidenceRegistry, clock: FakeClock, changes: dict[str, Any], message: str
) -> None:
    """Each mistake is named; the log stays empty."""
    if changes.get("expires_at", 1) is None:
        changes["expires_at"] = clock.now - timedelta(seconds=1)
    with pytest.raises(EvidenceError, match=message):
        _grant(registry, clock, **changes)
    assert registry.store.count() == 0


def test_ending_evidence_that_does_not_exist_is_refused(registry: EvidenceRegistry) -> None:
    """Revoking an unknown grant or closing an unknown incident names the id."""
    with pytest.raises(EvidenceError, match="there is no grant 'grant-x'; list them"):
        registry.revoke_grant("grant-x", revoked_by="admin")
    with pytest.raises(EvidenceError, match="there is no incident 'INC-404'"):
        registry.close_incident("INC-404", closed_by="sre")
    assert registry.store.count() == 0


def test_closing_twice_and_registering_twice_are_refused(
    registry: EvidenceRegistry, clock: FakeClock
) -> None:
    """A second close, or a second legal request with the same reference, is an error."""
    registry.open_incident("INC-1", all_customers=True, opened_by="sre")
    registry.close_incident("INC-1", closed_by="sre")
    with pytest.raises(EvidenceError, match="INC-1 was already closed at "):
        registry.close_incident("INC-1", closed_by="sre")
    values: dict[str, Any] = {
        "authority": "Court",
        "customer_id": "acme",
        "expires_at": clock.now + timedelta(days=9),
        "registered_by": "legal-1",
    }
    registry.register_legal_request("SUB-1", **values)
    with pytest.raises(EvidenceError, match="SUB-1 is already registered"):
        registry.register_legal_request("SUB-1", **values)
    with pytest.raises(EvidenceError, match="notify_after must have a timezone"):
        registry.register_legal_request(
            "SUB-2",
            **values,
            notify_after=datetime(2030, 1, 1),
        )
    assert [i.status(clock.now) for i in registry.incidents()] == ["closed"]


def test_states_follow_the_clock(registry: EvidenceRegistry, clock: FakeClock) -> None:
    """A grant is live, then expired; a revoked grant stays revoked."""
    live = _grant(registry, clock)
    revoked = _grant(registry, clock, customer_id="globex")
    registry.revoke_grant(revoked.grant_id, revoked_by="globex-admin")
    assert [g.status(clock.now) for g in registry.grants()] == ["live", "revoked"]
    clock.advance(days=2)
    assert [g.status(clock.now) for g in registry.grants()] == ["expired", "revoked"]
    assert [g.grant_id for g in registry.grants("acme")] == [live.grant_id]


def test_a_sealed_but_malformed_evidence_record_is_not_trusted(
    registry: EvidenceRegistry, store: SqlStore
) -> None:
    """A grant.issued record written without the fields a grant needs cannot be relied on."""
    store.append(
        [
            AccessEvent(
                event_type=EventType.GRANT_ISSUED,
                actor_id="script",
                actor_type=ActorType.SERVICE,
                evidence_ref="grant-handmade",
                customer_id="acme",
            )
        ]
    )
    found = registry.lookup(EvidenceKind.GRANT, "grant-handmade")
    assert isinstance(found, Grant)
    assert found.intact is False
    with pytest.raises(EvidenceError, match="fail their integrity check"):
        registry.revoke_grant("grant-handmade", revoked_by="admin")


def test_evidence_sealed_under_another_key_is_not_trusted(
    backend: Backend, registry: EvidenceRegistry, clock: FakeClock, key: Any
) -> None:
    """Records the registry's key did not seal are marked, whatever they say."""
    grant = _grant(registry, clock)
    with SqlStore(backend.url, key=type(key)(b"\x01" * 32)) as other:
        stranger = EvidenceRegistry(other, clock=clock)
        found = stranger.lookup(EvidenceKind.GRANT, grant.grant_id)
    assert found is not None
    assert found.intact is False


def test_a_registry_needs_the_key(backend: Backend, store: SqlStore) -> None:
    """Without the HMAC key evidence can be neither recorded nor checked (MacKeyError)."""
    with SqlStore(backend.url) as keyless, pytest.raises(MacKeyError, match="HMAC key"):
        EvidenceRegistry(keyless)


def test_a_predecessor_whose_hash_is_no_digest_makes_the_evidence_untrusted(
    backend: Backend, registry: EvidenceRegistry, store: SqlStore, clock: FakeClock
) -> None:
    """The owner writes junk into the chain hash before a grant: tampered, not a crash."""
    store.append([make_event()])
    grant = _grant(registry, clock)  # seq 2: its link is checked from seq 1's chain hash
    backend.drop_guards()
    tampering.set_column(backend, 1, "chain_hash", "not-hex")
    found = registry.lookup(EvidenceKind.GRANT, grant.grant_id)
    assert found is not None
    assert found.intact is False
