"""scripts/bench runs end to end (tiny sizes): every leg, the table, the targets, the JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_bench_runs_every_leg_and_reports_the_targets(tmp_path: Path, postgres_url: str) -> None:
    """A tiny run prints the table and each target, and writes JSON with every leg."""
    out = tmp_path / "bench.json"
    sizes = ["--reps", "1", "--calls", "24", "--threads", "1,4", "--procs", "2"]
    scans = ["--export-events", "300", "--verify-events", "300", "--proc-threads", "2"]
    where = ["--postgres", postgres_url, "--out", str(out), "--workdir", str(tmp_path)]
    run = subprocess.run(
        [sys.executable, "scripts/bench.py", *sizes, *scans, *where],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    for words in ("C  sqlite3 INSERT+COMMIT", "ADBC batches", "verify_store", "targets"):
        assert words in run.stdout
    results = json.loads(out.read_text())
    assert set(results["legs"]) >= {
        "accessaudit_sqlite",
        "a_orm",
        "b_logging",
        "c_sqlite3",
        "accessaudit_postgres",
        "accessaudit_postgres_procs",
        "accessaudit_postgres_shards",
        "f_psycopg",
        "accessaudit_async",
    }
    assert results["legs"]["accessaudit_sqlite"]["4"]["calls_per_s"] > 0
    measured = {t["target"]: t["measured"] for t in results["targets"]}
    assert measured["1 thread >= 2x A"] > 0
    assert measured["verify >= 200,000 rows/s"] > 0
    assert measured["16 threads >= 4x A"] is None  # not run at these thread counts
    assert measured["PostgreSQL 2 procs x 2 threads, one chain >= 0.5x F"] > 0
    assert measured["PostgreSQL 2 procs x 2 threads, a chain per process >= 1.0x F"] > 0
    assert measured["asyncio: hand-offs to another thread per call <= 1"] > 0
    assert measured["1 thread: CPU per gated call <= 300 µs (cost split)"] > 0
