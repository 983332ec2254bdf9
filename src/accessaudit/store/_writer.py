"""The store's own writing connection: one per store and process, kept open between appends.

Why not a pooled SQLAlchemy connection per append: measured on the 2-core development
machine, pool checkout, the per-transaction pragma and SQLAlchemy's execution machinery cost
about 350 µs of CPU per append, where the statements themselves take about 40. Under the GIL
that, not the disk, capped the gate near 800 calls/s at any number of threads. So appends
(already serialised by the group commit, see ``_group``) go straight to the driver on one
long-lived connection: statements are compiled once (sqlite3's statement cache; on
PostgreSQL they are parsed by the server each time, in the same round trip, see
``_driver``), and driver errors are wrapped the way SQLAlchemy would wrap them, so that
``_errors.classify`` remains the one place they are translated.

The chain tail is kept in process after each commit and trusted again only when nothing else
can have written since:

- SQLite: ``PRAGMA data_version``, read inside ``BEGIN IMMEDIATE`` (so under the write
  lock), changes whenever another connection committed to the file; ours does not change it.
  If it changed, the tail is read and its MAC checked again, as on the first append.
- PostgreSQL: the tail is read in the same round trip as the lock (``BEGIN``, bounded waits,
  ``pg_advisory_xact_lock``, tail query, pipelined), and only its MAC check is skipped when
  it is exactly the row we committed last. Insert and ``COMMIT`` are the second and last
  round trip. ``UNIQUE(chain_id, seq)`` stays the backstop against any fork.

Durability per transaction: a durable transaction is fsynced (SQLite ``synchronous=FULL``)
or flushed by the server (``synchronous_commit=on``) before it returns. A transaction
written with ``durable=False`` is committed, so it survives the application being killed,
but the disk flush is left to the next durable commit (which flushes everything before it:
one WAL file, one WAL stream) or to ``sync_within`` seconds, whichever comes first; see
``SqlStore`` for who uses that and why.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
import weakref
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import exc as sa_exc

from accessaudit.exceptions import CommitOutcomeUnknown, StoreError
from accessaudit.record._rows import row_values
from accessaudit.record.fields import MAX_INT
from accessaudit.record.integrity import GENESIS_HASH, is_digest, seal_batch
from accessaudit.store._append import (
    CHAIN_LOCK_SQL,
    EVIDENCE_LOCK_SQL,
    INSERT_COLUMNS,
    halted,
)
from accessaudit.store._deadline import remaining, socket_deadline
from accessaudit.store._engine import file_identity
from accessaudit.store._guarded import ChainView, EvidenceUse, GuardedBatch, attributes_of
from accessaudit.store._schema import TABLE_NAME
from accessaudit.store._sync import flusher

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from sqlalchemy import Engine
    from sqlalchemy.pool import PoolProxiedConnection

    from accessaudit.record.events import AccessEvent, StoredEvent
    from accessaudit.record.keys import MacKey

#: The newest row of a chain as the writer reads it: (seq, chain_hash, mac, mac_key_id).
TailRow = tuple[Any, Any, Any, Any]

_TAIL: Final = (
    f"SELECT seq, chain_hash, mac, mac_key_id FROM {TABLE_NAME} "  # noqa: S608 - our constant
    "WHERE chain_id = ? ORDER BY seq DESC LIMIT 1"
)
_NEWEST_TWO: Final = f"SELECT * FROM {TABLE_NAME} WHERE chain_id = ? ORDER BY seq DESC LIMIT 2"  # noqa: S608
# Every chain: evidence issued, withdrawn or spent on any chain of the log counts.
_USES: Final = (
    "SELECT event_type, event_id, record_count, attributes "  # noqa: S608 - our constant
    f"FROM {TABLE_NAME} WHERE evidence_ref = ? AND event_type IN ({{types}})"
)
_INSERT: Final = (
    f"INSERT INTO {TABLE_NAME} ({', '.join(INSERT_COLUMNS)}) "  # noqa: S608 - our constants
    f"VALUES ({', '.join('?' for _ in INSERT_COLUMNS)})"
)
_BOUND_WAITS: Final = (
    "SELECT set_config('lock_timeout', ?, true), set_config('statement_timeout', ?, true),"
    " set_config('synchronous_commit', ?, true)"
)
#: A PostgreSQL connection idle this long is pinged before use: a server that dropped it
#: meanwhile is then replaced instead of failing the append (a busy writer never pays).
IDLE_PING_S: Final = 1.0


def _pg(sql: str) -> str:
    """The same statement with psycopg's placeholders."""
    return sql.replace("?", "%s")


