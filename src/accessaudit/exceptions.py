"""Every error accessaudit raises, under one root.

::

    AccessAuditError
    ├── InvalidEvent            (also ValueError) an event field is missing or wrong
    ├── ConfigurationError      (also ValueError) a URL, option or setting is unusable
    │   └── ExportError         an export directory or manifest cannot be used as asked
    ├── PolicyError             (also ValueError) a policy file or object is invalid
    ├── EvidenceError           (also ValueError) a grant, incident or legal request
    │                           cannot be issued, closed or revoked as asked
    ├── AccessDenied            (also PermissionError) the gate refused an access; the
    │                           refusal is already recorded
    ├── AuditUnavailable        the gate could not record an access in time, so the
    │                           protected code did not run
    ├── MacKeyError             the HMAC key is missing, unreadable or malformed
    ├── IntegrityError          the log fails its checks, so the operation was refused
    └── StoreError              the audit store refused or failed an operation
        ├── StoreUnavailable    could not reach, lock or write the store in time
        │   └── CommitOutcomeUnknown  the connection died during COMMIT: retry to find out
        ├── ChainHalted         (also IntegrityError) the newest record of a chain fails
        │                       its checks, so nothing is appended after it until an
        │                       operator recovers the chain
        ├── AppendOnlyViolation an UPDATE, DELETE or TRUNCATE hit the append-only table
        └── DuplicateEvent      an event id is already in the log

Callers catch ``AccessAuditError``; the CLI turns it into a one-line message and an exit
code. Driver exceptions never leave the store: ``accessaudit.store._errors`` translates
them, always chaining the original with ``raise ... from``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from accessaudit.gate.decisions import AccessDecision
    from accessaudit.record.events import StoredEvent

__all__ = [
    "AccessAuditError",
    "AccessDenied",
    "AppendOnlyViolation",
    "AuditUnavailable",
    "ChainHalted",
    "CommitOutcomeUnknown",
    "ConfigurationError",
    "DuplicateEvent",
    "EvidenceError",
    "ExportError",
    "FieldProblem",
    "IntegrityError",
    "InvalidEvent",
    "MacKeyError",
    "PolicyError",
    "StoreError",
    "StoreUnavailable",
]


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


class ExportError(ConfigurationError):
    """The export cannot be written as asked: an unusable directory or manifest."""


class PolicyError(AccessAuditError, ValueError):
    """A policy is invalid; ``problems`` lists every fault with its key path."""

    def __init__(self, source: str, problems: list[FieldProblem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        listed = "; ".join(str(p) for p in self.problems)
        super().__init__(f"invalid policy {source}: {listed}")


class EvidenceError(AccessAuditError, ValueError):
    """A grant, incident or legal request cannot be created, changed or found as asked."""


class AccessDenied(AccessAuditError, PermissionError):
    """The gate refused an access. The refusal was recorded before this was raised.

    ``reason`` is the stable reason code; ``decision`` the full decision (rule, policy
    version, how to fix); ``record`` the committed ``access.denied`` record, if there is one.
    """

    def __init__(
        self, message: str, *, decision: AccessDecision, record: StoredEvent | None = None
    ) -> None:
        super().__init__(message)
        self.decision = decision
        self.reason = decision.reason
        self.record = record


class AuditUnavailable(AccessAuditError):
    """The gate could not commit the access record within its timeout: the access did not happen.

    The protected function's body was not run (or, when the outcome could not be recorded,
    its result was withheld). The underlying store error is chained as ``__cause__``.
    """


class IntegrityError(AccessAuditError):
    """Records fail their integrity checks, so an operation on them (an export) was refused."""


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


class ChainHalted(StoreError, IntegrityError):
    """The newest record of a chain fails its checks: appends to the chain are refused.

    Sealing new records after a forged or damaged record would carry on from something the
    key never sealed, so the store stops (fail closed). ``chain_id``, ``seq`` and ``code``
    (the ``FindingCode`` value ``accessaudit verify`` reports for that record) say where
    and what; the way out that keeps the evidence is ``accessaudit recover`` (see the
    README, "Recovering from a forged or corrupted newest record"). A ``StoreError``, so the
    gate fails closed with ``AuditUnavailable``; an ``IntegrityError``, so the CLI exits 1.
    """

    def __init__(
        self, message: str, *, chain_id: str = "", seq: int | None = None, code: str = ""
    ) -> None:
        super().__init__(message)
        self.chain_id, self.seq, self.code = chain_id, seq, code


class AppendOnlyViolation(StoreError):
    """Something tried to change or remove audit records, which the database forbids."""


class DuplicateEvent(StoreError):
    """An event with the same ``event_id`` is already recorded; the whole batch was refused."""
