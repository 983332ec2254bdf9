"""The one place where driver and SQLAlchemy errors become accessaudit errors.

Errors are classified by the driver's machine-readable code (PostgreSQL SQLSTATE, SQLite
extended error name), not by message text, which a server may translate. Only the driver's
own first line goes into the message: SQLAlchemy's full text would repeat the statement's
parameters, and the message must say what failed, not echo the record.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import exc as sa_exc

from accessaudit.exceptions import (
    AccessAuditError,
    AppendOnlyViolation,
    ConfigurationError,
    DuplicateEvent,
    StoreError,
    StoreUnavailable,
)
from accessaudit.store._schema import APPEND_ONLY_MESSAGE, TABLE_NAME

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

# PostgreSQL SQLSTATE classes and codes meaning "cannot record now": connection problems
# (08), resources (53: disk full, out of memory, too many connections), operator
# intervention (57: shutdown, query cancelled by a timeout), lock not available, read-only.
_PG_UNAVAILABLE_CLASSES = ("08", "53", "57", "58")
_PG_UNAVAILABLE_CODES = {"55P03", "55006", "25006", "40001", "40P01", "42501"}
_SQLITE_UNAVAILABLE = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_READONLY",
    "SQLITE_FULL",
    "SQLITE_IOERR",
    "SQLITE_CANTOPEN",
    "SQLITE_PROTOCOL",
    "SQLITE_NOMEM",
    "SQLITE_PERM",
    "SQLITE_AUTH",
    "SQLITE_NOTADB",
    "SQLITE_CORRUPT",
)


def _driver_line(error: BaseException) -> str:
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    return lines[0][:300] if lines else type(original).__name__


def _codes(error: sa_exc.SQLAlchemyError) -> tuple[str, str]:
    """(SQLSTATE or SQLite error name, constraint name): empty strings when unknown."""
    original = getattr(error, "orig", None)
    code = getattr(original, "sqlstate", None) or getattr(original, "sqlite_errorname", None)
    diag = getattr(original, "diag", None)
    constraint = getattr(diag, "constraint_name", None) if diag is not None else None
    return code or "", constraint or ""


def _is_duplicate_id(code: str, constraint: str, reason: str) -> bool:
    if code == "23505":
        return constraint == f"{TABLE_NAME}_pkey"
    # SQLite names the columns: "UNIQUE constraint failed: accessaudit_events.event_id".
    return code.startswith("SQLITE_CONSTRAINT") and reason.endswith(f"{TABLE_NAME}.event_id")


@dataclass(frozen=True, slots=True)
class Seen:
    """What the store knows that the driver's error does not.

    ``reached``: an operation of the store has worked on this database before, so a database
    that does not exist now, or is no log, has vanished or been damaged (dropped, renamed,
    overwritten) rather than being a mistake in the URL, which is a usage error.
    ``sqlite_file``: the SQLite file a log that must exist is kept in.
    """

    reached: bool = False
    sqlite_file: Path | None = None
    database_file: Path | None = None
    """The SQLite file the URL names (a log that must exist or not)."""


_NOTHING_SEEN = Seen()
_MISSING_DATABASE = ('FATAL:  database "', "does not exist")


def _bad_connection_settings(error: sa_exc.SQLAlchemyError, code: str, reason: str) -> bool:
    """The driver refused the URL's settings before any server answered (libpq's own text)."""
    if code or not isinstance(error, sa_exc.ProgrammingError | sa_exc.OperationalError):
        return False
    return reason.startswith(("invalid connection option", "connection is bad: invalid")) or (
        _MISSING_DATABASE[0] in reason and reason.endswith(_MISSING_DATABASE[1])
    )


def _vanished(code: str, reason: str, seen: Seen) -> str | None:
    """Why the log the store was using is gone, if that is what the error says."""
    if seen.reached and _MISSING_DATABASE[0] in reason and reason.endswith(_MISSING_DATABASE[1]):
        return (
            "the database no longer exists (it did when this store first connected: dropped "
            f"or renamed?): {reason}"
        )
    file = seen.sqlite_file
    if file is not None and code.startswith("SQLITE_CANTOPEN") and not file.exists():
        return (
            f"the SQLite database {seen.sqlite_file} does not exist (moved or deleted?); "
            "an empty log is not created in its place: put the file back, or pass the right --db"
        )
    return None


def _not_a_log(code: str, reason: str, seen: Seen) -> str | None:
    """Why the URL, before the store ever worked with it, cannot name an audit log."""
    if seen.reached:
        return None  # it was a log a moment ago: unavailable or damaged, not a usage error
    file = seen.database_file
    if code.startswith("SQLITE_NOTADB"):
        return f"{file} is not an SQLite database: check --db ({reason})"
    if code.startswith("SQLITE_CANTOPEN") and file is not None and not file.parent.is_dir():
        return f"the directory {file.parent} does not exist: create it, or check --db"
    if code == "42P01" or reason.startswith(f"no such table: {TABLE_NAME}"):
        return (
            f"the database holds no audit log (no table {TABLE_NAME}): check --db, or create "
            "one with `accessaudit init`"
        )
    return None


def classify(
    error: sa_exc.SQLAlchemyError, doing: str, seen: Seen = _NOTHING_SEEN
) -> AccessAuditError:
    """The accessaudit error for a failure that happened while ``doing`` something."""
    reason = _driver_line(error)
    code, constraint = _codes(error)
    vanished = _vanished(code, reason, seen)
    if vanished is not None:
        return StoreUnavailable(f"{doing}: {vanished}")
    if _bad_connection_settings(error, code, reason):
        return ConfigurationError(f"{doing}: the database URL does not work: {reason}")
    if APPEND_ONLY_MESSAGE in reason:  # our own triggers' message, both databases
        return AppendOnlyViolation(f"{reason}; audit records can only be appended")
    if _is_duplicate_id(code, constraint, reason):
        return DuplicateEvent(
            f"{doing}: an event_id of this batch is already recorded, but not this whole batch "
            "as given; nothing of it was stored. Give each event a new id (the default)."
        )
    wrong_url = _not_a_log(code, reason, seen)
    if wrong_url is not None:
        return ConfigurationError(f"{doing}: {wrong_url}")
    if code == "42P01" or reason.startswith(f"no such table: {TABLE_NAME}"):
        return StoreUnavailable(
            f"{doing}: the audit table {TABLE_NAME} does not exist; run `accessaudit init`"
        )
    if code == "42703" or "no such column" in reason or "has no column named" in reason:
        return StoreError(
            f"{doing}: the audit table does not have the columns this version expects "
            f"({reason}); was it altered by hand?"
        )
    unavailable = (
        code[:2] in _PG_UNAVAILABLE_CLASSES
        or code in _PG_UNAVAILABLE_CODES
        or code.startswith(_SQLITE_UNAVAILABLE)
        or isinstance(error, sa_exc.TimeoutError | sa_exc.DisconnectionError)
        or getattr(error, "connection_invalidated", False)
    )
    if unavailable:
        return StoreUnavailable(f"{doing}: the audit store is unavailable: {reason}")
    if isinstance(error, sa_exc.IntegrityError):
        return StoreError(f"{doing}: the database refused the change: {reason}")
    if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError) and not code:
        # No code at all: the driver failed before talking to the server (connect errors).
        return StoreUnavailable(f"{doing}: the audit store is unavailable: {reason}")
    return StoreError(f"{doing}: {reason}")


@contextmanager
def translated(doing: str, seen: Seen = _NOTHING_SEEN) -> Iterator[None]:
    """Run a block, turning any database failure into an ``AccessAuditError``."""
    try:
        yield
    except AccessAuditError:
        raise
    except sa_exc.SQLAlchemyError as e:
        raise classify(e, doing, seen) from e
