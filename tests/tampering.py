"""What an owner with raw SQL (triggers dropped) can do to the log, as test helpers."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING

from accessaudit.record._rows import to_row
from accessaudit.record.integrity import leaf_hash, link_hash
from accessaudit.store._schema import events

if TYPE_CHECKING:
    from accessaudit import SqlStore
    from tests.conftest import Backend

COLUMNS = [c.name for c in events.columns]


def set_column(backend: Backend, seq: int, column: str, value: object, chain: str = "main") -> None:
    """UPDATE one column of the row at ``seq``."""
    assert column in COLUMNS
    backend.sql(
        f"UPDATE accessaudit_events SET {column} = :value WHERE chain_id = :chain AND seq = :seq",
        value=value,
        chain=chain,
        seq=seq,
    )


def delete_seq(backend: Backend, seq: int, chain: str = "main") -> None:
    """DELETE the row at ``seq``."""
    backend.sql(
        "DELETE FROM accessaudit_events WHERE chain_id = :chain AND seq = :seq",
        chain=chain,
        seq=seq,
    )


def insert_row(backend: Backend, row: dict[str, object]) -> None:
    """INSERT a raw row."""
    names = ", ".join(row)
    values = ", ".join(f":{n}" for n in row)
    backend.sql(f"INSERT INTO accessaudit_events ({names}) VALUES ({values})", **row)


def rewrite_without_key(backend: Backend, store: SqlStore, seq: int, actor_id: str) -> None:
    """Edit one record and recompute the hashes from it on, as one without the key could."""
    # Knows the algorithm, lacks the HMAC key: the MACs stay as they were.
    records = list(store.read())
    previous = records[seq - 2].chain_hash if seq > 1 else "00" * 32
    for record in records[seq - 1 :]:
        event = record.event
        if record.seq == seq:
            event = replace(event, actor_id=actor_id)
            set_column(backend, seq, "actor_id", actor_id)
        leaf = leaf_hash(record.chain_id, record.seq, event)
        link = link_hash(previous, leaf)
        set_column(backend, record.seq, "leaf_hash", leaf)
        set_column(backend, record.seq, "chain_hash", link)
        previous = link


def forged_copy(store: SqlStore, seq: int, new_seq: int) -> dict[str, object]:
    """A copy of record ``seq`` at ``new_seq`` under a new id, MAC guessed.

    Its hashes are recomputed so that it links to the record before ``new_seq`` (or to the
    head, past the end): everything a forger without the key can get right.
    """
    record = next(store.read(seq, seq))
    head = store.head()
    assert head is not None
    before = next(store.read(new_seq - 1, new_seq - 1), None) if new_seq > 1 else None
    previous = before.chain_hash if before is not None else head.chain_hash
    event = replace(record.event, event_id=uuid.uuid4())
    leaf = leaf_hash("main", new_seq, event)
    forged = replace(
        record,
        event=event,
        seq=new_seq,
        leaf_hash=leaf,
        chain_hash=link_hash(previous, leaf),
        mac=secrets.token_hex(32),
    )
    return to_row(forged)
