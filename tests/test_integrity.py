"""check_seals: the one check of a stored record's leaf, link and MAC."""

from __future__ import annotations

import dataclasses
import uuid

from accessaudit import AccessEvent, ActorType, EventType, MacKey, StoredEvent
from accessaudit.record.integrity import GENESIS_HASH, SealCheck, check_seals, seal_batch
from tests.strategies import FIXED_EVENT

KEY = MacKey(b"\x07" * 32)
OTHER_KEY = MacKey(b"\x08" * 32)


def _two_records() -> tuple[StoredEvent, StoredEvent]:
    events = [
        AccessEvent(
            **FIXED_EVENT,
            event_type=EventType.AUDIT_REPORT,
            actor_id="auditor-1",
            actor_type=ActorType.HUMAN,
        ),
        AccessEvent(
            event_id=uuid.UUID(int=FIXED_EVENT["event_id"].int + 1),
            occurred_at=FIXED_EVENT["occurred_at"],
            event_type=EventType.AUDIT_REPORT,
            actor_id="auditor-2",
            actor_type=ActorType.HUMAN,
        ),
    ]
    first, second = seal_batch("main", 0, GENESIS_HASH, events, KEY)
    return first, second


def test_a_sealed_record_passes_every_check() -> None:
    """A record as sealed, checked from its predecessor's hash with its key, is intact."""
    first, second = _two_records()
    assert check_seals(first, GENESIS_HASH, KEY) == SealCheck(True, True, True, True)
    assert check_seals(second, first.chain_hash, KEY).intact


def test_each_failing_seal_is_named() -> None:
    """An edited field fails the leaf, a wrong predecessor the link, a forged MAC the MAC."""
    first, second = _two_records()
    edited = dataclasses.replace(second, event=first.event)
    assert check_seals(edited, first.chain_hash, KEY) == SealCheck(False, True, True, True)
    assert check_seals(second, GENESIS_HASH, KEY) == SealCheck(True, False, True, True)
    forged = dataclasses.replace(second, mac=OTHER_KEY.seal(second.chain_hash))
    assert check_seals(forged, first.chain_hash, KEY) == SealCheck(True, True, True, False)


def test_an_unknown_predecessor_leaves_the_link_unchecked() -> None:
    """After a gap (previous None) the link counts as holding; the rest is still checked."""
    _, second = _two_records()
    assert check_seals(second, None, KEY) == SealCheck(True, True, True, True)


def test_without_the_sealing_key_a_record_is_never_intact() -> None:
    """No key: the MAC is unchecked; another key: the key is wrong; neither is intact."""
    first, _ = _two_records()
    assert check_seals(first, GENESIS_HASH, None) == SealCheck(True, True, None, None)
    assert check_seals(first, GENESIS_HASH, OTHER_KEY) == SealCheck(True, True, False, None)
    assert not check_seals(first, GENESIS_HASH, None).intact
    assert not check_seals(first, GENESIS_HASH, OTHER_KEY).intact
