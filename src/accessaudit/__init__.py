"""accessaudit: purpose-gated, append-only, verifiable audit log of access to customer data.

The public API is what ``__all__`` lists; modules starting with ``_`` are internal. The
package is in layers, each importing only from those before it (ARCHITECTURE.md has the
map): ``record`` (the record, its encoding, integrity and key), ``store`` (SQLite and
PostgreSQL), ``gate`` (context, policy, evidence, the decorator), ``review`` (verify,
reports, export, recovery) and ``cli``.
"""

from __future__ import annotations

from accessaudit import _moved

_moved.install()  # the modules of the flat layout still import, with a DeprecationWarning

# ruff: noqa: E402 - the finder above is installed before anything else is imported
from accessaudit.exceptions import (
    AccessAuditError,
    AccessDenied,
    AppendOnlyViolation,
    AuditUnavailable,
    ChainHalted,
    CommitOutcomeUnknown,
    ConfigurationError,
    DuplicateEvent,
    EvidenceError,
    ExportError,
    FieldProblem,
    IntegrityError,
    InvalidEvent,
    MacKeyError,
    PolicyError,
    StoreError,
    StoreUnavailable,
)
from accessaudit.gate import Gate, Guard
from accessaudit.gate.context import (
    AccessContext,
    ContextScope,
    access_context,
    carry_context,
    current_context,
)
from accessaudit.gate.decisions import AccessDecision, ReasonCode
from accessaudit.gate.evidence import Actor, Grant, Incident, LegalRequest
from accessaudit.gate.policy import AccessRequest, Policy, ResourceRule
from accessaudit.gate.purposes import EvidenceKind, Purpose
from accessaudit.gate.registry import EvidenceRegistry
from accessaudit.record.events import AccessEvent, StoredEvent
from accessaudit.record.fields import RECORD_VERSION, ActorType, Decision, EventType
from accessaudit.record.findings import ExpectedHead, Finding, FindingCode, VerifyReport
from accessaudit.record.keys import MacKey, create_key_file, load_key
from accessaudit.review.export import ExportedFile, ExportResult, export_log, verify_export
from accessaudit.review.recovery import Recovery, recover_chain
from accessaudit.review.verify import verify_store
from accessaudit.store import AuditStore, ChainHead, SqlStore

__all__ = [
    "RECORD_VERSION",
    "AccessAuditError",
    "AccessContext",
    "AccessDecision",
    "AccessDenied",
    "AccessEvent",
    "AccessRequest",
    "Actor",
    "ActorType",
    "AppendOnlyViolation",
    "AuditStore",
    "AuditUnavailable",
    "ChainHalted",
    "ChainHead",
    "CommitOutcomeUnknown",
    "ConfigurationError",
    "ContextScope",
    "Decision",
    "DuplicateEvent",
    "EventType",
    "EvidenceError",
    "EvidenceKind",
    "EvidenceRegistry",
    "ExpectedHead",
    "ExportError",
    "ExportResult",
    "ExportedFile",
    "FieldProblem",
    "Finding",
    "FindingCode",
    "Gate",
    "Grant",
    "Guard",
    "Incident",
    "IntegrityError",
    "InvalidEvent",
    "LegalRequest",
    "MacKey",
    "MacKeyError",
    "Policy",
    "PolicyError",
    "Purpose",
    "ReasonCode",
    "Recovery",
    "ResourceRule",
    "SqlStore",
    "StoreError",
    "StoreUnavailable",
    "StoredEvent",
    "VerifyReport",
    "access_context",
    "carry_context",
    "create_key_file",
    "current_context",
    "export_log",
    "load_key",
    "recover_chain",
    "verify_export",
    "verify_store",
]
