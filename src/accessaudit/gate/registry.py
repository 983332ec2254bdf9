"""Creating, ending and looking up evidence, through the audit store.

Every change is appended to the store's chain (see ``evidence.py`` for the events) and every
lookup rebuilds the evidence from those records, checking each one's leaf hash, link and MAC
first: a grant row slipped into the table without the HMAC key is reported as tampered, not
honoured.

Checks such as "this incident is still open" read, then append; two people closing the same
incident at the same moment can both succeed. That leaves two ``incident.closed`` records,
of which only the first counts, and no decision changes.
"""

from __future__ import annotations

import heapq
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from uuid6 import uuid7

from accessaudit.exceptions import EvidenceError, MacKeyError
from accessaudit.gate._allowance import ALLOWANCE_EVENTS, records_used
from accessaudit.gate.evidence import (
    EVIDENCE_EVENTS,
    Actor,
    Evidence,
    Grant,
    Incident,
    LegalRequest,
    MalformedEvidence,
    fold,
    grant_issued_event,
    grant_revoked_event,
    incident_closed_event,
    incident_opened_event,
    legal_registered_event,
)
from accessaudit.gate.purposes import EVIDENCE_NOUNS, EvidenceKind
from accessaudit.record._clock import EPOCH, now_utc, to_iso
from accessaudit.record._rows import MalformedRow, from_row
from accessaudit.record.integrity import GENESIS_HASH, check_seals

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping
    from datetime import datetime

    from accessaudit.record.events import AccessEvent, StoredEvent
    from accessaudit.store import AuditStore, ChainView, Precondition

__all__ = ["EvidenceRegistry"]


E = TypeVar("E", Grant, Incident, LegalRequest)


def _actor(actor: Actor | str) -> Actor:
    return Actor(actor) if isinstance(actor, str) else actor


