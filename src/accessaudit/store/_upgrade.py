"""The log's schema version, its in-place upgrades, and PostgreSQL's guard against DDL.

A log records which schema it has in ``accessaudit_schema``: one row per version applied,
with when and by which release, never updated. Logs made before that table existed (release
0.1.0) are version 1. ``accessaudit init`` applies each missing upgrade, in order, inside its
one transaction: an upgrade that fails leaves the log as it was.

The DDL guard (PostgreSQL, opt-in: ``init --ddl-guard``) is a pair of database-wide event
triggers. They refuse ``DROP`` of any table named ``accessaudit_events`` or
``accessaudit_schema`` (in any schema, also through ``DROP SCHEMA ... CASCADE``), of their
triggers, indexes and trigger function; every ``ALTER TABLE`` on them (``DISABLE TRIGGER``
and ``RENAME`` included); new or altered triggers and rules on them (a rule could turn an
INSERT into nothing); and replacing the trigger function (one that lets changes through
would disable every trigger at once). With the guard in place, creating a new log in the
database needs a superuser too.
``TRUNCATE`` is already refused by the table's own trigger. Only a superuser who first runs
``SET accessaudit.allow_ddl = 'on'`` in the session gets past it: an application's role and
its migrations cannot, even as the table's owner. Creating event triggers needs a superuser.
"""

from __future__ import annotations

import importlib.metadata
import time
from typing import TYPE_CHECKING, Final

from sqlalchemy import func, insert, inspect, select, text

from accessaudit.exceptions import ConfigurationError
from accessaudit.store._schema import TABLE_NAME, VERSION_TABLE, schema_versions

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy import Connection

#: The schema this release writes and reads. Bumped by each upgrade below, never reused.
SCHEMA_VERSION: Final = 2

#: The index that logs of version 1 had, superseded by ``accessaudit_events_evidence_ref``.
_CHAIN_LED_INDEX: Final = f"{TABLE_NAME}_evidence"


def _to_2(conn: Connection) -> str:
    if _CHAIN_LED_INDEX in {i["name"] for i in inspect(conn).get_indexes(TABLE_NAME)}:
        conn.execute(text(f"DROP INDEX {_CHAIN_LED_INDEX}"))
        return f"version 2: dropped index {_CHAIN_LED_INDEX} (superseded by evidence_ref's)"
    return "version 2: schema version recorded"


#: version -> the step that brings a log from the version before to it. Each runs after
#: ``metadata.create_all`` and the new indexes, inside the same transaction.
UPGRADES: Final[dict[int, Callable[[Connection], str]]] = {2: _to_2}


def _release() -> str:
    try:
        return importlib.metadata.version("accessaudit")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a checkout
        return "unknown"


def schema_version(conn: Connection) -> int | None:
    """The log's schema version: None without a log, 1 for a log older than the marker."""
    inspector = inspect(conn)
    if not inspector.has_table(TABLE_NAME):
        return None
    if not inspector.has_table(VERSION_TABLE):
        return 1
    newest = conn.execute(select(func.max(schema_versions.c.version))).scalar_one()
    return 1 if newest is None else int(newest)


def upgrade(conn: Connection, found: int | None) -> list[str]:
    """Bring a log at version ``found`` (None: just created) to ``SCHEMA_VERSION``.

    Runs inside the caller's transaction, after the tables exist. Refuses a log written by
    a newer release: this one would not know what the newer schema promises.
    """
    if found is not None and found > SCHEMA_VERSION:
        raise ConfigurationError(
            f"this log has schema version {found}, newer than the {SCHEMA_VERSION} this "
            "release of accessaudit knows; upgrade accessaudit instead"
        )
    start = SCHEMA_VERSION if found is None else found
    done = [UPGRADES[version](conn) for version in range(start + 1, SCHEMA_VERSION + 1)]
    recorded = set(conn.execute(select(schema_versions.c.version)).scalars())
    missing = [
        v
        for v in range(start if found is None else start + 1, SCHEMA_VERSION + 1)
        if v not in recorded  # a version table left from a log dropped by hand keeps its rows
    ]
    if missing:
        now_us = time.time_ns() // 1000
        conn.execute(
            insert(schema_versions),
            [{"version": v, "applied_at_us": now_us, "release": _release()} for v in missing],
        )
    return done


