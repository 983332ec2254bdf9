"""The writer's own connection: round trips, the tail kept in process, lazily synced commits."""

from __future__ import annotations

import itertools
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg import pq
from sqlalchemy.engine import make_url

from accessaudit import (
    ChainHalted,
    CommitOutcomeUnknown,
    ConfigurationError,
    Gate,
    MacKey,
    Policy,
    SqlStore,
    StoreUnavailable,
    access_context,
    verify_store,
)
from tests import tampering, writerkit
from tests.gatekit import EXAMPLE_POLICY, Desk, service
from tests.strategies import make_event

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from tests.conftest import Backend


def _round_trips(trace: str) -> int:
    """Times the client waited for the server: a run of sent messages, then replies."""
    directions = [line[0] for line in trace.splitlines() if line[:1] in ("F", "B")]
    return sum(1 for pair in itertools.pairwise(directions) if pair == ("F", "B"))


def _traced(store: SqlStore, path: Path, work: Callable[[], object]) -> str:
    """Libpq's own protocol trace of the writer's connection while ``work`` runs."""
    driver = store._writer._driver()
    with path.open("w") as sink:
        driver.pgconn.trace(sink.fileno())
        driver.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            work()
        finally:
            driver.pgconn.untrace()
    return path.read_text()


@pytest.mark.postgres
@pytest.mark.parametrize("durable", [True, False])
def test_a_postgres_append_takes_two_round_trips(
    pg_backend: Backend, key: MacKey, tmp_path: Path, durable: bool
) -> None:
    """Uncontended, each append is two waits on the server (counted in libpq's trace).

    The first: BEGIN, bounded waits, the chain lock and the tail; the second: INSERT and
    COMMIT. A durable append sets synchronous_commit on, a lazy one off.
    """
    with SqlStore(pg_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        store.append([make_event()])  # connected, statements prepared
        for n in range(2, 6):
            trace = _traced(
                store, tmp_path / f"trace{n}", lambda: store.append([make_event()], durable=durable)
            )
            assert _round_trips(trace) == 2, trace
            assert "COMMIT" in trace
            binds = [line for line in trace.splitlines() if "\tBind\t" in line]
            assert any(f"'{'on' if durable else 'off'}'" in b for b in binds), binds
        assert store.count() == 5
        assert verify_store(store, key).intact


def _watching(store: SqlStore, sent: list[str]) -> AbstractContextManager[None]:
    """Record the statements the store's writer sends inside the block into ``sent``."""
    return writerkit.on_statement(store, lambda statement, _driver: sent.append(statement))


def _reads_tail(statements: list[str]) -> bool:
    return any(re.match(r"SELECT seq, chain_hash", s) for s in statements)


def test_sqlite_tail_is_read_again_only_after_another_writer(
    sqlite_backend: Backend, key: MacKey
) -> None:
    """Only after another connection commits does an append read (and check) the tail again.

    While this store alone writes, it trusts the tail it committed itself.
    """
    with SqlStore(sqlite_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        store.append([make_event()])
        sent: list[str] = []
        with _watching(store, sent):
            store.append([make_event()])
        assert not _reads_tail(sent)
        assert "PRAGMA data_version" in sent
        with SqlStore(sqlite_backend.url, key=key) as other:
            assert [r.seq for r in other.append([make_event()])] == [3]
        sent.clear()
        with _watching(store, sent):
            assert [r.seq for r in store.append([make_event()])] == [4]
        assert _reads_tail(sent)
        assert verify_store(store, key).intact


def test_an_edited_tail_halts_the_writer_that_wrote_it(backend: Backend, key: MacKey) -> None:
    """An owner's edit to the newest record between two appends halts the chain.

    The store notices (SQLite: data_version; PostgreSQL: the tail differs from the row it
    committed), checks the tail, and refuses to seal onto a forged link.
    """
    with SqlStore(backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        store.append([make_event(), make_event()])
        backend.drop_guards()
        tampering.set_column(backend, 2, "mac", "0" * 64)
        with pytest.raises(ChainHalted, match="seq 2"):
            store.append([make_event()])
        assert store.count() == 2


def test_lazy_commits_skip_the_fsync_until_the_next_durable_one(
    sqlite_backend: Backend, key: MacKey
) -> None:
    """durable=False commits with synchronous=NORMAL; the next durable append uses FULL."""
    with SqlStore(sqlite_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        sent: list[str] = []
        with _watching(store, sent):
            store.append([make_event()], durable=False)
            lazy = list(sent)
            sent.clear()
            store.append([make_event()])
        assert "PRAGMA synchronous = NORMAL" in lazy
        assert "PRAGMA synchronous = FULL" in sent
        assert store._writer._unsynced_since is None  # the durable commit synced both
        assert [r.seq for r in store.read()] == [1, 2]


def test_a_quiet_writer_is_synced_within_sync_within(
    sqlite_backend: Backend, key: MacKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a lazy commit and nothing else, the WAL file is fsynced once sync_within passes."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(str(Path(f"/proc/self/fd/{fd}").readlink()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with SqlStore(sqlite_backend.url, key=key, must_exist=False, sync_within=0.05) as store:
        store.create_schema()
        store.append([make_event()], durable=False)
        for _ in range(30_000):  # a hang detector (60 s), not a time bound
            if store._writer._unsynced_since is None:
                break
            time.sleep(0.002)
        assert store._writer._unsynced_since is None
        assert any(path.endswith("-wal") for path in synced)


def test_an_overdue_lazy_commit_becomes_durable(
    sqlite_backend: Backend, key: MacKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lazy append is fsynced itself once the oldest unsynced commit is sync_within old.

    So the time bound holds even if the flusher thread is held up.
    """
    with SqlStore(sqlite_backend.url, key=key, must_exist=False, sync_within=3600) as store:
        store.create_schema()
        store.append([make_event()], durable=False)
        assert store._writer._unsynced_since is not None
        monkeypatch.setattr(store._writer, "sync_within", 0.0)
        sent: list[str] = []
        with _watching(store, sent):
            store.append([make_event()], durable=False)
        assert "PRAGMA synchronous = FULL" in sent
        assert store._writer._unsynced_since is None


def test_sync_within_must_be_positive(sqlite_backend: Backend, key: MacKey) -> None:
    """A zero or negative sync_within is refused when the store is made."""
    with pytest.raises(ConfigurationError, match="sync_within must be a positive number"):
        SqlStore(sqlite_backend.url, key=key, must_exist=False, sync_within=0)


def test_durable_outcomes_wait_for_the_disk(sqlite_backend: Backend, key: MacKey) -> None:
    """Gate(durable_outcomes=True): the outcome record is fsynced too (no NORMAL commit)."""
    with SqlStore(sqlite_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        gate = Gate(store, Policy.load(EXAMPLE_POLICY), durable_outcomes=True)
        sent: list[str] = []
        with _watching(store, sent), access_context(service()):
            Desk(gate).invoices("acme")
        assert "PRAGMA synchronous = NORMAL" not in sent
        assert sent.count("COMMIT") == 2
        assert store._writer._unsynced_since is None


def test_outcomes_are_synced_with_the_next_decision_by_default(
    sqlite_backend: Backend, key: MacKey
) -> None:
    """By default the outcome commits without its own fsync; the next decision syncs it."""
    with SqlStore(sqlite_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        desk = Desk(Gate(store, Policy.load(EXAMPLE_POLICY)))
        sent: list[str] = []
        with _watching(store, sent), access_context(service()):
            desk.invoices("acme")
            assert store._writer._unsynced_since is not None  # the outcome, not yet synced
            desk.invoices("acme")
        # Each decision switches to FULL, each outcome to NORMAL.
        assert sent.count("PRAGMA synchronous = NORMAL") == 2
        assert sent.count("PRAGMA synchronous = FULL") == 2
        assert [r.event.event_type.value for r in store.read()] == [
            "access.allowed",
            "access.completed",
        ] * 2


class _LosesConnectionAtCommit:
    """The writer's psycopg connection, lost right after COMMIT is handed to it."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def execute(self, statement: str, *args: Any) -> Any:
        result = self._real.execute(statement, *args)
        if statement == "COMMIT":
            self._real.close()
            raise psycopg.OperationalError("the connection was lost")
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.mark.postgres
def test_a_connection_lost_once_commit_is_handed_over_is_outcome_unknown(
    pg_backend: Backend, key: MacKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queueing COMMIT may send it, so a loss inside that call is never retried blindly.

    The caller gets CommitOutcomeUnknown; retrying the same batch stores it exactly once.
    """
    with SqlStore(pg_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        store.append([make_event()])
        writer = store._writer
        opened = writer._driver
        monkeypatch.setattr(writer, "_driver", lambda: _LosesConnectionAtCommit(opened()))
        batch = [make_event()]
        with pytest.raises(CommitOutcomeUnknown):
            store.append(batch)
        monkeypatch.setattr(writer, "_driver", opened)
        assert [r.seq for r in store.append(batch)] == [2]
        assert store.count() == 2


def test_evidence_is_looked_up_through_an_index_on_every_chain(
    sqlite_backend: Backend, key: MacKey
) -> None:
    """The query preconditions run for evidence uses an index led by the reference."""
    with SqlStore(sqlite_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        sql = _writer_uses_sql(store)
        plan = " ".join(str(r) for r in sqlite_backend.sql(f"EXPLAIN QUERY PLAN {sql}"))
        assert "accessaudit_events_evidence_ref" in plan, plan


def _writer_uses_sql(store: SqlStore) -> str:
    sql = store._writer._sql["uses"].format(types="'grant.revoked', 'grant.issued'")
    return sql.replace("evidence_ref = ?", "evidence_ref = 'g-1'")


def test_sqlite_lock_waits_never_outlast_the_callers_budget(
    sqlite_backend: Backend, key: MacKey
) -> None:
    """busy_timeout is lowered for a caller with less time left than the last one had.

    The writer keeps SQLite's busy_timeout between appends while it fits the budget (sending
    the pragma costs a parse each time); a shorter budget must still bound the lock wait.
    """
    with SqlStore(sqlite_backend.url, key=key, timeout=30, must_exist=False) as store:
        store.create_schema()
        store.append([make_event()])

        def busy_ms() -> int:
            return int(store._writer._db.execute("PRAGMA busy_timeout").fetchone()[0])

        assert 27_000 <= busy_ms() <= 30_000
        blocker = sqlite3.connect(str(make_url(sqlite_backend.url).database), isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreUnavailable), store.budget(0.2):
                store.append([make_event()])
            assert busy_ms() <= 200
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        store.append([make_event()])  # the whole budget again: the wait is widened again
        assert busy_ms() >= 27_000
        assert [r.seq for r in store.read()] == [1, 2]
