"""The customer transparency report: every access to one customer's data, as they may see it.

In the manner of Google's Access Transparency logs: when, why (purpose and the evidence it
rested on, in words), what (resource and data categories), by which *role*, and the outcome.
The report is meant to be handed to the customer, so it shows nothing that belongs to anyone
else:

- an evidence reference is shown only when the log proves it is this customer's own (their
  grant, an incident that concerns them, a legal request naming them); anything else (a grant
  of another customer cited by mistake, a reference that does not exist, evidence whose
  records fail their checks) is reported as withheld;
- actors are named only on request (``show_actors``), and never when the actor is a user of
  another customer;
- free text (justifications, notes) is never shown.

Accesses under a legal request whose notification hold has not ended are withheld; whether
the report may say that entries were withheld is the policy's ``[transparency]
disclose_withheld`` setting, because some laws forbid even that. Records not meant for the
customer (``customer_visible`` false: evidence bookkeeping, the log's own events) never
appear.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from accessaudit.gate.decisions import ReasonCode
from accessaudit.gate.evidence import Grant, Incident, LegalRequest
from accessaudit.gate.purposes import PURPOSE_DESCRIPTIONS, cited_evidence_kind, parse_purpose
from accessaudit.gate.registry import EvidenceRegistry
from accessaudit.record._clock import from_iso, from_micros, to_iso

if TYPE_CHECKING:
    from datetime import datetime

    from accessaudit.gate.evidence import Evidence
    from accessaudit.review.report import ReportFilter
    from accessaudit.store import AuditStore, VisibleDecision

__all__ = [
    "CUSTOMER_DENIAL",
    "EMERGENCY_ACCESS",
    "WITHHELD",
    "TransparencyReport",
    "transparency_report",
]

#: Shown in place of an evidence reference or actor that is not the customer's to see.
WITHHELD: Final = "(withheld)"

#: Why an access was refused, in words for the customer (no codes, no other customer's ids).
CUSTOMER_DENIAL: Final[dict[str, str]] = {
    ReasonCode.NO_CONTEXT: "refused: the request did not say who was asking or why",
    ReasonCode.UNKNOWN_PURPOSE: "refused: the reason given is not one we may access data for",
    ReasonCode.ROLE_NOT_ALLOWED: "refused: the staff member's role may not access data for "
    "this reason",
    ReasonCode.RESOURCE_NOT_IN_POLICY: "refused: this data may not be accessed this way",
    ReasonCode.PURPOSE_NOT_ALLOWED_FOR_RESOURCE: "refused: this data may not be accessed "
    "for this reason",
    ReasonCode.CUSTOMER_UNRESOLVED: "refused: the request did not say clearly whose data it was",
    ReasonCode.MISSING_EVIDENCE: "refused: no authorisation was given",
    ReasonCode.EVIDENCE_NOT_FOUND: "refused: the authorisation cited does not exist",
    ReasonCode.EVIDENCE_EXPIRED: "refused: the authorisation cited had ended",
    ReasonCode.EVIDENCE_REVOKED: "refused: the authorisation cited had been withdrawn",
    ReasonCode.EVIDENCE_CUSTOMER_MISMATCH: "refused: the authorisation cited is not for "
    "your account",
    ReasonCode.EVIDENCE_SCOPE_EXCEEDED: "refused: the request went beyond what the "
    "authorisation covers",
    ReasonCode.EVIDENCE_TAMPERED: "refused: the authorisation cited failed its integrity check",
    ReasonCode.INVALID_REQUEST: "refused: the request was malformed",
    ReasonCode.UNGATED_READ: "refused: the data was asked for without an authorised purpose",
    ReasonCode.CUSTOMER_MISMATCH: "refused: the request also reached data of another account",
}
_REFUSED: Final = "refused"

#: What an access rested on, in words, by the kind of evidence it cited.
_BASIS: Final = {
    "grant": "your support grant",
    "incident": "an incident affecting your service",
    "legal_request": "a legal request naming your account",
}
EMERGENCY_ACCESS: Final = "emergency access (break-glass)"


@dataclass
class TransparencyReport:
    """What one customer may be shown about accesses to their data in a period."""

    customer_id: str
    generated_at: datetime
    since: datetime | None = None
    until: datetime | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)
    withheld: int = 0
    disclose_withheld: bool = False
    summarised: bool = False

    @property
    def period(self) -> dict[str, str | None]:
        """The period covered, as text (None: open-ended)."""
        return {
            "since": None if self.since is None else to_iso(self.since),
            "until": None if self.until is None else to_iso(self.until),
        }

    @property
    def withheld_note(self) -> str | None:
        """The sentence about withheld entries, where the policy allows saying it."""
        if not (self.disclose_withheld and self.withheld):
            return None
        return (
            f"{self.withheld} access(es) are not shown yet, as the law requires; "
            "they will appear when the hold ends"
        )

    def heading(self) -> list[str]:
        """The lines above the table: whose report, which period, when it was made."""
        since, until = self.period["since"], self.period["until"]
        return [
            f"Accesses to the data of customer {self.customer_id}",
            f"Period: {since or 'the start of the log'} to {until or 'now'}",
            f"Generated: {to_iso(self.generated_at)}",
        ]

    def table_rows(self) -> list[dict[str, Any]]:
        """The entries for a table: lists in words, internal flags left to the JSON form."""
        hidden = {"purpose_description", "decision", "emergency_access"}
        return [
            {
                name: ", ".join(map(str, value)) if isinstance(value, list) else value
                for name, value in entry.items()
                if self.summarised or name not in hidden
            }
            for entry in self.entries
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; says entries were withheld only where the policy allows it."""
        out: dict[str, Any] = {
            "customer_id": self.customer_id,
            "period": self.period,
            "generated_at": to_iso(self.generated_at),
            "summarised": self.summarised,
            "entries": self.entries,
        }
        if self.withheld_note is not None:
            out["withheld_note"] = self.withheld_note
        return out


