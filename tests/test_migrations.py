"""The log and the app's migrations: schema version, in-place upgrade, Alembic, DDL guard."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from accessaudit import ConfigurationError, SqlStore, access_context, verify_store
from accessaudit.sqlalchemy import AUDIT_TABLES, audit_metadata, include_object
from accessaudit.store import SCHEMA_VERSION
from tests.gatekit import Desk, service
from tests.ormapp import make_models

if TYPE_CHECKING:
    from collections.abc import Iterator

    from accessaudit import Gate, MacKey
    from tests.conftest import Backend

#: The evidence index of logs made before shards (chain first), superseded in version 2.
CHAIN_LED_INDEX = "accessaudit_events_evidence"


def _gated_reads(gate: Gate, n: int = 3) -> None:
    desk = Desk(gate)
    with access_context(service()):
        for _ in range(n):
            desk.invoices("acme")


def test_a_new_log_records_its_schema_version(store: SqlStore) -> None:
    """A new log starts at the current version; both of its tables are the log's."""
    assert store.schema_version() == SCHEMA_VERSION
    assert {"accessaudit_events", "accessaudit_schema"} == AUDIT_TABLES


@pytest.mark.parametrize("made_by", ["release 0.1.0", "before shards"])
def test_init_upgrades_an_older_log_in_place(
    backend: Backend, store: SqlStore, gate: Gate, key: MacKey, made_by: str
) -> None:
    """A log of version 1 keeps every record, gains the marker and the current indexes."""
    _gated_reads(gate)
    # Turn the log into what the release made: no version marker; before shards also the
    # chain-led evidence index instead of the reference-led one.
    backend.sql("DROP TABLE accessaudit_schema")
    if made_by == "before shards":
        backend.sql("DROP INDEX accessaudit_events_evidence_ref")
        backend.sql(
            f"CREATE INDEX {CHAIN_LED_INDEX} ON accessaudit_events (chain_id, evidence_ref, "
            "event_type)"
        )
    assert store.schema_version() == 1
    before = [r.event for r in store.read()]

    with SqlStore(backend.url, key=key) as again:
        lines = again.create_schema()
        assert again.schema_version() == SCHEMA_VERSION
        assert [r.event for r in again.read()] == before
        indexes = {i["name"] for i in inspect(backend.owner).get_indexes("accessaudit_events")}
        assert "accessaudit_events_evidence_ref" in indexes
        assert CHAIN_LED_INDEX not in indexes
        assert verify_store(again).intact
        assert again.create_schema() == []  # a second run changes nothing
    if made_by == "before shards":
        assert any("dropped index accessaudit_events_evidence" in line for line in lines)
        assert "index accessaudit_events_evidence_ref" in lines
    assert any(line.startswith("version 2") for line in lines)
    _gated_reads(gate, 1)  # the gate writes on as before


def test_a_log_from_a_newer_release_is_refused_and_left_alone(
    backend: Backend, store: SqlStore
) -> None:
    """Version 3 is unknown to this release: init stops, naming the versions."""
    backend.sql(
        "INSERT INTO accessaudit_schema (version, applied_at_us, release) VALUES (3, 0, '9.9')"
    )
    with pytest.raises(ConfigurationError, match="schema version 3, newer than the 2"):
        store.create_schema()
    assert store.schema_version() == 3


