"""The audit record: one immutable, validated event, and the same event as stored.

The fields, their order and limits are defined once in ``fields.py``. Fields that the store
assigns (chain id, seq, hashes) live on ``StoredEvent``, not on ``AccessEvent``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from uuid6 import uuid7

from accessaudit.exceptions import FieldProblem, InvalidEvent
from accessaudit.record._clock import to_micros
from accessaudit.record._validate import FIELD_NORMALISERS, check_keys, to_json_value
from accessaudit.record.fields import (
    EVENT_FIELDS,
    FIELDS_BY_NAME,
    RECORD_VERSION,
    ActorType,
    AttributeValue,
    Decision,
    EventType,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["AccessEvent", "StoredEvent"]


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
        problems: list[FieldProblem] = []
        for spec, normalise in FIELD_NORMALISERS:
            value, problem = normalise(spec, getattr(self, spec.name))
            if problem is not None:
                problems.append(problem)
            else:
                object.__setattr__(self, spec.name, value)
        if problems:
            raise InvalidEvent(problems)

    def derive(self, **changes: Any) -> AccessEvent:
        """A new event like this one, with ``changes`` (and a new ``event_id`` unless given).

        Only the changed fields are validated: the others were when this event was built.
        This is how a gated access builds its outcome record from its decision record, at
        a quarter of the cost of validating every field again.
        """
        changes.setdefault("event_id", _new_id())
        unknown = [
            FieldProblem(n, "is not a field of the record")
            for n in changes
            if n not in FIELDS_BY_NAME
        ]
        if unknown:
            raise InvalidEvent(unknown)
        derived = object.__new__(AccessEvent)
        problems: list[FieldProblem] = []
        for spec, normalise in FIELD_NORMALISERS:
            if spec.name not in changes:
                object.__setattr__(derived, spec.name, getattr(self, spec.name))
                continue
            value, problem = normalise(spec, changes[spec.name])
            if problem is not None:
                problems.append(problem)
            else:
                object.__setattr__(derived, spec.name, value)
        if problems:
            raise InvalidEvent(problems)
        return derived

    @property
    def occurred_at_us(self) -> int:
        """Microseconds since the Unix epoch, UTC: the exact stored and hashed form."""
        return to_micros(self.occurred_at)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict matching ``schemas/access_event.v1.schema.json``."""
        return {s.name: to_json_value(s, getattr(self, s.name)) for s in EVENT_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AccessEvent:
        """Build an event from untyped input (JSON, a form); every fault is reported at once."""
        check_keys(data)
        return cls(**data)


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
