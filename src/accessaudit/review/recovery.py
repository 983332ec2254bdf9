"""Recovering a chain halted by a forged or damaged newest record, keeping the evidence.

Appends refuse to carry on from a newest record that fails its checks (``ChainHalted``).
``recover_chain`` is the way out: it checks the whole chain, finds the run of damaged rows
at its end and the last record before them that passed every check, and appends one
recovery record (sealed with the key, like any other) that names both. Nothing is deleted
or changed: the damaged rows stay where they are, and ``accessaudit verify`` goes on
reporting each of their findings, marked as acknowledged by the recovery record. Appends
continue after the recovery record, whose own checks pass.

Why this is sound: only the key holder can seal a recovery record, and verify honours one
only if its own leaf, link and MAC hold and it names exactly the findings verify sees
before it. A forger without the key cannot acknowledge anything; damaged rows changed or
removed after the recovery show up as findings the record does not name, and so are not
acknowledged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from accessaudit.exceptions import ConfigurationError, MacKeyError
from accessaudit.record._chain import ChainChecker
from accessaudit.record._recovery_record import (
    MAX_ACKNOWLEDGED_CHARS,
    RecoveryClaim,
    acknowledgement,
    recovery_event,
)
from accessaudit.record.findings import FindingCode
from accessaudit.review._reading import stored_rows
from accessaudit.store import DamagedTail

if TYPE_CHECKING:
    from accessaudit.record.events import StoredEvent
    from accessaudit.record.findings import Finding
    from accessaudit.store import SqlStore

__all__ = ["Recovery", "recover_chain"]

#: What a recovery may acknowledge: records present in their place but forged or edited.
#: Records missing, doubled, out of place or cut off are never acknowledged: a recovery
#: would otherwise hide a deletion behind one bad MAC at the end of the chain.
RECOVERABLE: Final = frozenset(
    {
        FindingCode.BAD_MAC,
        FindingCode.UNKNOWN_KEY,
        FindingCode.MODIFIED_RECORD,
        FindingCode.BROKEN_LINK,
        FindingCode.MALFORMED_ROW,
    }
)


@dataclass(frozen=True, slots=True)
class Recovery:
    """What ``recover_chain`` recorded, and what it found."""

    record: StoredEvent  # the recovery record: appends continue after it
    last_good_seq: int  # the last record before the damage that passed every check
    last_good_hash: str
    acknowledged: tuple[Finding, ...]  # the damaged run's findings, as verify reports them
    other_findings: tuple[Finding, ...]  # earlier in the chain: not acknowledged


def recover_chain(store: SqlStore, *, halted_seq: int, actor: str, reason: str) -> Recovery:
    """Acknowledge the damaged newest records of ``store``'s chain so appends can continue.

    ``halted_seq`` is the newest record's seq as the ``ChainHalted`` error and
    ``accessaudit verify`` name it: the recovery refuses (``ConfigurationError``, nothing
    recorded) if the chain does not end there, if its newest record passes every check, if
    no record before it does (a wrong key), or if the chain changes while this runs.
    ``actor`` and ``reason`` are recorded. Reads the whole chain first, as a verify would.
    """
    key = store.key
    if key is None:
        raise MacKeyError("recovering a chain needs the HMAC key; pass key=load_key()")
    chain = store.chain_id
    checker = ChainChecker(chain, key, ())
    with stored_rows(store, chain) as (columns, rows):
        checker.check_rows(rows, columns)
    run, end = checker.damaged, checker.last_seen
    if end == 0:
        raise ConfigurationError(f"chain {chain!r} has no records: there is nothing to recover")
    if end != halted_seq:
        raise ConfigurationError(
            f"chain {chain!r} ends at seq {end}, not {halted_seq}: nothing was recorded; run "
            "`accessaudit verify` and give the seq of the newest record"
        )
    if run is None:
        raise ConfigurationError(
            f"chain {chain!r} needs no recovery: its newest record (seq {end}) passes every "
            "check, so appends are not halted by it"
        )
    if run.good_seq < 1 or run.good_hash is None:
        raise ConfigurationError(
            f"no record of chain {chain!r} before seq {run.good_seq + 1} passes its checks "
            f"with this key ({key.key_id}): is it the key this log was written with? A chain "
            "with no sound record to continue from cannot be recovered"
        )
    acknowledged = tuple(checker.findings[run.first :])
    beyond = sorted({f.code.value for f in acknowledged if f.code not in RECOVERABLE})
    if beyond:
        raise ConfigurationError(
            f"the damage after seq {run.good_seq} of chain {chain!r} is more than forged or "
            f"edited records ({', '.join(beyond)}): records are missing, doubled or out of "
            "place, which a recovery must not paper over; nothing was recorded: keep the "
            "database as evidence and investigate"
        )
    named = acknowledgement(acknowledged)
    if len(named) > MAX_ACKNOWLEDGED_CHARS:
        raise ConfigurationError(
            f"the {len(acknowledged)} findings after seq {run.good_seq} of chain {chain!r} "
            "are too many for one recovery record to name; this is more than a damaged "
            "newest record: keep the database as evidence and investigate"
        )
    claim = RecoveryClaim(run.good_seq, run.good_hash, end, named)
    record = store.append_recovery(
        recovery_event(claim, actor=actor, reason=reason),
        after=DamagedTail(chain, end, checker.previous, run.good_hash),
    )
    return Recovery(
        record=record,
        last_good_seq=run.good_seq,
        last_good_hash=run.good_hash,
        acknowledged=acknowledged,
        other_findings=tuple(checker.findings[: run.first]),
    )
