"""A simulated SaaS support desk, run through the public API: ``accessaudit demo``.

Everything goes through what an application would use: a ``Policy``, a ``Gate`` with
protected data-access functions, ``access_context`` for each person or job, and the gate's
evidence registry for grants, incidents and a legal request. The desk also makes the
mistakes real staff make, so denials appear with their reasons. The simulated week runs on
the gate's ``clock``: records carry simulated times, spread over the seven days before now.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from accessaudit import (
    AccessContext,
    AccessDenied,
    ActorType,
    EvidenceError,
    Gate,
    Policy,
    access_context,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from accessaudit import SqlStore

__all__ = ["AGENTS", "CUSTOMERS", "POLICY", "SRES", "run"]

#: The policy the simulated company runs under (the same as examples/policy.toml).
POLICY: dict[str, Any] = {
    "version": 1,
    "name": "demo-saas",
    "roles": {
        "app": ["service_delivery"],
        "customer_user": ["service_delivery"],
        "support_agent": ["support_request"],
        "sre": ["technical_problem"],
        "legal": ["legal_requirement"],
    },
    "purposes": {"technical_problem": {"break_glass_roles": ["sre"]}},
    "resources": {
        "crm.contacts": {
            "data_categories": ["contact"],
            "purposes": [
                "service_delivery",
                "support_request",
                "technical_problem",
                "legal_requirement",
            ],
        },
        "billing.invoices": {
            "data_categories": ["billing", "contact"],
            "purposes": ["service_delivery", "support_request", "legal_requirement"],
        },
        "app.documents": {
            "data_categories": ["content"],
            "purposes": ["service_delivery", "legal_requirement"],
        },
    },
}
CUSTOMERS = ("acme", "globex", "initech", "umbrella", "hooli", "stark")
AGENTS = tuple(f"agent-{i}" for i in range(1, 6))
#: A support agent who joins on the last day and reads far more than the others do.
NEW_HIRE = "agent-new"
SRES = ("sre-1", "sre-2", "sre-3")


class _Clock:
    """The simulated time: moved on by the desk, read by the gate and the registry."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(microseconds=1)
        return self.now


