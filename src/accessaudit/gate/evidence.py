"""Grants, incidents and legal requests: what they are, and how they live in the log.

Evidence is not kept in a side table: each change is an event in the same chain as the
accesses it justifies (``grant.issued``, ``grant.revoked``, ``incident.opened``,
``incident.closed``, ``legal_request.registered``), so "who authorised this" is as
tamper-evident as the access itself. This module is pure: it builds those events and folds
them back into the current state of one piece of evidence. ``registry.py`` does the I/O.

Where each detail sits in the record (identifiers only, as everywhere):

========================  =================================================================
``evidence_ref``          the grant id, incident id or legal reference
``customer_id``           the customer a grant or legal request is for
``subject_ids``           an incident's affected customer ids
``data_categories``       what a grant covers
``attributes``            ``case_id``, ``expires_at``, ``max_records``, ``all_customers``,
                          ``authority``, ``notify_after`` (times as ``to_iso`` text)
========================  =================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from accessaudit.gate.purposes import EvidenceKind, citing_purpose
from accessaudit.record._clock import from_iso, to_iso
from accessaudit.record.events import AccessEvent
from accessaudit.record.fields import ActorType, EventType

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from accessaudit.record.events import StoredEvent
    from accessaudit.record.fields import AttributeValue

__all__ = [
    "ENDING_EVENTS",
    "EVIDENCE_EVENTS",
    "EVIDENCE_TYPES",
    "Actor",
    "Evidence",
    "Grant",
    "Incident",
    "LegalRequest",
    "MalformedEvidence",
    "evidence_dict",
    "fold",
    "grant_issued_event",
    "grant_revoked_event",
    "incident_closed_event",
    "incident_opened_event",
    "legal_registered_event",
]

#: The event types that make up each kind of evidence, first the one that creates it.
EVIDENCE_EVENTS: Final[dict[EvidenceKind, tuple[EventType, ...]]] = {
    EvidenceKind.GRANT: (EventType.GRANT_ISSUED, EventType.GRANT_REVOKED),
    EvidenceKind.INCIDENT: (EventType.INCIDENT_OPENED, EventType.INCIDENT_CLOSED),
    EvidenceKind.LEGAL_REQUEST: (EventType.LEGAL_REQUEST_REGISTERED,),
}
#: The records that end (withdraw) evidence of each kind: from their place in the chain on,
#: nothing may rely on it. A legal request is never withdrawn; it expires.
ENDING_EVENTS: Final[dict[EvidenceKind, tuple[EventType, ...]]] = {
    kind: types[1:] for kind, types in EVIDENCE_EVENTS.items()
}


@dataclass(frozen=True, slots=True)
class Actor:
    """Who records a change to evidence (a person by default)."""

    actor_id: str
    actor_type: ActorType = ActorType.HUMAN
    role: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """Access the customer gave support staff for one case: categories, until when, how much."""

    grant_id: str
    customer_id: str
    case_id: str
    data_categories: frozenset[str]
    issued_at: datetime
    issued_by: str
    expires_at: datetime
    max_records: int | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    records_used: int = 0
    """Records of the allowance handed out or held by accesses in progress (``_allowance``)."""
    intact: bool = True
    """False when one of its records fails the integrity check: it must not be relied on."""
    issued_seq: int | None = None
    revoked_seq: int | None = None
    issued_chain: str | None = None  # the chains those seqs belong to (shards: any chain)
    revoked_chain: str | None = None
    """Where in the chain it was issued and revoked: what ``report`` compares accesses with."""

    @property
    def records_left(self) -> int | None:
        """What is left of the allowance (None: no allowance)."""
        return None if self.max_records is None else self.max_records - self.records_used

    def status(self, now: datetime) -> str:
        """``live``, ``revoked`` or ``expired`` at ``now``.

        A revocation counts from its record on, whatever time it states: the gate sees it
        as soon as it is committed, so a clock running ahead elsewhere cannot keep it open.
        """
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= now else "live"


@dataclass(frozen=True, slots=True, kw_only=True)
class Incident:
    """A service or technical problem under investigation, and whose data it concerns."""

    incident_id: str
    opened_at: datetime
    opened_by: str
    customers: frozenset[str]
    all_customers: bool
    closed_at: datetime | None = None
    closed_by: str | None = None
    intact: bool = True

    def covers(self, customer_id: str) -> bool:
        """Whether the incident concerns this customer."""
        return self.all_customers or customer_id in self.customers

    def status(self, now: datetime) -> str:
        """``open`` or ``closed`` (from its closing record on, as a grant's revocation)."""
        return "closed" if self.closed_at is not None else "open"


@dataclass(frozen=True, slots=True, kw_only=True)
class LegalRequest:
    """A court order, subpoena or similar naming one customer, in force until ``expires_at``.

    Until ``notify_after`` (if set) the customer must not be told of accesses under it.
    """

    reference: str
    authority: str
    customer_id: str
    registered_at: datetime
    registered_by: str
    expires_at: datetime
    notify_after: datetime | None = None
    intact: bool = True

    def status(self, now: datetime) -> str:
        """``in_force`` or ``expired`` at ``now``."""
        return "expired" if self.expires_at <= now else "in_force"


Evidence = Grant | Incident | LegalRequest
#: The class that holds evidence of each recorded kind.
EVIDENCE_TYPES: Final[dict[EvidenceKind, type[Evidence]]] = {
    EvidenceKind.GRANT: Grant,
    EvidenceKind.INCIDENT: Incident,
    EvidenceKind.LEGAL_REQUEST: LegalRequest,
}


def _event(event_type: EventType, actor: Actor, **fields: Any) -> AccessEvent:
    return AccessEvent(
        event_type=event_type,
        actor_id=actor.actor_id,
        actor_type=actor.actor_type,
        role=actor.role,
        **fields,
    )


def grant_issued_event(grant: Grant, actor: Actor, *, note: str | None = None) -> AccessEvent:
    """The record of a grant being issued on behalf of its customer."""
    attributes: dict[str, AttributeValue] = {
        "case_id": grant.case_id,
        "expires_at": to_iso(grant.expires_at),
    }
    if grant.max_records is not None:
        attributes["max_records"] = grant.max_records
    return _event(
        EventType.GRANT_ISSUED,
        actor,
        occurred_at=grant.issued_at,
        on_behalf_of=grant.customer_id,
        purpose=citing_purpose(EvidenceKind.GRANT),
        evidence_ref=grant.grant_id,
        justification=note,
        customer_id=grant.customer_id,
        data_categories=tuple(sorted(grant.data_categories)),
        attributes=attributes,
    )


def grant_revoked_event(
    grant: Grant, actor: Actor, at: datetime, *, note: str | None = None
) -> AccessEvent:
    """The record of a grant being withdrawn."""
    return _event(
        EventType.GRANT_REVOKED,
        actor,
        occurred_at=at,
        on_behalf_of=grant.customer_id,
        purpose=citing_purpose(EvidenceKind.GRANT),
        evidence_ref=grant.grant_id,
        justification=note,
        customer_id=grant.customer_id,
        attributes={"case_id": grant.case_id},
    )


def incident_opened_event(
    incident: Incident, actor: Actor, *, note: str | None = None
) -> AccessEvent:
    """The record of an incident being opened."""
    return _event(
        EventType.INCIDENT_OPENED,
        actor,
        occurred_at=incident.opened_at,
        purpose=citing_purpose(EvidenceKind.INCIDENT),
        evidence_ref=incident.incident_id,
        justification=note,
        subject_ids=tuple(sorted(incident.customers)),
        attributes={"all_customers": incident.all_customers},
        customer_visible=False,
    )


def incident_closed_event(
    incident: Incident, actor: Actor, at: datetime, *, note: str | None = None
) -> AccessEvent:
    """The record of an incident being closed."""
    return _event(
        EventType.INCIDENT_CLOSED,
        actor,
        occurred_at=at,
        purpose=citing_purpose(EvidenceKind.INCIDENT),
        evidence_ref=incident.incident_id,
        justification=note,
        customer_visible=False,
    )


def legal_registered_event(
    request: LegalRequest, actor: Actor, *, note: str | None = None
) -> AccessEvent:
    """The record of a legal request being registered (never shown to the customer)."""
    attributes: dict[str, AttributeValue] = {
        "authority": request.authority,
        "expires_at": to_iso(request.expires_at),
    }
    if request.notify_after is not None:
        attributes["notify_after"] = to_iso(request.notify_after)
    return _event(
        EventType.LEGAL_REQUEST_REGISTERED,
        actor,
        occurred_at=request.registered_at,
        purpose=citing_purpose(EvidenceKind.LEGAL_REQUEST),
        evidence_ref=request.reference,
        justification=note,
        customer_id=request.customer_id,
        attributes=attributes,
        customer_visible=False,
    )


class MalformedEvidence(ValueError):
    """Evidence records that do not fit together (missing fields, no creating event)."""


def _time(attributes: Mapping[str, AttributeValue], key: str) -> datetime:
    value = attributes.get(key)
    if not isinstance(value, str):
        msg = f"attribute {key} is missing"
        raise MalformedEvidence(msg)
    return from_iso(value)


def _optional_time(attributes: Mapping[str, AttributeValue], key: str) -> datetime | None:
    return None if attributes.get(key) is None else _time(attributes, key)


def _attribute_text(attributes: Mapping[str, AttributeValue], key: str) -> str | None:
    value = attributes.get(key)
    return value if isinstance(value, str) else None


def _text(value: str | None, what: str) -> str:
    if value is None:
        msg = f"{what} is missing"
        raise MalformedEvidence(msg)
    return value


def fold(kind: EvidenceKind, records: Sequence[StoredEvent]) -> Evidence:
    """The current state of one piece of evidence from its records, oldest first.

    Raises ``MalformedEvidence`` when the records cannot describe that kind of evidence.
    """
    if not records or records[0].event.event_type is not EVIDENCE_EVENTS[kind][0]:
        msg = f"no {EVIDENCE_EVENTS[kind][0].value} record"
        raise MalformedEvidence(msg)
    first = records[0].event
    ref = _text(first.evidence_ref, "evidence_ref")
    # Only the first ending counts: a later revoke or close changes nothing.
    ending = next((r for r in records[1:] if r.event.event_type in ENDING_EVENTS[kind]), None)
    ended = None if ending is None else ending.event
    try:
        if kind is EvidenceKind.GRANT:
            max_records = first.attributes.get("max_records")
            return Grant(
                grant_id=ref,
                customer_id=_text(first.customer_id, "customer_id"),
                case_id=_text(_attribute_text(first.attributes, "case_id"), "case_id"),
                data_categories=frozenset(first.data_categories),
                issued_at=first.occurred_at,
                issued_by=first.actor_id,
                expires_at=_time(first.attributes, "expires_at"),
                max_records=max_records if isinstance(max_records, int) else None,
                revoked_at=None if ended is None else ended.occurred_at,
                revoked_by=None if ended is None else ended.actor_id,
                issued_seq=records[0].seq,
                revoked_seq=None if ending is None else ending.seq,
                issued_chain=records[0].chain_id,
                revoked_chain=None if ending is None else ending.chain_id,
            )
        if kind is EvidenceKind.INCIDENT:
            return Incident(
                incident_id=ref,
                opened_at=first.occurred_at,
                opened_by=first.actor_id,
                customers=frozenset(first.subject_ids),
                all_customers=first.attributes.get("all_customers") is True,
                closed_at=None if ended is None else ended.occurred_at,
                closed_by=None if ended is None else ended.actor_id,
            )
        return LegalRequest(
            reference=ref,
            authority=_text(_attribute_text(first.attributes, "authority"), "authority"),
            customer_id=_text(first.customer_id, "customer_id"),
            registered_at=first.occurred_at,
            registered_by=first.actor_id,
            expires_at=_time(first.attributes, "expires_at"),
            notify_after=_optional_time(first.attributes, "notify_after"),
        )
    except ValueError as e:  # from_iso on a malformed time
        raise MalformedEvidence(str(e)) from e


def evidence_dict(evidence: Evidence, now: datetime) -> dict[str, object]:
    """A JSON-ready description of one piece of evidence, with its status at ``now``."""
    out: dict[str, object] = {
        "kind": {Grant: "grant", Incident: "incident", LegalRequest: "legal_request"}[
            type(evidence)
        ],
        "status": evidence.status(now) if evidence.intact else "tampered",
    }
    for name in evidence.__dataclass_fields__:
        value = getattr(evidence, name)
        if isinstance(value, frozenset):
            value = sorted(value)
        elif hasattr(value, "astimezone"):
            value = to_iso(value)
        out[name] = value
    return out
