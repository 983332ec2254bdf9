"""accessaudit against hand-written baselines, side by side in one run: ``scripts/bench``.

Run: scripts/bench [--quick] [--postgres URL] [--reps N] [--calls N] [--out FILE] ...

Every figure is measured in the same run as the baselines it is compared with, so results
from different machines compare by their ratios. Legs (see each module for details):

- per call (bench_gated, bench_baselines): accessaudit gated reads (allowed, durable) at
  1, 4 and 16 threads on SQLite, and with --postgres on PostgreSQL, plus 4 processes x 4
  threads there; baselines A (SQLAlchemy ORM row per call), B (JSON line through logging)
  and C (raw sqlite3 INSERT + COMMIT, WAL, synchronous=FULL) at the same thread counts.
  Each rep makes a fixed number of calls; a leg reports its median rep's calls/s and the
  p50 / p99 latency of its calls;
- the cost split of one gated call (bench_micro): decide, build, encode+hash, structlog,
  store, in µs per op;
- log scans (bench_dump), each run in a fresh process for its peak RSS: ``export_log``
  against D (sqlite3 rows -> ParquetWriter) and E (ADBC Arrow batches -> ParquetWriter), on
  a log of --export-events rows and on a tenth of it with the same density (memory that
  does not grow with the log shows as equal peaks); ``verify_store`` on --verify-events rows.

Prints one table, the cost split and the targets (met / NOT MET, with the measured value),
and writes everything, every rep included, to JSON (default bench-results/bench.json).
The databases live in a temporary directory under --workdir (default bench-results/, on
the project's disk: a tmpfs /tmp would make every fsync free), removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench_async import leg_async
from bench_baselines import leg_logging, leg_orm, leg_sqlite3
from bench_dump import export_legs
from bench_dump import run_reps as dump_reps
from bench_gated import leg_processes, leg_threads, pg_schema, server_version
from bench_log import build
from bench_micro import cpu_split
from bench_report import ASYNC_TASKS, render, targets
from bench_threads import log_like_the_cli_to_devnull, structlog_quiet
from bench_web import leg_web
from sqlalchemy.engine import make_url

from accessaudit import MacKey

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parent.parent
FULL = {"reps": 3, "calls": 2000, "export_events": 1_000_000, "verify_events": 1_000_000}
QUICK = {"reps": 2, "calls": 300, "export_events": 50_000, "verify_events": 50_000}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options; sizes left unset come from the full or the --quick defaults."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument("--postgres", metavar="URL", help="also run the PostgreSQL legs here")
    parser.add_argument("--reps", type=int, help="repetitions per leg (3; --quick 2)")
    parser.add_argument("--calls", type=int, help="calls per rep and leg (2000; --quick 300)")
    parser.add_argument("--scan-reps", type=int, help="export and verify repetitions (--reps)")
    parser.add_argument(
        "--threads",
        type=lambda s: [int(t) for t in s.split(",")],
        default=[1, 4, 16],
        help="thread counts, comma-separated (1,4,16)",
    )
    parser.add_argument("--procs", type=int, default=4, help="PostgreSQL processes (4)")
    parser.add_argument("--proc-threads", type=int, default=4, help="threads per process (4)")
    parser.add_argument("--export-events", type=int, help="export log size (1,000,000; 50,000)")
    parser.add_argument("--verify-events", type=int, help="verify log size (1,000,000; 50,000)")
    parser.add_argument("--skip-calls", action="store_true", help="no per-call legs")
    parser.add_argument("--skip-micro", action="store_true", help="no cost split")
    parser.add_argument("--skip-web", action="store_true", help="no web (ASGI + ORM) leg")
    parser.add_argument("--skip-export", action="store_true", help="no export legs")
    parser.add_argument("--skip-verify", action="store_true", help="no verify leg")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "bench.json")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.scan_reps is None:
        args.scan_reps = args.reps
    counts = [args.reps, args.scan_reps, args.calls, args.procs, args.proc_threads]
    if min(*counts, args.export_events, args.verify_events, *args.threads) < 1:
        parser.error("sizes, counts and thread numbers must be at least 1")
    return args


def progress(message: str) -> None:
    """Where the run is, on stderr, so a long run shows life and the table stays clean."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def machine(postgres: str | None) -> dict[str, Any]:
    """What the figures were measured on."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],  # noqa: S607 - git on PATH
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgres": server_version(postgres) if postgres else None,
        "commit": commit or None,  # "-dirty": uncommitted changes were measured too
        # Other work on the machine shows here; figures from a loaded machine are lower.
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def _leg(
    results: dict[str, Any],
    family: str,
    shape: str,
    run: Callable[..., dict[str, Any]],
    *args: Any,
    **kwargs: Any,
) -> None:
    """Run one leg (``run(*args, **kwargs)``), file it under family and shape, show progress."""
    started = time.perf_counter()
    leg = results["legs"].setdefault(family, {})[shape] = run(*args, **kwargs)
    progress(
        f"{family} {shape}: {leg['calls_per_s']:,.0f} calls/s, p50 {leg['p50_us']:,.0f} µs "
        f"({time.perf_counter() - started:.1f} s)"
    )


def call_legs(results: dict[str, Any], work: Path, key: MacKey, args: argparse.Namespace) -> None:
    """Gated SQLite and the baselines, thread count by thread count, each on a fresh file."""
    reps, calls = args.reps, args.calls
    for t in args.threads:
        url = f"sqlite:///{work / f'gated-{t}.db'}"
        _leg(results, "accessaudit_sqlite", str(t), leg_threads, url, key, reps, t, calls)
        for family, run, file in (
            ("a_orm", leg_orm, f"a-{t}.db"),
            ("b_logging", leg_logging, f"b-{t}.log"),
            ("c_sqlite3", leg_sqlite3, f"c-{t}.db"),
        ):
            _leg(results, family, str(t), run, work / file, reps, t, calls)
    url = f"sqlite:///{work / 'gated-async.db'}"
    tasks = ASYNC_TASKS
    _leg(results, "accessaudit_async", str(tasks), leg_async, url, key, reps, tasks, calls)


def postgres_legs(results: dict[str, Any], key: MacKey, args: argparse.Namespace) -> None:
    """Gated PostgreSQL: the thread counts, then processes x threads, each in a fresh schema."""
    reps, calls = args.reps, args.calls
    for t in args.threads:
        with pg_schema(args.postgres) as url:
            _leg(results, "accessaudit_postgres", str(t), leg_threads, url, key, reps, t, calls)
    shape = f"{args.procs}x{args.proc_threads}"
    for family, sharded, baseline in (
        ("f_psycopg", False, True),
        ("accessaudit_postgres_procs", False, False),
        ("accessaudit_postgres_shards", True, False),
    ):
        with pg_schema(args.postgres) as url:
            _leg(
                results,
                family,
                shape,
                leg_processes,
                url,
                key,
                reps,
                calls,
                procs=args.procs,
                threads=args.proc_threads,
                sharded=sharded,
                baseline=baseline,
            )


def _log(work: Path, name: str, events: int, key: MacKey, days: int) -> tuple[Path, float]:
    path = work / name
    progress(f"building {name}: {events:,} events")
    with structlog_quiet():
        return path, build(path, events, key, days=days)


def dump_legs(results: dict[str, Any], work: Path, key: MacKey, args: argparse.Namespace) -> None:
    """Export (with baselines D and E) and verify, on logs built by bench_log.build."""
    key_hex = key.secret.hex()
    log = None
    if not args.skip_export:
        events = args.export_events
        log, seconds = _log(work, "export.db", events, key, days=30)
        # A tenth of the rows over a tenth of the days: the same records per day and per file.
        small, _ = _log(work, "export-small.db", max(1, events // 10), key, days=3)
        progress("export legs")
        results["export"] = {
            "events": events,
            "small_events": max(1, events // 10),
            "build_s": seconds,
            **export_legs(work, log, small, key_hex, args.scan_reps),
        }
    if not args.skip_verify:
        if log is None or args.verify_events != args.export_events:
            log, _ = _log(work, "verify.db", args.verify_events, key, days=30)
        progress("verify leg")
        verify = dump_reps(args.scan_reps, "verify", log, work, key_hex)
        results["verify"] = {"events": verify["rows"], **verify}


def config(args: argparse.Namespace) -> dict[str, Any]:
    """The options of the run, for the JSON (a PostgreSQL password hidden)."""
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "workdir")}
    if args.postgres:
        settings["postgres"] = make_url(args.postgres).render_as_string(hide_password=True)
    return settings


def main() -> None:
    """Run the legs asked for, print the report, write the JSON."""
    args = parse_args()
    log_like_the_cli_to_devnull()
    key = MacKey(os.urandom(32))
    results: dict[str, Any] = {
        "machine": machine(args.postgres),
        "config": config(args),
        "legs": {},
    }
    args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix=".bench-") as tmp:
        work = Path(tmp)
        if not args.skip_calls:
            call_legs(results, work, key, args)
            if args.postgres:
                postgres_legs(results, key, args)
        if not args.skip_web:
            progress("web leg: the example app, gated and ungated")
            results["web"] = leg_web(work, key, args.reps, args.calls)
        if not args.skip_micro:
            progress("cost split")
            results["micro"] = cpu_split(work / "micro.db", key, args.reps, args.calls)
        dump_legs(results, work, key, args)
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = targets(results)
    print(render(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