@dataclass
class _Desk:
    gate: Gate
    clock: _Clock
    rng: random.Random
    step: float  # mean seconds between actions
    tag: str  # makes evidence ids unique per run on the same log
    grants: dict[str, tuple[str, str]] = field(default_factory=dict)  # customer -> (id, case)
    incidents: list[str] = field(default_factory=list)
    legal: tuple[str, str] | None = None  # (reference, customer)
    cases: int = 0
    requests: int = 0

    def __post_init__(self) -> None:
        gate = self.gate

        @gate.protect("crm.contacts", subjects="contact_ids", fields=("name", "email", "phone"))
        def contacts(customer_id: str, contact_ids: list[str]) -> list[dict[str, str]]:
            return [{"id": c} for c in contact_ids]

        @gate.protect("billing.invoices", fields=("invoice_no", "amount", "billing_email"))
        def invoices(customer_id: str, months: int = 3) -> list[dict[str, int]]:
            return [{"month": m} for m in range(months)]

        @gate.protect("app.documents", fields=("title", "body"))
        def documents(customer_id: str) -> list[dict[str, str]]:
            return [{"title": "t"}]

        self.contacts, self.invoices, self.documents = contacts, invoices, documents

    def tick(self) -> None:
        self.clock.now += timedelta(seconds=self.rng.expovariate(1 / self.step))

    def context(self, actor: str, role: str, purpose: str, **more: Any) -> AccessContext:
        self.requests += 1
        kind = ActorType.SERVICE if role == "app" else ActorType.HUMAN
        return AccessContext(
            actor_id=actor,
            actor_type=kind,
            role=role,
            purpose=purpose,
            request_id=f"req-{self.tag}-{self.requests:06d}",
            **more,
        )

    def read(self, ctx: AccessContext, call: Callable[[], object]) -> None:
        self.tick()
        # A denial is recorded; the person is told, and the desk moves on.
        with access_context(ctx), suppress(AccessDenied):
            call()

    # -- what happens at the desk (each returns at most the records it may write) ---------

    def service_job(self) -> None:
        customer = self.rng.choice(CUSTOMERS)
        job = self.context("billing-job", "app", "service_delivery", evidence_ref="job-nightly")
        self.read(job, lambda: self.invoices(customer))

    def customer_self_service(self) -> None:
        customer = self.rng.choice(CUSTOMERS)
        user = self.context(
            f"{customer}-user-{self.rng.randint(1, 9)}",
            "customer_user",
            "service_delivery",
            actor_customer_id=customer,
        )
        self.read(user, lambda: self.documents(customer))

    def new_support_case(self) -> None:
        customer = self.rng.choice(CUSTOMERS)
        self.cases += 1
        case = f"CASE-{self.tag}-{self.cases}"
        self.tick()
        grant = self.gate.registry.issue_grant(
            customer_id=customer,
            case_id=case,
            data_categories=["contact", "billing"] if self.rng.random() < 0.5 else ["contact"],
            expires_at=self.clock.now + timedelta(hours=self.rng.choice((8, 24, 72))),
            issued_by=f"{customer}-admin",
            note="customer approved support access in the ticket",
        )
        self.grants[customer] = (grant.grant_id, case)

    def support_read(self) -> None:
        if not self.grants:
            self.new_support_case()
            return
        customer, (grant, case) = self.rng.choice(sorted(self.grants.items()))
        agent = self.context(
            self.rng.choice(AGENTS),
            "support_agent",
            "support_request",
            evidence_ref=grant,
            justification=f"working {case}",
        )
        ids = [f"{customer}-contact-{self.rng.randint(1, 40)}"]
        if self.rng.random() < 0.7:
            self.read(agent, lambda: self.contacts(customer, ids))
        else:  # billing: denied (evidence_scope_exceeded) when the grant covers contact only
            self.read(agent, lambda: self.invoices(customer))

    def new_hire_binge(self, reads: int) -> None:
        """A new support agent reads one customer's contacts ``reads`` times in a row.

        What `report`'s unusual volume is for: the newcomer has no usual day of their own,
        so the day is compared with the support agents' usual day. At most two records a
        read.
        """
        if not self.grants:
            self.new_support_case()
        customer, (grant, case) = sorted(self.grants.items())[0]
        agent = self.context(
            NEW_HIRE,
            "support_agent",
            "support_request",
            evidence_ref=grant,
            justification=f"working {case}",
        )
        for n in range(reads):
            contact = f"{customer}-contact-{n % 40 + 1}"
            self.read(agent, functools.partial(self.contacts, customer, [contact]))

    def incident(self) -> None:
        self.tick()
        if self.incidents and self.rng.random() < 0.5:
            self.gate.registry.close_incident(self.incidents.pop(0), closed_by="sre-1")
            return
        number = f"INC-{self.tag}-{self.rng.randint(1000, 9999)}"
        try:
            self.gate.registry.open_incident(
                number,
                customers=self.rng.sample(CUSTOMERS, 2),
                opened_by=self.rng.choice(SRES),
                note="elevated error rate on login",
            )
        except EvidenceError:  # the same number again: the SRE picks another next time
            return
        self.incidents.append(number)

    def sre_read(self) -> None:
        if not self.incidents:
            self.incident()
            return
        customer = self.rng.choice(CUSTOMERS)  # not always one the incident covers
        sre = self.context(
            self.rng.choice(SRES), "sre", "technical_problem", evidence_ref=self.incidents[-1]
        )
        self.read(sre, lambda: self.contacts(customer, []))

    def break_glass(self) -> None:
        sre = self.context(
            self.rng.choice(SRES),
            "sre",
            "technical_problem",
            break_glass=True,
            justification="pager: checkout failing for every customer",
        )
        customer = self.rng.choice(CUSTOMERS)
        self.read(sre, lambda: self.contacts(customer, []))

    def legal_read(self) -> None:
        if self.legal is None:
            self.tick()
            customer = self.rng.choice(CUSTOMERS)
            reference = f"SUB-{self.tag}-1"
            self.gate.registry.register_legal_request(
                reference,
                authority="District Court",
                customer_id=customer,
                expires_at=self.clock.now + timedelta(days=30),
                notify_after=self.clock.now + timedelta(days=90),
                registered_by="legal-1",
            )
            self.legal = (reference, customer)
            return
        reference, customer = self.legal
        lawyer = self.context("legal-1", "legal", "legal_requirement", evidence_ref=reference)
        self.read(lawyer, lambda: self.documents(customer))

    def mistake(self) -> None:
        """What real staff get wrong: each is denied, with one record."""
        customer = self.rng.choice(CUSTOMERS)
        agent = self.rng.choice(AGENTS)
        wrong = self.rng.choice(("other customer", "no evidence", "unknown purpose", "stale"))
        if wrong == "other customer" and self.grants:
            owner, (grant, _) = self.rng.choice(sorted(self.grants.items()))
            other = self.rng.choice([c for c in CUSTOMERS if c != owner])
            ctx = self.context(agent, "support_agent", "support_request", evidence_ref=grant)
            self.read(ctx, lambda: self.contacts(other, [f"{other}-contact-1"]))
        elif wrong == "no evidence":
            ctx = self.context(agent, "support_agent", "support_request")
            self.read(ctx, lambda: self.contacts(customer, []))
        elif wrong == "unknown purpose":
            ctx = self.context(agent, "support_agent", "marketing_analysis")
            self.read(ctx, lambda: self.contacts(customer, []))
        else:  # no context at all: a script run outside the support console
            self.tick()
            with suppress(AccessDenied):
                self.contacts(customer, [])


