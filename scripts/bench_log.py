"""The log the scan benchmarks read: support-desk reads written in batches, fast to build."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from accessaudit import AccessEvent, ActorType, Decision, EventType, SqlStore

if TYPE_CHECKING:
    from pathlib import Path

    from accessaudit import MacKey

BATCH = 2000


def support_read(i: int, occurred_at: datetime | None = None) -> AccessEvent:
    """The ``i``-th of a series of support-desk reads (7 agents, 50 grants, 20 customers)."""
    return AccessEvent(
        event_type=EventType.ACCESS_ALLOWED,
        occurred_at=occurred_at or datetime.now(UTC),
        actor_id=f"agent-{i % 7}",
        actor_type=ActorType.HUMAN,
        role="support_agent",
        purpose="support_request",
        evidence_ref=f"grant-{i % 50}",
        customer_id=f"customer-{i % 20}",
        resource="crm.contacts",
        action="read",
        data_categories=("contact",),
        field_names=("email", "phone"),
        subject_ids=(f"user-{i}",),
        decision=Decision.ALLOWED,
        reason_code="allowed",
    )


def build(path: Path, events: int, key: MacKey, days: int) -> float:
    """A log of ``events`` support-desk reads over ``days``; returns the seconds it took."""
    start = time.perf_counter()
    begin = datetime.now(UTC) - timedelta(days=30)
    step = timedelta(days=days) / events
    with SqlStore(f"sqlite:///{path}", key=key, must_exist=False) as store:
        store.create_schema()
        for first in range(0, events, BATCH):
            last = min(first + BATCH, events)
            store.append(support_read(i, begin + step * i) for i in range(first, last))
    return time.perf_counter() - start
