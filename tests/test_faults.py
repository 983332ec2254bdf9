"""Failures become specific accessaudit errors, waits are bounded, and nothing half-lands."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sqlite3
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from accessaudit import (
    AuditUnavailable,
    CommitOutcomeUnknown,
    ConfigurationError,
    Gate,
    InvalidEvent,
    MacKey,
    Policy,
    SqlStore,
    StoreError,
    StoreUnavailable,
    access_context,
    verify_store,
)
from accessaudit.gate.purposes import EvidenceKind
from accessaudit.gate.registry import EvidenceRegistry
from accessaudit.store import _writer
from accessaudit.store._append import lock_chain
from accessaudit.store._deadline import socket_deadline
from tests import writerkit
from tests.gatekit import EXAMPLE_POLICY, Desk, service
from tests.strategies import make_event

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, MutableMapping

    from tests.conftest import Backend


@pytest.mark.postgres
def test_unreachable_postgres_is_store_unavailable(key: MacKey, postgres_url: str) -> None:
    """Nothing listens on the port: appends and reads fail as StoreUnavailable."""
    url = make_url(postgres_url).set(port=1).render_as_string(hide_password=False)
    with SqlStore(url, key=key, timeout=1) as store:
        with pytest.raises(StoreUnavailable, match="unavailable"):
            store.append([make_event()])
        with pytest.raises(StoreUnavailable):
            store.count()


@pytest.mark.postgres
def test_held_chain_lock_times_out_and_stores_nothing(pg_backend: Backend, key: MacKey) -> None:
    """A held chain lock makes an append give up, store nothing, and the chain continue after."""
    with SqlStore(pg_backend.url, key=key, timeout=2, must_exist=False) as store:
        store.create_schema()
        store.append([make_event()])
        with pg_backend.owner.connect() as other, other.begin():
            lock_chain(other, "main", 5.0)  # another writer holds the chain
            with pytest.raises(StoreUnavailable, match="timeout"):
                store.append([make_event()])
        assert store.count() == 1
        assert [r.seq for r in store.append([make_event()])] == [2]
        assert verify_store(store, key).intact


def _named(url: str) -> tuple[str, str]:
    """``url`` with an application_name of its own, and that name.

    So that a test touches only its own store's server processes, never those of tests
    running beside it on the same server.
    """
    name = f"aa_test_{uuid.uuid4().hex[:12]}"
    named = make_url(url).update_query_dict({"application_name": name})
    return named.render_as_string(hide_password=False), name


def _own_backends(backend: Backend, name: str, where: str = "true") -> list[int]:
    """The server process ids of the connections named ``name`` (and matching ``where``)."""
    rows = backend.sql(
        f"SELECT pid FROM pg_stat_activity WHERE application_name = :name AND {where}",
        name=name,
    )
    return [int(str(pid)) for (pid,) in rows]


@pytest.mark.postgres
def test_killed_connections_are_replaced(pg_backend: Backend, key: MacKey) -> None:
    """After the server terminates the store's connections, the next append still lands."""
    url, name = _named(pg_backend.url)
    with SqlStore(url, key=key, must_exist=False) as store:
        store.create_schema()
        store.append([make_event()])
        own = _own_backends(pg_backend, name)
        assert own  # the URL's application_name names the store's connections
        for pid in own:
            pg_backend.sql("SELECT pg_terminate_backend(:pid)", pid=pid)
        assert [r.seq for r in store.append([make_event()])] == [2]


def test_locked_sqlite_times_out_and_stores_nothing(sqlite_backend: Backend, key: MacKey) -> None:
    """While another process holds the write lock, an append gives up after the timeout."""
    with SqlStore(sqlite_backend.url, key=key, timeout=1, must_exist=False) as store:
        store.create_schema()
        store.append([make_event()])
        path = make_url(sqlite_backend.url).database
        assert path is not None
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreUnavailable, match="locked"):
                store.append([make_event()])
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert store.count() == 1
        assert [r.seq for r in store.append([make_event()])] == [2]


def test_missing_sqlite_file_is_a_configuration_error(tmp_path: Path) -> None:
    """A SQLite URL naming no file is refused, not silently created empty."""
    with pytest.raises(
        ConfigurationError, match=r"does not exist; create it with `accessaudit init`"
    ):
        SqlStore(f"sqlite:///{tmp_path / 'typo.db'}")
    assert not (tmp_path / "typo.db").exists()


