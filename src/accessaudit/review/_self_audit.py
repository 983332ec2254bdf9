"""The log's own reads, recorded in the log: ``audit.report`` and ``audit.export`` events."""

from __future__ import annotations

from typing import TYPE_CHECKING

from accessaudit.record.events import AccessEvent
from accessaudit.record.fields import ActorType, AttributeValue, EventType

if TYPE_CHECKING:
    from collections.abc import Mapping

    from accessaudit.record.events import StoredEvent
    from accessaudit.store import AuditStore


def record_log_read(
    store: AuditStore,
    event_type: EventType,
    *,
    actor: str,
    record_count: int,
    attributes: Mapping[str, AttributeValue],
    customer_id: str | None = None,
) -> StoredEvent:
    """Append one event saying who read the log, how and how much; return it once committed.

    Called *before* the read is shown or written anywhere: no record, no read.
    """
    (stored,) = store.append(
        [
            AccessEvent(
                event_type=event_type,
                actor_id=actor,
                actor_type=ActorType.HUMAN,
                action=event_type.value.removeprefix("audit."),
                resource="accessaudit.log",
                customer_id=customer_id,
                record_count=record_count,
                customer_visible=False,
                attributes=attributes,
            )
        ]
    )
    return stored
