"""The steps of one append transaction, kept apart from the store's public surface."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import ColumnElement, Select, bindparam, literal_column, select, text

from accessaudit.exceptions import (
    ChainHalted,
    ConfigurationError,
    DuplicateEvent,
    FieldProblem,
    InvalidEvent,
    StoreError,
)
from accessaudit.record._chain import tail_findings
from accessaudit.record._rows import MalformedRow, from_row
from accessaudit.record.events import AccessEvent, StoredEvent
from accessaudit.record.fields import MAX_INT
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


# The statements of every append, built once: constructing a SQLAlchemy statement costs
# more than SQLite takes to run it (about 170 of 230 microseconds for the tail query).
_TAIL = (
    select(events.c.seq, events.c.chain_hash, events.c.mac, events.c.mac_key_id)
    .where(events.c.chain_id == bindparam("chain"))
    .order_by(events.c.seq.desc())
    .limit(1)
)
_BOUND_WAITS = text(
    "SELECT set_config('lock_timeout', :wait, true),"
    " set_config('statement_timeout', :wait, true),"
    " set_config('synchronous_commit', 'on', true)"
)
# The key names the table by its oid, so every writer of this table and chain meets at the
# same lock whatever its search_path.
_CHAIN_LOCK = text(
    "SELECT pg_advisory_xact_lock(hashtextextended("
    f"'{TABLE_NAME}'::regclass::oid::text || '/' || :chain, 0))"
)
_INSERTS: dict[str, tuple[str, tuple[str, ...] | None]] = {}


def insert_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """INSERT ``rows`` (from ``to_row``) with the driver's own statement, compiled once.

    Every column is text or an integer, so no SQLAlchemy type conversion is skipped; going
    through ``exec_driver_sql`` keeps SQLAlchemy's error wrapping and connection handling
    while costing about a third of a Core ``insert()``.
    """
    dialect = conn.dialect
    # Two drivers of one database (or a paramstyle override) take different placeholders.
    style = f"{dialect.name}+{dialect.driver}:{dialect.paramstyle}"
    if style not in _INSERTS:
        compiled = events.insert().compile(dialect=dialect)
        order = tuple(compiled.positiontup or ()) if compiled.positional else None
        _INSERTS[style] = (str(compiled), order)
    statement, order = _INSERTS[style]
    if order is None:
        conn.exec_driver_sql(statement, rows)
    else:
        conn.exec_driver_sql(statement, [tuple(row[c] for c in order) for row in rows])


def lock_chain(conn: Connection, chain_id: str, timeout: float) -> None:
    """Take the chain's one serialisation point (PostgreSQL) with bounded waits."""
    # Waits are set for this transaction only, from what is left of the operation's budget.
    # The server gets 80% of it so that its own, clearer error ("lock timeout") normally
    # comes before the client-side deadline, which stays the backstop for a server that does
    # not answer at all. synchronous_commit is forced on so that a server default of "off"
    # cannot make us return before the record is durable.
    wait = f"{max(1, int(remaining(timeout) * 800))}ms"
    conn.execute(_BOUND_WAITS, {"wait": wait})
    # A separate statement from the tail read: under READ COMMITTED a statement's snapshot
    # starts when the statement does, so the tail must be read by a statement that begins
    # after the lock is held, or it could miss the previous holder's commit.
    conn.execute(_CHAIN_LOCK, {"chain": chain_id})


def read_tail(conn: Connection, chain_id: str, key: MacKey, room: int) -> tuple[int, str]:
    """Seq and chain hash to append ``room`` records after; refuse a tail that fails its checks.

    Sealing new records onto a forged or damaged tail would carry on from a record the key
    never sealed, so the tail must be sealed by this key, with a valid MAC; otherwise the
    chain is halted (``ChainHalted``) until an operator recovers it. (A tail sealed by
    another key is refused too: key rotation is not supported yet, and an owner without the
    key could otherwise relabel a forged tail with a made-up key id.)
    """
    row = conn.execute(_TAIL, {"chain": chain_id}).first()
    if row is None:
        return 0, GENESIS_HASH
    seq, chain_hash = row.seq, row.chain_hash
    sealed = (
        row.mac_key_id == key.key_id
        and isinstance(seq, int)
        and seq > 0
        and is_digest(chain_hash)
        and isinstance(row.mac, str)
        and hmac.compare_digest(key.seal(chain_hash), row.mac)
    )
    if not sealed:
        raise _halted(conn, chain_id, key)
    if seq > MAX_INT - room:
        raise StoreError(f"refusing to append: chain {chain_id!r} is full (seq {seq})")
    return seq, chain_hash


_RECOVERY_HELP: Final = (
    "appends to this chain are halted; run `accessaudit verify` and see the README, "
    '"Recovering from a forged or corrupted newest record"'
)


def _halted(conn: Connection, chain_id: str, key: MacKey) -> ChainHalted:
    """The error for a tail that fails its checks, naming what verify will find there."""
    newest_two: Select[Any] = (
        select(literal_column("*"))
        .select_from(events)
        .where(events.c.chain_id == chain_id)
        .order_by(events.c.seq.desc())
        .limit(2)
    )
    rows = [dict(r) for r in conn.execute(newest_two).mappings()]
    tail, before = rows[0], (rows[1] if len(rows) > 1 else None)
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

    def check(self, conn: Connection) -> tuple[int, str]:
        """Seq and chain hash to append after, if the chain's tail is still this row."""
        row = conn.execute(_TAIL, {"chain": self.chain_id}).first()
        seq = None if row is None else row.seq
        stored = None if row is None or not is_digest(row.chain_hash) else row.chain_hash
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
