"""The audit store on SQLite or PostgreSQL, through SQLAlchemy Core.

Append-only by construction: there is no method that updates or deletes, and the database
refuses both (see ``_schema``). Each transaction takes the chain's single serialisation
point, reads the tail, seals the new records after it and commits before any caller returns.
Concurrent appends in one process share transactions (group commit, see ``_group``).
"""

from __future__ import annotations

import atexit
import math
import os
import weakref
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Self

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    func,
    inspect,
    literal_column,
    select,
    text,
)
from sqlalchemy.exc import SQLAlchemyError

from accessaudit.exceptions import (
    ConfigurationError,
    DuplicateEvent,
    InvalidEvent,
    MacKeyError,
    StoreError,
)
from accessaudit.record._rows import MalformedRow, from_row
from accessaudit.record._validate import check_text
from accessaudit.record.fields import MAX_IDENTIFIER_CHARS
from accessaudit.record.log import emit_appended
from accessaudit.store import _review
from accessaudit.store._append import DamagedTail, checked_batch, find_stored, newest
from accessaudit.store._async import loop_appends
from accessaudit.store._deadline import operation_deadline, remaining, socket_deadline
from accessaudit.store._engine import (
    DEFAULT_URL,
    WRITE_OPTION,
    make_engine,
    parse_url,
    sqlite_path,
    switch_to_wal,
)
from accessaudit.store._errors import Seen, classify, translated
from accessaudit.store._group import GroupCommit
from accessaudit.store._guarded import EvidenceUse, GuardedBatch, Precondition, evidence_uses
from accessaudit.store._health import HealthFacts, gather
from accessaudit.store._schema import (
    SQLITE_TRIGGERS,
    TABLE_NAME,
    VERSION_TABLE,
    check_role_name,
    events,
    metadata,
    postgres_trigger_ddl,
    writer_role_ddl,
)
from accessaudit.store._upgrade import (
    DDL_GUARD_TRIGGERS,
    ddl_guard_ddl,
    schema_version,
    upgrade,
)
from accessaudit.store._writer import Writer

if TYPE_CHECKING:
    from collections.abc import (
        Callable,
        Collection,
        Generator,
        Iterable,
        Iterator,
        Mapping,
        Sequence,
    )
    from datetime import datetime

    from accessaudit.record.events import AccessEvent, StoredEvent
    from accessaudit.record.keys import MacKey
    from accessaudit.store._review import (
        ChainPoint,
        DecisionFilter,
        Dimension,
        EvidenceCount,
        VisibleDecision,
    )

__all__ = [
    "DEFAULT_BATCH_MAX_RECORDS",
    "DEFAULT_CHAIN",
    "DEFAULT_TIMEOUT",
    "MAX_CHAIN_CHARS",
    "READ_BATCH",
    "ChainHead",
    "RowBatch",
    "SqlStore",
]

DEFAULT_CHAIN: Final = "main"
MAX_CHAIN_CHARS: Final = 64  # the chain_id column's width
DEFAULT_TIMEOUT: Final = 5.0
DEFAULT_BATCH_MAX_RECORDS: Final = 500
DEFAULT_SYNC_WITHIN: Final = 0.5
READ_BATCH: Final = 2000
_FOR_A_REPORT: Final = "reading the audit log for a report"
_ORDER = (events.c.seq, events.c.event_id)
# Built once: constructing the self-join costs more than running it on SQLite.
_BEFORE = events.alias("before")
_EVIDENCE_QUERY = select(events, _BEFORE.c.chain_hash.label("before_chain_hash")).select_from(
    events.outerjoin(
        _BEFORE,
        (_BEFORE.c.chain_id == events.c.chain_id) & (_BEFORE.c.seq == events.c.seq - 1),
    )
)