def test_a_failed_upgrade_leaves_the_log_as_it_was(
    backend: Backend, store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All or nothing: an upgrade step that fails rolls back the marker and the indexes."""
    from accessaudit.store import _upgrade

    backend.sql("DROP TABLE accessaudit_schema")
    backend.sql("DROP INDEX accessaudit_events_evidence_ref")

    def broken(conn: object) -> str:
        raise RuntimeError("upgrade step failed")

    monkeypatch.setitem(_upgrade.UPGRADES, 2, broken)
    with pytest.raises(RuntimeError, match="upgrade step failed"):
        store.create_schema()
    tables = set(inspect(backend.owner).get_table_names())
    assert "accessaudit_schema" not in tables
    indexes = {i["name"] for i in inspect(backend.owner).get_indexes("accessaudit_events")}
    assert "accessaudit_events_evidence_ref" not in indexes
    assert store.schema_version() == 1


# -- Alembic --------------------------------------------------------------------------------


def _autogenerate(backend: Backend, hook: object) -> list[object]:
    """What Alembic's autogenerate would propose for the app's models in the log's database."""
    models = make_models()
    url = make_url(backend.url)
    if url.drivername.startswith("postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            options = {} if hook is None else {"include_object": hook}
            context = MigrationContext.configure(conn, opts=options)
            return list(compare_metadata(context, models.metadata))
    finally:
        engine.dispose()


def _dropped_tables(diffs: list[object]) -> set[str]:
    return {d[1].name for d in diffs if isinstance(d, tuple) and d[0] == "remove_table"}


def test_alembic_autogenerate_leaves_the_log_alone_with_include_object(
    backend: Backend, store: SqlStore
) -> None:
    """Without the hook autogenerate drops the log's tables; with it, it never names them."""
    assert _dropped_tables(_autogenerate(backend, None)) >= AUDIT_TABLES
    diffs = _autogenerate(backend, include_object)
    assert not any("accessaudit" in repr(d) for d in diffs)
    assert {t.name for t in audit_metadata.sorted_tables} == AUDIT_TABLES


# -- PostgreSQL: the DDL guard ----------------------------------------------------------------


@pytest.fixture
def guarded_pg(pg_backend: Backend, key: MacKey) -> Iterator[tuple[Backend, str]]:
    """A log owned by a plain (non-superuser) app role, under the DDL guard; removed after.

    The guard's event triggers are database-wide, so they are dropped again whatever happens.
    """
    role = f"aa_app_{uuid.uuid4().hex[:10]}"
    schema = pg_backend.sql("SELECT current_schema()")[0][0]
    with SqlStore(pg_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
    pg_backend.sql(f"CREATE ROLE {role} NOLOGIN")
    pg_backend.sql(f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {role}")
    pg_backend.sql(f"ALTER TABLE accessaudit_events OWNER TO {role}")
    pg_backend.sql(f"ALTER TABLE accessaudit_schema OWNER TO {role}")
    pg_backend.sql(f"ALTER FUNCTION accessaudit_events_reject_change() OWNER TO {role}")
    try:
        with SqlStore(pg_backend.url, key=key) as store:
            lines = store.create_schema(ddl_guard=True)
        assert "event trigger accessaudit_guard_drop" in lines
        yield pg_backend, role
    finally:
        pg_backend.sql("DROP EVENT TRIGGER IF EXISTS accessaudit_guard_drop")
        pg_backend.sql("DROP EVENT TRIGGER IF EXISTS accessaudit_guard_alter")
        pg_backend.sql("ALTER TABLE accessaudit_events OWNER TO CURRENT_USER")
        pg_backend.sql("ALTER TABLE accessaudit_schema OWNER TO CURRENT_USER")
        pg_backend.sql("ALTER FUNCTION accessaudit_events_reject_change() OWNER TO CURRENT_USER")
        pg_backend.sql(f"REVOKE ALL ON SCHEMA {schema} FROM {role}")
        pg_backend.sql(f"DROP ROLE {role}")


@pytest.mark.postgres
@pytest.mark.parametrize(
    "ddl",
    [
        "DROP TABLE accessaudit_events",
        "DROP TABLE accessaudit_events CASCADE",
        "ALTER TABLE accessaudit_events DISABLE TRIGGER ALL",
        "ALTER TABLE accessaudit_events DROP COLUMN mac",
        "ALTER TABLE accessaudit_events RENAME TO old_events",
        "DROP TRIGGER accessaudit_events_no_update_delete ON accessaudit_events",
        "DROP INDEX accessaudit_events_chain_seq",
        "DROP TABLE accessaudit_schema",
        "TRUNCATE accessaudit_events",
        "CREATE RULE keep_nothing AS ON INSERT TO accessaudit_events DO INSTEAD NOTHING",
        "CREATE OR REPLACE TRIGGER accessaudit_events_no_update_delete BEFORE UPDATE "
        "ON accessaudit_events FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
        "CREATE OR REPLACE FUNCTION accessaudit_events_reject_change() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$",
        "DROP FUNCTION accessaudit_events_reject_change() CASCADE",
    ],
)
def test_the_ddl_guard_refuses_the_app_role_even_as_owner(
    guarded_pg: tuple[Backend, str], ddl: str
) -> None:
    """The table's owner (not a superuser) cannot drop, alter or truncate the log."""
    backend, role = guarded_pg
    with pytest.raises(DBAPIError, match=r"accessaudit: |is append-only") as caught:
        backend.sql(f"SET LOCAL ROLE {role}; SET LOCAL accessaudit.allow_ddl = 'on'; {ddl}")
    assert type(caught.value.orig).__name__ == "InsufficientPrivilege"
    assert "accessaudit_events" in set(inspect(backend.owner).get_table_names())


@pytest.mark.postgres
def test_the_ddl_guard_stops_a_superuser_migration_too_unless_asked(
    guarded_pg: tuple[Backend, str],
) -> None:
    """A superuser's migration is refused; with the session's explicit bypass it goes through."""
    backend, _ = guarded_pg
    schema = backend.sql("SELECT current_schema()")[0][0]
    with pytest.raises(DBAPIError, match="part of the audit log"):
        backend.sql(f"DROP SCHEMA {schema} CASCADE")
    bypass = "SET LOCAL accessaudit.allow_ddl = 'on'; ALTER TABLE accessaudit_events"
    backend.sql(f"{bypass} DISABLE TRIGGER ALL")
    for trigger in ("accessaudit_events_no_update_delete", "accessaudit_events_no_truncate"):
        backend.sql(f"{bypass} ENABLE ALWAYS TRIGGER {trigger}")
    with pytest.raises(DBAPIError, match="part of the audit log"):
        backend.sql("DROP TABLE accessaudit_events")  # the bypass ended with its transaction


@pytest.mark.postgres
def test_init_runs_again_on_a_guarded_log_without_a_superuser(
    guarded_pg: tuple[Backend, str], key: MacKey
) -> None:
    """Re-running init (as the app role) skips ALTERs already in effect; the guard stays."""
    backend, role = guarded_pg
    url = make_url(backend.url)
    options = url.query["options"]
    as_app = url.update_query_dict({"options": f"{options} -crole={role}"}).render_as_string(False)
    with SqlStore(as_app, key=key) as store:
        assert store.create_schema() == []
        with pytest.raises(ConfigurationError, match="needs a superuser"):
            store.create_schema(ddl_guard=True)


def test_the_ddl_guard_is_refused_on_sqlite(sqlite_backend: Backend, key: MacKey) -> None:
    """SQLite has no event triggers: asking for the guard says so instead of pretending."""
    store = SqlStore(sqlite_backend.url, key=key, must_exist=False)
    with store, pytest.raises(ConfigurationError, match="PostgreSQL's"):
        store.create_schema(ddl_guard=True)