#: (action, share of all actions, the most records it can write).
_ACTIONS: tuple[tuple[str, float, int], ...] = (
    ("service_job", 0.30, 2),
    ("customer_self_service", 0.15, 2),
    ("support_read", 0.25, 2),
    ("new_support_case", 0.05, 1),
    ("sre_read", 0.08, 2),
    ("incident", 0.02, 1),
    ("break_glass", 0.005, 2),
    ("legal_read", 0.03, 2),
    ("mistake", 0.12, 1),
)


def run(store: SqlStore, events: int, *, seed: int = 7) -> Counter[str]:
    """Record exactly ``events`` events in ``store`` through the gate; tally them by kind.

    The same seed on the same log gives the same run. The store needs its HMAC key.
    """
    before = store.count()
    start = datetime.now(UTC) - timedelta(days=7)
    clock = _Clock(start)
    desk = _Desk(
        gate=Gate(store, Policy.from_dict(POLICY), service="support-desk", clock=clock),
        clock=clock,
        rng=random.Random(seed),  # noqa: S311 - a repeatable simulation, not security
        # About 1.7 records per action; spread the week over them.
        step=max(1.0, timedelta(days=7).total_seconds() * 1.7 / events),
        tag=str(before),
    )
    recorded = 0
    # About three times a support agent's usual day (a fifth of the desk's reads, shared by
    # five agents, over seven days), once, late in the week.
    binge = max(10, events // 45)
    while recorded < events:
        room = events - recorded
        if binge and recorded >= events * 0.85 and room > 2 * binge:
            desk.new_hire_binge(binge)
            binge = 0
            recorded = store.count() - before
            continue
        fitting = [a for a in _ACTIONS if a[2] <= room]
        name = desk.rng.choices([a[0] for a in fitting], [a[1] for a in fitting])[0]
        getattr(desk, name)()
        recorded = store.count() - before
    tally: Counter[str] = Counter()
    for stored in store.read(before + 1):
        event = stored.event
        label = event.event_type.value
        if event.event_type.value.startswith("access."):
            label += f" {event.purpose or '-'}"
        if event.event_type.value == "access.denied" or event.reason_code == "break_glass":
            label += f" ({event.reason_code})"
        tally[label] += 1
    return tally
