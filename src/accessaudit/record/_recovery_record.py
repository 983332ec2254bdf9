"""The recovery record: what it claims, how it is built, and how a checker reads one back.

A recovery record is an ``audit.started`` event (action ``recover``) that an operator
holding the HMAC key appends after a chain's damaged newest records. It names the last
record that passed its checks and every finding after it, exactly as ``accessaudit verify``
prints them (``bad_mac@7``, ``missing_record@8..9``). It is sealed like any other record,
so only the key holder can make one; a checker honours it only when its own leaf, link and
MAC hold and what it claims is what the checker found (see ``_chain.ChainChecker``).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeGuard

from accessaudit.record.events import AccessEvent
from accessaudit.record.fields import ActorType, EventType
from accessaudit.record.integrity import is_digest

if TYPE_CHECKING:
    from collections.abc import Iterable

    from accessaudit.record.findings import Finding

RECOVERY_ACTION: Final = "recover"
#: The most text one attribute value may hold: the limit of what one record can acknowledge.
MAX_ACKNOWLEDGED_CHARS: Final = 1024
_FORMAT: Final = 1


@dataclass(frozen=True, slots=True)
class RecoveryClaim:
    """What a recovery record says about the records before it."""

    last_good_seq: int
    last_good_hash: str
    halted_seq: int
    acknowledged: str


def acknowledgement(findings: Iterable[Finding]) -> str:
    """The findings as one recovery record names them: ``code@where``, space-separated."""
    return " ".join(f"{f.code.value}@{f.where}" for f in findings)


def recovery_event(claim: RecoveryClaim, *, actor: str, reason: str) -> AccessEvent:
    """The record that acknowledges ``claim``, by ``actor``, for ``reason``."""
    return AccessEvent(
        event_type=EventType.AUDIT_STARTED,
        actor_id=actor,
        actor_type=ActorType.HUMAN,
        action=RECOVERY_ACTION,
        resource="accessaudit.log",
        justification=reason,
        origin_host=socket.gethostname() or None,
        origin_pid=os.getpid(),
        customer_visible=False,
        attributes={
            "recovery_format": _FORMAT,
            "last_good_seq": claim.last_good_seq,
            "last_good_hash": claim.last_good_hash,
            "halted_seq": claim.halted_seq,
            "acknowledged": claim.acknowledged,
        },
    )


def claim_of(event: AccessEvent) -> RecoveryClaim | None:
    """The claim ``event`` makes if it is a recovery record, else None."""
    if event.event_type is not EventType.AUDIT_STARTED or event.action != RECOVERY_ACTION:
        return None
    attributes = event.attributes
    good_seq, good_hash = attributes.get("last_good_seq"), attributes.get("last_good_hash")
    halted, acknowledged = attributes.get("halted_seq"), attributes.get("acknowledged")
    if attributes.get("recovery_format") != _FORMAT:
        return None
    if not (_is_seq(good_seq) and _is_seq(halted) and isinstance(good_hash, str)):
        return None
    if not (is_digest(good_hash) and isinstance(acknowledged, str)):
        return None
    return RecoveryClaim(good_seq, good_hash, halted, acknowledged)


def _is_seq(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
