"""The events table, derived from ``EVENT_FIELDS``, and the dialect DDL that makes it append-only.

Every column has a plain, portable type (text, 64-bit integers) so that SQLite and PostgreSQL
hand back exactly what was written and the verifier can rebuild the hashed values from it.
Lists and attribute maps are stored as compact JSON text, not ``jsonb``: ``jsonb`` would
reorder keys and the verifier should see what was written.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
)

from accessaudit.exceptions import ConfigurationError
from accessaudit.record._rows import column_name
from accessaudit.record.fields import EVENT_FIELDS, Kind

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sqlalchemy.types import TypeEngine

TABLE_NAME: Final = "accessaudit_events"
metadata = MetaData()

_COLUMN_TYPES: Final[dict[Kind, TypeEngine[Any]]] = {
    Kind.UUID: String(36),
    Kind.TIME: BigInteger(),
    Kind.TEXT: Text(),
    Kind.INT: BigInteger(),
    Kind.BOOL: SmallInteger(),
    Kind.TEXT_LIST: Text(),
    Kind.ATTRIBUTES: Text(),
}
_ALWAYS_PRESENT: Final = {Kind.UUID, Kind.TIME, Kind.BOOL, Kind.TEXT_LIST, Kind.ATTRIBUTES}


events = Table(
    TABLE_NAME,
    metadata,
    Column("chain_id", String(64), nullable=False),
    Column("seq", BigInteger(), nullable=False),
    Column("record_version", SmallInteger(), nullable=False),
    *(
        Column(
            column_name(spec.name),
            _COLUMN_TYPES[spec.kind],
            nullable=not (spec.required or spec.kind in _ALWAYS_PRESENT),
        )
        for spec in EVENT_FIELDS
    ),
    Column("leaf_hash", String(64), nullable=False),
    Column("chain_hash", String(64), nullable=False),
    Column("mac", String(64), nullable=False),
    Column("mac_key_id", String(16), nullable=False),
    PrimaryKeyConstraint("event_id", name=f"{TABLE_NAME}_pkey"),
    # The backstop against a forked chain: whatever the locking does, the database itself
    # refuses a second record at the same position. A separate index (not a table
    # constraint) so that tamper tests can drop it the way an owner could.
    Index(f"{TABLE_NAME}_chain_seq", "chain_id", "seq", unique=True),
    # The gate looks up a grant, incident or legal request by reference on every access,
    # on every chain (shards): led by the reference. (Logs made before shards also keep
    # their (chain_id, evidence_ref, event_type) index; `accessaudit init` adds this one.)
    Index(f"{TABLE_NAME}_evidence_ref", "evidence_ref", "event_type"),
)

#: Which schema versions the log went through: one row per upgrade, never changed.
VERSION_TABLE: Final = "accessaudit_schema"
schema_versions = Table(
    VERSION_TABLE,
    metadata,
    Column("version", Integer(), nullable=False),
    Column("applied_at_us", BigInteger(), nullable=False),
    Column("release", Text(), nullable=False),
    PrimaryKeyConstraint("version", name=f"{VERSION_TABLE}_pkey"),
)
#: Every table of a log, for tools that must leave them alone (Alembic's include_object).
AUDIT_TABLES: Final = frozenset({TABLE_NAME, VERSION_TABLE})

APPEND_ONLY_MESSAGE: Final = f"{TABLE_NAME} is append-only"

# SQLite: anyone who can write the file can drop these; they stop mistakes, not owners.
SQLITE_TRIGGERS: Final = {
    f"{table}_no_{op.lower()}": (
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {op} is not allowed'); END"
    )
    for table in (TABLE_NAME, VERSION_TABLE)
    for op in ("UPDATE", "DELETE")
}

# PostgreSQL: row triggers cover UPDATE/DELETE, a statement trigger covers TRUNCATE (which
# fires no DELETE triggers). ENABLE ALWAYS keeps them firing even under
# session_replication_role = replica. The owner can still disable or drop them.
_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {TABLE_NAME}_reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'audit records can only be appended';
END
$$"""
POSTGRES_TRIGGERS: Final = {
    "no_update_delete": "BEFORE UPDATE OR DELETE ON {t} FOR EACH ROW",
    "no_truncate": "BEFORE TRUNCATE ON {t} FOR EACH STATEMENT",
}


def postgres_trigger_ddl(
    *, have_function: bool = False, triggers: Mapping[str, str] | None = None
) -> list[str]:
    """Statements creating the append-only triggers (PostgreSQL 14+), less what exists.

    On both tables: the version table's history is append-only too, and its triggers are
    how PostgreSQL's DDL guard recognises a log's table under any name. ``triggers`` maps
    the names present to ``pg_trigger.tgenabled``: nothing that is already in place is
    created or altered again, so re-running init needs no more rights than the log's owner
    has, and passes a DDL guard.
    """
    present = triggers or {}
    ddl = [] if have_function else [_PG_FUNCTION]
    for table in (TABLE_NAME, VERSION_TABLE):
        for suffix, when in POSTGRES_TRIGGERS.items():
            name = f"{table}_{suffix}"
            if name not in present:
                ddl.append(
                    f"CREATE TRIGGER {name} {when.format(t=table)} "
                    f"EXECUTE FUNCTION {TABLE_NAME}_reject_change()"
                )
            if present.get(name) != "A":  # "A": fires always, even for replicas
                ddl.append(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {name}")
    return ddl


_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_role_name(role: str) -> None:
    """Refuse a role name that is not a plain identifier (it is spliced into DDL)."""
    if not _ROLE_NAME.fullmatch(role):
        raise ConfigurationError(
            f"role name {role!r} is not a plain lower-case SQL identifier "
            "(letters, digits, underscore; at most 63 characters)"
        )


def writer_role_ddl(role: str, schema: str) -> list[str]:
    """Statements creating (if absent) a NOLOGIN role that may only SELECT and INSERT."""
    check_role_name(role)
    quoted_schema = '"' + schema.replace('"', '""') + '"'
    return [
        "DO $$ BEGIN "
        f"IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') "
        f"THEN CREATE ROLE {role} NOLOGIN; END IF; END $$",
        f"GRANT USAGE ON SCHEMA {quoted_schema} TO {role}",
        f"REVOKE ALL ON {TABLE_NAME} FROM {role}",
        f"GRANT SELECT, INSERT ON {TABLE_NAME} TO {role}",
        # The schema version is read (doctor, verify), never written, by the writer.
        f"REVOKE ALL ON {VERSION_TABLE} FROM {role}",
        f"GRANT SELECT ON {VERSION_TABLE} TO {role}",
    ]
