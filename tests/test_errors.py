"""The one translation point maps real driver errors to the right accessaudit errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from accessaudit import (
    AppendOnlyViolation,
    ConfigurationError,
    DuplicateEvent,
    SqlStore,
    StoreError,
    StoreUnavailable,
)
from accessaudit.exceptions import AccessAuditError
from accessaudit.record._rows import to_row
from accessaudit.store._errors import Seen, translated
from tests.strategies import make_event

if TYPE_CHECKING:
    from tests.conftest import Backend


#: The store has worked with the database before: failures are not a wrong URL.
WORKED_BEFORE = Seen(reached=True)


def _raised(
    backend: Backend, statement: str, seen: Seen = WORKED_BEFORE, **params: object
) -> AccessAuditError:
    with pytest.raises(AccessAuditError) as caught, translated("testing", seen):
        backend.sql(statement, **params)
    return caught.value


def test_primary_key_clash_is_duplicate_event(backend: Backend, store: SqlStore) -> None:
    """A second row with a stored event_id is DuplicateEvent."""
    (record,) = store.append([make_event()])
    row = {**to_row(record), "seq": 99}
    names = ", ".join(row)
    error = _raised(
        backend,
        f"INSERT INTO accessaudit_events ({names}) VALUES ({', '.join(':' + n for n in row)})",
        **row,
    )
    assert type(error) is DuplicateEvent


def test_chain_position_clash_is_a_store_error(backend: Backend, store: SqlStore) -> None:
    """A second row at a taken (chain, seq) is refused by the backstop, as a StoreError."""
    (record,) = store.append([make_event()])
    row = {**to_row(record), "event_id": "00000000-0000-7000-8000-000000000001"}
    names = ", ".join(row)
    error = _raised(
        backend,
        f"INSERT INTO accessaudit_events ({names}) VALUES ({', '.join(':' + n for n in row)})",
        **row,
    )
    assert type(error) is StoreError
    assert "refused the change" in str(error)


def test_trigger_refusal_is_append_only_violation(backend: Backend, store: SqlStore) -> None:
    """The append-only triggers' refusal maps to AppendOnlyViolation on both databases."""
    store.append([make_event()])
    error = _raised(backend, "DELETE FROM accessaudit_events")
    assert type(error) is AppendOnlyViolation


def test_missing_table_says_run_init(backend: Backend) -> None:
    """A query on a database without the table points at `accessaudit init`.

    Before the store ever worked with the database, that is a wrong URL (a usage error);
    after, the log has gone from under it (unavailable).
    """
    error = _raised(backend, "SELECT count(*) FROM accessaudit_events", Seen())
    assert type(error) is ConfigurationError
    assert "holds no audit log" in str(error)
    assert "`accessaudit init`" in str(error)
    error = _raised(backend, "SELECT count(*) FROM accessaudit_events")
    assert type(error) is StoreUnavailable
    assert "run `accessaudit init`" in str(error)


def test_other_sql_errors_are_plain_store_errors(backend: Backend, store: SqlStore) -> None:
    """A statement the database rejects for other reasons is a StoreError, not 'unavailable'."""
    error = _raised(backend, "SELECT no_such_function(1)")
    assert type(error) is StoreError


@pytest.mark.postgres
def test_lock_timeout_is_unavailable(pg_backend: Backend) -> None:
    """A statement that gives up waiting for a lock (55P03) is StoreUnavailable."""
    with SqlStore(pg_backend.url, must_exist=False) as store:
        store.create_schema()
    with pg_backend.owner.connect() as holder, holder.begin():
        holder.execute(text("LOCK TABLE accessaudit_events IN ACCESS EXCLUSIVE MODE"))
        with pg_backend.owner.connect() as waiter, waiter.begin():
            waiter.execute(text("SET LOCAL lock_timeout = '50ms'"))
            with pytest.raises(StoreUnavailable), translated("counting"):
                waiter.execute(text("SELECT count(*) FROM accessaudit_events"))


@pytest.mark.postgres
def test_refused_connection_is_unavailable(postgres_url: str) -> None:
    """No server on the port: StoreUnavailable, with the driver's reason."""
    url = make_url(postgres_url).set(drivername="postgresql+psycopg", port=1)
    engine = create_engine(url, connect_args={"connect_timeout": 2})
    try:
        with pytest.raises(StoreUnavailable, match="unavailable"), translated("connecting"):
            engine.connect().close()
    finally:
        engine.dispose()
