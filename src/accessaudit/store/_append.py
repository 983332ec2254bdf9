"""The steps of one append transaction, kept apart from the store's public surface."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import ColumnElement, Select, select, text

from accessaudit.exceptions import (
    ChainHalted,
    ConfigurationError,
    DuplicateEvent,
    FieldProblem,
    InvalidEvent,
)
from accessaudit.record._chain import tail_findings
from accessaudit.record._rows import ROW_COLUMNS, MalformedRow, from_row
from accessaudit.record.events import AccessEvent, StoredEvent
from accessaudit.record.findings import FindingCode
from accessaudit.record.integrity import GENESIS_HASH, is_digest
from accessaudit.store._deadline import remaining
from accessaudit.store._schema import TABLE_NAME, events

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from accessaudit.record.keys import MacKey


def checked_batch(events_in: Iterable[AccessEvent]) -> list[AccessEvent]:
    """The batch as a list of events with distinct ids, or ``InvalidEvent``/``DuplicateEvent``."""
    if isinstance(events_in, AccessEvent) or not isinstance(events_in, Iterable):
        raise InvalidEvent(
            [
                FieldProblem(
                    "events",
                    f"must be a list of AccessEvent, got {type(events_in).__name__}",
                    "wrap a single event in a list: append([event])",
                )
            ]
        )
    batch = list(events_in)  # once: a generator can only be read once
    problems = [
        FieldProblem(
            f"events[{i}]",
            f"must be an AccessEvent, got {type(e).__name__}",
            "build it with AccessEvent(...) or AccessEvent.from_dict(...)",
        )
        for i, e in enumerate(batch)
        if not isinstance(e, AccessEvent)
    ]
    if problems:
        raise InvalidEvent(problems)
    ids = [e.event_id for e in batch]
    if len(set(ids)) != len(ids):
        raise DuplicateEvent("the batch holds the same event_id twice; nothing was stored")
    return batch


def newest(chain_id: str, *columns: ColumnElement[Any]) -> Select[Any]:
    """The query for ``columns`` of the newest record of a chain (its tail)."""
    return (
        select(*columns).where(events.c.chain_id == chain_id).order_by(events.c.seq.desc()).limit(1)
    )


# The key names the table by its oid, so every writer of this table and chain meets at the
# same lock whatever its search_path. (qmark placeholders: the writer adapts them.)
CHAIN_LOCK_SQL: Final = (
    "SELECT pg_advisory_xact_lock(hashtextextended("
    f"'{TABLE_NAME}'::regclass::oid::text || '/' || ?, 0))"
)
# Per evidence reference, for preconditions (see ChainView.hold); "evidence/" keeps these
# keys apart from the chains'.
EVIDENCE_LOCK_SQL: Final = (
    "SELECT pg_advisory_xact_lock(hashtextextended("
    f"'{TABLE_NAME}'::regclass::oid::text || '/evidence/' || ?, 0))"
)
#: The columns an append inserts, in the order of ``row_values``.
INSERT_COLUMNS: Final = ROW_COLUMNS


def lock_chain(conn: Connection, chain_id: str, timeout: float) -> None:
    """Take a chain's serialisation point (PostgreSQL) on a SQLAlchemy connection, bounded.

    What another writer holds while it appends; tests use it to hold a chain up.
    """
    wait = f"{max(1, int(remaining(timeout) * 800))}ms"
    conn.execute(
        text(
            "SELECT set_config('lock_timeout', :wait, true),"
            " set_config('statement_timeout', :wait, true)"
        ),
        {"wait": wait},
    )
    conn.exec_driver_sql(CHAIN_LOCK_SQL.replace("?", "%(chain)s"), {"chain": chain_id})


_RECOVERY_HELP: Final = (
    "appends to this chain are halted; run `accessaudit verify` and see the README, "
    '"Recovering from a forged or corrupted newest record"'
)


def halted(chain_id: str, newest_two: list[dict[str, Any]], key: MacKey) -> ChainHalted:
    """The error for a tail that fails its checks, naming what verify will find there.

    ``newest_two``: the chain's two newest rows, newest first, as column -> value.
    """
    tail, before = newest_two[0], (newest_two[1] if len(newest_two) > 1 else None)
    seq = tail.get("seq")
    previous = before.get("chain_hash") if before is not None else GENESIS_HASH
    # Link only from the record right before: across a gap verify reports the gap, not a link.
    adjacent = (before.get("seq") if before is not None else 0) == (
        seq - 1 if isinstance(seq, int) else None
    )
    findings = tail_findings(
        chain_id, tail, key, previous if adjacent and is_digest(previous) else None
    )
    what = "; ".join(f"{f.detail} ({f.code.value})" for f in findings) or "fails its checks"
    if findings and findings[0].code is FindingCode.UNKNOWN_KEY:
        # Far more often a wrong key file than a forgery: say so before "recover".
        what += (
            "; if the key given is not the one this log is written with, give that key "
            "(--key-file or $ACCESSAUDIT_HMAC_KEY) and nothing needs recovering; otherwise"
        )
    return ChainHalted(
        f"refusing to append: chain {chain_id!r} seq {seq!r}: {what}; {_RECOVERY_HELP}",
        chain_id=chain_id,
        seq=seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
        code=findings[0].code.value if findings else "",
    )


@dataclass(frozen=True, slots=True)
class DamagedTail:
    """A chain's damaged newest row, as a recovery found it, and where to link on from.

    ``chain_hash`` is the row's stored chain hash (None if it is not a digest): a recovery
    record links from it, as verify expects, or else from ``anchor``, the chain hash of the
    last record that passed its checks.
    """

    chain_id: str
    seq: int
    chain_hash: str | None
    anchor: str

    def check(self, newest: tuple[Any, ...] | None) -> tuple[int, str]:
        """Seq and chain hash to append after, if the chain's tail is still this row.

        ``newest`` is the chain's newest row as the writer read it: its seq and chain hash
        first.
        """
        seq = None if newest is None else newest[0]
        stored = None if newest is None or not is_digest(newest[1]) else newest[1]
        if type(seq) is not int or seq != self.seq or stored != self.chain_hash:
            raise ConfigurationError(
                f"chain {self.chain_id!r} changed while it was being recovered: its newest row "
                f"is now seq {seq!r}, not the seq {self.seq} that was checked; nothing was "
                "recorded: run `accessaudit verify` and recover again"
            )
        return self.seq, self.chain_hash or self.anchor


def find_stored(
    conn: Connection, chain_id: str, batch: list[AccessEvent]
) -> list[StoredEvent] | None:
    """The stored records of ``batch`` if all of it is already in the log, else None.

    "Already in the log" means every event, exactly as given: this is what makes a retry
    after an unknown commit outcome safe, and nothing else.
    """
    ids = [str(e.event_id) for e in batch]
    rows = conn.execute(select(events).where(events.c.event_id.in_(ids))).mappings().all()
    try:
        stored = {str(s.event.event_id): s for s in (from_row(dict(r)) for r in rows)}
    except MalformedRow:
        return None
    same = len(stored) == len(batch) and all(
        stored[i].event == e and stored[i].chain_id == chain_id
        for i, e in zip(ids, batch, strict=True)
    )
    return [stored[i] for i in ids] if same else None
