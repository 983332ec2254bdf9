"""structlog output of the audit trail.

Each committed record is emitted once, after its commit, as an event named by its type
(``access.allowed``, ``grant.issued``, ...) with flat keys: identifiers, names and categories
only, as in the record itself. The library only *uses* structlog; configuring it (renderers,
sinks, levels) is the application's call, so nothing here calls ``structlog.configure()``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import structlog

from accessaudit.record._validate import json_form
from accessaudit.record.fields import EVENT_FIELDS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from accessaudit.record.events import StoredEvent

__all__ = ["emit_appended", "log_fields"]

_logger = structlog.get_logger("accessaudit.audit")


# Resolved once per field: this runs for every field of every record logged.
_CONVERTED = tuple(
    (spec.name, json_form(spec)) for spec in EVENT_FIELDS if spec.name != "event_type"
)


def log_fields(stored: StoredEvent) -> dict[str, Any]:
    """The flat, JSON-ready key/value form of one record, without empty fields."""
    fields: dict[str, Any] = {"chain_id": stored.chain_id, "seq": stored.seq}
    event = stored.event
    for name, convert in _CONVERTED:
        value = getattr(event, name)
        # None, an empty tuple and an empty map are all left out.
        if value is None or (not value and type(value) is not int and type(value) is not bool):
            continue
        fields[name] = value if convert is None else convert(value)
    return fields


def emit_appended(records: Sequence[StoredEvent]) -> None:
    """Emit one structlog event per committed record."""
    # One bound logger per call: each attribute of structlog's lazy proxy binds a new one
    # (unless the application caches loggers), which cost more than building the event.
    try:
        logger = _logger.bind()
        # Skip building the fields when the application's configuration would drop them
        # anyway (structlog >= 25.1 loggers answer is_enabled_for; others are always asked).
        enabled = getattr(logger, "is_enabled_for", None)
        if enabled is not None and not enabled(logging.INFO):
            return
    except Exception:
        logging.getLogger("accessaudit").exception("structlog could not emit audit events")
        return
    for stored in records:
        try:
            logger.info(stored.event.event_type.value, **log_fields(stored))
        except Exception:
            # The records are committed; a failing log processor must not make the caller
            # believe otherwise (and retry into a duplicate). Report it where it can be seen.
            logging.getLogger("accessaudit").exception(
                "structlog could not emit audit event seq %s of chain %s",
                stored.seq,
                stored.chain_id,
            )
