"""Audit stores: the interface every backend offers, and the SQL implementation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from accessaudit.store._append import DamagedTail
from accessaudit.store._engine import DEFAULT_URL
from accessaudit.store._guarded import ChainView, EvidenceUse, Precondition, PreconditionFailed
from accessaudit.store._health import HealthFacts
from accessaudit.store._review import (
    ChainPoint,
    DecisionFilter,
    Dimension,
    EvidenceCount,
    VisibleDecision,
)
from accessaudit.store._schema import AUDIT_TABLES
from accessaudit.store._schema import metadata as audit_metadata
from accessaudit.store._upgrade import SCHEMA_VERSION
from accessaudit.store.sql import DEFAULT_CHAIN, DEFAULT_TIMEOUT, ChainHead, RowBatch, SqlStore

if TYPE_CHECKING:
    from collections.abc import Collection, Generator, Iterable, Iterator, Mapping, Sequence
    from datetime import datetime

    from accessaudit.record.events import AccessEvent, StoredEvent
    from accessaudit.record.keys import MacKey


class AuditStore(Protocol):
    """What an audit store offers. There is deliberately no way to update or delete."""

    chain_id: str

    @property
    def key(self) -> MacKey | None:
        """The HMAC key the store seals with (None: it can only be read)."""

    def append(
        self, batch: Iterable[AccessEvent], *, precondition: Precondition | None = None
    ) -> list[StoredEvent]:
        """Append durably, all or nothing, if ``precondition`` holds; return the records."""
        ...

    def read(
        self, start_seq: int = 1, end_seq: int | None = None, *, chain_id: str | None = None
    ) -> Iterator[StoredEvent]:
        """Stream records of a chain in seq order."""
        ...

    def rows(
        self,
        chain_id: str | None = None,
        *,
        start_seq: int | None = None,
        end_seq: int | None = None,
    ) -> Iterator[Mapping[str, Any]]:
        """Stream raw rows in (seq, event_id) order, for verification."""
        ...

    def row_batches(
        self,
        chain_id: str | None = None,
        *,
        start_seq: int | None = None,
        end_seq: int | None = None,
    ) -> Generator[RowBatch, None, None]:
        """The same rows as tuples, in batches with their column names (cheaper to read)."""
        ...

    def head(self, chain_id: str | None = None) -> ChainHead | None:
        """The newest record's position, or None."""
        ...

    def count(self, chain_id: str | None = None) -> int:
        """Number of records in a chain."""
        ...

    def chains(self) -> list[str]:
        """Chain ids present."""
        ...

    def count_unchained(self) -> int:
        """Rows whose chain id is not text."""
        ...

    def evidence_rows(
        self, evidence_ref: str | None = None, *, event_types: Collection[str]
    ) -> list[tuple[Mapping[str, Any], str | None]]:
        """Rows about evidence, each with its predecessor's chain hash."""
        ...

    def evidence_uses(
        self, evidence_ref: str, *, event_types: Collection[str]
    ) -> list[EvidenceUse]:
        """Records citing this evidence with these types, in chain order."""
        ...

    # The questions reports ask (see ``_review``), answered in the database.

    def decision_counts(
        self, selection: DecisionFilter, by: Sequence[Dimension]
    ) -> list[dict[str, Any]]:
        """Access decisions per value of ``by``: accesses, allowed, denied; most first."""
        ...

    def denial_counts(self, selection: DecisionFilter) -> list[dict[str, Any]]:
        """Denials per reason code and purpose, most first."""
        ...

    def ungated_reads(self, selection: DecisionFilter) -> list[dict[str, Any]]:
        """Reads outside the gate, refused or observed, per resource and place; most first."""
        ...

    def allowed_with_reason(
        self, selection: DecisionFilter, reason_code: str
    ) -> list[dict[str, Any]]:
        """Allowed accesses with ``reason_code``, in chain order."""
        ...

    def evidence_counts(self, selection: DecisionFilter, *, purpose: str) -> list[EvidenceCount]:
        """Allowed accesses for ``purpose`` per cited evidence and customer."""
        ...

    def count_allowed_outside(
        self,
        selection: DecisionFilter,
        *,
        purpose: str,
        evidence_ref: str,
        issued: ChainPoint,
        ended: ChainPoint | None,
        until: datetime,
    ) -> int:
        """Allowed accesses for ``purpose`` citing ``evidence_ref`` outside its validity."""
        ...

    def visible_decisions(self, selection: DecisionFilter) -> list[VisibleDecision]:
        """The customer-visible access decisions ``selection`` covers, in chain order."""
        ...

    def customer_known(self, customer_id: str) -> bool:
        """Whether any record of the chain concerns ``customer_id``."""
        ...


__all__ = [
    "AUDIT_TABLES",
    "DEFAULT_CHAIN",
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "SCHEMA_VERSION",
    "AuditStore",
    "ChainHead",
    "ChainPoint",
    "ChainView",
    "DamagedTail",
    "DecisionFilter",
    "Dimension",
    "EvidenceCount",
    "EvidenceUse",
    "HealthFacts",
    "Precondition",
    "PreconditionFailed",
    "RowBatch",
    "SqlStore",
    "VisibleDecision",
    "audit_metadata",
]
