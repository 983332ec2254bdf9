"""accessaudit: purpose-gated, append-only, verifiable audit log of access to customer data.

The public API is what ``__all__`` lists; modules starting with ``_`` are internal.
"""

from __future__ import annotations

from accessaudit.events import AccessEvent, StoredEvent
from accessaudit.exceptions import (
    AccessAuditError,
    AppendOnlyViolation,
    CommitOutcomeUnknown,
    ConfigurationError,
    DuplicateEvent,
    FieldProblem,
    InvalidEvent,
    MacKeyError,
    StoreError,
    StoreUnavailable,
)
from accessaudit.fields import RECORD_VERSION, ActorType, Decision, EventType
from accessaudit.findings import ExpectedHead, Finding, FindingCode, VerifyReport
from accessaudit.keys import MacKey, create_key_file, load_key
from accessaudit.store import AuditStore, ChainHead, SqlStore
from accessaudit.verify import verify_store

__all__ = [
    "RECORD_VERSION",
    "AccessAuditError",
    "AccessEvent",
    "ActorType",
    "AppendOnlyViolation",
    "AuditStore",
    "ChainHead",
    "CommitOutcomeUnknown",
    "ConfigurationError",
    "Decision",
    "DuplicateEvent",
    "EventType",
    "ExpectedHead",
    "FieldProblem",
    "Finding",
    "FindingCode",
    "InvalidEvent",
    "MacKey",
    "MacKeyError",
    "SqlStore",
    "StoreError",
    "StoreUnavailable",
    "StoredEvent",
    "VerifyReport",
    "create_key_file",
    "load_key",
    "verify_store",
]
