"""The one place where driver and SQLAlchemy errors become accessaudit errors.

Only the driver's own first line goes into the message: SQLAlchemy's full text would repeat
the statement's parameters, and the message must say what failed, not echo the record.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import exc as sa_exc

from accessaudit.exceptions import (
    AccessAuditError,
    AppendOnlyViolation,
    DuplicateEvent,
    StoreError,
    StoreUnavailable,
)
from accessaudit.store._schema import APPEND_ONLY_MESSAGE, TABLE_NAME

if TYPE_CHECKING:
    from collections.abc import Iterator

_MISSING_TABLE = ("no such table", "does not exist")
_UNAVAILABLE = (
    "unable to open",
    "locked",
    "busy",
    "timeout",
    "timed out",
    "canceling statement",
    "could not obtain lock",
    "readonly",
    "read-only",
    "disk",
    "full",
    "permission denied",
    "connection",
    "server closed",
    "terminat",
    "i/o error",
)


def _driver_line(error: BaseException) -> str:
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    return lines[0] if lines else type(original).__name__


def classify(error: sa_exc.SQLAlchemyError, doing: str) -> StoreError:
    """The accessaudit error for a failure that happened while ``doing`` something."""
    reason = _driver_line(error)
    lowered = reason.lower()
    if APPEND_ONLY_MESSAGE in reason:
        return AppendOnlyViolation(f"{reason}; audit records can only be appended")
    if isinstance(error, sa_exc.IntegrityError):
        if "event_id" in lowered or f"{TABLE_NAME}_pkey" in lowered:
            return DuplicateEvent(
                f"{doing}: an event with the same event_id is already recorded; nothing "
                "of this batch was stored. Give each event a new id (the default)."
            )
        return StoreError(f"{doing}: the database refused the records: {reason}")
    if any(marker in lowered for marker in _MISSING_TABLE) and TABLE_NAME in lowered:
        return StoreUnavailable(
            f"{doing}: the audit table {TABLE_NAME} does not exist; run `accessaudit init`"
        )
    if isinstance(error, sa_exc.TimeoutError) or any(m in lowered for m in _UNAVAILABLE):
        return StoreUnavailable(f"{doing}: the audit store is unavailable: {reason}")
    if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
        return StoreUnavailable(f"{doing}: the audit store is unavailable: {reason}")
    return StoreError(f"{doing}: {reason}")


@contextmanager
def translated(doing: str) -> Iterator[None]:
    """Run a block, turning any database failure into an ``AccessAuditError``."""
    try:
        yield
    except AccessAuditError:
        raise
    except sa_exc.SQLAlchemyError as e:
        raise classify(e, doing) from e
