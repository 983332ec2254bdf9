"""Gated coroutines: records written off the event loop, many tasks sharing few hand-offs."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

from accessaudit import AccessDenied, AuditUnavailable, Gate, SqlStore, access_context
from tests import writerkit
from tests.gatekit import CANARY, agent, kinds, service


def _types(store: SqlStore) -> list[str]:
    return [kind.split(":")[0] for kind in kinds(store)]


if TYPE_CHECKING:
    from collections.abc import Callable

TASKS = 64
CALLS_PER_TASK = 4


class _CountingExecutor(ThreadPoolExecutor):
    submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def _run_tasks(gate: Gate, executor: ThreadPoolExecutor) -> list[object]:
    @gate.protect("billing.invoices")
    async def invoices(customer_id: str) -> list[str]:
        await asyncio.sleep(0)  # the body itself lets other tasks run
        return [CANARY]

    async def one_task() -> list[object]:
        with access_context(service()):
            return [await invoices("acme") for _ in range(CALLS_PER_TASK)]

    async def main() -> list[object]:
        asyncio.get_running_loop().set_default_executor(executor)
        results = await asyncio.gather(*(one_task() for _ in range(TASKS)))
        return [r for rs in results for r in rs]

    return asyncio.run(main())


def test_many_tasks_share_hand_offs_and_every_call_is_recorded(gate: Gate, store: SqlStore) -> None:
    """64 tasks: every call's decision and outcome recorded, in far fewer hand-offs than calls.

    The appends of one turn of the loop go to the worker thread together, so the count of
    jobs handed to the executor is well under one per call (three each, before).
    """
    executor = _CountingExecutor()
    results = _run_tasks(gate, executor)
    calls = TASKS * CALLS_PER_TASK
    assert results == [[CANARY]] * calls
    assert _types(store).count("access.allowed") == calls
    assert _types(store).count("access.completed") == calls
    assert executor.submitted <= calls // 4, executor.submitted


def test_commits_never_run_on_the_event_loop_thread(gate: Gate, store: SqlStore) -> None:
    """A gated coroutine's records are written from threads other than the loop's.

    Every statement is sent from a worker thread, so a commit (an fsync) never stalls it.
    """
    senders: set[int] = set()
    loop_threads: set[int] = set()

    @gate.protect("billing.invoices")
    async def invoices(customer_id: str) -> list[str]:
        loop_threads.add(threading.get_ident())
        return [CANARY]

    async def main() -> None:
        with access_context(service()):
            for _ in range(3):
                await invoices("acme")

    with writerkit.on_statement(store, lambda _s, _d: senders.add(threading.get_ident())):
        asyncio.run(main())
    assert senders
    assert loop_threads
    assert not senders & loop_threads
    assert _types(store) == ["access.allowed", "access.completed"] * 3


def test_a_denied_coroutine_is_recorded_and_raises(gate: Gate, store: SqlStore) -> None:
    """Without evidence a support read is denied: recorded, AccessDenied, body not run."""
    ran: list[str] = []

    @gate.protect("crm.contacts")
    async def contacts(customer_id: str) -> list[str]:
        ran.append(customer_id)
        return [CANARY]

    async def main() -> None:
        with access_context(agent()):
            await contacts("acme")

    with pytest.raises(AccessDenied):
        asyncio.run(main())
    assert ran == []
    assert _types(store) == ["access.denied"]


def test_an_unreachable_store_fails_a_coroutine_closed(gate: Gate, store: SqlStore) -> None:
    """If the decision cannot be committed, the coroutine's body never runs."""
    ran: list[str] = []

    @gate.protect("billing.invoices")
    async def invoices(customer_id: str) -> list[str]:
        ran.append(customer_id)
        return [CANARY]

    def refuse(statement: str, _driver: object) -> None:
        if statement.startswith("BEGIN"):
            raise writerkit.driver_error(store, "disk I/O error")

    async def main() -> None:
        with access_context(service()):
            await invoices("acme")

    with writerkit.on_statement(store, refuse), pytest.raises(AuditUnavailable):
        asyncio.run(main())
    assert ran == []
