"""The ``accessaudit`` command: a thin shell over the library.

Exit codes (see ``_cli_common``): 0 success (log intact), 1 verification findings, 2 bad
usage or input, 3 could not do the work (store unreachable, key missing or unusable).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import structlog
import typer

from accessaudit import demo as demo_workload
from accessaudit._cli_common import (
    EXIT_FINDINGS,
    ByOption,
    DbOption,
    FormatOption,
    KeyFileOption,
    OutputFormat,
    TimeoutOption,
    command_group,
    login_name,
    progress_bar,
    reported_errors,
)
from accessaudit.bootstrap import init_store
from accessaudit.cli_evidence import grant_app, incident_app, legal_app, policy_app
from accessaudit.cli_report import report
from accessaudit.events import StoredEvent
from accessaudit.exceptions import ConfigurationError
from accessaudit.export import MANIFEST, export_log, verify_export
from accessaudit.findings import ExpectedHead, VerifyReport
from accessaudit.keys import load_key
from accessaudit.log import log_fields
from accessaudit.report import ReportFilter, record_report
from accessaudit.store import SqlStore
from accessaudit.store._engine import DEFAULT_URL
from accessaudit.tail import follow as tail_follow
from accessaudit.tail import latest, one_line
from accessaudit.verify import verify_store

app = command_group("Append-only, tamper-evident, verifiable audit log of access to customer data.")
app.add_typer(policy_app, name="policy")
app.add_typer(grant_app, name="grant")
app.add_typer(incident_app, name="incident")
app.add_typer(legal_app, name="legal")
app.command()(report)


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
    with reported_errors():
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
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            metavar="DIR",
            help="Check an exported dataset instead of the database (offline).",
        ),
    ] = None,
    output: FormatOption = OutputFormat.TABLE,
    timeout: TimeoutOption = 5.0,
) -> None:
    """Recompute every hash, link and MAC; report every finding. Exit 1 if any."""
    with reported_errors(as_json=output is OutputFormat.JSON):
        heads = [ExpectedHead.parse(text) for text in expect_head or []]
        if export is not None:
            if heads or chain:
                msg = "--export checks the dataset's own manifest; drop --chain/--expect-head"
                raise ConfigurationError(msg)
            report = verify_export(export, None if skip_mac else load_key(key_file))
        else:
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
    """Set up a log if needed, run a simulated support desk through the gate, verify."""
    with reported_errors():
        for line in init_store(db, key_file=key_file, timeout=timeout):
            typer.echo(line)
        key = load_key(key_file)
        with SqlStore(db, key=key, timeout=timeout) as store:
            tally = demo_workload.run(store, events, seed=seed)
            report = verify_store(store, key)
    typer.echo(f"recorded {sum(tally.values())} events in {store.url}:")
    for label, count in sorted(tally.items()):
        typer.echo(f"  {count:>7}  {label}")
    _print_report(report, OutputFormat.TABLE)
    if not report.intact:
        raise typer.Exit(EXIT_FINDINGS)


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="The dataset directory.")],
    db: DbOption = DEFAULT_URL,
    key_file: KeyFileOption = None,
    by: ByOption = None,
    timeout: TimeoutOption = 5.0,
) -> None:
    """Append what is new to a Parquet dataset (checked, atomic, incremental)."""
    with reported_errors():
        key = load_key(key_file)
        with SqlStore(db, key=key, timeout=timeout) as store, progress_bar("exporting") as step:
            result = export_log(store, out, key, actor=by or login_name(), progress=step)
    for name in result.removed:
        typer.echo(f"removed {name} (left by an interrupted export; its range is exported again)")
    if not result.files:
        typer.echo(f"nothing new to export; {out} is up to date")
        return
    first = min(f.first_seq for f in result.files)
    last = max(f.last_seq for f in result.files)
    typer.echo(
        f"exported {result.rows} record(s), seq {first}..{last}, to {len(result.files)} new "
        f"file(s) in {out}; manifest: {out / MANIFEST}"
    )


@app.command()
def tail(
    lines: Annotated[int, typer.Option("-n", "--lines", min=1, help="How many records.")] = 20,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new records (Ctrl-C stops).")
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.1, help="--follow: seconds between checks for new records.")
    ] = 1.0,
    output: FormatOption = OutputFormat.TABLE,
    by: ByOption = None,
    db: DbOption = DEFAULT_URL,
    key_file: KeyFileOption = None,
    timeout: TimeoutOption = 5.0,
) -> None:
    """The newest records, one per line (--format json: one JSON object per line)."""

    def show(stored: StoredEvent) -> None:
        if output is OutputFormat.JSON:
            typer.echo(
                json.dumps({"event_type": stored.event.event_type.value, **log_fields(stored)})
            )
        else:
            typer.echo(one_line(stored))

    with (
        reported_errors(as_json=output is OutputFormat.JSON),
        SqlStore(db, key=load_key(key_file), timeout=timeout) as store,
    ):
        shown = latest(store, lines)
        kind = "tail --follow" if follow else "tail"
        record_report(store, by or login_name(), kind, ReportFilter(), len(shown))
        for stored in shown:
            show(stored)
        if follow:  # everything after what was shown, our own audit.report included
            after = shown[-1].seq if shown else 0
            with contextlib.suppress(KeyboardInterrupt):
                for stored in tail_follow(store, after, interval=interval):
                    show(stored)


def main() -> None:
    """Console-script entry point."""
    app()
