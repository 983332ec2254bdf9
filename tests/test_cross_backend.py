"""SQLite and PostgreSQL seal the same events identically."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from accessaudit import MacKey, SqlStore
from tests.strategies import make_event

if TYPE_CHECKING:
    from tests.conftest import Backend


@pytest.mark.postgres
def test_same_events_give_byte_identical_hashes(
    sqlite_backend: Backend, pg_backend: Backend, key: MacKey
) -> None:
    """Leaf hashes, chain hashes and MACs match across databases, as stored and as read."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    batch = [
        make_event(
            event_id=uuid.UUID(int=i + 1),
            occurred_at=start + timedelta(microseconds=i * 1_000_001),
            actor_id=f"agent-{i}-ü-漢字-🙂",
            attributes={"case": f"c-{i}", "n": -i, "flag": i % 2 == 0, "none": None},
            justification="line one\nline two\ttab" if i % 2 else None,
        )
        for i in range(8)
    ]
    seals = []
    for backend in (sqlite_backend, pg_backend):
        with SqlStore(backend.url, key=key, must_exist=False) as store:
            store.create_schema()
            stored = store.append(batch[:3]) + store.append(batch[3:])
            read_back = list(store.read())
            assert read_back == stored
            seals.append([(r.leaf_hash, r.chain_hash, r.mac) for r in read_back])
    assert seals[0] == seals[1]
