"""What the database says about a log's safety: the facts ``accessaudit doctor`` judges.

Read-only catalog queries, one dialect each, gathered into ``HealthFacts``; the judging
(what is wrong, and how to fix it) is ``accessaudit.review.doctor``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import text

from accessaudit.store._schema import POSTGRES_TRIGGERS, SQLITE_TRIGGERS, TABLE_NAME, VERSION_TABLE
from accessaudit.store._upgrade import DDL_GUARD_TRIGGERS, schema_version

if TYPE_CHECKING:
    from sqlalchemy import Connection


@dataclass(frozen=True, slots=True)
class HealthFacts:
    """Settings and catalog entries that decide whether records are durable and append-only."""

    dialect: str
    schema_version: int | None
    settings: dict[str, str] = field(default_factory=dict)
    """SQLite: journal_mode. PostgreSQL: fsync, full_page_writes, synchronous_commit."""
    triggers: dict[str, str] = field(default_factory=dict)
    """Append-only trigger name -> how it fires (PostgreSQL: A = always)."""
    expected_triggers: tuple[str, ...] = ()
    privileges: tuple[str, ...] = ()
    """What the connecting role may do to the events table beyond SELECT and INSERT."""
    role: str | None = None
    superuser: bool = False
    owner: bool = False
    ddl_guard: bool = False


def gather(conn: Connection, *, is_sqlite: bool) -> HealthFacts:
    """The facts, read on ``conn`` (no transaction left open)."""
    version = schema_version(conn)
    if is_sqlite:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()
        names = {
            row[0]
            for row in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        }
        conn.rollback()
        return HealthFacts(
            "sqlite",
            version,
            {"journal_mode": str(mode)},
            {name: "present" for name in names if name in SQLITE_TRIGGERS},
            tuple(SQLITE_TRIGGERS),
        )
    settings = {
        name: str(conn.execute(text(f"SHOW {name}")).scalar_one())
        for name in ("fsync", "full_page_writes", "synchronous_commit")
    }
    expected = tuple(
        f"{t}_{suffix}" for t in (TABLE_NAME, VERSION_TABLE) for suffix in POSTGRES_TRIGGERS
    )
    triggers: dict[str, str] = {}
    privileges: tuple[str, ...] = ()
    owner = False
    if version is not None:
        triggers = {
            str(name): str(enabled)
            for name, enabled in conn.execute(
                text(
                    "SELECT tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal AND tgrelid "
                    "IN (to_regclass(:e), to_regclass(:v))"
                ),
                {"e": TABLE_NAME, "v": VERSION_TABLE},
            )
        }
        privileges = tuple(
            privilege
            for privilege in ("UPDATE", "DELETE", "TRUNCATE", "TRIGGER", "REFERENCES")
            if conn.execute(
                text("SELECT has_table_privilege(current_user, to_regclass(:t), :p)"),
                {"t": TABLE_NAME, "p": privilege},
            ).scalar_one()
        )
        owner = bool(
            conn.execute(
                text(
                    "SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class c "
                    "WHERE c.oid = to_regclass(:t)"
                ),
                {"t": TABLE_NAME},
            ).scalar_one()
        )
    role, superuser = conn.execute(
        text("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")
    ).one()
    guard = {
        row[0]
        for row in conn.execute(
            text("SELECT evtname FROM pg_event_trigger WHERE evtenabled <> 'D'")
        )
    }
    conn.rollback()
    return HealthFacts(
        "postgresql",
        version,
        settings,
        triggers,
        expected,
        privileges,
        str(role),
        bool(superuser),
        owner,
        set(DDL_GUARD_TRIGGERS) <= guard,
    )
