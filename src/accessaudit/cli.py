"""The ``accessaudit`` command: a thin shell over the library.

Exit codes: 0 success (log intact), 1 verification findings, 2 bad usage or input,
3 could not do the work (store unreachable, key missing or unusable).
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import structlog
import typer

from accessaudit import demo as demo_workload
from accessaudit.bootstrap import init_store
from accessaudit.exceptions import (
    AccessAuditError,
    ConfigurationError,
    InvalidEvent,
)
from accessaudit.findings import ExpectedHead, VerifyReport
from accessaudit.keys import load_key
from accessaudit.store import SqlStore
from accessaudit.store._engine import DEFAULT_URL
from accessaudit.verify import verify_store

EXIT_FINDINGS, EXIT_USAGE, EXIT_UNAVAILABLE = 1, 2, 3

app = typer.Typer(
    help="Append-only, tamper-evident, verifiable audit log of access to customer data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain usage errors ("Usage: ... Error: ...") rather than boxed ones: easier to read in
    # logs and for scripts.
    rich_markup_mode=None,
)

DbOption = Annotated[
    str,
    typer.Option(
        "--db", envvar="ACCESSAUDIT_DB", help="Database URL (sqlite:///FILE or postgresql://...)."
    ),
]
KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="HMAC key file [default: $ACCESSAUDIT_HMAC_KEY, else $ACCESSAUDIT_KEY_FILE, "
        "else ./accessaudit.key].",
    ),
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=0.1, help="Seconds each database operation may take.")
]


class OutputFormat(StrEnum):
    """How ``verify`` prints its result."""

    TABLE = "table"
    JSON = "json"


@contextmanager
def _reported_errors(*, as_json: bool = False) -> Iterator[None]:
    """Turn any failure into one line on stderr and a documented exit code.

    With ``as_json`` the same message also goes to stdout as ``{"error", "exit_code"}``, so
    a program reading the JSON output always gets JSON.
    """
    try:
        yield
    except typer.Exit:
        raise
    except Exception as e:
        if isinstance(e, AccessAuditError):
            usage = isinstance(e, ConfigurationError | InvalidEvent)
            message, code = str(e), EXIT_USAGE if usage else EXIT_UNAVAILABLE
        else:
            # Not an error we anticipated: still one line and "could not do the work", never
            # a traceback that a script could take for exit code 1 ("findings").
            message, code = f"unexpected {type(e).__name__}: {str(e)[:300]}", EXIT_UNAVAILABLE
        typer.echo(f"error: {message}", err=True)
        if as_json:
            typer.echo(json.dumps({"error": message, "exit_code": code}))
        raise typer.Exit(code) from e


@app.callback()
def _main(
    log_events: Annotated[
        bool, typer.Option("--log-events", help="Also write each recorded event to stderr as JSON.")
    ] = False,
) -> None:
    # The CLI is an application, so it (not the library) decides where structlog output goes.
    structlog.configure(
        processors=[
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.INFO if log_events else logging.WARNING
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


@app.command()
def init(
    db: DbOption = DEFAULT_URL,
    key_file: KeyFileOption = None,
    writer_role: Annotated[
        str | None,
        typer.Option(help="PostgreSQL: create this role with SELECT and INSERT rights only."),
    ] = None,
    timeout: TimeoutOption = 5.0,
) -> None:
    """Create the HMAC key file, the events table and its append-only triggers (idempotent)."""
    with _reported_errors():
        lines = init_store(db, key_file=key_file, writer_role=writer_role, timeout=timeout)
    for line in lines:
        typer.echo(line)


def _print_report(report: VerifyReport, output: OutputFormat) -> None:
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    for chain in report.chains:
        typer.echo(
            f"chain {chain.chain_id}: {chain.rows} rows; "
            f"head {chain.chain_id}:{chain.head_seq}:{chain.head_hash}"
        )
    if report.chains:
        typer.echo("(keep the head lines outside the database; pass them to --expect-head)")
    if not report.mac_checked:
        typer.echo("MACs not checked (--skip-mac): edits with recomputed hashes go undetected")
    for finding in report.findings:
        where = finding.where
        ident = f" event {finding.event_id}" if finding.event_id else ""
        code = finding.code.value
        typer.echo(f"{code:<18} chain {finding.chain_id} seq {where}{ident}: {finding.detail}")
    typer.echo("intact" if report.intact else f"NOT INTACT: {len(report.findings)} finding(s)")


@app.command()
def verify(
    db: DbOption = DEFAULT_URL,
    key_file: KeyFileOption = None,
    chain: Annotated[str | None, typer.Option(help="Verify only this chain.")] = None,
    skip_mac: Annotated[
        bool, typer.Option("--skip-mac", help="Check hashes and links only (no key needed).")
    ] = False,
    expect_head: Annotated[
        list[str] | None,
        typer.Option(
            "--expect-head",
            metavar="CHAIN:SEQ:HASH",
            help="A head printed by an earlier verify and kept outside the database; "
            "catches deleted newest records and rollback. Repeatable.",
        ),
    ] = None,
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = (
        OutputFormat.TABLE
    ),
    timeout: TimeoutOption = 5.0,
) -> None:
    """Recompute every hash, link and MAC; report every finding. Exit 1 if any."""
    with _reported_errors(as_json=output is OutputFormat.JSON):
        heads = [ExpectedHead.parse(text) for text in expect_head or []]
        with SqlStore(db, timeout=timeout) as store:
            key = None if skip_mac else load_key(key_file)
            report = verify_store(store, key, chain_id=chain, expected_heads=heads)
    _print_report(report, output)
    if not report.intact:
        raise typer.Exit(EXIT_FINDINGS)


@app.command()
def demo(
    db: DbOption = DEFAULT_URL,
    key_file: KeyFileOption = None,
    events: Annotated[int, typer.Option(min=1, max=10_000_000, help="How many events.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed for a repeatable workload.")] = 7,
    timeout: TimeoutOption = 5.0,
) -> None:
    """Set up a log if needed, record a simulated support desk's events, verify, summarise."""
    with _reported_errors():
        for line in init_store(db, key_file=key_file, timeout=timeout):
            typer.echo(line)
        key = load_key(key_file)
        tally: Counter[str] = Counter()
        with SqlStore(db, key=key, timeout=timeout) as store:
            workload = demo_workload.generate(events, seed=seed)
            while batch := list(itertools.islice(workload, 500)):
                store.append(batch)
                tally.update(f"{e.event_type.value} {e.purpose or ''}".strip() for e in batch)
            report = verify_store(store, key)
    typer.echo(f"recorded {events} events in {store.url}:")
    for label, count in sorted(tally.items()):
        typer.echo(f"  {count:>7}  {label}")
    _print_report(report, OutputFormat.TABLE)
    if not report.intact:
        raise typer.Exit(EXIT_FINDINGS)


def main() -> None:
    """Console-script entry point."""
    app()
