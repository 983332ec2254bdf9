"""How much of a grant's ``max_records`` allowance is taken, counted from the chain.

An allowed access under a capped grant *reserves* what is left of the allowance in its
``access.allowed`` record (attribute ``reserved_records``), in the same transaction that
checks nothing else holds it (see ``_access``). While the access runs, its reservation
counts as used; once its outcome is recorded, the records it actually handed out count
instead. So concurrent accesses can never hand out more than the grant allows: the second
one finds the allowance reserved and is denied.

An access whose outcome was never recorded (its process died) keeps its reservation: the
data may have been handed out, so the allowance is not given back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from accessaudit.record.fields import EventType

if TYPE_CHECKING:
    from collections.abc import Iterable

    from accessaudit.store import EvidenceUse

#: The ``access.allowed`` attribute holding the records an access reserved.
RESERVED: Final = "reserved_records"
#: The record types that take from an allowance.
ALLOWANCE_EVENTS: Final = (
    EventType.ACCESS_ALLOWED.value,
    EventType.ACCESS_COMPLETED.value,
    EventType.ACCESS_FAILED.value,
)


def records_used(uses: Iterable[EvidenceUse]) -> int:
    """Records taken from an allowance by these uses of the grant.

    A completed access whose count was unknown counts as one record, so an allowance cannot
    be stretched by returning things the gate cannot count; a failed access counts what it
    handed out before failing (a generator's items), usually none.
    """
    reserved: dict[str, int] = {}
    finished: set[str] = set()
    handed_out = 0
    for use in uses:
        if use.event_type == EventType.ACCESS_ALLOWED.value:
            amount = use.attributes.get(RESERVED)
            valid = isinstance(amount, int) and not isinstance(amount, bool) and amount > 0
            reserved[use.event_id] = amount if valid else 0  # type: ignore[assignment]
            continue
        completed = use.event_type == EventType.ACCESS_COMPLETED.value
        count = use.record_count
        handed_out += (1 if completed else 0) if count is None else count
        link = use.attributes.get("access_event_id")
        if isinstance(link, str):
            finished.add(link)
    in_flight = sum(n for event_id, n in reserved.items() if event_id not in finished)
    return handed_out + in_flight
