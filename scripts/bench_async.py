"""The asyncio leg of scripts/bench.py: one event loop, many tasks calling a gated coroutine.

Each rep runs a fixed number of calls spread over ``tasks`` tasks on one loop. Besides
throughput and latency it measures what asyncio users care about:

- hand-offs per call: jobs the gate submitted to the loop's default executor (another
  thread), counted by the executor itself;
- the event loop's lag: a ticker task asks to wake every millisecond and records how late
  it woke (worst and p99). A commit run on the loop's thread would add about one commit
  (an fsync) to it; so does, under the GIL, Python work of the worker threads and of the
  other tasks in the same turn of the loop, which is what remains here (no commit runs
  on the loop's thread: tests/test_gate_async.py checks that).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from bench_gated import gated_store_and_gate
from bench_threads import CUSTOMER, SERVICE, Rep, percentile, summarise

from accessaudit import access_context

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from accessaudit import MacKey

TICK_S = 0.001


class CountingExecutor(ThreadPoolExecutor):
    """The loop's default executor, counting the jobs handed to it."""

    submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Count, then submit as usual."""
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


async def _ticker(stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        asked = time.perf_counter()
        await asyncio.sleep(TICK_S)
        lags.append(time.perf_counter() - asked - TICK_S)


async def _rep(
    read: Callable[[str], Coroutine[Any, Any, object]], tasks: int, calls: int
) -> tuple[Rep, list[float]]:
    latencies: list[float] = []

    async def run(count: int) -> None:
        with access_context(SERVICE):
            for _ in range(count):
                begin = time.perf_counter_ns()
                await read(CUSTOMER)
                latencies.append((time.perf_counter_ns() - begin) / 1000)

    stop, lags = asyncio.Event(), list[float]()
    ticker = asyncio.create_task(_ticker(stop, lags))
    per_task = [calls // tasks + (1 if i < calls % tasks else 0) for i in range(tasks)]
    start = time.perf_counter()
    await asyncio.gather(*(run(n) for n in per_task))
    seconds = time.perf_counter() - start
    stop.set()
    await ticker
    return Rep(calls, seconds, latencies), lags


def leg_async(url: str, key: MacKey, reps: int, tasks: int, calls: int) -> dict[str, Any]:
    """Gated coroutine calls from ``tasks`` tasks on one loop, on an empty log at ``url``."""
    store, gate = gated_store_and_gate(url, key)

    @gate.protect("crm.contacts")
    async def read_contacts(customer_id: str) -> list[dict[str, str]]:
        return [{"id": f"{customer_id}-{i}", "email": "x@example.com"} for i in range(3)]

    async def main() -> dict[str, Any]:
        executor = CountingExecutor()
        asyncio.get_running_loop().set_default_executor(executor)
        await _rep(read_contacts, tasks, max(tasks, calls // 10))  # warm-up
        executor.submitted = 0
        done = [await _rep(read_contacts, tasks, calls) for _ in range(reps)]
        result = summarise([rep for rep, _ in done])
        result["handoffs_per_call"] = executor.submitted / (reps * calls)
        lags = sorted(lag for _, rep_lags in done for lag in rep_lags)
        result["worst_loop_lag_us"] = lags[-1] * 1e6 if lags else 0.0
        result["p99_loop_lag_us"] = percentile(lags, 0.99) * 1e6 if lags else 0.0
        return result

    with store:
        store.create_schema()
        return asyncio.run(main())
