"""Reports on the log for reviewers: what was accessed, by whom, why, and what stands out.

Counts are SQL aggregates computed in the database (``GROUP BY``), never by loading every
record into Python: the store answers them by name (``AuditStore.decision_counts`` and its
siblings), given a ``ReportFilter``. Only small results (per actor per day, a customer's
grants) are combined here. Producing a report is itself recorded (``audit.report``) before
it is returned: if that record cannot be written, there is no report.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from accessaudit.exceptions import ConfigurationError
from accessaudit.gate.decisions import ReasonCode
from accessaudit.gate.policy import DEFAULT_UNUSUAL_VOLUME, UnusualVolume
from accessaudit.gate.purposes import EvidenceKind, Purpose, cited_evidence_kind, parse_purpose
from accessaudit.gate.registry import EvidenceRegistry
from accessaudit.record._clock import EPOCH, from_micros, to_iso
from accessaudit.record.fields import MAX_INT, AttributeValue, EventType
from accessaudit.review._self_audit import record_log_read
from accessaudit.store import ChainPoint

if TYPE_CHECKING:
    from accessaudit.gate.evidence import Grant
    from accessaudit.record.events import StoredEvent
    from accessaudit.store import AuditStore

__all__ = [
    "AccessReport",
    "ReportFilter",
    "access_report",
    "customer_known",
    "record_report",
]

#: How far before the report's period an actor's usual day is looked for.
UNUSUAL_HISTORY: Final = timedelta(days=28)
#: An actor with fewer other active days than this is compared with their role's usual day.
UNUSUAL_OWN_DAYS: Final = 3
_SUPPORT: Final = Purpose.SUPPORT_REQUEST.value


@dataclass(frozen=True, slots=True)
class ReportFilter:
    """Which access decisions a report covers: a period and optional equality filters."""

    since: datetime | None = None
    until: datetime | None = None
    customer_id: str | None = None
    actor_id: str | None = None
    purpose: str | None = None
    resource: str | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None and (moment.tzinfo is None or moment.utcoffset() is None):
                raise ConfigurationError(f"{name} must have a timezone")
        if self.since and self.until and self.until <= self.since:
            raise ConfigurationError(
                f"the period ends ({to_iso(self.until)}) before it starts "
                f"({to_iso(self.since)}); swap --since and --until"
            )

    def to_dict(self) -> dict[str, str | None]:
        """The filter as text, for the report and its ``audit.report`` record."""
        return {
            "since": None if self.since is None else to_iso(self.since),
            "until": None if self.until is None else to_iso(self.until),
            "customer_id": self.customer_id,
            "actor_id": self.actor_id,
            "purpose": self.purpose,
            "resource": self.resource,
        }


@dataclass
class AccessReport:
    """Named sections, each a list of flat rows (ready for a table, JSON or CSV)."""

    filter: ReportFilter
    generated_at: datetime
    sections: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "generated_at": to_iso(self.generated_at),
            "filter": self.filter.to_dict(),
            "sections": self.sections,
        }


def _date(day_number: int) -> str:
    return (EPOCH + timedelta(days=int(day_number))).strftime("%Y-%m-%d")


def access_report(
    store: AuditStore,
    flt: ReportFilter,
    *,
    now: datetime,
    expiring_within: timedelta,
    unusual: UnusualVolume = DEFAULT_UNUSUAL_VOLUME,
) -> AccessReport:
    """Every section of ``accessaudit report`` for the accesses ``flt`` selects.

    ``unusual``: when an actor's day is unusual (a policy's ``unusual_volume``).
    """
    report = AccessReport(flt, now)
    sections = report.sections
    sections["by_purpose"] = store.decision_counts(flt, by=("purpose",))
    sections["by_actor"] = store.decision_counts(flt, by=("role", "actor_id"))
    sections["by_customer"] = store.decision_counts(flt, by=("customer_id", "resource"))
    per_day = store.decision_counts(flt, by=("day_number",))
    sections["per_day"] = sorted(
        ({"day": _date(r.pop("day_number")), **r} for r in per_day), key=lambda r: r["day"]
    )
    sections["denials"] = store.denial_counts(flt)
    sections["ungated_reads"] = _ungated_reads(store, flt)
    sections["break_glass"] = _break_glass(store, flt)
    sections["support_outside_grant"] = _support_outside_grant(store, flt)
    sections["unusual_volume"] = _unusual_volume(store, flt, unusual)
    sections["expiring_evidence"] = _expiring(store, now, expiring_within, flt)
    return report


def _ungated_reads(store: AuditStore, flt: ReportFilter) -> list[dict[str, Any]]:
    """Queries that read a protected table outside the gate, per place in the code."""
    rows = []
    for item in store.ungated_reads(flt):
        attributes = json.loads(item.pop("attributes") or "{}")
        observed = item.pop("event_type") == EventType.ACCESS_UNGATED.value
        rows.append(
            {
                "resource": item["resource"],
                "table": attributes.get("table"),
                "function": attributes.get("function"),
                "outcome": "let through (observe mode)" if observed else "refused",
                "reads": item["reads"],
                "first": to_iso(from_micros(item["first_us"])),
                "last": to_iso(from_micros(item["last_us"])),
            }
        )
    return rows


def _break_glass(store: AuditStore, flt: ReportFilter) -> list[dict[str, Any]]:
    rows = []
    for item in store.allowed_with_reason(flt, ReasonCode.BREAK_GLASS.value):
        item["occurred_at"] = to_iso(from_micros(item.pop("occurred_at_us")))
        rows.append(item)
    return rows


def _support_outside_grant(store: AuditStore, flt: ReportFilter) -> list[dict[str, Any]]:
    """Allowed support accesses that no live grant of that customer covered (expected: none)."""
    grants: dict[str | None, Grant] = {g.grant_id: g for g in EvidenceRegistry(store).grants()}
    found = []
    for row in store.evidence_counts(flt, purpose=_SUPPORT):
        grant = grants.get(row.evidence_ref)
        if grant is None or not grant.intact or grant.customer_id != row.customer_id:
            outside = row.accesses
            why = "no such grant" if grant is None else "the grant is for another customer"
            why = "the grant's records fail their checks" if grant and not grant.intact else why
        else:
            # Issue and revocation count by their place in the chain, as the gate sees them
            # (a clock ahead on the revoking host cannot make a read before it look late),
            # and by time on other chains (shards); expiry by the time the access states,
            # as the gate decides it.
            issued = ChainPoint(grant.issued_chain or "", grant.issued_seq or 0, grant.issued_at)
            ended = (
                None
                if grant.revoked_at is None
                else ChainPoint(
                    grant.revoked_chain or "", grant.revoked_seq or MAX_INT, grant.revoked_at
                )
            )
            outside = store.count_allowed_outside(
                flt,
                purpose=_SUPPORT,
                evidence_ref=grant.grant_id,
                issued=issued,
                ended=ended,
                until=grant.expires_at,
            )
            why = "outside the grant's validity"
        if outside:
            found.append(
                {
                    "evidence_ref": row.evidence_ref,
                    "customer_id": row.customer_id,
                    "accesses": outside,
                    "why": why,
                }
            )
    return found


def _unusual_volume(
    store: AuditStore, flt: ReportFilter, unusual: UnusualVolume
) -> list[dict[str, Any]]:
    """Days of the period on which an actor read far more than on a usual day.

    The usual day is the actor's own median day, from the period and the
    ``UNUSUAL_HISTORY`` before it, the judged day left out. An actor with fewer than
    ``UNUSUAL_OWN_DAYS`` other active days (new, or back after a long time) is compared
    with the median day of the others who acted in the same role. An actor whose role has
    nobody else in it has no usual day yet and is not judged. Whole UTC days.
    """
    since = None if flt.since is None else flt.since - UNUSUAL_HISTORY
    history = replace(flt, since=since, actor_id=None)  # the role's others are the baseline
    by_role: dict[tuple[str, int], dict[str | None, int]] = {}  # (actor, day) -> role -> n
    for row in store.decision_counts(history, by=("actor_id", "role", "day_number")):
        by_role.setdefault((row["actor_id"], row["day_number"]), {})[row["role"]] = row["accesses"]
    per_day: dict[str, dict[int, int]] = {}  # actor -> day -> accesses
    role_of: dict[tuple[str, int], str | None] = {}  # the role of most of a day's accesses
    in_role: dict[str | None, list[tuple[str, int]]] = {}  # role -> (actor, accesses) per day
    for (actor, day), roles in by_role.items():
        count = per_day.setdefault(actor, {})[day] = sum(roles.values())
        role = role_of[(actor, day)] = max(roles, key=lambda r: (roles[r], str(r)))
        in_role.setdefault(role, []).append((actor, count))
    first_day = None if flt.since is None else (flt.since - EPOCH).days
    found = []
    for actor, days in sorted(per_day.items()):
        if flt.actor_id is not None and actor != flt.actor_id:
            continue
        for day, count in sorted(days.items()):
            if first_day is not None and day < first_day:
                continue  # history: the baseline, not judged
            role = role_of[(actor, day)]
            own = [n for d, n in days.items() if d != day]
            if len(own) >= UNUSUAL_OWN_DAYS:
                usual, basis = statistics.median(own), "own"
            elif others := [n for other, n in in_role[role] if other != actor]:
                usual, basis = statistics.median(others), "role"
            else:
                continue  # alone in its role, with no days of its own: nothing to compare
            if count >= max(unusual.minimum, unusual.factor * usual):
                found.append(
                    {
                        "actor_id": actor,
                        "role": role,
                        "day": _date(day),
                        "accesses": count,
                        "usual_per_day": usual,
                        "usual_from": basis,
                    }
                )
    return found


def _expiring(
    store: AuditStore, now: datetime, within: timedelta, flt: ReportFilter
) -> list[dict[str, Any]]:
    """Live evidence ending within ``within``, of the filter's customer and purpose."""
    if flt.purpose is not None:
        kind = cited_evidence_kind(parse_purpose(flt.purpose))
        wanted = set() if kind is None else {kind}
    else:
        wanted = {EvidenceKind.GRANT, EvidenceKind.LEGAL_REQUEST}
    registry = EvidenceRegistry(store, clock=lambda: now)
    soon = now + within
    customer_id = flt.customer_id
    found: list[dict[str, Any]] = [
        {
            "kind": "grant",
            "ref": g.grant_id,
            "customer_id": g.customer_id,
            "expires_at": to_iso(g.expires_at),
        }
        for g in (registry.grants(customer_id) if EvidenceKind.GRANT in wanted else [])
        if g.intact and g.status(now) == "live" and g.expires_at <= soon
    ]
    found += [
        {
            "kind": "legal_request",
            "ref": r.reference,
            "customer_id": r.customer_id,
            "expires_at": to_iso(r.expires_at),
        }
        for r in (
            registry.legal_requests(customer_id) if EvidenceKind.LEGAL_REQUEST in wanted else []
        )
        if r.intact and r.status(now) == "in_force" and r.expires_at <= soon
    ]
    return sorted(found, key=lambda item: item["expires_at"])


def record_report(
    store: AuditStore,
    actor: str,
    kind: str,
    flt: ReportFilter,
    rows: int,
    **options: AttributeValue,
) -> StoredEvent:
    """Append the ``audit.report`` event (reading the log is itself recorded); return it.

    ``options`` are further settings of the read worth recording (e.g. show_actors).
    """
    attributes: dict[str, AttributeValue] = {"report": kind, **options}
    attributes.update({k: v for k, v in flt.to_dict().items() if v is not None})
    return record_log_read(
        store,
        EventType.AUDIT_REPORT,
        actor=actor,
        record_count=rows,
        attributes=attributes,
        customer_id=flt.customer_id,
    )


def customer_known(store: AuditStore, customer_id: str) -> bool:
    """Whether any record of the log concerns this customer."""
    return store.customer_known(customer_id)
