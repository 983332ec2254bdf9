"""The ``access.allowed`` record is committed before the body runs: seen from outside.

While a gated body runs, it opens its own connection (a new ``sqlite3`` connection to the
file, or a new ``psycopg`` connection to the server), shares nothing with the store's engine
or pool, and looks for its call's records. ``access.allowed`` must be there, so it was
committed, not merely written in a transaction still open; ``access.completed`` must not be
there yet, so the look happened mid-call. Every shape of gated code is checked, on both
databases.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from accessaudit import AccessContext, ActorType, MacKey, access_context, current_context
from accessaudit.record._rows import to_row
from accessaudit.record.integrity import GENESIS_HASH, seal_batch
from accessaudit.store._schema import events
from tests.strategies import make_event

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from accessaudit import Gate, SqlStore
    from tests.conftest import Backend

_COUNT = (
    "SELECT event_type, count(*) FROM accessaudit_events WHERE request_id = {} GROUP BY event_type"
)


def _seen_from_outside(backend: Backend, request_id: str) -> Counter[str]:
    """The call's records by event type, read over a brand-new connection of the driver's own."""
    if backend.name == "sqlite":
        database = make_url(backend.url).database
        assert database is not None
        connection = sqlite3.connect(database)
        try:
            rows = connection.execute(_COUNT.format("?"), (request_id,)).fetchall()
        finally:
            connection.close()
    else:
        with psycopg.connect(backend.url, autocommit=True) as pg:
            rows = pg.execute(_COUNT.format("%s"), (request_id,)).fetchall()
    return Counter({str(kind): int(count) for kind, count in rows})


class Looker:
    """What each body saw when it looked, by request id."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.seen: dict[str, Counter[str]] = {}

    def look(self) -> None:
        """Called by a body while it runs."""
        ctx = current_context()
        assert ctx is not None
        assert ctx.request_id is not None
        self.seen[ctx.request_id] = _seen_from_outside(self.backend, ctx.request_id)


def _shapes(gate: Gate, looker: Looker) -> dict[str, Callable[[], Any]]:
    @gate.protect("crm.contacts")
    def function(customer_id: str) -> list[int]:
        looker.look()
        return [1]

    @gate.protect("crm.contacts")
    def generator(customer_id: str) -> Iterator[int]:
        looker.look()
        yield 1

    @gate.protect("crm.contacts")
    async def coroutine(customer_id: str) -> list[int]:
        looker.look()
        return [1]

    @gate.protect("crm.contacts")
    async def async_generator(customer_id: str) -> AsyncIterator[int]:
        looker.look()
        yield 1

    def guard() -> None:
        with gate.guard("crm.contacts", customer_id="acme"):
            looker.look()

    async def async_guard() -> None:
        async with gate.guard("crm.contacts", customer_id="acme"):
            looker.look()

    async def drain() -> list[int]:
        return [item async for item in async_generator("acme")]

    return {
        "function": lambda: function("acme"),
        "generator": lambda: list(generator("acme")),
        "coroutine": lambda: asyncio.run(coroutine("acme")),
        "async generator": lambda: asyncio.run(drain()),
        "guard": guard,
        "async guard": lambda: asyncio.run(async_guard()),
    }


SHAPES = ["function", "generator", "coroutine", "async generator", "guard", "async guard"]


@pytest.mark.parametrize("shape", SHAPES)
def test_the_allowed_record_is_committed_before_the_body_runs(
    backend: Backend, gate: Gate, shape: str
) -> None:
    """Mid-body, a fresh connection sees access.allowed and not yet access.completed."""
    looker = Looker(backend)
    call = _shapes(gate, looker)[shape]
    request_id = str(uuid.uuid4())
    ctx = AccessContext(
        actor_id="api",
        actor_type=ActorType.SERVICE,
        role="app",
        purpose="service_delivery",
        request_id=request_id,
    )
    with access_context(ctx):
        call()
    assert looker.seen == {request_id: Counter({"access.allowed": 1})}
    after = _seen_from_outside(backend, request_id)
    assert after == Counter({"access.allowed": 1, "access.completed": 1})


def test_the_outside_look_does_not_see_an_uncommitted_record(
    backend: Backend, store: SqlStore, key: MacKey
) -> None:
    """The outside look sees committed rows only: one in a still-open transaction is not seen."""
    request_id = str(uuid.uuid4())
    (sealed,) = seal_batch("probe", 0, GENESIS_HASH, [make_event(request_id=request_id)], key)
    with backend.owner.connect() as connection:
        connection.execute(insert(events).values(to_row(sealed)))
        assert _seen_from_outside(backend, request_id) == Counter()
        connection.commit()
    assert _seen_from_outside(backend, request_id) == Counter({"access.allowed": 1})
