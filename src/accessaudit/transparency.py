"""The customer transparency report: every access to one customer's data, as they may see it.

In the manner of Google's Access Transparency logs: when, why (purpose and evidence), what
(resource and data categories), by which *role*, and the decision. The actor's identity is
left out unless the operator asks for it. Accesses under a legal request whose notification
hold has not ended are withheld; whether the report may say that entries were withheld is the
policy's ``[transparency] disclose_withheld`` setting, because some laws forbid even that.
Records not meant for the customer (``customer_visible`` false: evidence bookkeeping, the
log's own events) never appear.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import select

from accessaudit._clock import from_iso, from_micros, to_iso
from accessaudit.fields import EventType
from accessaudit.registry import EvidenceRegistry
from accessaudit.store._schema import events

if TYPE_CHECKING:
    from datetime import datetime

    from accessaudit.report import ReportFilter
    from accessaudit.store import SqlStore

_DECISIONS: Final = (EventType.ACCESS_ALLOWED.value, EventType.ACCESS_DENIED.value)
_SAME_ACCESS: Final = ("purpose", "evidence_ref", "resource", "data_categories", "role", "decision")


@dataclass
class TransparencyReport:
    """What one customer may be shown about accesses to their data in a period."""

    customer_id: str
    generated_at: datetime
    entries: list[dict[str, Any]] = field(default_factory=list)
    withheld: int = 0
    disclose_withheld: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; says entries were withheld only where the policy allows it."""
        out: dict[str, Any] = {
            "customer_id": self.customer_id,
            "generated_at": to_iso(self.generated_at),
            "entries": self.entries,
        }
        if self.disclose_withheld and self.withheld:
            out["withheld_note"] = (
                f"{self.withheld} access(es) are not shown yet, as the law requires; "
                "they will appear when the hold ends"
            )
        return out


def transparency_report(
    store: SqlStore,
    flt: ReportFilter,
    *,
    now: datetime,
    show_actors: bool = False,
    disclose_withheld: bool = False,
    summarise: bool = False,
) -> TransparencyReport:
    """Every customer-visible access decision about ``flt.customer_id`` in ``flt``'s period."""
    if flt.customer_id is None:
        msg = "a transparency report is for one customer: give customer_id"
        raise ValueError(msg)
    columns = [
        events.c.occurred_at_us,
        events.c.purpose,
        events.c.evidence_ref,
        events.c.resource,
        events.c.data_categories,
        events.c.role,
        events.c.actor_id,
        events.c.decision,
        events.c.attributes,
    ]
    query = (
        select(*columns)
        .where(*flt.conditions(store.chain_id), events.c.customer_visible == 1)
        .order_by(events.c.seq)
    )
    report = TransparencyReport(flt.customer_id, now, disclose_withheld=disclose_withheld)
    # While any legal request about this customer is under a hold, every legal access is
    # held back, including a denied one or one recorded without the hold's date: its mere
    # existence would tell the customer about the request.
    on_hold = any(
        r.notify_after is not None and r.notify_after > now
        for r in EvidenceRegistry(store, clock=lambda: now).legal_requests(flt.customer_id)
    )
    for row in store.fetch(query):
        attributes = json.loads(row.attributes or "{}")
        hold = attributes.get("notify_after")
        held = isinstance(hold, str) and from_iso(hold) > now
        if held or (on_hold and row.purpose == "legal_requirement"):
            report.withheld += 1
            continue
        entry: dict[str, Any] = {
            "time": to_iso(from_micros(row.occurred_at_us)),
            "purpose": row.purpose,
            "evidence_ref": row.evidence_ref,
            "resource": row.resource,
            "data_categories": json.loads(row.data_categories),
            "role": row.role,
            "decision": row.decision,
        }
        if show_actors:
            entry["actor_id"] = row.actor_id
        report.entries.append(entry)
    if summarise:
        report.entries = _summarised(report.entries, show_actors=show_actors)
    return report


def _summarised(entries: list[dict[str, Any]], *, show_actors: bool) -> list[dict[str, Any]]:
    """Runs of the same access (same purpose, evidence, resource, role, decision) as one."""
    keys = (*_SAME_ACCESS, "actor_id") if show_actors else _SAME_ACCESS
    merged: list[dict[str, Any]] = []
    for entry in entries:
        last = merged[-1] if merged else None
        if last is not None and all(last[k] == entry[k] for k in keys):
            last["last"] = entry["time"]
            last["count"] += 1
            continue
        merged.append(
            {
                **{k: entry[k] for k in keys},
                "first": entry["time"],
                "last": entry["time"],
                "count": 1,
            }
        )
    return merged
