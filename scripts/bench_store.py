"""Measure the audit store's write and verify paths against raw-driver baselines.

Run: .venv/bin/python scripts/bench_store.py [--quick] [--postgres URL] [--out FILE]

Every figure is printed with a ratio to a baseline measured in the same run on the same
machine, so numbers from different machines compare by their ratios:

- durable single appends (one event per call, each waits for its commit) vs a raw driver
  INSERT + COMMIT per row under the same durability settings (the floor: one fsync each);
- batched appends (500 events per call) vs a raw executemany of the same rows;
- 4 threads appending at once;
- full verification (rows/s);
- UUIDv7 vs UUIDv4 primary keys: the insert rate into a growing table (why ids are UUIDv7).

Results are also written as JSON (default bench-results/store.json) for later comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import structlog
from bench_log import support_read
from uuid6 import uuid7

from accessaudit import AccessEvent, MacKey, SqlStore, verify_store
from accessaudit.record._rows import to_row
from accessaudit.store._schema import events as events_table

if TYPE_CHECKING:
    from collections.abc import Callable


def _event(i: int) -> AccessEvent:
    return support_read(i)


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def _timed(work: Callable[[], int]) -> float:
    start = time.perf_counter()
    count = work()
    return _rate(count, time.perf_counter() - start)


def _threads(n: int, per_thread: Callable[[], int]) -> float:
    counts: list[int] = []
    lock = threading.Lock()

    def run() -> None:
        done = per_thread()
        with lock:
            counts.append(done)

    workers = [threading.Thread(target=run) for _ in range(n)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return _rate(sum(counts), time.perf_counter() - start)


def bench_store(url: str, key: MacKey, singles: int, batched: int) -> dict[str, float]:
    """Append and verify rates of SqlStore at ``url`` (a fresh, empty log)."""
    results: dict[str, float] = {}
    with SqlStore(url, key=key, must_exist=False, timeout=30) as store:
        store.create_schema()

        def single() -> int:
            for i in range(singles):
                store.append([_event(i)])
            return singles

        results["single_appends_per_s"] = _timed(single)

        def batches() -> int:
            for start in range(0, batched, 500):
                store.append([_event(i) for i in range(start, start + 500)])
            return batched

        results["batched_events_per_s"] = _timed(batches)
        per_thread = max(1, singles // 4)

        def one_thread() -> int:
            for i in range(per_thread):
                store.append([_event(i)])
            return per_thread

        results["threads4_single_appends_per_s"] = _threads(4, one_thread)
        rows = store.count()
        start = time.perf_counter()
        report = verify_store(store, key)
        results["verify_rows_per_s"] = _rate(rows, time.perf_counter() - start)
        if not report.intact:
            raise SystemExit(f"the benchmark's own log did not verify: {report.findings[:3]}")
    return results


def _rows(count: int) -> list[dict[str, Any]]:
    """Realistic rows (as the store would write them) for the raw baselines."""
    from accessaudit.record.integrity import seal_batch  # noqa: PLC0415 - only the baselines need it

    key = MacKey(os.urandom(32))
    sealed = seal_batch("bench", 0, "00" * 32, [_event(i) for i in range(count)], key)
    return [to_row(s) for s in sealed]


def baseline_sqlite(path: Path, singles: int, batched: int) -> dict[str, float]:
    """Raw sqlite3, same table and settings (WAL, synchronous=FULL), no hashing or locking."""
    with SqlStore(f"sqlite:///{path}", must_exist=False) as store:
        store.create_schema()
    columns = [c.name for c in events_table.columns]
    insert = (
        f"INSERT INTO accessaudit_events ({', '.join(columns)}) "  # noqa: S608 - our own names
        f"VALUES ({', '.join('?' for _ in columns)})"
    )
    rows = [tuple(r[c] for c in columns) for r in _rows(singles + batched)]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = FULL")

    def single() -> int:
        for row in rows[:singles]:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(insert, row)
            conn.execute("COMMIT")
        return singles

    def batches() -> int:
        rest = rows[singles:]
        for start in range(0, len(rest), 500):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(insert, rest[start : start + 500])
            conn.execute("COMMIT")
        return len(rest)

    result = {"single_appends_per_s": _timed(single), "batched_events_per_s": _timed(batches)}
    conn.close()
    return result


def baseline_postgres(url: str, singles: int, batched: int) -> dict[str, float]:
    """Raw psycopg, same table, one INSERT + COMMIT per row, synchronous_commit on."""
    schema = f"bench_raw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    scoped = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    try:
        with SqlStore(scoped, must_exist=False) as store:
            store.create_schema()
        columns = [c.name for c in events_table.columns]
        insert = (
            f"INSERT INTO accessaudit_events ({', '.join(columns)}) "  # noqa: S608
            f"VALUES ({', '.join('%s' for _ in columns)})"
        )
        rows = [tuple(r[c] for c in columns) for r in _rows(singles + batched)]
        with psycopg.connect(scoped) as conn:

            def single() -> int:
                for row in rows[:singles]:
                    conn.execute(insert, row)
                    conn.commit()
                return singles

            def batches() -> int:
                rest = rows[singles:]
                with conn.cursor() as cur:
                    for start in range(0, len(rest), 500):
                        cur.executemany(insert, rest[start : start + 500])
                        conn.commit()
                return len(rest)

            return {"single_appends_per_s": _timed(single), "batched_events_per_s": _timed(batches)}
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def uuid_ordering(path: Path, total: int) -> dict[str, float]:
    """Insert rate of the last half of ``total`` rows keyed by UUIDv4 vs UUIDv7 (text keys)."""
    rates: dict[str, float] = {}
    for name, make in (("uuid4", uuid.uuid4), ("uuid7", uuid7)):
        db = path / f"{name}.db"
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, payload TEXT NOT NULL)")
        payload = "x" * 200
        half = total // 2
        for phase in ("fill", "measure"):
            start = time.perf_counter()
            for _ in range(0, half, 10_000):
                conn.execute("BEGIN")
                conn.executemany(
                    "INSERT INTO t VALUES (?, ?)", ((str(make()), payload) for _ in range(10_000))
                )
                conn.execute("COMMIT")
            if phase == "measure":
                rates[f"{name}_rows_per_s"] = _rate(half, time.perf_counter() - start)
        conn.close()
    rates["uuid7_over_uuid4"] = rates["uuid7_rows_per_s"] / rates["uuid4_rows_per_s"]
    return rates


def main() -> None:
    """Run every measurement, print figures with ratios, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (about 30 s)")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "ACCESSAUDIT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
        help="PostgreSQL URL ('' to skip)",
    )
    parser.add_argument("--out", default="bench-results/store.json", type=Path)
    args = parser.parse_args()
    singles, batched, ids = (300, 10_000, 200_000) if args.quick else (1_000, 50_000, 1_000_000)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # quiet
    key = MacKey(os.urandom(32))
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "sizes": {"single_appends": singles, "batched_events": batched, "uuid_rows": ids},
    }
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = bench_store(f"sqlite:///{tmp}/bench.db", key, singles, batched)
        results["sqlite_raw"] = baseline_sqlite(Path(tmp) / "raw.db", singles, batched)
        results["uuid_keys_sqlite"] = uuid_ordering(Path(tmp), ids)
    if args.postgres:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.postgres, autocommit=True) as admin:
            admin.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in args.postgres else "?"
        try:
            scoped = f"{args.postgres}{sep}options=-csearch_path%3D{schema}"
            results["postgres"] = bench_store(scoped, key, singles, batched)
        finally:
            with psycopg.connect(args.postgres, autocommit=True) as admin:
                admin.execute(f"DROP SCHEMA {schema} CASCADE")
        results["postgres_raw"] = baseline_postgres(args.postgres, singles, batched)

    for db in ("sqlite", "postgres"):
        if db not in results:
            continue
        ours, raw = results[db], results[f"{db}_raw"]
        print(f"{db}:")
        for metric, value in ours.items():
            base = raw.get(metric)
            ratio = f"  ({value / base:.2f}x raw driver: {base:,.0f}/s)" if base else ""
            print(f"  {metric:<32} {value:>12,.0f}/s{ratio}")
    uuids = results["uuid_keys_sqlite"]
    print(
        f"UUID keys, SQLite, rows {ids // 2:,}..{ids:,}: v7 {uuids['uuid7_rows_per_s']:,.0f}/s, "
        f"v4 {uuids['uuid4_rows_per_s']:,.0f}/s ({uuids['uuid7_over_uuid4']:.2f}x)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
