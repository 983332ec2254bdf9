"""A simulated SaaS support desk producing a realistic mix of audit events.

Used by ``accessaudit demo``. Until the purpose gate exists it writes records directly; the
mix (purposes, evidence, denials and their reasons) mirrors what the gate will record.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from accessaudit.events import AccessEvent, ActorType, Decision, EventType

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
        self.rng = random.Random(seed)
        self.clock = start
        self.request = 0

    def tick(self) -> datetime:
        self.clock += timedelta(seconds=self.rng.randint(1, 90))
        return self.clock

    def access(self, actor: str, kind: ActorType, role: str, purpose: str, evidence: str | None,
               decision: Decision, reason: str) -> Iterator[AccessEvent]:
        rng = self.rng
        customer = rng.choice(CUSTOMERS)
        resource = rng.choice(list(RESOURCES))
        self.request += 1
        common = {
            "actor_id": actor, "actor_type": kind, "role": role, "purpose": purpose,
            "evidence_ref": evidence, "customer_id": customer, "resource": resource,
            "action": "read", "data_categories": RESOURCES[resource],
            "field_names": FIELDS[resource], "request_id": f"req-{self.request:06d}",
            "subject_ids": (f"{customer}-user-{rng.randint(1, 40)}",),
            "origin_host": "app-1", "origin_service": "support-console",
        }
        allowed = decision is Decision.ALLOWED
        yield AccessEvent(
            event_type=EventType.ACCESS_ALLOWED if allowed else EventType.ACCESS_DENIED,
            occurred_at=self.tick(), decision=decision, reason_code=reason, **common,
        )
        if allowed:
            yield AccessEvent(
                event_type=EventType.ACCESS_COMPLETED, occurred_at=self.tick(),
                record_count=rng.randint(1, 25), **common,
            )


def generate(count: int, seed: int = 7, start: datetime | None = None) -> Iterator[AccessEvent]:
    """Yield about ``count`` events (never more) in time order; the same seed, the same mix."""
    desk = _Desk(seed, start or datetime.now(UTC) - timedelta(days=7))
    rng, produced = desk.rng, 0
    yield AccessEvent(event_type=EventType.AUDIT_STARTED, actor_id="accessaudit",
                      actor_type=ActorType.SERVICE, occurred_at=desk.tick(),
                      customer_visible=False)
    produced += 1
    while produced < count:
        roll = rng.random()
        if roll < 0.45:
            batch = desk.access("billing-job", ActorType.SERVICE, "service", "service_delivery",
                                f"job-{rng.randint(1, 9)}", Decision.ALLOWED, "allowed")
        elif roll < 0.70:
            case = f"case-{rng.randint(100, 140)}"
            batch = desk.access(f"agent-{rng.randint(1, 5)}", ActorType.HUMAN, "support_agent",
                                "support_request", f"grant:{case}", Decision.ALLOWED, "allowed")
        elif roll < 0.85:
            batch = desk.access(f"sre-{rng.randint(1, 3)}", ActorType.HUMAN, "sre",
                                "technical_problem", f"incident:INC-{rng.randint(1, 4)}",
                                Decision.ALLOWED, "allowed")
        elif roll < 0.90:
            batch = desk.access("legal-1", ActorType.HUMAN, "legal", "legal_requirement",
                                "legal:SUBPOENA-2026-17", Decision.ALLOWED, "allowed")
        else:
            purpose, reason = rng.choice(DENIAL_REASONS)
            batch = desk.access(f"agent-{rng.randint(1, 5)}", ActorType.HUMAN, "support_agent",
                                purpose, None, Decision.DENIED, reason)
        for event in batch:
            if produced >= count:
                return
            produced += 1
            yield event
