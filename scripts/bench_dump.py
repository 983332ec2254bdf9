"""Export and verify legs of scripts/bench.py, each run in a fresh process.

A fresh interpreter per run makes its peak RSS (``ru_maxrss``) the task's own. Tasks:

- ``accessaudit``: ``export_log`` (streams, checks every leaf, link and MAC, writes the
  Parquet dataset and its manifest);
- ``naive`` (baseline D): stdlib ``sqlite3`` cursor -> Python rows, transposed to columns
  -> pyarrow ``ParquetWriter``, every column of the table as stored, no checks;
- ``adbc`` (baseline E): the ADBC SQLite driver streaming Arrow record batches
  (``cursor.fetch_record_batch()``) straight into a ``ParquetWriter``, no checks;
- ``verify``: ``verify_store`` over the whole log.

Both baselines write what a dump would: the table's raw columns, zstd, one row group per
batch of ``BATCH`` rows (the export's row-group size); the export writes its own schema.

Run as a child: ``python scripts/bench_dump.py TASK DB OUT KEY_HEX``; it prints one JSON
line ``{"rows", "seconds", "peak_mib"}``. The clock starts once the task's modules are
imported; the peak RSS includes the interpreter and those modules.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BATCH = 10_000


# -- in the child --------------------------------------------------------------------------
# Each task imports only what it needs, so a baseline's peak RSS does not carry accessaudit.


def _accessaudit(db: Path, out: Path, key_hex: str) -> int:
    from bench_threads import log_like_the_cli_to_devnull  # noqa: PLC0415

    from accessaudit import MacKey, SqlStore  # noqa: PLC0415 - see above
    from accessaudit.review.export import export_log  # noqa: PLC0415

    log_like_the_cli_to_devnull()
    key = MacKey(bytes.fromhex(key_hex))
    with SqlStore(f"sqlite:///{db}", key=key) as store:
        return export_log(store, out, key, actor="bench").rows


def _verify(db: Path, _out: Path, key_hex: str) -> int:
    from accessaudit import MacKey, SqlStore, verify_store  # noqa: PLC0415

    with SqlStore(f"sqlite:///{db}") as store:
        report = verify_store(store, MacKey(bytes.fromhex(key_hex)))
    if not report.intact:
        raise SystemExit(f"the benchmark's log did not verify: {report.findings[:3]}")
    return sum(chain.rows for chain in report.chains)


def _naive(db: Path, out: Path, _key_hex: str) -> int:
    import sqlite3  # noqa: PLC0415

    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    conn = sqlite3.connect(db)
    # Arrow types from the declared column types: integers stay integers, the rest is text.
    declared = conn.execute("PRAGMA table_info(accessaudit_events)").fetchall()
    schema = pa.schema(
        (name, pa.int64() if "INT" in kind.upper() else pa.string())
        for _, name, kind, *_ in declared
    )
    cursor = conn.execute("SELECT * FROM accessaudit_events")
    rows = 0
    out.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(out / "dump.parquet", schema, compression="zstd") as writer:
        while batch := cursor.fetchmany(BATCH):
            transposed = zip(*batch, strict=True)  # rows -> one tuple per column
            columns = [pa.array(v, type=f.type) for v, f in zip(transposed, schema, strict=True)]
            writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
            rows += len(batch)
    conn.close()
    return rows


def _adbc(db: Path, out: Path, _key_hex: str) -> int:
    import adbc_driver_sqlite.dbapi  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    rows = 0
    out.mkdir(parents=True, exist_ok=True)
    with adbc_driver_sqlite.dbapi.connect(str(db)) as conn, conn.cursor() as cursor:
        cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(BATCH)})
        cursor.execute("SELECT * FROM accessaudit_events")
        reader = cursor.fetch_record_batch()
        with pq.ParquetWriter(out / "dump.parquet", reader.schema, compression="zstd") as writer:
            for batch in reader:
                writer.write_batch(batch)
                rows += batch.num_rows
    return rows


TASKS = {"accessaudit": _accessaudit, "verify": _verify, "naive": _naive, "adbc": _adbc}
#: Imported before the clock starts: interpreter start-up is not the task's speed.
IMPORTS = {
    "accessaudit": ("accessaudit.review.export", "bench_threads"),
    "verify": ("accessaudit",),
    "naive": ("sqlite3", "pyarrow.parquet"),
    "adbc": ("adbc_driver_sqlite.dbapi", "pyarrow.parquet"),
}


def peak_rss_mib() -> float:
    """This process's peak resident set size, in MiB.

    Linux: ``VmHWM``, the high-water mark of this program's own memory. ``ru_maxrss`` would
    not do: Linux carries it across ``exec``, so a child reports at least the size of the
    parent it was forked from (checked: 413 MiB for a 13 MiB child of a 400 MiB parent).
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB elsewhere (not macOS)


def child_main() -> None:
    """Run one task; print its rows, seconds and this process's peak RSS as JSON."""
    task, db, out, key_hex = sys.argv[1:5]
    for module in IMPORTS[task]:
        importlib.import_module(module)
    start = time.perf_counter()
    rows = TASKS[task](Path(db), Path(out), key_hex)
    seconds = time.perf_counter() - start
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_mib": peak_rss_mib()}))


# -- in the parent -------------------------------------------------------------------------


def run_task(task: str, db: Path, out: Path, key_hex: str) -> dict[str, Any]:
    """One run of ``task`` in a fresh interpreter; its output is removed afterwards."""
    try:
        done = subprocess.run(
            [sys.executable, __file__, task, str(db), str(out), key_hex],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{task} on {db} failed:\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(out, ignore_errors=True)
    result["rows_per_s"] = result["rows"] / result["seconds"]
    return result


def run_reps(reps: int, task: str, db: Path, work: Path, key_hex: str) -> dict[str, Any]:
    """``reps`` runs: the median run's rate, the highest peak RSS of all, every rep's rate."""
    runs = [run_task(task, db, work / f"out-{task}-{rep}", key_hex) for rep in range(reps)]
    rates = [r["rows_per_s"] for r in runs]
    middle = runs[rates.index(statistics.median_low(rates))]
    return {
        "rows": middle["rows"],
        "rows_per_s": middle["rows_per_s"],
        "seconds": middle["seconds"],
        "peak_mib": max(r["peak_mib"] for r in runs),
        "rep_rates": rates,
    }


def export_legs(work: Path, log: Path, small: Path, key_hex: str, reps: int) -> dict[str, Any]:
    """accessaudit's export and baselines D and E on the log and on its tenth."""
    results: dict[str, Any] = {}
    for size, db in (("large", log), ("small", small)):
        # The baselines go first, so they read exactly the built log: each export run
        # appends its own audit.export record (reading the log is recorded).
        for task in ("adbc", "naive", "accessaudit"):
            results.setdefault(task, {})[size] = run_reps(reps, task, db, work, key_hex)
    return results


if __name__ == "__main__":
    child_main()
