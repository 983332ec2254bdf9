"""The database itself refuses to change or remove audit records."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, exc, text
from sqlalchemy.engine import make_url

from accessaudit import AppendOnlyViolation, ConfigurationError, MacKey, SqlStore, verify_store
from accessaudit.store._errors import translated
from tests.strategies import make_event

if TYPE_CHECKING:
    from tests.conftest import Backend


@pytest.mark.parametrize(
    ("statement", "verb"),
    [
        ("UPDATE accessaudit_events SET actor_id = 'someone-else'", "UPDATE"),
        ("DELETE FROM accessaudit_events WHERE seq = 1", "DELETE"),
        ("DELETE FROM accessaudit_events", "DELETE"),
    ],
)
def test_raw_update_and_delete_fail_naming_the_table(
    backend: Backend, store: SqlStore, statement: str, verb: str
) -> None:
    """Raw SQL that would change or remove a record fails with an append-only message."""
    store.append([make_event(), make_event()])
    with pytest.raises(exc.DatabaseError) as caught:
        backend.sql(statement)
    assert f"accessaudit_events is append-only: {verb} is not allowed" in str(caught.value)
    assert store.count() == 2


def test_translated_error_is_append_only_violation(backend: Backend, store: SqlStore) -> None:
    """Through the one translation point, the refusal becomes AppendOnlyViolation."""
    store.append([make_event()])
    with (
        pytest.raises(AppendOnlyViolation, match="accessaudit_events is append-only"),
        translated("editing"),
    ):
        backend.sql("UPDATE accessaudit_events SET seq = 9")


@pytest.mark.postgres
def test_truncate_fails_on_postgres(pg_backend: Backend, key: MacKey) -> None:
    """TRUNCATE, which fires no DELETE trigger, has its own trigger."""
    with SqlStore(pg_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        store.append([make_event()])
        with pytest.raises(exc.DatabaseError, match="append-only: TRUNCATE is not allowed"):
            pg_backend.sql("TRUNCATE accessaudit_events")
        assert store.count() == 1


@pytest.mark.postgres
def test_triggers_fire_even_in_replica_mode(pg_backend: Backend, key: MacKey) -> None:
    """ENABLE ALWAYS: session_replication_role = replica does not switch the guard off."""
    with SqlStore(pg_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        store.append([make_event()])
    with pg_backend.owner.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        with pytest.raises(exc.DatabaseError, match="append-only"):
            conn.execute(text("DELETE FROM accessaudit_events"))


@pytest.mark.postgres
def test_writer_role_may_only_select_and_insert(pg_backend: Backend, key: MacKey) -> None:
    """The writer role appends and reads, but cannot update, delete or truncate, triggers or not."""
    role = f"aa_writer_{uuid.uuid4().hex[:8]}"
    with SqlStore(pg_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        store.grant_writer_role(role)
        store.grant_writer_role(role)  # idempotent
    pg_backend.drop_guards()
    schema = make_url(pg_backend.url).query["options"]
    writer_url = (
        make_url(pg_backend.url)
        .update_query_dict({"options": f"{schema} -crole={role}"})
        .render_as_string(hide_password=False)
    )
    try:
        with SqlStore(writer_url, key=key) as writer:
            assert [r.seq for r in writer.append([make_event(), make_event()])] == [1, 2]
            assert verify_store(writer, key).intact
        engine = create_engine(make_url(writer_url).set(drivername="postgresql+psycopg"))
        for statement in (
            "UPDATE accessaudit_events SET actor_id = 'x'",
            "DELETE FROM accessaudit_events",
            "TRUNCATE accessaudit_events",
        ):
            with (
                pytest.raises(exc.ProgrammingError, match="permission denied"),
                engine.begin() as conn,
            ):
                conn.execute(text(statement))
        engine.dispose()
    finally:
        pg_backend.sql(f"DROP OWNED BY {role}")
        pg_backend.sql(f"DROP ROLE {role}")


def test_writer_role_name_is_checked(backend: Backend, store: SqlStore) -> None:
    """A role name that is not a plain identifier is refused before any SQL runs."""
    expected = "roles exist only on PostgreSQL" if backend.name == "sqlite" else "not a plain"
    with pytest.raises(ConfigurationError, match=expected):
        store.grant_writer_role("x; DROP TABLE accessaudit_events")
