"""The demo desk: through the gate, every purpose and typical mistakes, repeatable."""

from __future__ import annotations

from typing import TYPE_CHECKING

from accessaudit import EventType, MacKey, SqlStore, verify_store
from accessaudit.cli import demo as demo_desk

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import Backend


def test_the_desk_records_exactly_what_was_asked_through_the_gate(
    backend: Backend, store: SqlStore, key: MacKey
) -> None:
    """Every purpose, evidence of each kind, denials with reasons; the log verifies."""
    tally = demo_desk.run(store, 800, seed=11)
    assert sum(tally.values()) == store.count() == 800
    records = [r.event for r in store.read()]
    purposes = {e.purpose for e in records if e.event_type is EventType.ACCESS_ALLOWED}
    assert purposes == {
        "service_delivery",
        "support_request",
        "technical_problem",
        "legal_requirement",
    }
    reasons = {e.reason_code for e in records if e.event_type is EventType.ACCESS_DENIED}
    assert {"unknown_purpose", "missing_evidence", "evidence_customer_mismatch"} <= reasons
    kinds = {e.event_type for e in records}
    assert {EventType.GRANT_ISSUED, EventType.INCIDENT_OPENED} <= kinds
    assert EventType.LEGAL_REQUEST_REGISTERED in kinds
    # Every allowed access has its outcome, and every outcome its decision.
    allowed = {str(e.event_id) for e in records if e.event_type is EventType.ACCESS_ALLOWED}
    outcomes = {
        str(e.attributes["access_event_id"])
        for e in records
        if e.event_type in (EventType.ACCESS_COMPLETED, EventType.ACCESS_FAILED)
    }
    assert outcomes == allowed
    assert verify_store(store, key).intact


def test_the_same_seed_gives_the_same_desk(tmp_path: Path, key: MacKey) -> None:
    """Two fresh logs, one seed: the same sequence of events and reasons."""
    runs = []
    for name in ("a", "b"):
        with SqlStore(f"sqlite:///{tmp_path / name}.db", key=key, must_exist=False) as store:
            store.create_schema()
            demo_desk.run(store, 300, seed=5)
            runs.append(
                [
                    (r.event.event_type, r.event.actor_id, r.event.customer_id, r.event.reason_code)
                    for r in store.read()
                ]
            )
    assert runs[0] == runs[1]


def test_a_second_run_on_the_same_log_continues_it(store: SqlStore, key: MacKey) -> None:
    """Evidence ids do not collide with an earlier run; the chain stays intact."""
    demo_desk.run(store, 200, seed=3)
    demo_desk.run(store, 200, seed=3)
    assert store.count() == 400
    assert verify_store(store, key).intact