def test_uninitialised_database_says_to_run_init(tmp_path: Path, key: MacKey) -> None:
    """A database without the table points at `accessaudit init` (a wrong --db: usage)."""
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    with (
        SqlStore(f"sqlite:///{path}", key=key) as store,
        pytest.raises(ConfigurationError, match=r"holds no audit log .* `accessaudit init`"),
    ):
        store.append([make_event()])


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("not a url", "database URL is not valid"),
        ("mysql://root@localhost/db", "unsupported database 'mysql'"),
        ("sqlite://", "in-memory SQLite database would lose"),
        ("sqlite:///:memory:", "in-memory"),
    ],
)
def test_unusable_urls_are_refused(url: str, words: str) -> None:
    """Bad database URLs are configuration errors that say what to use instead."""
    with pytest.raises(ConfigurationError, match=words):
        SqlStore(url)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_timeout_must_be_positive_and_finite(tmp_path: Path, timeout: float) -> None:
    """A wait without bound, or none at all, is refused."""
    with pytest.raises(ConfigurationError, match="timeout"):
        SqlStore(f"sqlite:///{tmp_path / 'a.db'}", timeout=timeout, must_exist=False)


def test_unreadable_row_is_a_store_error_when_reading(backend: Backend, store: SqlStore) -> None:
    """read() refuses a row it cannot rebuild and points at verify."""
    store.append([make_event(), make_event()])
    backend.drop_guards()
    backend.sql("UPDATE accessaudit_events SET customer_visible = 5 WHERE seq = 2")
    with pytest.raises(StoreError, match=r"seq 2 cannot be read.*accessaudit verify"):
        list(store.read())


def test_driver_errors_do_not_leak_parameters(backend: Backend, store: SqlStore) -> None:
    """A translated error carries the driver's first line, not the statement's values."""
    first = store.append([make_event()])[0].event
    clash = make_event(event_id=first.event_id, actor_id="agent-secret-name")
    with pytest.raises(StoreError) as caught:
        store.append([clash])
    assert "agent-secret-name" not in str(caught.value)
    assert isinstance(caught.value.__cause__, Exception)


