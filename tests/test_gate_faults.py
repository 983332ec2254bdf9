"""Fail closed: when the audit store cannot record, the protected code does not run.

Faults are real ones on the real databases: nothing listening, a read-only database, a
COMMIT the server refuses, a full disk, a lock held by someone else past the timeout.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url

from accessaudit import (
    AuditUnavailable,
    CommitOutcomeUnknown,
    ConfigurationError,
    Gate,
    MacKey,
    MacKeyError,
    Policy,
    SqlStore,
    StoreError,
    access_context,
)
from accessaudit.store._append import lock_chain
from tests.gatekit import CANARY, EXAMPLE_POLICY, Desk, accesses, kinds, service

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.conftest import Backend

POLICY = Policy.load(EXAMPLE_POLICY)


def _assert_fails_closed(desk: Desk, cause: type[Exception] = StoreError) -> AuditUnavailable:
    with access_context(service()), pytest.raises(AuditUnavailable) as caught:
        desk.invoices("acme")
    assert desk.ran == []
    assert "the protected code did not run" in str(caught.value)
    assert isinstance(caught.value.__cause__, cause)
    return caught.value


@pytest.mark.postgres
def test_unreachable_postgres(key: MacKey, postgres_url: str) -> None:
    """Nothing listens: AuditUnavailable, and the body never runs."""
    url = make_url(postgres_url).set(port=1).render_as_string(hide_password=False)
    with SqlStore(url, key=key, timeout=1) as store:
        error = _assert_fails_closed(Desk(Gate(store, POLICY)))
    assert "within 1s" in str(error)


def test_unreachable_sqlite_file(tmp_path: Any, key: MacKey) -> None:
    """A SQLite file that cannot be opened (its directory is gone) fails closed.

    Never opened before, that is a wrong URL (the cause says which directory is missing).
    """
    url = f"sqlite:///{tmp_path / 'gone' / 'audit.db'}"
    with SqlStore(url, key=key, timeout=1, must_exist=False) as store:
        error = _assert_fails_closed(Desk(Gate(store, POLICY)), cause=ConfigurationError)
    assert "does not exist: create it, or check --db" in str(error)


@contextmanager
def _read_only(backend: Backend, key: MacKey) -> Iterator[SqlStore]:
    with SqlStore(backend.url, key=key, must_exist=False) as setup:
        setup.create_schema()
    if backend.name == "postgresql":
        options = make_url(backend.url).query["options"]
        url = (
            make_url(backend.url)
            .update_query_dict({"options": f"{options} -cdefault_transaction_read_only=on"})
            .render_as_string(hide_password=False)
        )
        with SqlStore(url, key=key, timeout=2) as store:
            yield store
        return
    with SqlStore(backend.url, key=key, timeout=2) as store:
        # What a read-only mount or file looks like to SQLite (root ignores file modes).
        event.listen(store._engine, "connect", _query_only)
        yield store


def _query_only(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA query_only = ON")


def test_read_only_store(backend: Backend, key: MacKey) -> None:
    """A database that refuses writes: AuditUnavailable, nothing recorded, body not run."""
    with _read_only(backend, key) as store:
        _assert_fails_closed(Desk(Gate(store, POLICY)))
        assert store.count() == 0


@pytest.mark.postgres
def test_commit_refused_by_the_server(pg_backend: Backend, key: MacKey) -> None:
    """A deferred check failing at COMMIT: the body never runs and nothing is stored."""
    with SqlStore(pg_backend.url, key=key, timeout=2, must_exist=False) as store:
        store.create_schema()
        pg_backend.sql(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'could not extend file' USING ERRCODE = '53100'; END $$"
        )
        pg_backend.sql(
            "CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON accessaudit_events "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
        error = _assert_fails_closed(Desk(Gate(store, POLICY)))
        # The server said no to COMMIT on a live connection: nothing is stored, and the
        # caller is told why (not "outcome unknown", which only a lost connection means).
        assert "could not extend file" in str(error)
        assert not isinstance(error.__cause__, CommitOutcomeUnknown)
        pg_backend.sql("DROP TRIGGER refuse_at_commit ON accessaudit_events")
        assert store.count() == 0


def test_full_disk_on_sqlite(sqlite_backend: Backend, key: MacKey) -> None:
    """Once the file cannot grow, gated calls fail closed; every body that ran is recorded."""
    with SqlStore(sqlite_backend.url, key=key, timeout=2, must_exist=False) as store:
        store.create_schema()
        desk = Desk(Gate(store, POLICY))
        with access_context(service()):
            desk.invoices("acme")
        store.close()  # new connections get the limit below

        def no_growth(dbapi_connection: Any, _record: Any) -> None:
            (pages,) = dbapi_connection.execute("PRAGMA page_count").fetchone()
            dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

        event.listen(store._engine, "connect", no_growth)
        errors: list[AuditUnavailable] = []
        with access_context(service()):
            for _ in range(200):
                ran_before = len(desk.ran)
                try:
                    desk.invoices("acme")
                except AuditUnavailable as e:
                    errors.append(e)
                    break
        assert len(errors) == 1
        assert "full" in str(errors[0].__cause__)
        # Either the decision could not be written (no body) or the outcome could not
        # (body ran, result withheld); never a body without its committed decision.
        if len(desk.ran) == ran_before:
            assert "did not run" in str(errors[0])
        else:
            assert "the result was withheld" in str(errors[0])
        assert kinds(store).count("access.allowed:allowed") == len(desk.ran)


def _hold_write_lock(backend: Backend) -> Any:
    """Another writer holding the chain (SQLite: the file's write lock)."""
    if backend.name == "sqlite":
        path = make_url(backend.url).database
        blocker = sqlite3.connect(str(path), isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        return blocker
    conn = backend.owner.connect()
    conn.begin()
    lock_chain(conn, "main", 5.0)
    return conn


def _release(blocker: Any) -> None:
    blocker.rollback() if not isinstance(blocker, sqlite3.Connection) else blocker.execute(
        "ROLLBACK"
    )
    blocker.close()


def test_slow_store_times_out_before_the_body(backend: Backend, key: MacKey) -> None:
    """A lock held past the gate's timeout: AuditUnavailable naming the timeout, no body."""
    with SqlStore(backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        desk = Desk(Gate(store, POLICY, timeout=0.5))
        blocker = _hold_write_lock(backend)
        try:
            error = _assert_fails_closed(desk)
        finally:
            _release(blocker)
        assert "within 0.5s" in str(error)
        assert store.count() == 0
        with access_context(service()):  # and it recovers once the lock is gone
            assert desk.invoices("acme", limit=1) == (0,)


def test_an_outcome_that_cannot_be_recorded_withholds_the_result(
    backend: Backend, key: MacKey
) -> None:
    """The store stops answering while the body runs: AuditUnavailable instead of data."""
    with SqlStore(backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        gate = Gate(store, POLICY, timeout=0.5)
        held: list[Any] = []

        @gate.protect("crm.contacts")
        def contacts(customer_id: str) -> list[str]:
            held.append(_hold_write_lock(backend))
            return ["data"]

        try:
            with access_context(service()), pytest.raises(AuditUnavailable) as caught:
                contacts("acme")
        finally:
            for blocker in held:
                _release(blocker)
        assert "the result was withheld" in str(caught.value)
        assert kinds(store) == ["access.allowed:allowed"]


def test_a_failure_that_cannot_be_recorded_keeps_the_original_error(
    backend: Backend, key: MacKey, caplog: pytest.LogCaptureFixture
) -> None:
    """The body's own exception reaches the caller; the lost record is logged."""
    with SqlStore(backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        gate = Gate(store, POLICY, timeout=0.5)
        held: list[Any] = []

        @gate.protect("crm.contacts")
        def contacts(customer_id: str) -> list[str]:
            held.append(_hold_write_lock(backend))
            raise LookupError(CANARY)  # a message quoting data

        try:
            with (
                caplog.at_level(logging.ERROR, logger="accessaudit"),
                access_context(service()),
                pytest.raises(LookupError),
            ):
                contacts("acme")
        finally:
            for blocker in held:
                _release(blocker)
        assert "could not record the failure" in caplog.text
        assert "builtins.LookupError" in caplog.text
        assert CANARY not in caplog.text
        assert [r.event.event_type.value for r in accesses(store)] == ["access.allowed"]


def test_a_gate_needs_the_key_up_front(backend: Backend) -> None:
    """Without the HMAC key a gate could never record: refused when it is built (MacKeyError)."""
    with (
        SqlStore(backend.url, must_exist=False) as store,
        pytest.raises(MacKeyError, match="HMAC key"),
    ):
        Gate(store, POLICY)