def _future(what: str, moment: datetime, now: datetime | None) -> None:
    """Refuse a naive time, or one not after ``now``."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise EvidenceError(f"{what} must have a timezone (e.g. datetime(..., tzinfo=UTC))")
    if now is not None and moment <= now:
        raise EvidenceError(f"{what} ({to_iso(moment)}) is not in the future")


def _untrusted(kind: EvidenceKind, ref: str, evidence: Evidence | None) -> Evidence:
    """Evidence whose records fail their checks: kept visible, marked, never relied on."""
    if evidence is not None:
        return replace(evidence, intact=False)
    unknown = "(unreadable)"
    if kind is EvidenceKind.GRANT:
        return Grant(
            grant_id=ref,
            customer_id=unknown,
            case_id=unknown,
            data_categories=frozenset(),
            issued_at=EPOCH,
            issued_by=unknown,
            expires_at=EPOCH,
            intact=False,
        )
    if kind is EvidenceKind.INCIDENT:
        return Incident(
            incident_id=ref,
            opened_at=EPOCH,
            opened_by=unknown,
            customers=frozenset(),
            all_customers=False,
            closed_at=EPOCH,
            intact=False,
        )
    return LegalRequest(
        reference=ref,
        authority=unknown,
        customer_id=unknown,
        registered_at=EPOCH,
        registered_by=unknown,
        expires_at=EPOCH,
        intact=False,
    )


def _holding(ref: str) -> Precondition:
    def hold(chain: ChainView) -> None:
        chain.hold(ref)

    return hold


def _created(rows: list[tuple[Mapping[str, Any], str | None]]) -> int:
    """When a piece of evidence was created: the earliest time its rows state."""
    times = [t for row, _ in rows if isinstance(t := row.get("occurred_at_us"), int)]
    return min(times, default=0)


def _in_time_order(records: list[StoredEvent]) -> list[StoredEvent]:
    """One piece of evidence's records, oldest first, whichever chains they are on.

    Within a chain, seq order (as the gate saw them); across chains (shards), the times the
    records state, the only order two chains share. ``heapq.merge`` keeps each chain's own
    order even where its times are not monotone.
    """
    by_chain: dict[str, list[StoredEvent]] = {}
    for record in records:
        by_chain.setdefault(record.chain_id, []).append(record)
    if len(by_chain) == 1:
        return records
    return list(heapq.merge(*by_chain.values(), key=lambda r: r.event.occurred_at))


class EvidenceRegistry:
    """Grants, incidents and legal requests recorded in ``store``'s log, on any of its chains.

    ``clock`` gives "now" for issuing and for status; the store needs its HMAC key, which
    both appending and checking evidence records use.
    """

    def __init__(self, store: AuditStore, *, clock: Callable[[], datetime] = now_utc) -> None:
        if store.key is None:
            msg = "the evidence registry needs a store opened with its HMAC key (key=load_key())"
            raise MacKeyError(msg)
        self.store, self.clock = store, clock

    # -- looking up -------------------------------------------------------------------------

    def lookup(self, kind: EvidenceKind, ref: str) -> Evidence | None:
        """The current state of one piece of evidence, or None if there is none by that ref."""
        return self._build(
            kind, ref, self.store.evidence_rows(ref, event_types=EVIDENCE_EVENTS[kind])
        )

    def grants(self, customer_id: str | None = None, *, case_id: str | None = None) -> list[Grant]:
        """Every grant (optionally of one customer, for one case), oldest first."""
        return [
            g
            for g in self._all(EvidenceKind.GRANT)
            if isinstance(g, Grant)
            and (customer_id is None or g.customer_id == customer_id)
            and (case_id is None or g.case_id == case_id)
        ]

    def grant_for_case(self, customer_id: str, case_id: str) -> Grant | None:
        """The grant a support tool needs for a ticket: the newest live one, else None.

        ``case_id`` is the ticket id the tool has in hand; its ``grant_id`` goes into the
        access context's ``evidence_ref``. Tampered, expired and revoked grants are not
        returned.
        """
        now = self.clock()
        live = [
            g
            for g in self.grants(customer_id, case_id=case_id)
            if g.intact and g.status(now) == "live"
        ]
        return live[-1] if live else None

    def incidents(self) -> list[Incident]:
        """Every incident, oldest first."""
        return [i for i in self._all(EvidenceKind.INCIDENT) if isinstance(i, Incident)]

    def legal_requests(self, customer_id: str | None = None) -> list[LegalRequest]:
        """Every legal request (optionally naming one customer), oldest first."""
        found = [r for r in self._all(EvidenceKind.LEGAL_REQUEST) if isinstance(r, LegalRequest)]
        return [r for r in found if customer_id is None or r.customer_id == customer_id]

    def _all(self, kind: EvidenceKind) -> Iterator[Evidence]:
        # One query for every piece of this kind, grouped here by reference, and the groups
        # put in creation order: by the time their first record states (across chains).
        by_ref: dict[str, list[tuple[Mapping[str, Any], str | None]]] = {}
        for row, before in self.store.evidence_rows(event_types=EVIDENCE_EVENTS[kind]):
            ref = row.get("evidence_ref")
            if isinstance(ref, str):
                by_ref.setdefault(ref, []).append((row, before))
        for ref, rows in sorted(by_ref.items(), key=lambda item: _created(item[1])):
            evidence = self._build(kind, ref, rows)
            if evidence is not None:
                yield evidence

    def _build(
        self, kind: EvidenceKind, ref: str, rows: list[tuple[Mapping[str, Any], str | None]]
    ) -> Evidence | None:
        """Evidence from its rows (each with its predecessor's chain hash), checked."""
        records, intact = [], True
        for row, before in rows:
            try:
                stored = from_row(row)
            except MalformedRow:
                intact = False
                continue
            intact = intact and self._intact(stored, before)
            records.append(stored)
        if not records:
            return None
        try:
            evidence = fold(kind, _in_time_order(records))
        except MalformedEvidence:
            return _untrusted(kind, ref, None)
        if not intact:
            return _untrusted(kind, ref, evidence)
        if isinstance(evidence, Grant) and evidence.max_records is not None:
            # Only a capped grant needs its usage, which grows with every access under it.
            uses = self.store.evidence_uses(ref, event_types=ALLOWANCE_EVENTS)
            evidence = replace(evidence, records_used=records_used(uses))
        return evidence

    def _intact(self, stored: StoredEvent, before: str | None) -> bool:
        """Whether the record's leaf, its link from ``before`` and its MAC all hold."""
        previous = GENESIS_HASH if stored.seq == 1 else before
        if previous is None:  # no record before it: the link cannot hold
            return False
        return check_seals(stored, previous, self.store.key).intact

    # -- recording --------------------------------------------------------------------------

    def _append(self, event: AccessEvent) -> None:
        # Held in the transaction, as every access resting on this evidence holds it: so a
        # withdrawal and an access under it, even written to different chains (shards) on
        # PostgreSQL, commit one after the other, never both unaware of each other.
        ref = event.evidence_ref
        self.store.append([event], precondition=None if ref is None else _holding(ref))

    def issue_grant(
        self,
        *,
        customer_id: str,
        case_id: str,
        data_categories: Iterable[str],
        expires_at: datetime,
        issued_by: Actor | str,
        max_records: int | None = None,
        note: str | None = None,
    ) -> Grant:
        """Record a grant the customer gave for a support case; return it with its new id."""
        now = self.clock()
        categories = frozenset(data_categories)
        if not categories:
            raise EvidenceError("a grant must cover at least one data category")
        _future("the grant's expiry", expires_at, now)
        if max_records is not None and (isinstance(max_records, bool) or max_records < 1):
            raise EvidenceError(f"max_records must be a positive integer, got {max_records!r}")
        grant = Grant(
            grant_id=f"grant-{uuid7()}",
            customer_id=customer_id,
            case_id=case_id,
            data_categories=categories,
            issued_at=now,
            issued_by=_actor(issued_by).actor_id,
            expires_at=expires_at,
            max_records=max_records,
        )
        self._append(grant_issued_event(grant, _actor(issued_by), note=note))
        return grant

    def revoke_grant(
        self, grant_id: str, *, revoked_by: Actor | str, note: str | None = None
    ) -> Grant:
        """Withdraw a grant from now on; return it as revoked."""
        grant = self._existing(EvidenceKind.GRANT, grant_id, Grant)
        if grant.revoked_at is not None:
            raise EvidenceError(
                f"grant {grant_id} was already revoked at {to_iso(grant.revoked_at)}"
            )
        now = self.clock()
        self._append(grant_revoked_event(grant, _actor(revoked_by), now, note=note))
        return replace(grant, revoked_at=now, revoked_by=_actor(revoked_by).actor_id)

    def open_incident(
        self,
        incident_id: str,
        *,
        opened_by: Actor | str,
        customers: Iterable[str] = (),
        all_customers: bool = False,
        note: str | None = None,
    ) -> Incident:
        """Record an incident affecting ``customers`` (or every customer)."""
        affected = frozenset(customers)
        if all_customers == bool(affected):
            raise EvidenceError(
                "an incident must either name its affected customers or cover all customers "
                "(CLI: --customer ... or --all-customers; library: customers= or "
                "all_customers=True), not both or neither"
            )
        if self.lookup(EvidenceKind.INCIDENT, incident_id) is not None:
            raise EvidenceError(f"incident {incident_id} already exists; use a new id")
        incident = Incident(
            incident_id=incident_id,
            opened_at=self.clock(),
            opened_by=_actor(opened_by).actor_id,
            customers=affected,
            all_customers=all_customers,
        )
        self._append(incident_opened_event(incident, _actor(opened_by), note=note))
        return incident

    def close_incident(
        self, incident_id: str, *, closed_by: Actor | str, note: str | None = None
    ) -> Incident:
        """Close an open incident: accesses relying on it are refused from now on."""
        incident = self._existing(EvidenceKind.INCIDENT, incident_id, Incident)
        if incident.closed_at is not None:
            raise EvidenceError(
                f"incident {incident_id} was already closed at {to_iso(incident.closed_at)}"
            )
        now = self.clock()
        self._append(incident_closed_event(incident, _actor(closed_by), now, note=note))
        return replace(incident, closed_at=now, closed_by=_actor(closed_by).actor_id)

    def register_legal_request(
        self,
        reference: str,
        *,
        authority: str,
        customer_id: str,
        expires_at: datetime,
        registered_by: Actor | str,
        notify_after: datetime | None = None,
        note: str | None = None,
    ) -> LegalRequest:
        """Record a legal request naming one customer; ``notify_after`` holds notification."""
        now = self.clock()
        _future("the legal request's expiry", expires_at, now)
        if notify_after is not None:
            _future("notify_after", notify_after, None)
        if self.lookup(EvidenceKind.LEGAL_REQUEST, reference) is not None:
            raise EvidenceError(f"legal request {reference} is already registered")
        request = LegalRequest(
            reference=reference,
            authority=authority,
            customer_id=customer_id,
            registered_at=now,
            registered_by=_actor(registered_by).actor_id,
            expires_at=expires_at,
            notify_after=notify_after,
        )
        self._append(legal_registered_event(request, _actor(registered_by), note=note))
        return request

    def _existing(self, kind: EvidenceKind, ref: str, expected: type[E]) -> E:
        found = self.lookup(kind, ref)
        if not isinstance(found, expected):
            raise EvidenceError(
                f"there is no {EVIDENCE_NOUNS[kind]} {ref!r}; list them to check the id"
            )
        if not found.intact:
            raise EvidenceError(
                f"the records of {EVIDENCE_NOUNS[kind]} {ref} fail their integrity check; "
                "run `accessaudit verify`"
            )
        return found
