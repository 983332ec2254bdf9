"""Helpers for gate tests: a settable clock, the example policy, a desk of protected calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accessaudit import AccessContext, ActorType, EventType, SqlStore, StoredEvent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Generator

    from accessaudit import Gate

EXAMPLE_POLICY = Path(__file__).parent.parent / "examples" / "policy.toml"
#: A value that stands for customer data: it must never appear in the log.
CANARY = "SECRET-VALUE-7f3a"


@dataclass
class FakeClock:
    """``datetime.now`` for the gate, moved on by hand."""

    now: datetime = field(default_factory=lambda: datetime(2026, 11, 29, 9, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        """The time now."""
        # Each reading moves a microsecond on, so records keep their order in time.
        self.now += timedelta(microseconds=1)
        return self.now

    def advance(self, **delta: float) -> None:
        """Move the clock on by ``timedelta(**delta)``."""
        self.now += timedelta(**delta)


@dataclass
class Desk:
    """Protected functions of a support tool; ``ran`` lists every body execution."""

    gate: Gate
    ran: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        gate, ran = self.gate, self.ran

        @gate.protect("crm.contacts", subjects="contact_ids", fields=("name", "email"))
        def contacts(customer_id: str, contact_ids: list[str]) -> list[dict[str, str]]:
            ran.append("contacts")
            return [{"id": c, "email": CANARY} for c in contact_ids]

        @gate.protect("billing.invoices", fields=("amount",))
        def invoices(customer_id: str, limit: int = 10) -> tuple[int, ...]:
            ran.append("invoices")
            return tuple(range(limit))

        @gate.protect("crm.contacts", customer=lambda args: args["account"]["customer"])
        def contacts_of(account: dict[str, str]) -> dict[str, str]:
            ran.append("contacts_of")
            return {"email": CANARY}

        @gate.protect("crm.contacts")
        def stream(customer_id: str, n: int) -> Generator[str, None, None]:
            ran.append("stream")
            for i in range(n):
                yield f"{CANARY}-{i}"

        @gate.protect("crm.contacts")
        async def fetch(customer_id: str) -> list[str]:
            ran.append("fetch")
            return [CANARY]

        @gate.protect("crm.contacts")
        async def astream(customer_id: str, n: int) -> AsyncIterator[str]:
            ran.append("astream")
            for i in range(n):
                yield f"{CANARY}-{i}"

        @gate.protect("crm.contacts")
        def broken(customer_id: str) -> None:
            ran.append("broken")
            msg = f"lookup failed for {CANARY}"
            raise KeyError(msg)

        self.contacts, self.invoices, self.contacts_of = contacts, invoices, contacts_of
        self.stream, self.fetch, self.astream, self.broken = stream, fetch, astream, broken


def agent(evidence_ref: str | None = None, **changes: Any) -> AccessContext:
    """A support agent's context."""
    values: dict[str, Any] = {
        "actor_id": "agent-7",
        "role": "support_agent",
        "purpose": "support_request",
        "evidence_ref": evidence_ref,
        "request_id": "req-1",
    }
    return AccessContext(**{**values, **changes})


def service() -> AccessContext:
    """The application itself serving a customer."""
    return AccessContext(
        actor_id="api", actor_type=ActorType.SERVICE, role="app", purpose="service_delivery"
    )


def accesses(store: SqlStore) -> list[StoredEvent]:
    """The access records (not evidence) in the store, in order."""
    kinds = {
        EventType.ACCESS_ALLOWED,
        EventType.ACCESS_DENIED,
        EventType.ACCESS_COMPLETED,
        EventType.ACCESS_FAILED,
        EventType.ACCESS_UNGATED,
    }
    return [r for r in store.read() if r.event.event_type in kinds]


def kinds(store: SqlStore) -> list[str]:
    """Event type and reason code of each access record."""
    return [f"{r.event.event_type.value}:{r.event.reason_code}" for r in accesses(store)]


def grant(gate: Gate, customer: str = "acme", **changes: Any) -> str:
    """Issue a live support grant (contact data, two days) through the gate's registry."""
    values: dict[str, Any] = {
        "customer_id": customer,
        "case_id": "CASE-1",
        "data_categories": ["contact"],
        "expires_at": gate.setup.clock() + timedelta(days=2),
        "issued_by": "agent-7",
    }
    return gate.registry.issue_grant(**{**values, **changes}).grant_id
