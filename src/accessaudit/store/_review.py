"""The read-only queries reports ask the store, aggregated in the database.

Reports (``report``, ``transparency``) never see the table: they ask these questions by name
through ``SqlStore``'s methods, saying which access decisions count with a ``DecisionFilter``.
Counts are ``GROUP BY`` aggregates, never every record loaded into Python. Each function runs
one query on a connection the store opened, and returns plain rows in the order and with the
column names the query gives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, Protocol

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select

from accessaudit.record._clock import to_micros
from accessaudit.record.fields import EventType
from accessaudit.store._schema import events

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from sqlalchemy import Connection

#: What decision counts can be grouped by; ``day_number`` is the UTC day, counted from 1970.
Dimension = Literal["purpose", "role", "actor_id", "customer_id", "resource", "day_number"]

_DAY_US: Final = 86_400_000_000
_DECISIONS: Final = (EventType.ACCESS_ALLOWED.value, EventType.ACCESS_DENIED.value)
_ALLOWED: Final = EventType.ACCESS_ALLOWED.value
_DENIED: Final = EventType.ACCESS_DENIED.value
#: The reason code of a read the gate never saw (accessaudit.sqlalchemy); gate.decisions
#: owns the code, but the store layer cannot import it.
_UNGATED: Final = "ungated_read"


class DecisionFilter(Protocol):
    """Which access decisions a query covers; None leaves that condition out.

    ``report.ReportFilter`` is one.
    """

    @property
    def since(self) -> datetime | None:
        """Decisions at or after this time."""

    @property
    def until(self) -> datetime | None:
        """Decisions before this time."""

    @property
    def customer_id(self) -> str | None:
        """Decisions about this customer's data."""

    @property
    def actor_id(self) -> str | None:
        """Decisions about this actor's accesses."""

    @property
    def purpose(self) -> str | None:
        """Decisions on accesses for this purpose (as recorded)."""

    @property
    def resource(self) -> str | None:
        """Decisions on accesses to this resource."""


class EvidenceCount(NamedTuple):
    """Allowed accesses that cited one piece of evidence for one customer."""

    evidence_ref: str | None
    customer_id: str | None
    accesses: int


class VisibleDecision(NamedTuple):
    """An access decision as a customer's transparency report starts from it.

    The columns as stored: ``data_categories`` and ``attributes`` are the log's JSON text.
    """

    occurred_at_us: int
    purpose: str | None
    evidence_ref: str | None
    resource: str | None
    data_categories: str
    role: str | None
    actor_id: str | None
    decision: str | None
    reason_code: str | None
    attributes: str | None


def _where(
    selection: DecisionFilter, types: Sequence[str] = _DECISIONS
) -> list[ColumnElement[bool]]:
    """SQL conditions selecting the access decisions (of every chain) ``selection`` covers."""
    where: list[ColumnElement[bool]] = [events.c.event_type.in_(types)]
    if selection.since is not None:
        where.append(events.c.occurred_at_us >= to_micros(selection.since))
    if selection.until is not None:
        where.append(events.c.occurred_at_us < to_micros(selection.until))
    for name in ("customer_id", "actor_id", "purpose", "resource"):
        value = getattr(selection, name)
        if value is not None:
            where.append(events.c[name] == value)
    return where


