"""The audit record: one immutable, validated event with a fixed, versioned field list.

``EVENT_FIELDS`` is the single description of the record. The dataclass, the validation,
the canonical encoding (``encoding.py``), the SQL table (``store/_schema.py``) and the JSON
Schema in ``schemas/`` all follow it, and tests hold them to it. Fields that the store
assigns (chain id, seq, hashes) live on ``StoredEvent``, not here.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum, StrEnum
from types import MappingProxyType
from typing import Any, Final

from uuid6 import uuid7

from accessaudit.exceptions import FieldProblem, InvalidEvent

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


def _text(name: str, description: str, **kw: Any) -> FieldSpec:  # noqa: ANN401
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


def _new_id() -> uuid.UUID:
    return uuid.UUID(int=uuid7().int)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessEvent:
    """One audit record as the application states it; validated and normalised on creation.

    Raises ``InvalidEvent`` listing every faulty field. Timestamps must be timezone-aware
    and are normalised to UTC; text must be non-empty, NUL-free, valid Unicode and within
    the documented length; lists become tuples.
    """

    event_id: uuid.UUID = field(default_factory=_new_id)
    occurred_at: datetime = field(default_factory=_now)
    event_type: EventType
    actor_id: str
    actor_type: ActorType
    role: str | None = None
    on_behalf_of: str | None = None
    purpose: str | None = None
    evidence_ref: str | None = None
    justification: str | None = None
    customer_id: str | None = None
    resource: str | None = None
    action: str | None = None
    data_categories: tuple[str, ...] = ()
    field_names: tuple[str, ...] = ()
    subject_ids: tuple[str, ...] = ()
    record_count: int | None = None
    decision: Decision | None = None
    reason_code: str | None = None
    policy_version: str | None = None
    request_id: str | None = None
    trace_id: str | None = None
    origin_host: str | None = None
    origin_pid: int | None = None
    origin_service: str | None = None
    origin_client_addr: str | None = None
    customer_visible: bool = True
    attributes: Mapping[str, AttributeValue] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )

    def __post_init__(self) -> None:
        from accessaudit._validate import normalise  # noqa: PLC0415 - avoids an import cycle

        problems: list[FieldProblem] = []
        for spec in EVENT_FIELDS:
            value, problem = normalise(spec, getattr(self, spec.name))
            if problem is not None:
                problems.append(problem)
            else:
                object.__setattr__(self, spec.name, value)
        if problems:
            raise InvalidEvent(problems)

    @property
    def occurred_at_us(self) -> int:
        """Microseconds since the Unix epoch, UTC: the exact stored and hashed form."""
        return _to_micros(self.occurred_at)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict matching ``schemas/access_event.v1.schema.json``."""
        from accessaudit._validate import to_json_value  # noqa: PLC0415

        return {s.name: to_json_value(s, getattr(self, s.name)) for s in EVENT_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AccessEvent:
        """Build an event from untyped input (JSON, a form); every fault is reported at once."""
        from accessaudit._validate import check_keys  # noqa: PLC0415

        check_keys(data)
        return cls(**data)


def _to_micros(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the log holds it: its place in a chain and its integrity values."""

    event: AccessEvent
    chain_id: str
    seq: int
    leaf_hash: str
    chain_hash: str
    mac: str
    mac_key_id: str
    record_version: int = RECORD_VERSION