# -- PostgreSQL: the DDL guard ----------------------------------------------------------------

DDL_GUARD_TRIGGERS: Final = ("accessaudit_guard_drop", "accessaudit_guard_alter")
#: The guard's function lives in a schema of its own, owned by the superuser who installed
#: it: in the log's schema, ``DROP SCHEMA ... CASCADE`` would drop the function, and with it
#: the event triggers, before they could object.
GUARD_SCHEMA: Final = "accessaudit_guard"

_GUARD_FUNCTION: Final = rf"""
CREATE OR REPLACE FUNCTION {GUARD_SCHEMA}.guard_ddl() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
    item record;
    target oid;
    bypass boolean := coalesce(current_setting('accessaudit.allow_ddl', true), '') = 'on'
        AND (SELECT rolsuper FROM pg_roles WHERE rolname = current_user);
BEGIN
    IF bypass THEN
        RETURN;
    END IF;
    IF TG_EVENT = 'sql_drop' THEN
        FOR item IN SELECT * FROM pg_event_trigger_dropped_objects() LOOP
            IF (item.object_type IN ('table', 'trigger', 'index', 'function')
                AND item.object_identity ~ '(^|[ .])(accessaudit_events|accessaudit_schema)($|_)')
               OR (item.object_type IN ('schema', 'function')
                AND item.object_identity ~ '^{GUARD_SCHEMA}($|[.])')
            THEN
                RAISE EXCEPTION 'accessaudit: % % is part of the audit log and cannot be dropped',
                    item.object_type, item.object_identity
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'leave it out of migrations: see accessaudit.sqlalchemy';
            END IF;
        END LOOP;
    ELSE
        -- A log's tables carry the append-only triggers: found by them, not by name, so a
        -- RENAME is caught too; a trigger or rule is judged by the table it is on.
        FOR item IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
            -- The trigger function: replaced by one that lets changes through, it would
            -- disable every append-only trigger at once.
            IF item.object_type = 'function'
               AND item.object_identity ~ '(^|[.])accessaudit_events_reject_change[(]'
            THEN
                RAISE EXCEPTION 'accessaudit: % of % is refused: it guards the audit log',
                    item.command_tag, item.object_identity
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
            target := CASE item.object_type
                WHEN 'table' THEN item.objid
                WHEN 'trigger' THEN (SELECT tgrelid FROM pg_trigger WHERE oid = item.objid)
                WHEN 'rule' THEN (SELECT ev_class FROM pg_rewrite WHERE oid = item.objid)
            END;
            IF target IS NOT NULL AND EXISTS (
                SELECT FROM pg_trigger
                WHERE tgrelid = target AND tgname LIKE 'accessaudit\_%' AND NOT tgisinternal
            ) THEN
                RAISE EXCEPTION 'accessaudit: % on % is refused: the audit log is append-only',
                    item.command_tag, item.object_identity
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'leave it out of migrations: see accessaudit.sqlalchemy';
            END IF;
        END LOOP;
    END IF;
END
$$"""  # noqa: S608 - only our own constants are spliced in


def ddl_guard_ddl() -> list[str]:
    """Statements (idempotent) installing the guard; they need a superuser."""
    return [
        f"CREATE SCHEMA IF NOT EXISTS {GUARD_SCHEMA}",
        f"REVOKE ALL ON SCHEMA {GUARD_SCHEMA} FROM PUBLIC",
        _GUARD_FUNCTION,
        "DROP EVENT TRIGGER IF EXISTS accessaudit_guard_drop",
        "CREATE EVENT TRIGGER accessaudit_guard_drop ON sql_drop "
        f"EXECUTE FUNCTION {GUARD_SCHEMA}.guard_ddl()",
        "DROP EVENT TRIGGER IF EXISTS accessaudit_guard_alter",
        "CREATE EVENT TRIGGER accessaudit_guard_alter ON ddl_command_end "
        "WHEN TAG IN ('ALTER TABLE', 'CREATE TRIGGER', 'ALTER TRIGGER', 'CREATE RULE', "
        "'CREATE FUNCTION', 'ALTER FUNCTION') "
        f"EXECUTE FUNCTION {GUARD_SCHEMA}.guard_ddl()",
    ]