def _dimension(name: Dimension) -> Any:
    if name == "day_number":
        # Integer division of integer microseconds: the UTC day number, in SQLite and PostgreSQL.
        return (events.c.occurred_at_us // _DAY_US).label("day_number")
    return events.c[name]


def _denied() -> ColumnElement[int]:
    return func.sum(case((events.c.event_type == _DENIED, 1), else_=0))


def decision_counts(
    conn: Connection, selection: DecisionFilter, by: Sequence[Dimension]
) -> list[dict[str, Any]]:
    """Decisions per value of the ``by`` columns: accesses, allowed, denied; most first."""
    columns = [_dimension(name) for name in by]
    query: Select[Any] = (
        select(
            *columns,
            func.count().label("accesses"),
            (func.count() - _denied()).label("allowed"),
            _denied().label("denied"),
        )
        .where(*_where(selection))
        .group_by(*columns)
        .order_by(func.count().desc(), *columns)
    )
    return [dict(row._mapping) for row in conn.execute(query)]


def denial_counts(conn: Connection, selection: DecisionFilter) -> list[dict[str, Any]]:
    """Denials per reason code and purpose, most first."""
    query = (
        select(events.c.reason_code, events.c.purpose, func.count().label("denied"))
        .where(*_where(selection), events.c.event_type == _DENIED)
        .group_by(events.c.reason_code, events.c.purpose)
        .order_by(func.count().desc(), events.c.reason_code)
    )
    return [dict(row._mapping) for row in conn.execute(query)]


def ungated_reads(conn: Connection, selection: DecisionFilter) -> list[dict[str, Any]]:
    """Reads outside the gate (refused, or let through in observe mode), per place in code.

    Grouped by resource, record type and the attributes as stored, which name the table,
    the calling function and the mode: one row per place a query escaped the gate.
    """
    types = (_DENIED, EventType.ACCESS_UNGATED.value)
    query = (
        select(
            events.c.resource,
            events.c.event_type,
            events.c.attributes,
            func.count().label("reads"),
            func.min(events.c.occurred_at_us).label("first_us"),
            func.max(events.c.occurred_at_us).label("last_us"),
        )
        .where(*_where(selection, types), events.c.reason_code == _UNGATED)
        .group_by(events.c.resource, events.c.event_type, events.c.attributes)
        .order_by(func.count().desc(), events.c.resource)
    )
    return [dict(row._mapping) for row in conn.execute(query)]


def allowed_with_reason(
    conn: Connection, selection: DecisionFilter, reason_code: str
) -> list[dict[str, Any]]:
    """Allowed accesses with this reason code, in time order: when, who, what, and why."""
    query = (
        select(
            events.c.chain_id,
            events.c.seq,
            events.c.occurred_at_us,
            events.c.actor_id,
            events.c.role,
            events.c.customer_id,
            events.c.resource,
            events.c.justification,
        )
        .where(*_where(selection), events.c.reason_code == reason_code)
        .where(events.c.event_type == _ALLOWED)
        .order_by(events.c.occurred_at_us, events.c.chain_id, events.c.seq)
    )
    return [dict(row._mapping) for row in conn.execute(query)]


def _allowed_for(selection: DecisionFilter, purpose: str) -> list[ColumnElement[bool]]:
    return [
        *_where(selection),
        events.c.event_type == _ALLOWED,
        events.c.purpose == purpose,
    ]


def evidence_counts(
    conn: Connection, selection: DecisionFilter, purpose: str
) -> list[EvidenceCount]:
    """Allowed accesses for ``purpose`` per cited evidence and customer (in no set order)."""
    query = (
        select(events.c.evidence_ref, events.c.customer_id, func.count().label("accesses"))
        .where(*_allowed_for(selection, purpose))
        .group_by(events.c.evidence_ref, events.c.customer_id)
    )
    return [EvidenceCount._make(row) for row in conn.execute(query)]


def count_allowed_outside(
    conn: Connection,
    selection: DecisionFilter,
    *,
    purpose: str,
    evidence_ref: str,
    issued: ChainPoint,
    ended: ChainPoint | None,
    until: datetime,
) -> int:
    """Allowed accesses for ``purpose`` citing ``evidence_ref`` outside its validity.

    That is before ``issued``, after ``ended`` (if it ended), or stating a time at or after
    ``until``.
    """
    outside = [_before(issued), events.c.occurred_at_us >= to_micros(until)]
    if ended is not None:
        outside.append(_after(ended))
    query = select(func.count()).where(
        *_allowed_for(selection, purpose), events.c.evidence_ref == evidence_ref, or_(*outside)
    )
    return int(conn.execute(query).scalar_one())


class ChainPoint(NamedTuple):
    """Where a record sits: its chain and seq, and the time it states.

    Records of the same chain are ordered by seq, as the gate saw them (a clock ahead on
    one host cannot make an earlier read look late); records of other chains (shards) by
    the time they state, the only order two chains share.
    """

    chain_id: str
    seq: int
    occurred_at: datetime


def _before(point: ChainPoint) -> ColumnElement[bool]:
    same = events.c.chain_id == point.chain_id
    return or_(
        and_(same, events.c.seq < point.seq),
        and_(~same, events.c.occurred_at_us < to_micros(point.occurred_at)),
    )


def _after(point: ChainPoint) -> ColumnElement[bool]:
    same = events.c.chain_id == point.chain_id
    return or_(
        and_(same, events.c.seq > point.seq),
        and_(~same, events.c.occurred_at_us >= to_micros(point.occurred_at)),
    )


def visible_decisions(conn: Connection, selection: DecisionFilter) -> list[VisibleDecision]:
    """The customer-visible decisions ``selection`` covers, in time (then chain) order."""
    query = (
        select(*(events.c[name] for name in VisibleDecision._fields))
        .where(*_where(selection), events.c.customer_visible == 1)
        .order_by(events.c.occurred_at_us, events.c.chain_id, events.c.seq)
    )
    return [VisibleDecision._make(row) for row in conn.execute(query)]


def customer_known(conn: Connection, customer_id: str) -> bool:
    """Whether any record of the log concerns this customer."""
    query = select(func.count()).where(events.c.customer_id == customer_id)
    return int(conn.execute(query).scalar_one()) > 0
