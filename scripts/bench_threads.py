"""What every throughput leg of scripts/bench.py shares: the timed thread runner and its figures.

A leg is one way of making a call (gated, or a baseline decorator) at one thread count. Each
rep runs a fixed number of calls spread over the threads; every call's latency is kept, and
the rep's throughput is its calls over the wall time from the moment all threads were ready
to the moment the last one finished. A leg's figures are those of its median rep.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import structlog

from accessaudit import AccessContext, ActorType

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

#: A service serving its own customer: service_delivery needs no evidence lookup, so a gated
#: call is decide + two durable records (allowed, then completed).
SERVICE = AccessContext(
    actor_id="api", actor_type=ActorType.SERVICE, role="app", purpose="service_delivery"
)
CUSTOMER = "acme"
#: Calls each thread makes before the clock starts: connections opened, pools and caches warm.
WARMUP = 3

Call = Callable[[], object]
#: Entered by each worker thread: sets up what that thread needs (its access context, its own
#: connection) and yields the call to time.
Worker = Callable[[], AbstractContextManager[Call]]


def read_contacts(customer_id: str) -> list[dict[str, str]]:
    """The protected function: stands for a small query returning a few rows."""
    return [{"id": f"{customer_id}-{i}", "email": "x@example.com"} for i in range(3)]


_devnull: TextIO | None = None


def log_like_the_cli_to_devnull() -> None:
    """structlog as the CLI configures it with --log-events, but written to /dev/null.

    Every record the store commits is emitted through structlog; a real deployment pays for
    rendering that JSON, so the benchmark does too, without measuring a terminal.
    """
    global _devnull  # noqa: PLW0603 - one sink per process, opened once
    if _devnull is None:
        _devnull = open(os.devnull, "w")  # noqa: PTH123, SIM115 - lives as long as the process
    structlog.configure(
        processors=[
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(_devnull),
        cache_logger_on_first_use=False,
    )


@contextmanager
def structlog_quiet() -> Iterator[None]:
    """No audit-event output inside (building a log is not what is measured)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        yield
    finally:
        log_like_the_cli_to_devnull()


@dataclass
class Rep:
    """One repetition: how many calls, how long the whole rep took, each call's latency."""

    calls: int
    seconds: float
    latencies_us: list[float]

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else math.inf


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` as evenly as whole numbers allow."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_rep(threads: int, calls: int, worker: Worker) -> Rep:
    """Make ``calls`` calls over ``threads`` threads, each inside its own ``worker()``."""
    latencies: list[float] = []
    ends: list[float] = []
    errors: list[BaseException] = []
    start: list[float] = []
    lock = threading.Lock()
    # The clock starts when every thread has warmed up and is waiting here.
    ready = threading.Barrier(threads, action=lambda: start.append(time.perf_counter()))

    def run(count: int) -> None:
        mine: list[float] = []
        try:
            with worker() as call:
                for _ in range(WARMUP):
                    call()
                ready.wait()
                for _ in range(count):
                    begin = time.perf_counter_ns()
                    call()
                    mine.append((time.perf_counter_ns() - begin) / 1000)
                end = time.perf_counter()
        except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
            ready.abort()  # the others must not wait for a thread that is gone
            with lock:
                errors.append(e)
            return
        with lock:
            latencies.extend(mine)
            ends.append(end)

    pool = [threading.Thread(target=run, args=(n,)) for n in shares(calls, threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if errors:
        raise (real or errors)[0]
    return Rep(calls, max(ends) - start[0], latencies)


def run_reps(reps: int, threads: int, calls: int, worker: Worker) -> list[Rep]:
    """``reps`` repetitions of ``run_rep`` on the same setup."""
    return [run_rep(threads, calls, worker) for _ in range(reps)]


def summarise(reps: Sequence[Rep]) -> dict[str, Any]:
    """The median rep's throughput and latencies (median by throughput), and every rep's rate."""
    rates = [r.rate for r in reps]
    middle = reps[rates.index(statistics.median_low(rates))]
    latencies = sorted(middle.latencies_us)
    return {
        "calls_per_s": middle.rate,
        "mean_us": statistics.fmean(latencies),
        "p50_us": percentile(latencies, 0.50),
        "p99_us": percentile(latencies, 0.99),
        "calls_per_rep": middle.calls,
        "rep_rates": rates,
    }
