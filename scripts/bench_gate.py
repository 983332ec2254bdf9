"""Measure what a gated call costs, against baselines measured in the same run.

Run: .venv/bin/python scripts/bench_gate.py [--quick] [--postgres URL] [--out FILE]

Single thread, one call at a time; per-call latencies in microseconds (median and p90):

- plain: the same function, not gated (baseline A);
- append: one durable ``SqlStore.append`` of one event (baseline B; an allowed call needs
  two: the decision before the body, the outcome after);
- gated service_delivery (no evidence to look up), gated support_request (a grant looked up
  and its records' MACs checked), and a denied call (one record);
- fail-closed: how long a call takes to raise ``AuditUnavailable`` while another writer holds
  the lock, against the gate's configured timeout.

The gated call's cost is reported as its median minus the plain call's median, and as a
ratio to two appends (what the durable records alone cost). Results also go to JSON
(default bench-results/gate.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import tempfile
import time
import uuid
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import structlog

from accessaudit import (
    AccessContext,
    AccessDenied,
    AccessEvent,
    ActorType,
    AuditUnavailable,
    EventType,
    Gate,
    MacKey,
    Policy,
    SqlStore,
    access_context,
)
from accessaudit.store._append import lock_chain

if TYPE_CHECKING:
    from collections.abc import Callable

POLICY = Path(__file__).parent.parent / "examples" / "policy.toml"
SERVICE = AccessContext(
    actor_id="api", actor_type=ActorType.SERVICE, role="app", purpose="service_delivery"
)


def _latencies(call: Callable[[], object], count: int) -> dict[str, float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return {"median_us": statistics.median(samples), "p90_us": samples[int(len(samples) * 0.9)]}


def _rows(customer_id: str) -> list[dict[str, str]]:
    return [{"id": f"{customer_id}-{i}"} for i in range(10)]


def bench(url: str, key: MacKey, calls: int, lock: Callable[[], Any]) -> dict[str, Any]:
    """Every figure for one database."""
    with SqlStore(url, key=key, must_exist=False) as store:
        store.create_schema()
        gate = Gate(store, Policy.load(POLICY), timeout=1.0)
        gated = gate.protect("crm.contacts")(_rows)
        grant = gate.registry.issue_grant(
            customer_id="acme",
            case_id="CASE-1",
            data_categories=["contact"],
            expires_at=datetime.now(UTC) + timedelta(days=1),
            issued_by="agent-7",
        )
        agent = AccessContext(
            actor_id="agent-7",
            role="support_agent",
            purpose="support_request",
            evidence_ref=grant.grant_id,
        )

        def append_one() -> object:
            event = AccessEvent(
                event_type=EventType.ACCESS_ALLOWED, actor_id="a", actor_type=ActorType.SERVICE
            )
            return store.append([event])

        def denied() -> None:
            with suppress(AccessDenied):
                gated("acme")

        figures: dict[str, Any] = {
            "plain": _latencies(lambda: _rows("acme"), calls),
            "append": _latencies(append_one, calls),
            "denied": _latencies(denied, calls),
        }
        with access_context(SERVICE):
            figures["gated_service"] = _latencies(lambda: gated("acme"), calls)
        with access_context(agent):
            figures["gated_support"] = _latencies(lambda: gated("acme"), calls)
        timeouts = []
        held = lock()
        try:
            with access_context(SERVICE):
                for _ in range(3):
                    start = time.perf_counter()
                    try:
                        gated("acme")
                    except AuditUnavailable:
                        timeouts.append(time.perf_counter() - start)
        finally:
            held()
        figures["fail_closed_s"] = {"max": max(timeouts), "timeout": 1.0}
    return figures


def _sqlite_lock(path: str) -> Callable[[], Callable[[], None]]:
    def hold() -> Callable[[], None]:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")

        def release() -> None:
            blocker.execute("ROLLBACK")
            blocker.close()

        return release

    return hold


def _pg_lock(url: str) -> Callable[[], Callable[[], None]]:
    def hold() -> Callable[[], None]:
        store = SqlStore(url)
        conn = store._engine.connect()
        conn.begin()
        lock_chain(conn, "main", 5.0)

        def release() -> None:
            conn.rollback()
            conn.close()
            store.close()

        return release

    return hold


def _print(db: str, figures: dict[str, Any]) -> None:
    plain = figures["plain"]["median_us"]
    append = figures["append"]["median_us"]
    print(f"{db}:")
    for name in ("plain", "append", "denied", "gated_service", "gated_support"):
        f = figures[name]
        extra = ""
        if name.startswith("gated"):
            extra = (
                f"  cost over plain: {f['median_us'] - plain:,.0f} us; "
                f"{f['median_us'] / (2 * append):.2f}x two appends"
            )
        print(f"  {name:<14} median {f['median_us']:>9,.1f} us  p90 {f['p90_us']:>9,.1f} us{extra}")
    closed = figures["fail_closed_s"]
    print(
        f"  fail-closed    slowest AuditUnavailable after {closed['max']:.3f} s "
        f"({closed['max'] / closed['timeout']:.2f}x the {closed['timeout']:g} s timeout)"
    )


def main() -> None:
    """Run the measurements on SQLite (and PostgreSQL if reachable), print, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (about 20 s)")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "ACCESSAUDIT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
        help="PostgreSQL URL ('' to skip)",
    )
    parser.add_argument("--out", default="bench-results/gate.json", type=Path)
    args = parser.parse_args()
    calls = 200 if args.quick else 1000
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # quiet
    key = MacKey(os.urandom(32))
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "calls": calls,
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/bench.db"
        results["sqlite"] = bench(f"sqlite:///{path}", key, calls, _sqlite_lock(path))
    if args.postgres:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.postgres, autocommit=True) as admin:
            admin.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in args.postgres else "?"
        scoped = f"{args.postgres}{sep}options=-csearch_path%3D{schema}"
        try:
            results["postgres"] = bench(scoped, key, calls, _pg_lock(scoped))
        finally:
            with psycopg.connect(args.postgres, autocommit=True) as admin:
                admin.execute(f"DROP SCHEMA {schema} CASCADE")
    for db in ("sqlite", "postgres"):
        if db in results:
            _print(db, results[db])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
