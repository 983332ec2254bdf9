"""Leaf hashes, chain links and their MACs: pure functions, no I/O.

For record ``n`` of a chain::

    leaf_n  = SHA-256(0x00 || encode(chain_id, n, event_n))           (RFC 6962 leaf prefix)
    chain_n = SHA-256("accessaudit/link/v1" 0x00 || chain_{n-1} || leaf_n),  chain_0 = 32 zero bytes
    mac_n   = HMAC-SHA-256(key, "accessaudit/mac/v1" 0x00 || chain_n)

The leaf commits to the record and its position; the chain hash commits to everything
before it; the MAC lets a key holder detect a chain recomputed by someone without the key.
``check_seals`` is the one check of a stored record against all three, for the verifier and
for the evidence registry alike.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from accessaudit.record.encoding import encode
from accessaudit.record.events import AccessEvent, StoredEvent

if TYPE_CHECKING:
    from collections.abc import Sequence

    from accessaudit.record.keys import MacKey

__all__ = [
    "GENESIS_HASH",
    "SealCheck",
    "check_seals",
    "is_digest",
    "leaf_digest",
    "leaf_hash",
    "link_digest",
    "link_hash",
    "seal_batch",
]

GENESIS_HASH: Final = "00" * 32
_DIGEST = re.compile(r"[0-9a-f]{64}")


def is_digest(value: object) -> bool:
    """Whether ``value`` is a SHA-256 digest as stored: 64 lower-case hex digits."""
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


_LINK_PREFIX: Final = b"accessaudit/link/v1\x00"


def leaf_hash(chain_id: str, seq: int, event: AccessEvent) -> str:
    """Hex SHA-256 of the record's canonical encoding, with the leaf domain prefix."""
    return leaf_digest(encode(chain_id, seq, event)).hex()


def link_hash(previous_chain_hash: str, leaf: str) -> str:
    """Hex chain hash of a record whose leaf hash is ``leaf``, following ``previous_chain_hash``."""
    return link_digest(bytes.fromhex(previous_chain_hash), bytes.fromhex(leaf)).hex()


def leaf_digest(encoded: bytes) -> bytes:
    """``leaf_hash`` as raw bytes, from the record's canonical encoding."""
    return hashlib.sha256(b"\x00" + encoded).digest()


def link_digest(previous: bytes, leaf: bytes) -> bytes:
    """``link_hash`` as raw bytes, from the raw previous chain hash and leaf hash."""
    return hashlib.sha256(_LINK_PREFIX + previous + leaf).digest()


@dataclass(frozen=True, slots=True)
class SealCheck:
    """Which seals of one stored record hold (see ``check_seals``)."""

    leaf: bool  # its fields hash to its stored leaf hash
    link: bool  # its chain hash follows the predecessor's (True if that is not known)
    key: bool | None  # sealed by the key given (None: no key given)
    mac: bool | None  # its MAC matches its chain hash (None: no key, or sealed by another)

    @property
    def intact(self) -> bool:
        """Leaf, link and MAC all hold (never without a key)."""
        return self.leaf and self.link and self.mac is True


def check_seals(stored: StoredEvent, previous: str | None, key: MacKey | None) -> SealCheck:
    """Check a record's leaf hash, its link from ``previous`` and, with ``key``, its MAC.

    ``previous`` is the chain hash of the record before it (``GENESIS_HASH`` before seq 1);
    None means it is not known (after a gap), and the link is not checked. The MAC is
    checked only when the record names ``key`` as the key that sealed it.
    """
    leaf = leaf_hash(stored.chain_id, stored.seq, stored.event) == stored.leaf_hash
    # A predecessor whose chain hash is not even a digest (edited by the database's owner)
    # is a link that does not hold, not an error that stops the check.
    link = previous is None or (
        is_digest(previous) and link_hash(previous, stored.leaf_hash) == stored.chain_hash
    )
    if key is None:
        return SealCheck(leaf, link, None, None)
    if stored.mac_key_id != key.key_id:
        return SealCheck(leaf, link, False, None)
    return SealCheck(leaf, link, True, hmac.compare_digest(key.seal(stored.chain_hash), stored.mac))


def seal_batch(
    chain_id: str,
    last_seq: int,
    last_chain_hash: str,
    events: Sequence[AccessEvent],
    key: MacKey,
) -> list[StoredEvent]:
    """Place ``events`` after (``last_seq``, ``last_chain_hash``) and compute their seals."""
    sealed: list[StoredEvent] = []
    previous = bytes.fromhex(last_chain_hash)
    key_id = key.key_id
    for offset, event in enumerate(events, start=1):
        seq = last_seq + offset
        leaf = leaf_digest(encode(chain_id, seq, event))
        link = link_digest(previous, leaf)
        link_hex = link.hex()
        sealed.append(
            StoredEvent(event, chain_id, seq, leaf.hex(), link_hex, key.seal(link_hex), key_id)
        )
        previous = link
    return sealed
