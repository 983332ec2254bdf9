"""A gated application killed by the crash tests: acknowledges each read once it is recorded.

Run as ``python -m tests.crash_gate_writer URL KEY_HEX THREADS [async]``. Several threads (or,
with ``async``, as many tasks on one event loop, calling a protected coroutine) call a
protected read in a loop. Inside the body (so after ``access.allowed`` is committed) a thread
prints ``allowed <request id>``; after the call returns (so after ``access.completed`` is
committed) it prints ``done <request id>``. Lines are written whole and flushed one by one,
so the parent knows exactly what was acknowledged before the SIGKILL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import threading

import structlog

from accessaudit import Gate, MacKey, Policy, SqlStore, access_context
from tests.gatekit import EXAMPLE_POLICY, service

_print_lock = threading.Lock()


def _say(line: str) -> None:
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main() -> None:
    """Run gated reads from THREADS threads until killed."""
    url, key_hex, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    store = SqlStore(url, key=MacKey(bytes.fromhex(key_hex)), timeout=30)
    gate = Gate(store, Policy.load(EXAMPLE_POLICY), host=f"crash-{threading.get_native_id()}")

    @gate.protect("billing.invoices")
    def invoices(customer_id: str, request_id: str) -> list[int]:
        _say(f"allowed {request_id}")
        return [1, 2, 3]

    def work(thread: int) -> None:
        i = 0
        while True:
            request_id = f"{threading.get_native_id()}-{thread}-{i}"
            with access_context(dataclasses.replace(service(), request_id=request_id)):
                invoices("acme", request_id)
            _say(f"done {request_id}")
            i += 1

    if sys.argv[4:] == ["async"]:
        _run_tasks(gate, threads)
        return
    workers = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(threads)]
    _say("ready")
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def _run_tasks(gate: Gate, tasks: int) -> None:
    """The same reads from ``tasks`` tasks on one event loop, until killed."""

    @gate.protect("billing.invoices")
    async def invoices(customer_id: str, request_id: str) -> list[int]:
        _say(f"allowed {request_id}")
        return [1, 2, 3]

    async def work(task: int) -> None:
        i = 0
        while True:
            request_id = f"{threading.get_native_id()}-a{task}-{i}"
            with access_context(dataclasses.replace(service(), request_id=request_id)):
                await invoices("acme", request_id)
            _say(f"done {request_id}")
            i += 1

    async def main() -> None:
        _say("ready")
        await asyncio.gather(*(work(t) for t in range(tasks)))

    asyncio.run(main())


if __name__ == "__main__":
    main()
