"""The newest records, and records as they arrive: ``accessaudit tail``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from accessaudit.record._clock import to_iso
from accessaudit.review._terminal import terminal_safe
from accessaudit.store import DEFAULT_CHAIN

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from datetime import datetime

    from accessaudit.record.events import StoredEvent
    from accessaudit.store import AuditStore

__all__ = ["follow", "heads", "latest", "one_line"]


def latest(
    store: AuditStore, count: int, *, at: Mapping[str, int] | None = None
) -> list[StoredEvent]:
    """The last ``count`` records of the log, over every chain, oldest first.

    Oldest by the time each states; within a chain, by seq. ``at``: the chains' heads to
    count back from (default: now), so that following from the same heads shows nothing
    twice.
    """
    if count < 1:
        return []
    newest: list[StoredEvent] = []
    for chain, seq in (heads(store) if at is None else at).items():
        newest += store.read(max(1, seq - count + 1), seq, chain_id=chain)
    newest.sort(key=_order)
    return newest[-count:]


def heads(store: AuditStore) -> dict[str, int]:
    """Every chain's newest seq."""
    found = {}
    for chain in store.chains():
        head = store.head(chain)
        if head is not None:
            found[chain] = head.seq
    return found


def follow(
    store: AuditStore,
    after: int | Mapping[str, int],
    *,
    interval: float = 1.0,
    keep_going: Callable[[], bool] = lambda: True,
) -> Iterator[StoredEvent]:
    """Records committed after ``after``, on every chain, polling every ``interval`` seconds.

    ``after`` maps chains to the seq to follow from; a chain it does not name (one that
    appears later, say) is followed from its start. A bare seq is the store's own chain,
    every other chain followed from its head now.
    """
    last = {**heads(store), store.chain_id: after} if isinstance(after, int) else dict(after)
    while keep_going():
        fresh: list[StoredEvent] = []
        for chain, seq in heads(store).items():
            if seq > last.get(chain, 0):
                fresh += store.read(last.get(chain, 0) + 1, seq, chain_id=chain)
        if not fresh:
            time.sleep(interval)
            continue
        fresh.sort(key=_order)
        for stored in fresh:
            last[stored.chain_id] = max(last.get(stored.chain_id, 0), stored.seq)
            yield stored


def _order(stored: StoredEvent) -> tuple[datetime, str, int]:
    return stored.event.occurred_at, stored.chain_id, stored.seq


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
        f"{stored.seq:>8}"
        if stored.chain_id == DEFAULT_CHAIN
        else f"{stored.chain_id}:{stored.seq}",
        to_iso(event.occurred_at),
        f"{event.event_type.value:<24}",
        who,
        event.purpose or "-",
        event.customer_id or "-",
        event.resource or event.evidence_ref or "-",
        outcome or "-",
    ]
    return terminal_safe("  ".join(parts))
