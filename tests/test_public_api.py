"""The public API is exactly what __all__ says, sorted and importable."""

from __future__ import annotations

import accessaudit

EXPECTED = [
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


def test_all_is_pinned_and_sorted() -> None:
    """Adding or removing a public name is a deliberate act that changes this test."""
    assert accessaudit.__all__ == EXPECTED
    assert accessaudit.__all__ == sorted(accessaudit.__all__, key=lambda n: (not n.isupper(), n))


def test_every_public_name_resolves() -> None:
    """Each name in __all__ is importable from the package."""
    for name in accessaudit.__all__:
        assert getattr(accessaudit, name) is not None


def test_every_error_derives_from_the_root() -> None:
    """Callers can catch AccessAuditError for anything the library raises."""
    public = [getattr(accessaudit, n) for n in accessaudit.__all__]
    errors = [e for e in public if isinstance(e, type) and issubclass(e, Exception)]
    assert len(errors) == 16
    assert all(issubclass(e, accessaudit.AccessAuditError) for e in errors)
    assert issubclass(accessaudit.AccessDenied, PermissionError)
    assert issubclass(accessaudit.PolicyError, ValueError)
