"""The access context: scoped, restored, and never leaking between threads or tasks."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest

from accessaudit import (
    AccessContext,
    AccessDenied,
    ActorType,
    InvalidEvent,
    access_context,
    carry_context,
    current_context,
)
from tests.gatekit import Desk, accesses, agent

if TYPE_CHECKING:
    from accessaudit import Gate, SqlStore


def test_scopes_nest_and_restore_even_on_error() -> None:
    """Leaving a scope, normally or by an exception, brings back the previous context."""
    outer, inner = agent("g-1"), agent("g-2", actor_id="agent-8")
    assert current_context() is None
    with access_context(outer) as entered:
        assert entered is outer
        seen: list[AccessContext | None] = []

        def fail_inside() -> None:
            with access_context(inner):
                seen.append(current_context())
                raise RuntimeError

        with pytest.raises(RuntimeError):
            fail_inside()
        assert seen == [inner]
        assert current_context() is outer
    assert current_context() is None


def test_one_scope_object_can_be_reused_and_shared() -> None:
    """The same scope entered twice (nested) unwinds in order."""
    scope = access_context(actor_id="svc", actor_type=ActorType.SERVICE)
    with scope, scope:
        assert current_context() is scope.context
    assert current_context() is None


def test_as_a_decorator_on_sync_and_async_functions() -> None:
    """Each call runs inside the context; async functions stay async."""
    ctx = agent("g-1")

    @access_context(ctx)
    def sync() -> AccessContext | None:
        return current_context()

    @access_context(ctx)
    async def coroutine() -> AccessContext | None:
        await asyncio.sleep(0)
        return current_context()

    assert sync() is ctx
    assert asyncio.run(coroutine()) is ctx
    assert current_context() is None


def test_generators_cannot_be_decorated() -> None:
    """A generator's body runs in its consumer's context, so the decorator refuses it."""
    with pytest.raises(TypeError, match="use `with access_context"):

        @access_context(agent("g-1"))
        def rows() -> object:
            yield 1


def test_invalid_values_are_rejected_all_at_once() -> None:
    """Empty, NUL-bearing and over-long values are listed together."""
    with pytest.raises(InvalidEvent) as caught:
        AccessContext(actor_id="", role="a\x00b", justification="x" * 2001, actor_type="robot")  # type: ignore[arg-type]
    fields = [p.field for p in caught.value.problems]
    assert fields == ["actor_type", "actor_id", "role", "justification"]
    with pytest.raises(TypeError, match="not both"):
        access_context(agent("g-1"), actor_id="x")


def test_a_new_thread_starts_without_context_and_carry_context_carries_it(
    gate: Gate, store: SqlStore
) -> None:
    """A worker thread is denied (no_context) unless the caller's context is carried over."""
    desk = Desk(gate)
    with (
        access_context(
            actor_id="api", actor_type=ActorType.SERVICE, role="app", purpose="service_delivery"
        ),
        ThreadPoolExecutor(max_workers=2) as pool,
    ):
        plain = pool.submit(desk.invoices, "acme")
        carried = pool.submit(carry_context(desk.invoices), "acme", 2)
        with pytest.raises(AccessDenied, match="no_context"):
            plain.result()
        assert carried.result() == (0, 1)
    reasons = sorted(str(r.event.reason_code) for r in accesses(store) if r.event.decision)
    assert reasons == ["allowed", "no_context"]


def test_concurrent_threads_each_see_their_own_context() -> None:
    """Many threads setting different contexts at once never observe another's."""
    barrier = threading.Barrier(8)
    seen: dict[int, list[str]] = {}

    def worker(n: int) -> None:
        with access_context(actor_id=f"actor-{n}"):
            barrier.wait()
            observed = []
            for _ in range(200):
                ctx = current_context()
                observed.append(ctx.actor_id if ctx else "none")
            seen[n] = observed
        assert current_context() is None

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {n: set(ids) for n, ids in seen.items()} == {n: {f"actor-{n}"} for n in range(8)}


def test_concurrent_tasks_each_see_their_own_context(gate: Gate, store: SqlStore) -> None:
    """Tasks interleaving gated calls record each call against its own actor."""
    desk = Desk(gate)

    async def task(n: int) -> list[str]:
        ctx = AccessContext(
            actor_id=f"svc-{n}",
            actor_type=ActorType.SERVICE,
            role="app",
            purpose="service_delivery",
        )
        with access_context(ctx):
            found = []
            for _ in range(3):
                await desk.fetch(f"customer-{n}")
                await asyncio.sleep(0)
                seen = current_context()
                found.append(seen.actor_id if seen else "none")
            return found

    async def main() -> list[list[str]]:
        return list(await asyncio.gather(*(task(n) for n in range(5))))

    results = asyncio.run(main())
    assert results == [[f"svc-{n}"] * 3 for n in range(5)]
    for record in accesses(store):
        number = record.event.actor_id.removeprefix("svc-")
        assert record.event.customer_id == f"customer-{number}"


def test_entering_scopes_leaves_nothing_behind() -> None:
    """A thread entering many scopes keeps a bounded context (no per-scope variables)."""
    before = len(contextvars.copy_context())
    for n in range(200):
        with access_context(actor_id=f"actor-{n}"):
            pass
    assert len(contextvars.copy_context()) <= before + 1