def transparency_report(
    store: AuditStore,
    flt: ReportFilter,
    *,
    now: datetime,
    show_actors: bool = False,
    disclose_withheld: bool = False,
    summarise: bool = False,
) -> TransparencyReport:
    """Every customer-visible access decision about ``flt.customer_id`` in ``flt``'s period.

    A customer with no accesses gets a report with no entries.
    """
    customer = flt.customer_id
    if customer is None:
        msg = "a transparency report is for one customer: give customer_id"
        raise ValueError(msg)
    report = TransparencyReport(
        customer,
        now,
        since=flt.since,
        until=flt.until,
        disclose_withheld=disclose_withheld,
        summarised=summarise,
    )
    registry = EvidenceRegistry(store, clock=lambda: now)
    # While any legal request about this customer is under a hold, every legal access is
    # held back, including a denied one or one recorded without the hold's date: its mere
    # existence would tell the customer about the request.
    on_hold = any(
        r.notify_after is not None and r.notify_after > now
        for r in registry.legal_requests(customer)
    )
    owned = _OwnEvidence(registry, customer)
    for row in store.visible_decisions(flt):
        attributes = json.loads(row.attributes or "{}")
        hold = attributes.get("notify_after")
        held = isinstance(hold, str) and from_iso(hold) > now
        if held or (on_hold and row.purpose == "legal_requirement"):
            report.withheld += 1
            continue
        report.entries.append(_entry(row, attributes, owned, show_actors=show_actors))
    if summarise:
        report.entries = _summarised(report.entries)
    return report


class _OwnEvidence:
    """Which cited references are this customer's own evidence (looked up once each)."""

    def __init__(self, registry: EvidenceRegistry, customer_id: str) -> None:
        self._registry, self.customer_id = registry, customer_id
        self._known: dict[tuple[str, str], str | None] = {}

    def kind_if_own(self, purpose: str | None, ref: str | None) -> str | None:
        """The evidence kind if ``ref`` is intact evidence of this customer, else None."""
        kind = cited_evidence_kind(parse_purpose(purpose))
        if kind is None or ref is None:
            return None
        key = (kind.value, ref)
        if key not in self._known:
            found = self._registry.lookup(kind, ref)
            self._known[key] = kind.value if self._belongs(found) else None
        return self._known[key]

    def _belongs(self, evidence: Evidence | None) -> bool:
        if evidence is None or not evidence.intact:
            return False
        if isinstance(evidence, Incident):
            return evidence.covers(self.customer_id)
        if isinstance(evidence, Grant | LegalRequest):
            return evidence.customer_id == self.customer_id
        return False


def _entry(
    row: VisibleDecision, attributes: dict[str, Any], owned: _OwnEvidence, *, show_actors: bool
) -> dict[str, Any]:
    """One access as the customer sees it."""
    purpose = parse_purpose(row.purpose)
    emergency = row.reason_code == ReasonCode.BREAK_GLASS or attributes.get("break_glass") is True
    kind = owned.kind_if_own(row.purpose, row.evidence_ref)
    if emergency:
        basis = EMERGENCY_ACCESS
    elif kind is not None:
        basis = _BASIS[kind]
    elif purpose is not None and cited_evidence_kind(purpose) is None:
        basis = PURPOSE_DESCRIPTIONS[purpose]
    else:
        basis = "no valid authorisation of yours" if row.evidence_ref else "none given"
    allowed = row.decision == "allowed"
    entry: dict[str, Any] = {
        "time": to_iso(from_micros(row.occurred_at_us)),
        "purpose": row.purpose if purpose is not None else "(not a permitted purpose)",
        "purpose_description": PURPOSE_DESCRIPTIONS[purpose] if purpose is not None else None,
        "emergency_access": emergency,
        "basis": basis,
        "evidence_ref": row.evidence_ref if kind is not None else None,
        "resource": row.resource,
        "data_categories": json.loads(row.data_categories),
        "role": row.role,
        "decision": row.decision,
        "outcome": "allowed" if allowed else CUSTOMER_DENIAL.get(row.reason_code or "", _REFUSED),
    }
    if emergency:
        # The engineer's own words stay internal (they may name other customers or systems);
        # the customer learns that a written justification exists and was required.
        entry["justification"] = "written justification recorded; ask us for details"
    if row.evidence_ref is not None and kind is None and cited_evidence_kind(purpose):
        entry["evidence_ref"] = WITHHELD  # cited, but not this customer's to see
    if show_actors:
        foreign_user = attributes.get("actor_customer_id") not in (None, owned.customer_id)
        entry["actor_id"] = WITHHELD if foreign_user else row.actor_id
    return entry


def _summarised(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per day and purpose: how many accesses, how many refused, what and by whom."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in entries:
        groups.setdefault((entry["time"][:10], entry["purpose"]), []).append(entry)
    summary = []
    for (day, purpose), group in sorted(groups.items()):
        decisions = Counter(e["decision"] for e in group)
        summary.append(
            {
                "day": day,
                "purpose": purpose,
                "accesses": len(group),
                "allowed": decisions["allowed"],
                "refused": len(group) - decisions["allowed"],
                "emergency_access": sum(1 for e in group if e["emergency_access"]),
                "roles": sorted({str(e["role"]) for e in group if e["role"]}),
                "resources": sorted({str(e["resource"]) for e in group if e["resource"]}),
                "data_categories": sorted({c for e in group for c in e["data_categories"]}),
            }
        )
    return summary
