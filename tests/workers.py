"""Code run in child processes by the concurrency tests (importable under spawn)."""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor

from accessaudit import Gate, MacKey, Policy, SqlStore, access_context
from tests.gatekit import EXAMPLE_POLICY, service
from tests.strategies import make_event


def append_from_threads(
    url: str, key_hex: str, host: str, threads: int, appends_per_thread: int
) -> list[str]:
    """Append from several threads; return the ids of events whose append returned."""
    key = MacKey(bytes.fromhex(key_hex))
    with SqlStore(url, key=key, timeout=30) as store:

        def work(thread: int) -> list[str]:
            acked: list[str] = []
            for i in range(appends_per_thread):
                batch = [
                    make_event(
                        origin_host=host, origin_pid=os.getpid(), request_id=f"t{thread}-{i}"
                    )
                    for _ in range(1 + i % 3)
                ]
                store.append(batch)
                acked += [str(e.event_id) for e in batch]
            return acked

        with ThreadPoolExecutor(threads) as pool:
            return [event_id for ids in pool.map(work, range(threads)) for event_id in ids]


def gated_reads_from_threads(url: str, key_hex: str, host: str, threads: int, calls: int) -> int:
    """Gated reads from several threads under host id ``host``; how many completed."""
    store = SqlStore(url, key=MacKey(bytes.fromhex(key_hex)), timeout=30)
    gate = Gate(store, Policy.load(EXAMPLE_POLICY), host=host)

    @gate.protect("billing.invoices")
    def invoices(customer_id: str) -> list[int]:
        return [1, 2]

    def work(thread: int) -> int:
        for i in range(calls):
            with access_context(dataclasses.replace(service(), request_id=f"{thread}-{i}")):
                invoices("acme")
        return calls

    with store, ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(work, range(threads)))