def test_owner_engine_sees_wal_and_full_sync(sqlite_backend: Backend, key: MacKey) -> None:
    """SQLite logs run in WAL mode with synchronous=FULL on the store's connections."""
    with SqlStore(sqlite_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        engine = store._engine
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def _backend_pid(store: SqlStore) -> int:
    with store._engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


@pytest.mark.postgres
def test_stopped_idle_writer_backend_is_replaced(
    pg_backend: Backend, key: MacKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writing connection, idle, whose server process stopped answering is replaced."""
    monkeypatch.setattr(_writer, "IDLE_PING_S", 0.0)  # every append counts as after a pause
    with SqlStore(pg_backend.url, key=key, timeout=2, must_exist=False) as store:
        store.create_schema()
        store.append([make_event()])
        pid = writerkit.writer_backend_pid(store)
        os.kill(pid, signal.SIGSTOP)
        try:
            assert [r.seq for r in store.append([make_event()])] == [2]
        finally:
            os.kill(pid, signal.SIGCONT)
        assert verify_store(store, key).intact


@pytest.mark.postgres
def test_server_hanging_mid_append_is_unavailable_and_stores_nothing(
    pg_backend: Backend, key: MacKey
) -> None:
    """A server hanging mid-INSERT: CommitOutcomeUnknown in time, not a hang; retry is safe.

    INSERT and COMMIT go in one round trip, so a server that stops answering then leaves
    the outcome unknown to the client (a StoreUnavailable that says so). Here the server
    does commit once it runs again (the statements were already in its socket buffer), and
    retrying the same batch finds that record instead of storing a second one.
    """
    with SqlStore(pg_backend.url, key=key, timeout=1, must_exist=False) as store:
        store.create_schema()
        store.append([make_event()])
        stopped: list[int] = []
        batch = [make_event()]

        def stop_before_insert(statement: str, driver: Any) -> None:
            if statement.startswith("INSERT") and not stopped:
                stopped.append(driver.info.backend_pid)
                os.kill(stopped[0], signal.SIGSTOP)

        try:
            with (
                writerkit.on_statement(store, stop_before_insert),
                pytest.raises(
                    CommitOutcomeUnknown, match=r"did not answer within .* during COMMIT"
                ),
            ):
                store.append(batch)
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
        assert stopped
        assert [r.seq for r in store.append(batch)] == [2]  # the retry: stored once
        assert store.count() == 2
        assert [r.seq for r in store.append([make_event()])] == [3]


def test_silent_server_is_unavailable_not_a_hang(key: MacKey) -> None:
    """A server that accepts TCP connections but never speaks is StoreUnavailable."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:
        with SqlStore(f"postgresql://nobody@127.0.0.1:{port}/db", key=key, timeout=1) as store:
            with pytest.raises(StoreUnavailable):
                store.append([make_event()])
            with pytest.raises(StoreUnavailable):  # and again: nothing is left stuck
                store.count()
    finally:
        listener.close()


def test_altered_table_is_named_as_such(backend: Backend, store: SqlStore) -> None:
    """A table missing a column says it was altered, not 'run init'."""
    store.append([make_event()])
    backend.sql("ALTER TABLE accessaudit_events DROP COLUMN trace_id")
    with pytest.raises(StoreError, match="does not have the columns this version expects"):
        store.append([make_event()])


@pytest.mark.postgres
def test_server_hanging_mid_read_is_unavailable(pg_backend: Backend, key: MacKey) -> None:
    """A server that stops answering while rows stream gives StoreUnavailable, not a hang."""
    with SqlStore(pg_backend.url, key=key, timeout=60, must_exist=False) as writer:
        writer.create_schema()
        writer.append([make_event() for _ in range(2500)])  # more than one fetch batch
    url, name = _named(pg_backend.url)
    with SqlStore(url, key=key, timeout=1) as store:
        rows = store.rows()
        first = next(rows)
        assert first["seq"] == 1
        (pid,) = _own_backends(pg_backend, name, "state = 'idle in transaction'")
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(StoreUnavailable, match="did not answer within"):
                for _ in rows:
                    pass
        finally:
            os.kill(pid, signal.SIGCONT)


def _head_in_forked_child(url: str, key_hex: str, results: Any) -> None:
    """In a forked child: stop our backend, then ask for the head; report what happened."""
    with SqlStore(url, key=MacKey(bytes.fromhex(key_hex)), timeout=1) as store:
        store.append([make_event()])
        pid = _backend_pid(store)
        results.put(pid)  # so the parent can wake the backend whatever happens here
        os.kill(pid, signal.SIGSTOP)
        try:
            store.head()
            # Answered by a connection other than the stopped one: the ping's deadline fired.
            results.put("answered" if _backend_pid(store) != pid else "answered by the stopped")
        except StoreUnavailable:
            results.put("unavailable")
        except Exception as e:  # noqa: BLE001 - reported to the parent
            results.put(repr(e))
        finally:
            os.kill(pid, signal.SIGCONT)


@pytest.mark.postgres
def test_deadlines_work_in_a_forked_child(pg_backend: Backend, key: MacKey) -> None:
    """After fork (gunicorn --preload, multiprocessing's default), deadlines still fire."""
    with SqlStore(pg_backend.url, key=key, timeout=1, must_exist=False) as store:
        store.create_schema()
        store.append([make_event()])  # the parent's watchdog thread is running now
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(
        target=_head_in_forked_child, args=(pg_backend.url, key.secret.hex(), results)
    )
    child.start()
    backend_pid = results.get(timeout=60)
    try:
        # A hang detector, not a speed requirement: a working child is done in about a second.
        child.join(120)
        hung = child.is_alive()
        if hung:
            child.kill()
    finally:
        with suppress(ProcessLookupError):  # gone already if the child closed its connection
            os.kill(backend_pid, signal.SIGCONT)
    assert not hung
    # The checkout ping to the stopped backend hits its deadline; the pool then opens a new
    # connection, which answers within the same budget.
    assert results.get(timeout=5) == "answered"


@pytest.mark.postgres
def test_connection_lost_at_commit_is_outcome_unknown_and_retry_is_safe(
    pg_backend: Backend, key: MacKey
) -> None:
    """The connection dying while COMMIT runs: CommitOutcomeUnknown; the retry stores it once.

    A deferred trigger makes the server end its own connection during COMMIT, after the
    client has sent it: from the client's side exactly a lost connection at commit.
    """
    with SqlStore(pg_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        store.append([make_event()])
        pg_backend.sql(
            "CREATE FUNCTION die_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$"
        )
        pg_backend.sql(
            "CREATE CONSTRAINT TRIGGER die_at_commit AFTER INSERT ON accessaudit_events "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION die_at_commit()"
        )
        batch = [make_event(), make_event()]
        with pytest.raises(CommitOutcomeUnknown, match="append the same batch again"):
            store.append(batch)
        pg_backend.sql("DROP TRIGGER die_at_commit ON accessaudit_events")
        retried = store.append(batch)
        assert [r.seq for r in retried] == [2, 3]
        assert store.append(batch) == retried  # and a further retry changes nothing
        assert store.count() == 3
        assert verify_store(store, key).intact


def test_failing_log_processor_does_not_fail_the_append(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A structlog processor that raises is reported via logging; the record stays committed."""

    def broken(_logger: object, _name: str, _event: MutableMapping[str, Any]) -> str:
        raise RuntimeError("log sink down")

    structlog.configure(processors=[broken])
    with caplog.at_level(logging.ERROR, logger="accessaudit"):
        (record,) = store.append([make_event()])
    assert store.count() == 1
    assert record.seq == 1
    assert "could not emit audit event seq 1" in caplog.text


def test_sqlite_log_moved_away_is_not_recreated(sqlite_backend: Backend, key: MacKey) -> None:
    """A log moved away while open: no empty file in its place; unavailable until it is back."""
    path = Path(make_url(sqlite_backend.url).database or "")
    with SqlStore(sqlite_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        store.append([make_event()])
    with SqlStore(sqlite_backend.url, key=key) as store:
        assert store.count() == 1  # the pool now holds a connection to the file
        moved = path.with_name("moved.db")
        path.rename(moved)
        with pytest.raises(StoreUnavailable, match=r"does not exist \(moved or deleted\?\)"):
            store.append([make_event()])
        with pytest.raises(StoreUnavailable, match="an empty log is not created in its place"):
            store.count()
        assert not path.exists()
        moved.rename(path)
        assert [r.seq for r in store.append([make_event()])] == [2]
        assert verify_store(store, key).intact


def test_sqlite_file_removed_after_the_store_opened_is_not_created(
    sqlite_backend: Backend, key: MacKey
) -> None:
    """The file goes between the store's existence check and its first connection: not created."""
    path = Path(make_url(sqlite_backend.url).database or "")
    with SqlStore(sqlite_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
    store = SqlStore(sqlite_backend.url, key=key)  # checks that the file exists: it does
    path.unlink()
    with store, pytest.raises(StoreUnavailable, match="does not exist"):
        store.append([make_event()])
    assert not path.exists()


def test_sqlite_log_replaced_while_open_is_reopened(sqlite_backend: Backend, key: MacKey) -> None:
    """Pooled connections do not go on writing to a file that was replaced under the same name."""
    path = Path(make_url(sqlite_backend.url).database or "")
    with SqlStore(sqlite_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        store.append([make_event()])
        path.rename(path.with_name("old.db"))
        with SqlStore(sqlite_backend.url, key=key, must_exist=False) as fresh:
            fresh.create_schema()  # a new, empty log under the old name
        assert store.count() == 0  # what is at the path now, not the old file
        assert [r.seq for r in store.append([make_event()])] == [1]


@pytest.fixture
def throwaway_database(postgres_url: str) -> Iterator[tuple[str, Engine]]:
    """A database of its own for one test (URL, admin engine), dropped after if still there."""
    name = f"aa_drop_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        make_url(postgres_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield make_url(postgres_url).set(database=name).render_as_string(False), admin
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.mark.postgres
def test_database_dropped_while_in_use_is_unavailable(
    throwaway_database: tuple[str, Engine], key: MacKey
) -> None:
    """A database dropped under a running store: unavailable, saying that it is gone.

    Appends and reads raise StoreUnavailable; a gated read AuditUnavailable, its body not run.
    """
    url, admin = throwaway_database
    with SqlStore(url, key=key, timeout=2, must_exist=False) as store:
        store.create_schema()
        store.append([make_event()])
        desk = Desk(Gate(store, Policy.load(EXAMPLE_POLICY), timeout=2))
        with access_context(service()):
            desk.invoices("acme")
        database = make_url(url).database
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {database} WITH (FORCE)"))
        gone = f'the database no longer exists .*database "{database}" does not exist'
        with pytest.raises(StoreUnavailable, match=gone):
            store.append([make_event()])
        with pytest.raises(StoreUnavailable, match=gone):
            store.count()
        with access_context(service()), pytest.raises(AuditUnavailable, match=gone):
            desk.invoices("acme")
        assert desk.ran == ["invoices"]
    # A store that never reached the database: a wrong URL, as at startup (exit 2).
    with SqlStore(url, key=key, timeout=2) as late, pytest.raises(ConfigurationError):
        late.count()


@pytest.mark.parametrize(
    "lookup",
    [
        pytest.param(lambda s: s.head("main\x00"), id="head"),
        pytest.param(lambda s: s.count("main\x00"), id="count"),
        pytest.param(lambda s: list(s.read(chain_id="main\x00")), id="read"),
        pytest.param(lambda s: list(s.rows("main\x00")), id="rows"),
        pytest.param(lambda s: s.count_odd_seqs("main\x00"), id="count_odd_seqs"),
        pytest.param(
            lambda s: s.evidence_rows("grant:\x00", event_types=["grant.issued"]),
            id="evidence_rows",
        ),
        pytest.param(
            lambda s: s.evidence_uses("grant:\x00", event_types=["access.completed"]),
            id="evidence_uses",
        ),
        pytest.param(
            lambda s: EvidenceRegistry(s).lookup(EvidenceKind.GRANT, "grant:\x00"),
            id="registry",
        ),
        pytest.param(lambda s: s.append([make_event(attributes={"k": "v\x00"})]), id="append"),
        pytest.param(lambda s: SqlStore(s.url, chain_id="a\x00b"), id="store"),
    ],
)
def test_nul_in_an_id_is_invalid_before_any_sql(
    store: SqlStore, lookup: Callable[[SqlStore], object]
) -> None:
    """A NUL in a chain id, evidence reference or event field: InvalidEvent, no SQL sent.

    (PostgreSQL would refuse the parameter and SQLite would match nothing.)
    """
    store.append([make_event()])
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(store._engine, "before_cursor_execute", count)
    try:
        with pytest.raises(InvalidEvent, match="contains a NUL character"):
            lookup(store)
    finally:
        event.remove(store._engine, "before_cursor_execute", count)
    assert statements == []
    assert store.count() == 1


def test_relative_sqlite_path_is_fixed_when_the_store_opens(
    tmp_path: Path, key: MacKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative SQLite URL names the file in the directory the store was opened in."""
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    with SqlStore("sqlite:///audit.db", key=key, must_exist=False) as store:
        store.create_schema()
        store.append([make_event()])
        store.close()  # the next connection is a new one
        monkeypatch.chdir(tmp_path / "elsewhere")
        assert [r.seq for r in store.append([make_event()])] == [2]
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_short_deadline_armed_after_a_long_one_still_fires() -> None:
    """The watchdog sleeping toward a far deadline is woken for a nearer one.

    (It is woken only when a new deadline is the nearest: waking it for every database
    call cost a GIL switch each.) The guarded socket is shut, so the blocked read returns
    instead of waiting for its own ten-second timeout.
    """
    far_end, far_peer = socket.socketpair()
    near_end, near_peer = socket.socketpair()
    try:
        with socket_deadline(far_end.fileno(), 600.0):
            time.sleep(0.1)  # the watchdog thread (new in this process or not) is asleep now
            near_end.settimeout(10.0)
            with pytest.raises(StoreUnavailable):
                _read_guarded(near_end, 0.2)
    finally:
        for sock in (far_end, far_peer, near_end, near_peer):
            sock.close()


def _read_guarded(sock: socket.socket, seconds: float) -> None:
    with socket_deadline(sock.fileno(), seconds):
        if sock.recv(1) == b"":  # shut by the watchdog: the read ends empty
            raise ConnectionError("shut")
