"""The public API is exactly what __all__ says, sorted and importable."""

from __future__ import annotations

import accessaudit

EXPECTED = [
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
    errors = [
        getattr(accessaudit, n)
        for n in accessaudit.__all__
        if n.endswith(("Error", "Event", "Violation", "Unavailable", "Unknown"))
    ]
    errors = [e for e in errors if isinstance(e, type) and issubclass(e, Exception)]
    assert len(errors) == 9
    assert all(issubclass(e, accessaudit.AccessAuditError) for e in errors)