class Writer:
    """One store's writing connection in this process, and the chain tail it last committed."""

    def __init__(
        self,
        engine: Engine,
        *,
        chain_id: str,
        timeout: float,
        sqlite_file: str | None,
        sync_within: float,
    ) -> None:
        self._engine, self.chain_id, self._timeout = engine, chain_id, timeout
        self._sqlite_file = sqlite_file
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        self.sync_within = sync_within
        # Serialises transactions with close() and with a flush run by the flusher thread.
        self._lock = threading.RLock()
        self._sql = (
            {"tail": _TAIL, "two": _NEWEST_TWO, "insert": _INSERT, "uses": _USES}
            if self.is_sqlite
            else {
                "tail": _pg(_TAIL),
                "two": _pg(_NEWEST_TWO),
                "insert": _pg(_INSERT),
                "uses": _pg(_USES),
                "waits": _pg(_BOUND_WAITS),
                "lock": _pg(CHAIN_LOCK_SQL),
                "evidence_lock": _pg(EVIDENCE_LOCK_SQL),
            }
        )
        self._reset()
        _live_writers.add(self)

    def _reset(self) -> None:
        self._conn: PoolProxiedConnection | None = None
        self._db: Any = None  # its driver connection (sqlite3 or psycopg)
        self._pid = os.getpid()
        self._identity: tuple[int, int] | None = None
        self._tail: TailRow | None = None  # the row we committed last, while still the tail
        self._version: int | None = None  # SQLite data_version as of that commit
        self._synchronous: str | None = None  # the SQLite synchronous level set now
        self._busy_ms: int | None = None  # the SQLite busy_timeout set now
        self._used_at = 0.0
        self._wal_path: str | None = None  # SQLite: the file to fsync for lazy commits
        self._unsynced_since: float | None = None  # first lazy commit not yet on disk
        self._flush_pending = False  # the flusher holds a time for us
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # -- the connection ---------------------------------------------------------------------

    def _driver(self) -> Any:
        """The driver connection, opened (or reopened) as needed."""
        if self._pid != os.getpid():
            # A forked child must not touch the parent's connection: keep it referenced (so
            # it is never finalised here) and open our own.
            _parents_connections.append(self._conn)
            self._reset()
        conn = self._conn
        if conn is not None and self.is_sqlite and self._file_now() != self._identity:
            # The log was moved, deleted or replaced since this connection opened it: it
            # would write where nobody looks. Reopen by name (which fails if it is gone).
            self.close()
            conn = None
        if (
            conn is not None
            and not self.is_sqlite
            and time.monotonic() - self._used_at > IDLE_PING_S
        ):
            conn = self._pinged(conn)
        if conn is None:
            conn = self._engine.raw_connection()
            driver: Any = conn.driver_connection
            conn.detach()  # ours alone: never handed to another user of the pool
            if self.is_sqlite:
                self._identity = self._file_now()
                # The file as SQLite opened it (a URI filename of the caller's, too).
                main = [r[2] for r in driver.execute("PRAGMA database_list") if r[1] == "main"]
                if main and main[0]:
                    self._wal_path = main[0] + "-wal"
            else:
                driver.rollback()  # whatever the pool's first-connect checks left open
                driver.autocommit = True  # we send BEGIN ourselves, pipelined
                # No server-side prepared statements: after a pipeline aborts (a lock
                # timeout, say) psycopg can believe a statement prepared that the server
                # skipped ("prepared statement _pg3_6 does not exist" on the next append).
                # Parsing these short statements costs the server microseconds, no round trip.
                driver.prepare_threshold = None
            self._conn, self._db = conn, driver
        return self._db

    def _file_now(self) -> tuple[int, int] | None:
        """The (device, inode) the SQLite log's name points at now."""
        return None if self._sqlite_file is None else file_identity(self._sqlite_file)

    def _pinged(self, conn: PoolProxiedConnection) -> PoolProxiedConnection | None:
        driver = self._db
        try:
            # A quarter of the budget: the rest is left for a fresh connection if need be.
            with socket_deadline(driver.pgconn.socket, remaining(self._timeout) / 4):
                driver.execute("SELECT 1")
        except Exception:  # noqa: BLE001 - any failure: replace the connection
            self._drop()
            return None
        return conn

    def _drop(self) -> None:
        conn, self._conn, self._db = self._conn, None, None
        self._tail, self._synchronous, self._busy_ms = None, None, None
        if conn is not None:
            with suppress(Exception):
                conn.invalidate()

    def close(self) -> None:
        """Make lazily committed records durable, then close the connection."""
        with self._lock:
            if self._pid != os.getpid():
                return
            with suppress(Exception):
                self.flush()
            conn, self._conn, self._db = self._conn, None, None
            self._tail, self._synchronous, self._busy_ms = None, None, None
            if conn is not None:
                with suppress(Exception):
                    conn.close()

    # -- a transaction ----------------------------------------------------------------------

    def write(
        self,
        batches: list[list[AccessEvent]],
        key: MacKey,
        *,
        durable: bool = True,
        tail_check: Callable[[TailRow | None], tuple[int, str]] | None = None,
    ) -> list[StoredEvent]:
        """Append ``batches`` in one transaction; raise a wrapped driver error on failure."""
        with self._lock:
            if durable is False and self._due():
                durable = True  # the oldest unsynced commit is as old as allowed: sync now
            try:
                if self.is_sqlite:
                    sealed = self._sqlite(batches, key, durable, tail_check)
                else:
                    sealed = self._postgres(batches, key, durable, tail_check)
            except self._dbapi_error as e:
                raise self._wrapped(e) from e
            self._used_at = time.monotonic()
            if durable:
                self._unsynced_since = None
            elif self._unsynced_since is None:
                self._unsynced_since = self._used_at
                if self._wal_path is not None and self._finalizer is None:
                    # A store dropped without close(): its lazy commits still reach the disk.
                    self._finalizer = weakref.finalize(self, _fsync, self._wal_path)
                if not self._flush_pending:
                    self._flush_pending = True
                    flusher.schedule(self, self._used_at + self.sync_within)
            return sealed

    def _wrapped(self, error: Exception) -> BaseException:
        driver = self._db
        broken = driver is not None and bool(
            getattr(driver, "broken", False) or getattr(driver, "closed", False)
        )
        if broken:
            self._drop()
        return sa_exc.DBAPIError.instance(
            None,
            None,
            error,
            self._dbapi_error,
            hide_parameters=True,
            connection_invalidated=broken,
            dialect=self._engine.dialect,
        )

    def _sqlite(
        self,
        batches: list[list[AccessEvent]],
        key: MacKey,
        durable: bool,
        tail_check: Callable[[TailRow | None], tuple[int, str]] | None,
    ) -> list[StoredEvent]:
        db = self._driver()
        level = "FULL" if durable else "NORMAL"
        if self._synchronous != level:  # a pragma, so outside the transaction
            db.execute(f"PRAGMA synchronous = {level}")
            self._synchronous = level
        # Lock waits get what is left of the operation's budget, never more. Set again only
        # when the last value exceeds it or falls short of it by a tenth: the pragma's text
        # changes with its value, so SQLite parses it anew each time it is sent.
        budget_ms = max(1, int(remaining(self._timeout) * 1000))
        if self._busy_ms is None or not budget_ms * 0.9 <= self._busy_ms <= budget_ms:
            db.execute(f"PRAGMA busy_timeout = {budget_ms}")
            self._busy_ms = budget_ms
        db.execute("BEGIN IMMEDIATE")
        try:
            (version,) = db.execute("PRAGMA data_version").fetchone()
            cached = self._tail if version == self._version and tail_check is None else None
            row = cached or db.execute(self._sql["tail"], (self.chain_id,)).fetchone()
            sealed = self._seal(db, batches, key, row, trusted=cached is not None, check=tail_check)
            db.executemany(self._sql["insert"], [row_values(s) for s in sealed])
            db.execute("COMMIT")
        except BaseException:
            self._tail = None
            with suppress(Exception):
                db.execute("ROLLBACK")
            raise
        last = sealed[-1]
        self._tail, self._version = (last.seq, last.chain_hash, last.mac, last.mac_key_id), version
        return sealed

    def _postgres(
        self,
        batches: list[list[AccessEvent]],
        key: MacKey,
        durable: bool,
        tail_check: Callable[[TailRow | None], tuple[int, str]] | None,
    ) -> list[StoredEvent]:
        try:
            return self._postgres_once(batches, key, durable, tail_check)
        except self._dbapi_error:
            if self._conn is not None:
                raise
            # The connection broke before COMMIT was sent (a server restart, a terminated
            # backend), so nothing was written: once more on a fresh one, in what is left of
            # the budget. A second failure is the caller's.
            return self._postgres_once(batches, key, durable, tail_check)

    def _postgres_once(
        self,
        batches: list[list[AccessEvent]],
        key: MacKey,
        durable: bool,
        tail_check: Callable[[TailRow | None], tuple[int, str]] | None,
    ) -> list[StoredEvent]:
        db = self._driver()
        # The server gets 80% of the budget for its own, clearer "lock timeout"; the
        # client-side deadline on the socket stays the backstop for a server gone silent.
        wait = f"{max(1, int(remaining(self._timeout) * 800))}ms"
        committing = False
        try:
            with (
                socket_deadline(db.pgconn.socket, remaining(self._timeout)),
                db.pipeline() as pipeline,
            ):
                # Round trip 1: the transaction, its bounded waits, the chain's lock and,
                # in a statement that starts after the lock is held (READ COMMITTED takes
                # a snapshot per statement), the tail.
                db.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
                sync = "on" if durable else "off"
                db.execute(self._sql["waits"], (wait, wait, sync))
                db.execute(self._sql["lock"], (self.chain_id,))
                tail = db.execute(self._sql["tail"], (self.chain_id,))
                pipeline.sync()
                row = tail.fetchone()
                trusted = tail_check is None and row is not None and row == self._tail
                sealed = self._seal(db, batches, key, row, trusted=trusted, check=tail_check)
                # Round trip 2: the rows and COMMIT (skipped by the server if an INSERT
                # fails: a pipeline stops at its first error).
                db.cursor().executemany(self._sql["insert"], [row_values(s) for s in sealed])
                # From here on the server may commit: queueing COMMIT can send it (and read
                # results), so a connection lost inside this very call is outcome unknown.
                committing = True
                db.execute("COMMIT")
        except BaseException as e:
            self._tail = None
            if committing and (db.closed or db.broken or not isinstance(e, self._dbapi_error)):
                self._drop()
                # The server may have committed before the connection failed: we cannot know.
                why = (
                    str(e).splitlines()[0]
                    if isinstance(e, StoreError) and str(e)
                    else "the connection failed"
                )
                raise CommitOutcomeUnknown(
                    f"appending to the audit log: {why} during COMMIT, so the batch may or "
                    "may not be stored; append the same batch again to find out (a retry "
                    "never stores it twice)"
                ) from e
            if db.closed or db.broken:
                self._drop()
            else:
                try:
                    # Bounded too: a server that goes silent now must not hold the writer
                    # (and every caller queued behind it) past the budget.
                    with socket_deadline(db.pgconn.socket, max(0.1, remaining(self._timeout))):
                        db.execute("ROLLBACK")
                except Exception:  # noqa: BLE001 - a connection that cannot roll back is dropped
                    self._drop()
            raise
        last = sealed[-1]
        self._tail = (last.seq, last.chain_hash, last.mac, last.mac_key_id)
        return sealed

    def _seal(
        self,
        db: Any,
        batches: list[list[AccessEvent]],
        key: MacKey,
        row: TailRow | None,
        *,
        trusted: bool,
        check: Callable[[TailRow | None], tuple[int, str]] | None,
    ) -> list[StoredEvent]:
        """The batches sealed after the tail ``row``, once it and the preconditions hold."""
        batch = [e for b in batches for e in b]
        if check is not None:
            last_seq, last_hash = check(row)
        elif row is None:
            last_seq, last_hash = 0, GENESIS_HASH
        else:
            last_seq, last_hash = self._checked_tail(db, row, key, trusted=trusted)
        if last_seq > MAX_INT - len(batch):
            raise StoreError(
                f"refusing to append: chain {self.chain_id!r} is full (seq {last_seq})"
            )
        guarded = [b for b in batches if isinstance(b, GuardedBatch)]
        if guarded:
            hold = self._holder(db)
            # The references the preconditions will hold, taken now in one (sorted) order:
            # two groups holding the same two references in opposite orders would deadlock.
            for ref in sorted({e.evidence_ref for b in guarded for e in b if e.evidence_ref}):
                hold(ref)
            ahead: list[AccessEvent] = []
            for b in batches:
                if isinstance(b, GuardedBatch):
                    b.precondition(ChainView(self._finder(db), self.chain_id, tuple(ahead), hold))
                ahead += b
        return seal_batch(self.chain_id, last_seq, last_hash, batch, key)

    def _checked_tail(
        self, db: Any, row: TailRow, key: MacKey, *, trusted: bool
    ) -> tuple[int, str]:
        """Seq and chain hash to append after; a tail that fails its checks halts the chain.

        Sealing new records onto a forged or damaged tail would carry on from a record the
        key never sealed, so the tail must be sealed by this key with a valid MAC;
        otherwise the chain is halted (``ChainHalted``) until an operator recovers it. (A
        tail sealed by another key is refused too: key rotation is not supported yet.)
        """
        seq, chain_hash, mac, key_id = row
        sealed = trusted or (
            key_id == key.key_id
            and type(seq) is int
            and seq > 0
            and is_digest(chain_hash)
            and isinstance(mac, str)
            and hmac.compare_digest(key.seal(chain_hash), mac)
        )
        if not sealed:
            raise halted(self.chain_id, self._newest_two(db), key)
        return seq, chain_hash

    def _newest_two(self, db: Any) -> list[dict[str, Any]]:
        cursor = db.execute(self._sql["two"], (self.chain_id,))
        rows = cursor.fetchall()  # first: in a psycopg pipeline it waits for the result
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, r, strict=True)) for r in rows]

    def _holder(self, db: Any) -> Callable[[str], None]:
        """The precondition's way to serialise on an evidence reference (see ``ChainView``).

        Each reference once per transaction (the lock lasts until its end).
        """
        held: set[str] = set()

        def hold(ref: str) -> None:
            if self.is_sqlite or ref in held:  # SQLite: BEGIN IMMEDIATE holds the whole file
                return
            db.execute(self._sql["evidence_lock"], (ref,)).fetchone()
            held.add(ref)

        return hold

    def _finder(self, db: Any) -> Callable[[str, Collection[str]], list[EvidenceUse]]:
        """The precondition's query: records citing a reference, committed before this one."""

        def uses(ref: str, types: Collection[str]) -> list[EvidenceUse]:
            kinds = sorted(types)
            sql = self._sql["uses"].format(
                types=", ".join(["?" if self.is_sqlite else "%s"] * len(kinds))
            )
            rows = db.execute(sql, (ref, *kinds)).fetchall()
            return [EvidenceUse(str(t), str(i), n, attributes_of(a)) for t, i, n, a in rows]

        return uses

    # -- lazy commits -----------------------------------------------------------------------

    def _due(self) -> bool:
        since = self._unsynced_since
        return since is not None and time.monotonic() - since >= self.sync_within

    def flush(self) -> None:
        """Make every commit written with ``durable=False`` durable now."""
        with self._lock:
            if self._unsynced_since is None or self._pid != os.getpid():
                return
            if self._wal_path is not None:
                _fsync(self._wal_path)
            # PostgreSQL's WAL writer flushes asynchronous commits by itself, within three
            # times wal_writer_delay (see the README); the next durable commit flushes them too.
            self._unsynced_since = None

    def flush_if_due(self) -> None:
        """The flusher's call: flush if the oldest lazy commit has waited ``sync_within``."""
        with self._lock:
            self._flush_pending = False
            since = self._unsynced_since
            if since is None:
                return  # a durable commit synced it meanwhile
            if self._due():
                self.flush()
            else:  # a newer lazy commit: its own time
                self._flush_pending = True
                flusher.schedule(self, since + self.sync_within)


def _fsync(path: str) -> None:
    """Fsync a file by name (its dirty pages, whoever wrote them); absent is nothing to do."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # SQLite removed the WAL after checkpointing it: already on disk
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Connections a forked child inherited from its parent: never used, never finalised.
_parents_connections: list[object] = []
_live_writers: weakref.WeakSet[Writer] = weakref.WeakSet()


def _fresh_locks_in_child() -> None:
    # The lock may have been held at the fork by a thread the child does not have (the
    # flusher, mid-fsync): the child starts with its own. (The group commit's fork hooks
    # already keep a transaction from being in flight across a fork.)
    for writer in list(_live_writers):
        writer._lock = threading.RLock()


os.register_at_fork(after_in_child=_fresh_locks_in_child)
