"""Hypothesis strategies and plain builders for audit events, in one place."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from accessaudit import AccessEvent, ActorType, Decision, EventType

# Valid text: no NUL, no lone surrogates, not empty.
text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    min_size=1,
    max_size=40,
)
optional_text = st.none() | text
timestamps = st.datetimes(
    min_value=datetime(1970, 1, 2),  # a day of margin: zones shift the instant
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    ),
)
attribute_values = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | text


@st.composite
def events(draw: st.DrawFn) -> AccessEvent:
    """Any valid event."""
    return AccessEvent(
        event_id=draw(st.uuids()),
        occurred_at=draw(timestamps),
        event_type=draw(st.sampled_from(EventType)),
        actor_id=draw(text),
        actor_type=draw(st.sampled_from(ActorType)),
        role=draw(optional_text),
        on_behalf_of=draw(optional_text),
        purpose=draw(optional_text),
        evidence_ref=draw(optional_text),
        justification=draw(optional_text),
        customer_id=draw(optional_text),
        resource=draw(optional_text),
        action=draw(optional_text),
        data_categories=draw(st.lists(text, max_size=4).map(tuple)),
        field_names=draw(st.lists(text, max_size=4).map(tuple)),
        subject_ids=draw(st.lists(text, max_size=4).map(tuple)),
        record_count=draw(st.none() | st.integers(0, 2**63 - 1)),
        decision=draw(st.none() | st.sampled_from(Decision)),
        reason_code=draw(optional_text),
        policy_version=draw(optional_text),
        request_id=draw(optional_text),
        trace_id=draw(optional_text),
        origin_host=draw(optional_text),
        origin_pid=draw(st.none() | st.integers(0, 2**63 - 1)),
        origin_service=draw(optional_text),
        origin_client_addr=draw(optional_text),
        customer_visible=draw(st.booleans()),
        attributes=draw(st.dictionaries(text, attribute_values, max_size=4)),
    )


def make_event(**overrides: Any) -> AccessEvent:
    """A realistic support-desk read, with any field overridden."""
    fields: dict[str, Any] = {
        "event_type": EventType.ACCESS_ALLOWED,
        "actor_id": "agent-7",
        "actor_type": ActorType.HUMAN,
        "role": "support_agent",
        "purpose": "support_request",
        "evidence_ref": "grant:case-1234",
        "customer_id": "acme",
        "resource": "crm.contacts",
        "action": "read",
        "data_categories": ("contact",),
        "field_names": ("email", "phone"),
        "subject_ids": ("acme-user-3",),
        "decision": Decision.ALLOWED,
        "reason_code": "allowed",
    }
    fields.update(overrides)
    return AccessEvent(**fields)


FIXED_EVENT: dict[str, Any] = {
    "event_id": uuid.UUID("0190f3e2-7b3c-7a1d-9c2e-4f5a6b7c8d9e"),
    "occurred_at": datetime(2026, 11, 29, 12, 30, 45, 123456, tzinfo=UTC),
}
