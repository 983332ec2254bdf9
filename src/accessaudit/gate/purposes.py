"""The four purposes for which customer data may be accessed, and the evidence each rests on.

The set is closed: it is the promise itself ("only to provide the service, to prevent or
address technical problems, at the customer's request for support, or as required by law").
A purpose string outside it is not an error to be fixed by a caller; it is an access to be
denied and recorded (reason ``unknown_purpose``), so ``parse_purpose`` answers None.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "ACCEPTED_EVIDENCE",
    "EVIDENCE_NEEDED",
    "EVIDENCE_NOUNS",
    "PURPOSE_DESCRIPTIONS",
    "RECORDED_EVIDENCE",
    "EvidenceKind",
    "Purpose",
    "cited_evidence_kind",
    "citing_purpose",
    "parse_purpose",
]


class Purpose(StrEnum):
    """Why customer data is being accessed. Values are stable: they are stored in the log."""

    SERVICE_DELIVERY = "service_delivery"
    TECHNICAL_PROBLEM = "technical_problem"
    SUPPORT_REQUEST = "support_request"
    LEGAL_REQUIREMENT = "legal_requirement"

    @property
    def description(self) -> str:
        """The promise's own words for this purpose."""
        return PURPOSE_DESCRIPTIONS[self]


PURPOSE_DESCRIPTIONS: Final = {
    Purpose.SERVICE_DELIVERY: "to provide the service",
    Purpose.TECHNICAL_PROBLEM: "to prevent or address service or technical problems",
    Purpose.SUPPORT_REQUEST: "at the customer's request in connection with customer support",
    Purpose.LEGAL_REQUIREMENT: "as required by law",
}


class EvidenceKind(StrEnum):
    """What can justify an access. A policy says which kinds each purpose accepts."""

    SERVICE_IDENTITY = "service_identity"
    """The actor is a service (actor type ``service``), e.g. the app serving a request."""
    CUSTOMER_SELF = "customer_self"
    """The actor is one of the customer's own users, reading that customer's data."""
    GRANT = "grant"
    """A live support grant the customer gave for a case (``grant issue``)."""
    INCIDENT = "incident"
    """An open incident covering the customer (``incident open``)."""
    LEGAL_REQUEST = "legal_request"
    """A registered legal request naming the customer (``legal register``)."""


#: Which evidence kinds each purpose can rest on. A policy may narrow, never widen, these.
ACCEPTED_EVIDENCE: Final[dict[Purpose, tuple[EvidenceKind, ...]]] = {
    Purpose.SERVICE_DELIVERY: (EvidenceKind.SERVICE_IDENTITY, EvidenceKind.CUSTOMER_SELF),
    Purpose.TECHNICAL_PROBLEM: (EvidenceKind.INCIDENT,),
    Purpose.SUPPORT_REQUEST: (EvidenceKind.GRANT,),
    Purpose.LEGAL_REQUIREMENT: (EvidenceKind.LEGAL_REQUEST,),
}


#: Evidence that exists as records in the log (issued, opened or registered there).
RECORDED_EVIDENCE: Final = frozenset(
    {EvidenceKind.GRANT, EvidenceKind.INCIDENT, EvidenceKind.LEGAL_REQUEST}
)


# Everything below is derived from ACCEPTED_EVIDENCE, the one statement of the relation.
_CITED: Final = {
    purpose: next((k for k in kinds if k in RECORDED_EVIDENCE), None)
    for purpose, kinds in ACCEPTED_EVIDENCE.items()
}
_CITING: Final = {kind: purpose for purpose, kind in _CITED.items() if kind is not None}


def cited_evidence_kind(purpose: Purpose | None) -> EvidenceKind | None:
    """The kind of recorded evidence an access for ``purpose`` cites by reference, if any."""
    return None if purpose is None else _CITED[purpose]


def citing_purpose(kind: EvidenceKind) -> Purpose:
    """The purpose whose accesses cite recorded evidence of ``kind`` (KeyError for others)."""
    return _CITING[kind]


#: What each kind of evidence is called, and what an access resting on it needs, in words.
EVIDENCE_NOUNS: Final = {
    EvidenceKind.SERVICE_IDENTITY: "service identity",
    EvidenceKind.CUSTOMER_SELF: "customer's own user",
    EvidenceKind.GRANT: "grant",
    EvidenceKind.INCIDENT: "incident",
    EvidenceKind.LEGAL_REQUEST: "legal request",
}
EVIDENCE_NEEDED: Final = {
    EvidenceKind.SERVICE_IDENTITY: "a service identity (actor_type=service)",
    EvidenceKind.CUSTOMER_SELF: "the customer's own user (actor_customer_id)",
    EvidenceKind.GRANT: "a live support grant from the customer",
    EvidenceKind.INCIDENT: "an open incident",
    EvidenceKind.LEGAL_REQUEST: "a registered legal request",
}


_VALUES: Final = frozenset(p.value for p in Purpose)


def parse_purpose(value: str | None) -> Purpose | None:
    """The purpose named exactly by ``value``; None for anything else (no case folding)."""
    return Purpose(value) if value in _VALUES else None
