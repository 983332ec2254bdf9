"""Measure the Parquet export's speed and peak memory, against baselines from the same run.

Run: .venv/bin/python scripts/bench_export.py [--events N] [--quick] [--out FILE]

Builds a SQLite log of N events (default 1,000,000; --quick 100,000) spread over 30 days,
then, each in a fresh process so that peak memory (max RSS) is the export's own:

- export of the whole log (rows/s, peak RSS), and of a log a tenth as long with the same
  records per day: if memory is bounded, the two peaks are about equal;
- baseline A: ``verify_store`` over the same log (the checks an export also makes);
- baseline B: the raw rows read with sqlite3 and written to Parquet by pyarrow with no
  checks, in batches of the same size (the I/O floor).

Results are printed with ratios and written as JSON (default bench-results/export.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from accessaudit import AccessEvent, ActorType, Decision, EventType, MacKey, SqlStore

BATCH = 2000


def build(path: Path, events: int, key: MacKey, days: int) -> float:
    """A log of ``events`` support-desk reads over ``days``; returns the seconds it took."""
    start = time.perf_counter()
    begin = datetime.now(UTC) - timedelta(days=30)
    step = timedelta(days=days) / events
    with SqlStore(f"sqlite:///{path}", key=key, must_exist=False) as store:
        store.create_schema()
        for first in range(0, events, BATCH):
            store.append(
                AccessEvent(
                    event_type=EventType.ACCESS_ALLOWED,
                    occurred_at=begin + step * i,
                    actor_id=f"agent-{i % 7}",
                    actor_type=ActorType.HUMAN,
                    role="support_agent",
                    purpose="support_request",
                    evidence_ref=f"grant-{i % 50}",
                    customer_id=f"customer-{i % 20}",
                    resource="crm.contacts",
                    action="read",
                    data_categories=("contact",),
                    field_names=("email", "phone"),
                    subject_ids=(f"user-{i}",),
                    decision=Decision.ALLOWED,
                    reason_code="allowed",
                )
                for i in range(first, min(first + BATCH, events))
            )
    return time.perf_counter() - start


_CHILD = r"""
import json, os, resource, sys, time
import structlog
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
from pathlib import Path
from accessaudit import MacKey, SqlStore, verify_store
from accessaudit.export import export_log
task, db, out, key_hex, limit = sys.argv[1:6]
key = MacKey(bytes.fromhex(key_hex))
start = time.perf_counter()
if task == "export":
    with SqlStore(f"sqlite:///{db}", key=key) as store:
        rows = export_log(store, Path(out), key, actor="bench").rows
elif task == "verify":
    with SqlStore(f"sqlite:///{db}") as store:
        report = verify_store(store, key)
        rows = sum(c.rows for c in report.chains)
else:  # raw: sqlite3 rows straight into Parquet, no checks
    import sqlite3, pyarrow as pa, pyarrow.parquet as pq
    conn = sqlite3.connect(db)
    cursor = conn.execute("SELECT * FROM accessaudit_events ORDER BY seq LIMIT ?", (int(limit),))
    names = [d[0] for d in cursor.description]
    os.makedirs(out, exist_ok=True)
    rows, part = 0, 0
    while batch := cursor.fetchmany(50000):
        table = pa.Table.from_pylist([dict(zip(names, r)) for r in batch])
        pq.write_table(table, f"{out}/part-{part}.parquet", compression="zstd")
        rows, part = rows + len(batch), part + 1
seconds = time.perf_counter() - start
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": rows, "seconds": seconds, "peak_mib": peak_kib / 1024}))
"""


def measure(task: str, db: Path, out: Path, key: MacKey, limit: int) -> dict[str, Any]:
    """Run one task in a fresh interpreter; its rows, seconds, rows/s and peak RSS."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, task, str(db), str(out), key.secret.hex(), str(limit)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["rows_per_s"] = result["rows"] / result["seconds"]
    return result


def main() -> None:
    """Build the logs, measure, print with ratios, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 events")
    parser.add_argument("--out", default="bench-results/export.json", type=Path)
    args = parser.parse_args()
    events = 100_000 if args.quick else args.events
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # quiet
    key = MacKey(os.urandom(32))
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "events": events,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        small, large = work / "small.db", work / "large.db"
        results["build_large_s"] = build(large, events, key, days=30)
        # A tenth of the log at the same density (a tenth of the days): equal file sizes, so
        # any difference in peak memory comes from the log's length.
        build(small, events // 10, key, days=3)
        results["export_small"] = measure("export", small, work / "out-small", key, 0)
        results["export"] = measure("export", large, work / "out", key, 0)
        results["verify"] = measure("verify", large, work / "unused", key, 0)
        results["raw"] = measure("raw", large, work / "raw", key, events)
        results["dataset_mib"] = (
            sum(p.stat().st_size for p in (work / "out").rglob("*.parquet")) / 2**20
        )
    export, verify, raw = results["export"], results["verify"], results["raw"]
    small = results["export_small"]
    print(f"log: {events:,} events (built in {results['build_large_s']:.0f} s)")
    print(
        f"export:   {export['rows_per_s']:>9,.0f} rows/s  peak {export['peak_mib']:,.0f} MiB  "
        f"({export['seconds']:.0f} s; dataset {results['dataset_mib']:.0f} MiB)"
    )
    print(
        f"  a tenth of the log: peak {small['peak_mib']:,.0f} MiB "
        f"(large/small peak: {export['peak_mib'] / small['peak_mib']:.2f}x for 10x the rows)"
    )
    ratio = export["rows_per_s"] / verify["rows_per_s"]
    print(
        f"baseline A, verify: {verify['rows_per_s']:>9,.0f} rows/s  peak "
        f"{verify['peak_mib']:,.0f} MiB (export/verify: {ratio:.2f}x)"
    )
    print(
        f"baseline B, raw sqlite3 -> Parquet, no checks: {raw['rows_per_s']:>9,.0f} rows/s  peak "
        f"{raw['peak_mib']:,.0f} MiB (export/raw: {export['rows_per_s'] / raw['rows_per_s']:.2f}x)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
