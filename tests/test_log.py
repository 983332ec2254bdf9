"""Every committed record is also a structlog event; nothing is emitted for failures."""

from __future__ import annotations

import logging

import pytest
import structlog
from structlog.testing import LogCapture, capture_logs

from accessaudit import DuplicateEvent, EventType, SqlStore
from accessaudit.record.log import log_fields
from tests.strategies import make_event


def test_each_appended_record_is_logged_after_commit(store: SqlStore) -> None:
    """One event per record, named by its type, with flat identifier keys."""
    with capture_logs() as logs:
        records = store.append(
            [make_event(), make_event(event_type=EventType.ACCESS_DENIED, reason_code="x")]
        )
    assert [entry["event"] for entry in logs] == ["access.allowed", "access.denied"]
    first = logs[0]
    assert first["seq"] == 1
    assert first["chain_id"] == "main"
    assert first["event_id"] == str(records[0].event.event_id)
    assert first["customer_id"] == "acme"
    assert first["field_names"] == ["email", "phone"]
    assert first["log_level"] == "info"
    assert "role" in first
    assert "record_count" not in first  # empty fields are left out


def test_refused_batch_logs_nothing(store: SqlStore) -> None:
    """An append that does not commit emits no audit events."""
    event = make_event()
    store.append([event])
    with capture_logs() as logs, pytest.raises(DuplicateEvent):
        store.append([make_event(), event])
    assert logs == []


def test_log_fields_are_flat_and_json_ready(store: SqlStore) -> None:
    """log_fields gives scalar or list values only, ready for any renderer."""
    (record,) = store.append([make_event(attributes={"case": "c-9"})])
    fields = log_fields(record)
    assert fields["attributes"] == {"case": "c-9"}
    assert all(isinstance(v, str | int | bool | list | dict) for v in fields.values())


def test_library_leaves_structlog_unconfigured(store: SqlStore) -> None:
    """Using the store does not configure structlog behind the application's back."""
    store.append([make_event()])
    assert not structlog.is_configured()


def test_filtered_level_emits_nothing(store: SqlStore) -> None:
    """When the application filters out INFO, appends emit nothing; at INFO they emit."""
    capture = LogCapture()
    structlog.configure(
        processors=[capture], wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING)
    )
    store.append([make_event()])
    assert capture.entries == []
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    store.append([make_event()])
    assert [e["seq"] for e in capture.entries] == [2]
