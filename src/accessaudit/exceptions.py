"""Every error accessaudit raises, under one root.

::

    AccessAuditError
    ├── InvalidEvent            (also ValueError) an event field is missing or wrong
    ├── ConfigurationError      (also ValueError) a URL, option or setting is unusable
    ├── MacKeyError             the HMAC key is missing, unreadable or malformed
    └── StoreError              the audit store refused or failed an operation
        ├── StoreUnavailable    could not reach, lock or write the store in time
        │   └── CommitOutcomeUnknown  the connection died during COMMIT: retry to find out
        ├── AppendOnlyViolation an UPDATE, DELETE or TRUNCATE hit the append-only table
        └── DuplicateEvent      an event id is already in the log

Callers catch ``AccessAuditError``; the CLI turns it into a one-line message and an exit
code. Driver exceptions never leave the store: ``accessaudit.store._errors`` translates
them, always chaining the original with ``raise ... from``.
"""

from __future__ import annotations

from dataclasses import dataclass


class AccessAuditError(Exception):
    """Root of every error raised by accessaudit."""


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One thing wrong with one field of an event: where, what, and how to fix it."""

    field: str
    problem: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.field}: {self.problem}"
        return f"{text} ({self.hint})" if self.hint else text


class InvalidEvent(AccessAuditError, ValueError):
    """An event was rejected before anything was written; ``problems`` lists every fault."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = tuple(problems)
        listed = "; ".join(str(p) for p in self.problems)
        super().__init__(f"invalid audit event: {listed}")


class ConfigurationError(AccessAuditError, ValueError):
    """A database URL, option or setting cannot be used as given."""


class MacKeyError(AccessAuditError):
    """The HMAC key is missing, unreadable, too permissive or malformed."""


class StoreError(AccessAuditError):
    """The audit store refused or failed an operation."""


class StoreUnavailable(StoreError):
    """The store could not be reached, locked or written within the configured timeout.

    Nothing was recorded (except for ``CommitOutcomeUnknown``, which says why it cannot
    tell). Callers that gate data access must treat this as "deny".
    """


class CommitOutcomeUnknown(StoreUnavailable):
    """The connection failed while COMMIT was under way: the batch may or may not be stored.

    Appending the same batch again is safe: if it was stored, ``append`` returns the stored
    records; if not, it stores it now. Either way it is never stored twice.
    """


class AppendOnlyViolation(StoreError):
    """Something tried to change or remove audit records, which the database forbids."""


class DuplicateEvent(StoreError):
    """An event with the same ``event_id`` is already recorded; the whole batch was refused."""
