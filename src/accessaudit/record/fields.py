"""The record's field list: types, limits and order, in one place.

``EVENT_FIELDS`` is the single description of the record. The event dataclass
(``events.py``), its validation (``_validate.py``), the canonical encoding (``encoding.py``),
the SQL table (``store/_schema.py``) and the JSON Schema in ``schemas/`` all follow it, and
tests hold them to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Final

__all__ = [
    "EVENT_FIELDS",
    "FIELDS_BY_NAME",
    "MAX_ATTRIBUTES",
    "MAX_IDENTIFIER_CHARS",
    "MAX_INT",
    "MAX_LIST_ITEMS",
    "MAX_TEXT_CHARS",
    "RECORD_VERSION",
    "ActorType",
    "AttributeValue",
    "Decision",
    "EventType",
    "FieldSpec",
    "Kind",
]

#: Version of the record layout and of its canonical encoding. Bumped, never reused.
RECORD_VERSION: Final = 1

#: Limits, in characters (text) or items (lists, attribute maps). Documented in the README.
MAX_IDENTIFIER_CHARS: Final = 256
MAX_TEXT_CHARS: Final = 2000
MAX_LIST_ITEMS: Final = 1000
MAX_ATTRIBUTES: Final = 64
MAX_INT: Final = 2**63 - 1

AttributeValue = str | int | bool | None


class EventType(StrEnum):
    """What happened. Values are stable; they are also the structlog event names."""

    ACCESS_ALLOWED = "access.allowed"
    ACCESS_DENIED = "access.denied"
    ACCESS_COMPLETED = "access.completed"
    ACCESS_FAILED = "access.failed"
    ACCESS_UNGATED = "access.ungated"
    GRANT_ISSUED = "grant.issued"
    GRANT_REVOKED = "grant.revoked"
    INCIDENT_OPENED = "incident.opened"
    INCIDENT_CLOSED = "incident.closed"
    LEGAL_REQUEST_REGISTERED = "legal_request.registered"
    AUDIT_STARTED = "audit.started"
    AUDIT_EXPORT = "audit.export"
    AUDIT_REPORT = "audit.report"
    CHECKPOINT = "checkpoint"


class ActorType(StrEnum):
    """Whether a person or a service acted."""

    HUMAN = "human"
    SERVICE = "service"


class Decision(StrEnum):
    """The gate's verdict on an access attempt."""

    ALLOWED = "allowed"
    DENIED = "denied"


class Kind(Enum):
    """The value types a record field can have; each has one encoding and one column type."""

    UUID = "uuid"
    TIME = "time"
    TEXT = "text"
    INT = "int"
    BOOL = "bool"
    TEXT_LIST = "text_list"
    ATTRIBUTES = "attributes"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """How one record field is typed, limited and documented."""

    name: str
    kind: Kind
    description: str
    required: bool = False
    max_chars: int = MAX_IDENTIFIER_CHARS
    choices: type[StrEnum] | None = None


def _text(name: str, description: str, **kw: Any) -> FieldSpec:
    return FieldSpec(name, Kind.TEXT, description, **kw)


#: The record, in canonical order. Never reorder or change a field within RECORD_VERSION.
EVENT_FIELDS: Final[tuple[FieldSpec, ...]] = (
    FieldSpec("event_id", Kind.UUID, "Unique, time-ordered id (UUIDv7 unless given)."),
    FieldSpec("occurred_at", Kind.TIME, "When it happened: UTC, microsecond precision."),
    _text("event_type", "What happened.", required=True, choices=EventType),
    _text("actor_id", "Who acted: a person's or service's identifier.", required=True),
    _text("actor_type", "human or service.", required=True, choices=ActorType),
    _text("role", "The actor's role when acting (e.g. support_agent)."),
    _text("on_behalf_of", "Whom the actor acted for, if anyone."),
    _text("purpose", "The declared purpose, as given (unknown ones are kept and denied)."),
    _text("evidence_ref", "Reference to the grant, incident or legal request relied on."),
    _text("justification", "Free-text reason given by the actor.", max_chars=MAX_TEXT_CHARS),
    _text("customer_id", "The customer whose data was concerned."),
    _text("resource", "Name of the data resource (e.g. billing.invoices)."),
    _text("action", "What was done to the resource (e.g. read)."),
    FieldSpec("data_categories", Kind.TEXT_LIST, "Data categories touched (e.g. contact)."),
    FieldSpec("field_names", Kind.TEXT_LIST, "Names (never values) of the fields read."),
    FieldSpec("subject_ids", Kind.TEXT_LIST, "Identifiers of the records or people touched."),
    FieldSpec("record_count", Kind.INT, "How many records were returned, when known."),
    _text("decision", "allowed or denied, for access attempts.", choices=Decision),
    _text("reason_code", "Stable code explaining the decision."),
    _text("policy_version", "Hash of the policy that decided."),
    _text("request_id", "The request this happened in."),
    _text("trace_id", "Distributed trace id, if any."),
    _text("origin_host", "Host that recorded the event."),
    FieldSpec("origin_pid", Kind.INT, "Process id that recorded the event."),
    _text("origin_service", "Service that recorded the event."),
    _text("origin_client_addr", "Network address of the client, if any."),
    FieldSpec("customer_visible", Kind.BOOL, "Whether the customer may be shown this event."),
    FieldSpec(
        "attributes",
        Kind.ATTRIBUTES,
        "Further identifiers (never customer data values): text, integers, booleans, null.",
        max_chars=1024,
    ),
)

FIELDS_BY_NAME: Final = {spec.name: spec for spec in EVENT_FIELDS}
