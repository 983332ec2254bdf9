"""structlog output of the audit trail.

Each committed record is emitted once, after its commit, as an event named by its type
(``access.allowed``, ``grant.issued``, ...) with flat keys: identifiers, names and categories
only, as in the record itself. The library only *uses* structlog; configuring it (renderers,
sinks, levels) is the application's call, so nothing here calls ``structlog.configure()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from accessaudit.fields import EVENT_FIELDS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from accessaudit.events import StoredEvent

_logger = structlog.get_logger("accessaudit.audit")


def log_fields(stored: StoredEvent) -> dict[str, Any]:
    """The flat key/value form of one record, without empty fields."""
    fields: dict[str, Any] = {"chain_id": stored.chain_id, "seq": stored.seq}
    event = stored.event.to_dict()
    for spec in EVENT_FIELDS:
        value = event[spec.name]
        if spec.name != "event_type" and value not in (None, [], {}):
            fields[spec.name] = value
    return fields


def emit_appended(records: Sequence[StoredEvent]) -> None:
    """Emit one structlog event per committed record."""
    for stored in records:
        _logger.info(stored.event.event_type.value, **log_fields(stored))
