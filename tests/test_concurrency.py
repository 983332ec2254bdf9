"""Many processes, each with many threads, append to one chain at once."""

from __future__ import annotations

import multiprocessing
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.engine import make_url

from accessaudit import MacKey, SqlStore, verify_store
from tests.strategies import make_event
from tests.workers import append_from_threads, gated_reads_from_threads

if TYPE_CHECKING:
    from tests.conftest import Backend

# INTEGRITY.md G3: at least 8 writer processes on SQLite and 16 "hosts" on PostgreSQL.
PROCESSES = {"sqlite": 8, "postgresql": 16}
THREADS, APPENDS = 3, 8


@pytest.mark.slow
def test_concurrent_writers_keep_one_gapless_chain(
    backend: Backend, store: SqlStore, key: MacKey
) -> None:
    """Every acknowledged event is stored once, seq has no gap or fork, and the chain verifies."""
    processes = PROCESSES[backend.name]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        futures = [
            pool.submit(
                append_from_threads, backend.url, key.secret.hex(), f"host-{p}", THREADS, APPENDS
            )
            for p in range(processes)
        ]
        acked = [event_id for f in futures for event_id in f.result()]

    rows = [dict(r) for r in store.rows()]
    stored = Counter(str(r["event_id"]) for r in rows)
    assert (
        len(acked)
        == len(set(acked))
        == processes * THREADS * sum(1 + i % 3 for i in range(APPENDS))
    )
    assert all(stored[event_id] == 1 for event_id in acked)
    assert len(rows) == len(acked)  # nothing unacknowledged either
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert len({r["origin_host"] for r in rows}) == processes
    batches: dict[tuple[object, object, object], list[int]] = {}
    for r in rows:
        batches.setdefault((r["origin_host"], r["origin_pid"], r["request_id"]), []).append(
            r["seq"]
        )
    for seqs in batches.values():  # a batch is one transaction: its records are adjacent
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    report = verify_store(store, key)
    assert report.intact, report.findings


@pytest.mark.slow
def test_gated_hosts_share_one_gapless_chain(
    backend: Backend, store: SqlStore, key: MacKey
) -> None:
    """Four "hosts" x four threads of gated reads: one chain, no gap, no fork, none lost.

    Each host is a process with its own host id, store and group commit; on PostgreSQL they
    meet at the chain's lock. Every call that returned has its allowed and completed records.
    """
    hosts, threads, calls = 4, 4, 15
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(hosts, mp_context=context) as pool:
        futures = [
            pool.submit(
                gated_reads_from_threads, backend.url, key.secret.hex(), f"host-{h}", threads, calls
            )
            for h in range(hosts)
        ]
        assert [f.result() for f in futures] == [threads * calls] * hosts

    rows = [dict(r) for r in store.rows()]
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    per_call = Counter((r["origin_host"], r["origin_pid"], r["request_id"]) for r in rows)
    assert len(per_call) == hosts * threads * calls
    assert set(per_call.values()) == {2}  # allowed + completed, each exactly once
    kinds = Counter(r["event_type"] for r in rows)
    assert kinds == {"access.allowed": len(per_call), "access.completed": len(per_call)}
    assert {r["origin_host"] for r in rows} == {f"host-{h}" for h in range(hosts)}
    report = verify_store(store, key)
    assert report.intact, report.findings


@pytest.mark.postgres
def test_writers_with_different_search_paths_share_the_chain_lock(
    pg_backend: Backend, key: MacKey
) -> None:
    """Writers reaching the same table through different search_paths still serialise."""
    decoy = f"aa_decoy_{uuid.uuid4().hex[:8]}"
    pg_backend.sql(f"CREATE SCHEMA {decoy}")
    url = make_url(pg_backend.url)
    other_path = str(url.query["options"]).replace("search_path=", f"search_path={decoy},")
    other_url = url.update_query_dict({"options": other_path}).render_as_string(False)
    try:
        with (
            SqlStore(pg_backend.url, key=key, must_exist=False) as store,
            SqlStore(other_url, key=key) as other,
        ):
            store.create_schema()

            def write(target: SqlStore) -> None:
                for _ in range(20):
                    target.append([make_event()])

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(write, [store, other, store, other]))
            assert [r["seq"] for r in store.rows()] == list(range(1, 81))
            assert verify_store(store, key).intact
    finally:
        pg_backend.sql(f"DROP SCHEMA {decoy} CASCADE")


def test_concurrent_schema_creation_succeeds_once(backend: Backend) -> None:
    """Several inits at once all succeed; exactly one of them creates the table."""

    def create() -> list[str]:
        with SqlStore(backend.url, must_exist=False, timeout=30) as store:
            return store.create_schema()

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: create(), range(4)))
    assert sum("table accessaudit_events" in made for made in results) == 1
