"""accessaudit: purpose-gated, append-only, verifiable audit log of access to customer data.

The public API is what ``__all__`` lists; modules starting with ``_`` are internal.
"""

from __future__ import annotations

from accessaudit.context import (
    AccessContext,
    ContextScope,
    access_context,
    carry_context,
    current_context,
)
from accessaudit.decisions import AccessDecision, ReasonCode
from accessaudit.events import AccessEvent, StoredEvent
from accessaudit.evidence import Actor, Grant, Incident, LegalRequest
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
    FieldProblem,
    IntegrityError,
    InvalidEvent,
    MacKeyError,
    PolicyError,
    StoreError,
    StoreUnavailable,
)
from accessaudit.export import (
    ExportedFile,
    ExportError,
    ExportResult,
    export_log,
    verify_export,
)
from accessaudit.fields import RECORD_VERSION, ActorType, Decision, EventType
from accessaudit.findings import ExpectedHead, Finding, FindingCode, VerifyReport
from accessaudit.gate import Gate, Guard
from accessaudit.keys import MacKey, create_key_file, load_key
from accessaudit.policy import AccessRequest, Policy, ResourceRule
from accessaudit.purposes import EvidenceKind, Purpose
from accessaudit.recovery import Recovery, recover_chain
from accessaudit.registry import EvidenceRegistry
from accessaudit.store import AuditStore, ChainHead, SqlStore
from accessaudit.verify import verify_store

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
