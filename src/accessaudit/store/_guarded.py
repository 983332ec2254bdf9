"""Appends that hold only if the chain still says what the caller decided on.

The gate decides from evidence it looked up a moment earlier; between that lookup and the
commit of its decision, someone may revoke the grant, close the incident, or another access
may take the rest of a grant's allowance. A ``Precondition`` runs inside the append's
transaction, after the chain's serialisation point is taken and its tail read, so it sees
every record committed before this one and the records ahead of it in the same group
commit; nothing can be appended between its check and the commit. If it raises
``PreconditionFailed``, nothing of the batch is stored and the caller decides again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import bindparam, select

from accessaudit.exceptions import AccessAuditError
from accessaudit.store._schema import events

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from sqlalchemy import Connection

    from accessaudit.record.events import AccessEvent


class PreconditionFailed(AccessAuditError):
    """The chain changed since the caller decided: nothing was stored; decide again."""


class EvidenceUse(NamedTuple):
    """A record citing a piece of evidence: what checking its use needs, and no more."""

    event_type: str
    event_id: str
    record_count: int | None
    attributes: Mapping[str, Any]

    @classmethod
    def of(cls, event: AccessEvent) -> EvidenceUse:
        """The use an event not yet stored will be."""
        return cls(
            event.event_type.value, str(event.event_id), event.record_count, event.attributes
        )


_USES = select(
    events.c.event_type, events.c.event_id, events.c.record_count, events.c.attributes
).where(
    events.c.evidence_ref == bindparam("ref"),
    events.c.event_type.in_(bindparam("types", expanding=True)),
)


def evidence_uses(
    conn: Connection, evidence_ref: str, event_types: Collection[str]
) -> list[EvidenceUse]:
    """The records of every chain with these types that cite ``evidence_ref``.

    Uses are counted, not ordered: a grant's allowance is spent by reads on any chain.
    """
    rows = conn.execute(_USES, {"ref": evidence_ref, "types": [*event_types]})
    return [
        EvidenceUse(str(r.event_type), str(r.event_id), r.record_count, attributes_of(r.attributes))
        for r in rows
    ]


def attributes_of(text: object) -> Mapping[str, Any]:
    """A stored attributes column as a mapping."""
    # A row an owner damaged is verify's to report; here it simply carries no attributes.
    try:
        value = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class ChainView:
    """The chain as an append's precondition sees it: committed records, then those ahead."""

    committed: Callable[[str, Collection[str]], list[EvidenceUse]]
    """Records of the log citing a reference with these types, committed before this one."""
    chain_id: str
    ahead: Sequence[AccessEvent]
    hold: Callable[[str], None]
    """Serialise with every other transaction holding this evidence reference, till commit.

    The chain's serialisation point orders one chain; evidence may be issued, withdrawn
    and spent on several (shards). Holding the reference first, before ``uses``, makes a
    withdrawal or another access under the same evidence, on any chain, either already
    committed (and seen) or waiting for this transaction. (PostgreSQL: an advisory lock on
    the reference; SQLite's write lock already serialises every chain of the file.)
    """

    def uses(self, evidence_ref: str, event_types: Collection[str]) -> list[EvidenceUse]:
        """Records citing ``evidence_ref`` with these types, committed or ahead in the group."""
        found = self.committed(evidence_ref, event_types)
        found += [
            EvidenceUse.of(e)
            for e in self.ahead
            if e.evidence_ref == evidence_ref and e.event_type.value in event_types
        ]
        return found


#: A check run in the append's transaction; raises ``PreconditionFailed`` to store nothing.
Precondition = Callable[[ChainView], None]


class GuardedBatch(list["AccessEvent"]):
    """A batch carrying the precondition it is to be appended under (see ``SqlStore.append``).

    A list, so that it passes through the group commit like any other batch.
    """

    def __init__(self, batch: list[AccessEvent], precondition: Precondition) -> None:
        super().__init__(batch)
        self.precondition = precondition