class RowBatch(NamedTuple):
    """Rows of the log as the database returned them, and the names of their columns."""

    columns: tuple[str, ...]
    rows: Sequence[Sequence[Any]]


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The newest record of a chain: its position and chain hash."""

    chain_id: str
    seq: int
    chain_hash: str


class SqlStore:
    """An append-only audit log in one SQL database, holding one or more chains.

    ``key`` is needed to append (it seals each link); reading and counting do not need it.
    ``timeout`` (seconds) is the budget of each operation (an append, ``head``, ``count``):
    every wait inside spends from it, and running out raises ``StoreUnavailable`` with
    nothing recorded (or ``CommitOutcomeUnknown`` if it ran out during COMMIT). Streaming
    reads get ``timeout`` per round trip instead.
    With ``must_exist`` (the default) a SQLite URL must name an existing file, so a typo does
    not silently start an empty log; nor does a log moved away while the store is open.

    Concurrent appends from threads of one process are written together, up to
    ``batch_max_records`` events per transaction; each caller still returns only after its
    own records are committed. A lone append is written at once. ``batch_max_wait``
    (seconds, default 0) lets a transaction wait that long for more appends to join it:
    more sharing under load, at the cost of that much latency for every append.

    ``append(..., durable=False)`` commits without waiting for the disk: the records survive
    the application being killed at once, and reach the disk with the next durable commit
    or ``sync_within`` seconds later (SQLite; PostgreSQL's own WAL writer bounds it there),
    whichever comes first. Only a power loss or OS crash inside that window can lose them.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        key: MacKey | None = None,
        chain_id: str = DEFAULT_CHAIN,
        timeout: float = DEFAULT_TIMEOUT,
        must_exist: bool = True,
        batch_max_records: int = DEFAULT_BATCH_MAX_RECORDS,
        batch_max_wait: float = 0.0,
        sync_within: float = DEFAULT_SYNC_WITHIN,
    ) -> None:
        _checked("chain_id", chain_id, MAX_CHAIN_CHARS)
        if not (math.isfinite(timeout) and timeout > 0):
            raise ConfigurationError(f"timeout must be a positive number of seconds, got {timeout}")
        if isinstance(batch_max_records, bool) or not (
            isinstance(batch_max_records, int) and batch_max_records >= 1
        ):
            raise ConfigurationError(
                f"batch_max_records must be a whole number of records, 1 or more, "
                f"got {batch_max_records!r}"
            )
        if not (math.isfinite(batch_max_wait) and 0 <= batch_max_wait < timeout):
            raise ConfigurationError(
                "batch_max_wait must be 0 or more seconds and less than the timeout "
                f"({timeout:g}s), got {batch_max_wait}"
            )
        if not (math.isfinite(sync_within) and sync_within > 0):
            raise ConfigurationError(
                f"sync_within must be a positive number of seconds, got {sync_within}"
            )
        self._url = parse_url(url)
        self.is_sqlite = self._url.get_backend_name() == "sqlite"
        if self.is_sqlite and sqlite_path(self._url).is_dir():
            raise ConfigurationError(
                f"{sqlite_path(self._url)} is a directory; name the SQLite database file"
            )
        if self.is_sqlite and must_exist and not sqlite_path(self._url).exists():
            raise ConfigurationError(
                f"the SQLite database {sqlite_path(self._url)} does not exist; "
                "create it with `accessaudit init` (or pass the right --db)"
            )
        self.key, self.chain_id, self.timeout = key, chain_id, timeout
        self._engine = make_engine(self._url, timeout, must_exist=must_exist)
        must_be_there = sqlite_path(self._url) if self.is_sqlite and must_exist else None
        self._seen = Seen(  # reached=True once an operation has worked
            sqlite_file=must_be_there,
            database_file=sqlite_path(self._url) if self.is_sqlite else None,
        )
        self._writer = Writer(
            self._engine,
            chain_id=chain_id,
            timeout=timeout,
            sqlite_file=str(sqlite_path(self._url).absolute()) if self.is_sqlite else None,
            sync_within=sync_within,
        )
        # In-process appends queue here and share transactions (instead of each spinning on
        # SQLite's busy handler or queueing for PostgreSQL's chain lock with its own commit).
        self._group = GroupCommit(
            self._write_group,
            max_records=batch_max_records,
            max_wait=batch_max_wait,
            timeout=timeout,
        )
        _live_stores.add(self)

    @property
    def url(self) -> str:
        """The database URL, with any password hidden."""
        return self._url.render_as_string(hide_password=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Let the appends in flight finish (within the timeout), then release every connection.

        The store can still be used afterwards; it opens new connections as needed.
        """
        self._group.drain(self.timeout)
        self._writer.close()
        self._engine.dispose()

    def budget(self, seconds: float | None = None) -> AbstractContextManager[None]:
        """One time budget (default: the store's timeout) for all store work inside.

        Every operation inside spends from it, as from its own timeout: the gate uses it
        so that looking evidence up and committing the decision share one wait. An
        enclosing budget still applies.
        """
        return operation_deadline(self.timeout if seconds is None else seconds)

    # -- schema ---------------------------------------------------------------------------

    def create_schema(self, *, ddl_guard: bool = False) -> list[str]:
        """Create or upgrade the table, indexes and triggers; say what was made or changed.

        One transaction: a log is either upgraded to ``SCHEMA_VERSION`` or left as it was.
        ``ddl_guard`` (PostgreSQL, needs a superuser) installs the event triggers that refuse
        DROP and ALTER of the log's tables (see ``store._upgrade``).
        """
        if ddl_guard and self.is_sqlite:
            msg = "the DDL guard is PostgreSQL's (event triggers); SQLite has no equivalent"
            raise ConfigurationError(msg)
        with self._connection("creating the audit schema", write=True) as conn:
            self._check_database(conn)
            with conn.begin():
                if not self.is_sqlite:  # concurrent inits would race on the catalog
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                        {"k": "accessaudit/create_schema"},
                    )
                    # Our own upgrades pass a DDL guard installed earlier (superusers only).
                    conn.execute(text("SET LOCAL accessaudit.allow_ddl = 'on'"))
                found = schema_version(conn)
                indexes = (
                    set()
                    if found is None
                    else {i["name"] for i in inspect(conn).get_indexes(TABLE_NAME)}
                )
                created = [] if found is not None else [f"table {TABLE_NAME}"]
                metadata.create_all(conn)
                for index in sorted(events.indexes, key=lambda i: str(i.name)):
                    if found is not None and index.name not in indexes:  # added by a later version
                        index.create(conn)
                        created.append(f"index {index.name}")
                created += upgrade(conn, found)
                before = self._trigger_names(conn)
                for statement in SQLITE_TRIGGERS.values() if self.is_sqlite else self._pg_ddl(conn):
                    conn.execute(text(statement))
                created += [f"trigger {n}" for n in sorted(self._trigger_names(conn) - before)]
                if ddl_guard:
                    created += self._install_ddl_guard(conn)
        return created

    def _pg_ddl(self, conn: Connection) -> list[str]:
        """The append-only triggers' DDL, less what is already in place."""
        triggers = {
            str(name): str(enabled)
            for name, enabled in conn.exec_driver_sql(
                "SELECT tgname, tgenabled FROM pg_trigger "  # noqa: S608 - our constants only
                f"WHERE tgrelid IN ('{TABLE_NAME}'::regclass, '{VERSION_TABLE}'::regclass) "
                "AND NOT tgisinternal"
            )
        }
        have_function = conn.exec_driver_sql(
            f"SELECT to_regprocedure('{TABLE_NAME}_reject_change()') IS NOT NULL"
        ).scalar_one()
        return postgres_trigger_ddl(have_function=bool(have_function), triggers=triggers)

    def _install_ddl_guard(self, conn: Connection) -> list[str]:
        superuser = conn.exec_driver_sql(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        ).scalar_one()
        if not superuser:
            msg = (
                "installing the DDL guard needs a superuser (event triggers); run "
                "`accessaudit init --ddl-guard` once as one, or separate the roles instead "
                '(README: "Protecting the log from the application\'s migrations")'
            )
            raise ConfigurationError(msg)
        for statement in ddl_guard_ddl():
            conn.execute(text(statement))
        return [f"event trigger {name}" for name in DDL_GUARD_TRIGGERS]

    def health(self) -> HealthFacts:
        """What the database says about this log's durability and protection (read-only)."""
        with self._connection("reading the log's settings") as conn:
            return gather(conn, is_sqlite=self.is_sqlite)

    def schema_version(self) -> int | None:
        """The log's schema version (None: no log here; 1: older than the version marker)."""
        with self._connection("reading the schema version") as conn:
            return schema_version(conn)

    def _check_database(self, conn: Connection) -> None:
        """SQLite: switch the file to WAL. PostgreSQL: insist on UTF8, which hashing needs."""
        driver = conn.connection.driver_connection
        if self.is_sqlite:
            # WAL is a property of the file and cannot be set inside a transaction.
            mode = switch_to_wal(driver, self.timeout)
            if mode != "wal":
                raise StoreError(
                    f"could not put {self.url} in WAL mode (it stays in {mode!r} mode); "
                    "is the file or its directory read-only?"
                )
            return
        encoding = conn.execute(text("SHOW server_encoding")).scalar_one()
        conn.rollback()  # end the implicit transaction SHOW opened
        if encoding != "UTF8":
            raise ConfigurationError(
                f"the database encoding is {encoding}, but accessaudit needs UTF8 so that text "
                "reads back exactly as it was hashed; create the database WITH ENCODING 'UTF8'"
            )

    def _trigger_names(self, conn: Connection) -> set[str]:
        if self.is_sqlite:
            query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        else:
            query = (  # the names are our own constants, not input
                "SELECT tgname FROM pg_trigger "  # noqa: S608
                f"WHERE tgrelid IN ('{TABLE_NAME}'::regclass, '{VERSION_TABLE}'::regclass) "
                "AND NOT tgisinternal"
            )
        return {row[0] for row in conn.exec_driver_sql(query)}

    def check_writer_role(self, role: str) -> None:
        """Refuse, before anything is created, a writer role this database cannot have.

        Roles exist only on PostgreSQL, and the name is spliced into DDL, so it must be a
        plain identifier: ``ConfigurationError`` otherwise.
        """
        if self.is_sqlite:
            raise ConfigurationError("database roles exist only on PostgreSQL")
        check_role_name(role)

    def grant_writer_role(self, role: str) -> None:
        """PostgreSQL: create ``role`` if absent and let it only SELECT and INSERT the log."""
        self.check_writer_role(role)
        with self._connection(f"granting the writer role {role}") as conn, conn.begin():
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
            for statement in writer_role_ddl(role, schema):
                conn.execute(text(statement))

    # -- writing --------------------------------------------------------------------------

    def append(
        self,
        batch: Iterable[AccessEvent],
        *,
        precondition: Precondition | None = None,
        durable: bool = True,
    ) -> list[StoredEvent]:
        """Append ``batch`` in order as one transaction; return the stored, sealed records.

        Returns only after the commit is durable (with ``durable=False``: after the commit,
        see the class docstring); either every event is stored or none is. Appending a batch
        that is already stored, event for event, returns the stored records instead of
        failing, so a batch can be retried after ``CommitOutcomeUnknown``.
        ``precondition`` runs inside the transaction, under the chain's serialisation point
        (see ``_guarded``); if it raises ``PreconditionFailed`` nothing is stored.
        """
        checked = self._prepared(batch, precondition)
        if not checked:
            return []
        timeout = min(self.timeout, remaining(self.timeout))
        try:
            sealed = self._group.submit(checked, timeout, durable=durable)
        except DuplicateEvent as e:
            sealed = self.earlier_append(checked, e)
        emit_appended(sealed)
        return sealed

    async def append_async(
        self,
        batch: Iterable[AccessEvent],
        *,
        precondition: Precondition | None = None,
        durable: bool = True,
    ) -> list[StoredEvent]:
        """``append`` for coroutines: the event loop never waits for the database.

        The appends that a loop's tasks make in one turn of the loop are handed to a worker
        thread together (one hand-off for all of them) and written in shared transactions;
        each caller resumes once its own records are committed, as with ``append``.
        """
        checked = self._prepared(batch, precondition)
        if not checked:
            return []
        timeout = min(self.timeout, remaining(self.timeout))
        sealed = await loop_appends(self).append(checked, timeout, durable)
        emit_appended(sealed)  # here, in the caller's task: its context variables apply
        return sealed

    def _prepared(
        self, batch: Iterable[AccessEvent], precondition: Precondition | None
    ) -> list[AccessEvent]:
        """The batch checked and carrying its precondition; refused now if it cannot be."""
        checked = checked_batch(batch)
        if checked and precondition is not None:
            checked = GuardedBatch(checked, precondition)
        if checked and self.key is None:
            raise MacKeyError("appending needs the HMAC key; pass key=load_key()")
        return checked

    def earlier_append(self, batch: list[AccessEvent], error: DuplicateEvent) -> list[StoredEvent]:
        """The records of ``batch`` if an earlier attempt stored it as given, else ``error``.

        (Stored by an attempt whose outcome was unknown to its caller.)
        """
        with self._connection("checking for an earlier append of this batch") as conn:
            earlier = find_stored(conn, self.chain_id, batch)
        if earlier is None:
            raise error
        return earlier

    def _write_group(
        self, batches: list[list[AccessEvent]], durable: bool
    ) -> list[list[StoredEvent]]:
        """Append several callers' batches in one transaction; each gets its own records back."""
        key = self.key
        assert key is not None  # append() checked before queueing  # noqa: S101
        sealed = self._write(lambda: self._writer.write(batches, key, durable=durable))
        stored, start = [], 0
        for batch in batches:
            stored.append(sealed[start : start + len(batch)])
            start += len(batch)
        return stored

    def append_recovery(self, event: AccessEvent, *, after: DamagedTail) -> StoredEvent:
        """Append one recovery record after the damaged tail ``after`` (see ``recovery``).

        The only append that does not insist on a sound tail. Nothing is stored, and
        ``ConfigurationError`` raised, unless the chain's newest row is still exactly the one
        ``after`` describes: the recovery record must acknowledge what the operator saw.
        """
        key = self.key
        if key is None:
            raise MacKeyError("recovering a chain needs the HMAC key; pass key=load_key()")
        batch = checked_batch([event])
        (stored,) = self._write(lambda: self._writer.write([batch], key, tail_check=after.check))
        emit_appended([stored])
        return stored

    def _write(self, transaction: Callable[[], list[StoredEvent]]) -> list[StoredEvent]:
        """Run one of the writer's transactions within the timeout, errors translated."""
        with operation_deadline(self.timeout):
            try:
                sealed = transaction()
            except SQLAlchemyError as e:
                raise classify(e, "appending to the audit log", self._seen) from e
        if not self._seen.reached:  # it worked: from now on, a missing log has vanished
            self._seen = replace(self._seen, reached=True)
        return sealed

    @contextmanager
    def _connection(
        self, doing: str, *, write: bool = False, bounded: bool = True
    ) -> Iterator[Connection]:
        """A pooled connection, errors translated; ``bounded``: finished within the timeout."""
        with (
            operation_deadline(self.timeout) if bounded else nullcontext(),
            translated(doing, self._seen),
            self._engine.connect() as conn,
        ):
            if write:
                conn.execution_options(**{WRITE_OPTION: True})
            if self.is_sqlite or not bounded:  # SQLite waits are bounded by busy_timeout
                yield conn
            else:
                with self._socket_deadline(conn, remaining(self.timeout)):
                    yield conn
            if not self._seen.reached:  # it worked: from now on, a missing log has vanished
                self._seen = replace(self._seen, reached=True)

    def _socket_deadline(self, conn: Connection, seconds: float) -> AbstractContextManager[None]:
        """PostgreSQL: close the connection if the block takes longer than ``seconds``."""
        if self.is_sqlite:
            return nullcontext()
        socket = conn.connection.driver_connection.pgconn.socket  # type: ignore[union-attr]
        return socket_deadline(socket, seconds)

    # -- reading --------------------------------------------------------------------------

    def _chain(self, chain_id: str | None) -> str:
        """The chain a read names (this store's by default), refused before any SQL if bad."""
        return _checked("chain_id", chain_id, MAX_CHAIN_CHARS) if chain_id else self.chain_id

    def head(self, chain_id: str | None = None) -> ChainHead | None:
        """The newest record's seq and chain hash, or None for an empty chain."""
        chain = self._chain(chain_id)
        with self._connection("reading the chain head") as conn:
            row = conn.execute(newest(chain, events.c.seq, events.c.chain_hash)).first()
        return None if row is None else ChainHead(chain, int(row.seq), str(row.chain_hash))

    def count(self, chain_id: str | None = None) -> int:
        """How many records the chain holds."""
        chain = self._chain(chain_id)
        with self._connection("counting audit records") as conn:
            query = select(func.count()).select_from(events).where(events.c.chain_id == chain)
            return int(conn.execute(query).scalar_one())

    def chains(self) -> list[str]:
        """Every chain id present in the log, sorted (ids that are not text are left out)."""
        with self._connection("listing chains") as conn:
            query = select(events.c.chain_id).distinct().order_by(events.c.chain_id)
            return [c for c in conn.execute(query).scalars() if isinstance(c, str)]

    def count_unchained(self) -> int:
        """How many rows have a chain id that is not text, so no chain includes them."""
        chain = events.c.chain_id
        unreadable: ColumnElement[bool] = chain.is_(None)
        if self.is_sqlite:  # dynamic typing: an owner can store a BLOB or a number there
            unreadable = unreadable | (func.typeof(chain) != "text")
        with self._connection("counting rows outside every chain") as conn:
            query = select(func.count()).select_from(events).where(unreadable)
            return int(conn.execute(query).scalar_one())

    def count_odd_seqs(self, chain_id: str) -> int:
        """How many rows of the chain have a seq that is not an integer.

        That is NULL or, on SQLite, a value of another type: a parallel verify leaves a
        chain with any to the serial one, as its halves are cut by seq.
        """
        chain_id = self._chain(chain_id)
        seq = events.c.seq
        odd: ColumnElement[bool] = seq.is_(None)
        if self.is_sqlite:
            odd = odd | (func.typeof(seq) != "integer")
        with self._connection("counting rows at impossible positions") as conn:
            query = select(func.count()).select_from(events)
            return int(conn.execute(query.where(events.c.chain_id == chain_id, odd)).scalar_one())

    def secret_url(self) -> str:
        """The database URL with its password, if it has one: never log or show it.

        For opening the same log in a child process (the second half of a parallel verify).
        """
        return self._url.render_as_string(hide_password=False)

    def read(
        self, start_seq: int = 1, end_seq: int | None = None, *, chain_id: str | None = None
    ) -> Iterator[StoredEvent]:
        """Stream records ``start_seq..end_seq`` (inclusive) of a chain, in seq order.

        Memory stays bounded whatever the range. A row that cannot be read back as a record
        raises ``StoreError``; ``accessaudit verify`` reports such rows instead.
        """
        for row in self.rows(chain_id, start_seq=start_seq, end_seq=end_seq):
            try:
                yield from_row(row)
            except MalformedRow as e:
                raise StoreError(
                    f"the record at seq {row['seq']} cannot be read: {e}; "
                    "run `accessaudit verify` for a full report"
                ) from e

    def rows(
        self,
        chain_id: str | None = None,
        *,
        start_seq: int | None = None,
        end_seq: int | None = None,
    ) -> Iterator[Mapping[str, Any]]:
        """Stream raw column mappings in (seq, event_id) order: what the verifier inspects.

        Without bounds every row of the chain comes back, including any at impossible
        positions (seq below 1), which the verifier must see.
        """
        for batch in self.row_batches(chain_id, start_seq=start_seq, end_seq=end_seq):
            columns = batch.columns
            for row in batch.rows:
                yield dict(zip(columns, row, strict=True))

    def row_batches(
        self,
        chain_id: str | None = None,
        *,
        start_seq: int | None = None,
        end_seq: int | None = None,
    ) -> Generator[RowBatch, None, None]:
        """The rows of ``rows``, in batches of tuple-like rows with their column names.

        The cheaper form for readers of every row (verify, export): no mapping per row.
        """
        # SELECT *, not the columns we expect: a column an owner dropped or added must show
        # up as a malformed row in verify, not as a query error that hides every other row.
        query: Select[Any] = (
            select(literal_column("*"))
            .select_from(events)
            .where(events.c.chain_id == self._chain(chain_id))
        )
        if start_seq is not None:
            query = query.where(events.c.seq >= start_seq)
        if end_seq is not None:
            query = query.where(events.c.seq <= end_seq)
        return self._stream(query.order_by(*_ORDER))

    def evidence_rows(
        self, evidence_ref: str | None = None, *, event_types: Collection[str]
    ) -> list[tuple[Mapping[str, Any], str | None]]:
        """Rows of every chain with these event types (and reference), in chain, seq order.

        Evidence issued on any chain of the log counts (shards: a chain per host or process).
        Each row comes with the chain hash of the record before it in its chain (None if
        there is none), so the caller can check the row's link and MAC without reading it.
        """
        query = _EVIDENCE_QUERY.where(events.c.event_type.in_(list(event_types)))
        if evidence_ref is not None:
            _checked("evidence_ref", evidence_ref, MAX_IDENTIFIER_CHARS)
            query = query.where(events.c.evidence_ref == evidence_ref)
        with self._connection("looking up evidence") as conn:
            found: list[tuple[Mapping[str, Any], str | None]] = []
            for row in conn.execute(query).mappings():
                fields = dict(row)
                found.append((fields, fields.pop("before_chain_hash")))
        # Sorted here, not by ORDER BY: asked to sort by seq, SQLite walks the whole chain
        # in seq order instead of using the evidence index (a few rows).
        found.sort(key=lambda i: (str(i[0]["chain_id"]), i[0]["seq"], str(i[0]["event_id"])))
        return found

    def evidence_uses(
        self, evidence_ref: str, *, event_types: Collection[str]
    ) -> list[EvidenceUse]:
        """Records of every chain with these types that cite ``evidence_ref``.

        Without their integrity columns: for counting uses (e.g. of a grant's allowance),
        not for trusting what the evidence says (``evidence_rows`` is for that).
        """
        _checked("evidence_ref", evidence_ref, MAX_IDENTIFIER_CHARS)
        with self._connection("reading the uses of evidence") as conn:
            return evidence_uses(conn, evidence_ref, event_types)

    # -- questions reports ask (see _review) ----------------------------------------------

    def decision_counts(
        self, selection: DecisionFilter, by: Sequence[Dimension]
    ) -> list[dict[str, Any]]:
        """Access decisions of the chain per value of ``by``: accesses, allowed, denied."""
        with self._connection(_FOR_A_REPORT) as conn:
            return _review.decision_counts(conn, selection, by)

    def denial_counts(self, selection: DecisionFilter) -> list[dict[str, Any]]:
        """Denials in the chain per reason code and purpose, most first."""
        with self._connection(_FOR_A_REPORT) as conn:
            return _review.denial_counts(conn, selection)

    def ungated_reads(self, selection: DecisionFilter) -> list[dict[str, Any]]:
        """Reads outside the gate, refused or observed, per resource and place; most first."""
        with self._connection(_FOR_A_REPORT) as conn:
            return _review.ungated_reads(conn, selection)

    def allowed_with_reason(
        self, selection: DecisionFilter, reason_code: str
    ) -> list[dict[str, Any]]:
        """Allowed accesses with ``reason_code`` (e.g. break-glass), in chain order."""
        with self._connection(_FOR_A_REPORT) as conn:
            return _review.allowed_with_reason(conn, selection, reason_code)

    def evidence_counts(self, selection: DecisionFilter, *, purpose: str) -> list[EvidenceCount]:
        """Allowed accesses for ``purpose`` per cited evidence and customer."""
        with self._connection(_FOR_A_REPORT) as conn:
            return _review.evidence_counts(conn, selection, purpose)

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
        with self._connection(_FOR_A_REPORT) as conn:
            return _review.count_allowed_outside(
                conn,
                selection,
                purpose=purpose,
                evidence_ref=evidence_ref,
                issued=issued,
                ended=ended,
                until=until,
            )

    def visible_decisions(self, selection: DecisionFilter) -> list[VisibleDecision]:
        """The customer-visible access decisions ``selection`` covers, in chain order."""
        with self._connection(_FOR_A_REPORT) as conn:
            return _review.visible_decisions(conn, selection)

    def customer_known(self, customer_id: str) -> bool:
        """Whether any record of this chain concerns ``customer_id``."""
        with self._connection(_FOR_A_REPORT) as conn:
            return _review.customer_known(conn, customer_id)

    def _stream(self, query: Select[Any]) -> Generator[RowBatch, None, None]:
        # A full read may take longer than any timeout, so the deadline is per round trip:
        # the query and each batch of READ_BATCH rows must come back within the timeout.
        with self._connection("reading the audit log", bounded=False) as conn:
            with self._socket_deadline(conn, self.timeout):
                result = conn.execution_options(yield_per=READ_BATCH).execute(query)
            try:
                columns = tuple(result.keys())
                batches = result.partitions()
                while True:
                    with self._socket_deadline(conn, self.timeout):
                        batch = next(batches, None)
                    if batch is None:
                        return
                    yield RowBatch(columns, batch)
            finally:
                # Close the (server-side, on PostgreSQL) cursor before its connection, also
                # when the caller stops reading early.
                result.close()


def _checked(name: str, value: str, max_chars: int) -> str:
    """``value`` if it is text the log can hold; else ``InvalidEvent``, before any SQL runs.

    PostgreSQL refuses a NUL in a parameter while SQLite would just match nothing: checked
    here, both give the same answer.
    """
    problem = check_text(name, value, max_chars)
    if problem is not None:
        raise InvalidEvent([problem])
    return value


_live_stores: weakref.WeakSet[SqlStore] = weakref.WeakSet()


def _close_live_stores() -> None:
    # At exit: finish the appends in flight, then close connections cleanly (a PostgreSQL
    # server otherwise logs each as an unexpected EOF).
    for store in list(_live_stores):
        with suppress(Exception):
            store.close()


def _drop_parent_connections() -> None:
    # A forked child must not use (or close) the parent's sockets: forget the pool untouched
    # and let the child open its own connections.
    for store in list(_live_stores):
        store._engine.dispose(close=False)


atexit.register(_close_live_stores)
os.register_at_fork(after_in_child=_drop_parent_connections)
