"""A simulated SaaS support desk producing a realistic mix of audit events.

Used by ``accessaudit demo``. Until the purpose gate exists it writes records directly; the
mix (purposes, evidence, denials and their reasons) mirrors what the gate will record.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from accessaudit.events import AccessEvent
from accessaudit.fields import ActorType, Decision, EventType

if TYPE_CHECKING:
    from collections.abc import Iterator
from dataclasses import dataclass

CUSTOMERS = ("acme", "globex", "initech", "umbrella", "hooli", "stark")
RESOURCES = {
    "crm.contacts": ("contact",),
    "billing.invoices": ("billing", "contact"),
    "app.documents": ("content",),
    "auth.sessions": ("usage",),
}
FIELDS = {
    "crm.contacts": ("name", "email", "phone"),
    "billing.invoices": ("invoice_no", "amount", "billing_email"),
    "app.documents": ("title", "body"),
    "auth.sessions": ("ip_address", "user_agent", "last_seen"),
}
DENIAL_REASONS = (
    ("support_request", "evidence_customer_mismatch"),
    ("support_request", "evidence_expired"),
    ("technical_problem", "missing_evidence"),
    ("marketing_analysis", "unknown_purpose"),
    ("support_request", "evidence_scope_exceeded"),
)


class _Desk:
    def __init__(self, seed: int, start: datetime) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - a repeatable simulation, not security
        self.clock = start
        self.request = 0

    def tick(self) -> datetime:
        self.clock += timedelta(seconds=self.rng.randint(1, 90))
        return self.clock

    def access(
        self, actor: _Actor, evidence: str | None, denied: tuple[str, str] | None
    ) -> list[AccessEvent]:
        """One read attempt: allowed and completed, or denied (purpose, reason)."""
        rng = self.rng
        customer = rng.choice(CUSTOMERS)
        resource = rng.choice(list(RESOURCES))
        self.request += 1
        common: dict[str, Any] = {
            "actor_id": rng.choice(actor.ids),
            "actor_type": actor.kind,
            "role": actor.role,
            "purpose": actor.purpose if denied is None else denied[0],
            "evidence_ref": evidence,
            "customer_id": customer,
            "resource": resource,
            "action": "read",
            "data_categories": RESOURCES[resource],
            "field_names": FIELDS[resource],
            "request_id": f"req-{self.request:06d}",
            "subject_ids": (f"{customer}-user-{rng.randint(1, 40)}",),
            "origin_host": "app-1",
            "origin_service": "support-console",
        }
        if denied is not None:
            return [
                AccessEvent(
                    event_type=EventType.ACCESS_DENIED,
                    occurred_at=self.tick(),
                    decision=Decision.DENIED,
                    reason_code=denied[1],
                    **common,
                )
            ]
        allowed = AccessEvent(
            event_type=EventType.ACCESS_ALLOWED,
            occurred_at=self.tick(),
            decision=Decision.ALLOWED,
            reason_code="allowed",
            **common,
        )
        completed = AccessEvent(
            event_type=EventType.ACCESS_COMPLETED,
            occurred_at=self.tick(),
            record_count=rng.randint(1, 25),
            **common,
        )
        return [allowed, completed]


@dataclass(frozen=True)
class _Actor:
    ids: tuple[str, ...]
    kind: ActorType
    role: str
    purpose: str
    evidence: str  # a template; {n} becomes a small number
    share: float  # of all attempts


_ACTORS = (
    _Actor(("billing-job",), ActorType.SERVICE, "service", "service_delivery", "job-{n}", 0.45),
    _Actor(
        tuple(f"agent-{i}" for i in range(1, 6)),
        ActorType.HUMAN,
        "support_agent",
        "support_request",
        "grant:case-1{n}",
        0.25,
    ),
    _Actor(
        ("sre-1", "sre-2", "sre-3"),
        ActorType.HUMAN,
        "sre",
        "technical_problem",
        "incident:INC-{n}",
        0.15,
    ),
    _Actor(("legal-1",), ActorType.HUMAN, "legal", "legal_requirement", "legal:SUB-2026-{n}", 0.05),
)
_DENIAL_SHARE = 0.10


def generate(count: int, seed: int = 7, start: datetime | None = None) -> Iterator[AccessEvent]:
    """Yield exactly ``count`` events in time order; the same seed gives the same mix."""
    desk = _Desk(seed, start or datetime.now(UTC) - timedelta(days=7))
    rng = desk.rng
    produced = 1
    yield AccessEvent(
        event_type=EventType.AUDIT_STARTED,
        actor_id="accessaudit",
        actor_type=ActorType.SERVICE,
        occurred_at=desk.tick(),
        customer_visible=False,
    )
    weights = [a.share for a in _ACTORS] + [_DENIAL_SHARE]
    while produced < count:
        pick = rng.choices(range(len(weights)), weights)[0]
        if pick == len(_ACTORS):  # a mistake real staff make: refused, with its reason
            batch = desk.access(_ACTORS[1], None, rng.choice(DENIAL_REASONS))
        else:
            actor = _ACTORS[pick]
            batch = desk.access(actor, actor.evidence.format(n=rng.randint(1, 9)), None)
        for event in batch[: count - produced]:
            produced += 1
            yield event
