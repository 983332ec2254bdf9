"""The newest records, and records as they arrive: ``accessaudit tail``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from accessaudit.record._clock import to_iso
from accessaudit.review._terminal import terminal_safe

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from accessaudit.record.events import StoredEvent
    from accessaudit.store import AuditStore

__all__ = ["follow", "latest", "one_line"]


def latest(store: AuditStore, count: int) -> list[StoredEvent]:
    """The last ``count`` records of the store's chain, oldest first."""
    head = store.head()
    if head is None or count < 1:
        return []
    return list(store.read(max(1, head.seq - count + 1), head.seq))


def follow(
    store: AuditStore,
    after_seq: int,
    *,
    interval: float = 1.0,
    keep_going: Callable[[], bool] = lambda: True,
) -> Iterator[StoredEvent]:
    """Records after ``after_seq`` as they are committed, polling every ``interval`` seconds."""
    last = after_seq
    while keep_going():
        head = store.head()
        if head is not None and head.seq > last:
            for stored in store.read(last + 1, head.seq):
                last = stored.seq
                yield stored
            continue
        time.sleep(interval)


def one_line(stored: StoredEvent) -> str:
    """A record on one line: position, time, type, who (role), why, whose data, outcome.

    Text from the record is escaped (``terminal_safe``): a value holding a newline or an
    escape sequence cannot forge a line or move the cursor.
    """
    event = stored.event
    who = event.actor_id + (f" ({event.role})" if event.role else "")
    outcome = event.reason_code or ""
    if event.record_count is not None:
        outcome = f"{outcome} {event.record_count} record(s)".strip()
    parts = [
        f"{stored.seq:>8}",
        to_iso(event.occurred_at),
        f"{event.event_type.value:<24}",
        who,
        event.purpose or "-",
        event.customer_id or "-",
        event.resource or event.evidence_ref or "-",
        outcome or "-",
    ]
    return terminal_safe("  ".join(parts))
