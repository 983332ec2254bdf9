"""Leaf hashes, chain links and their MACs: pure functions, no I/O.

For record ``n`` of a chain::

    leaf_n  = SHA-256(0x00 || encode(chain_id, n, event_n))           (RFC 6962 leaf prefix)
    chain_n = SHA-256("accessaudit/link/v1" 0x00 || chain_{n-1} || leaf_n),  chain_0 = 32 zero bytes
    mac_n   = HMAC-SHA-256(key, "accessaudit/mac/v1" 0x00 || chain_n)

The leaf commits to the record and its position; the chain hash commits to everything
before it; the MAC lets a key holder detect a chain recomputed by someone without the key.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Final

from accessaudit.encoding import encode
from accessaudit.events import AccessEvent, StoredEvent

if TYPE_CHECKING:
    from collections.abc import Sequence

    from accessaudit.keys import MacKey

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


def seal_batch(
    chain_id: str,
    last_seq: int,
    last_chain_hash: str,
    events: Sequence[AccessEvent],
    key: MacKey,
) -> list[StoredEvent]:
    """Place ``events`` after (``last_seq``, ``last_chain_hash``) and compute their seals."""
    sealed: list[StoredEvent] = []
    previous = last_chain_hash
    for offset, event in enumerate(events, start=1):
        seq = last_seq + offset
        leaf = leaf_hash(chain_id, seq, event)
        link = link_hash(previous, leaf)
        sealed.append(
            StoredEvent(
                event=event,
                chain_id=chain_id,
                seq=seq,
                leaf_hash=leaf,
                chain_hash=link,
                mac=key.seal(link),
                mac_key_id=key.key_id,
            )
        )
        previous = link
    return sealed
