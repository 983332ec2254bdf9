"""Audit stores: the interface every backend offers, and the SQL implementation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from accessaudit.store._append import DamagedTail
from accessaudit.store._engine import DEFAULT_URL
from accessaudit.store._guarded import ChainView, EvidenceUse, Precondition, PreconditionFailed
from accessaudit.store.sql import DEFAULT_CHAIN, DEFAULT_TIMEOUT, ChainHead, RowBatch, SqlStore

if TYPE_CHECKING:
    from collections.abc import Collection, Generator, Iterable, Iterator, Mapping

    from accessaudit.events import AccessEvent, StoredEvent


class AuditStore(Protocol):
    """What an audit store offers. There is deliberately no way to update or delete."""

    chain_id: str

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


__all__ = [
    "DEFAULT_CHAIN",
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "AuditStore",
    "ChainHead",
    "ChainView",
    "DamagedTail",
    "EvidenceUse",
    "Precondition",
    "PreconditionFailed",
    "RowBatch",
    "SqlStore",
]
