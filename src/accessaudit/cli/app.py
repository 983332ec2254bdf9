"""The ``accessaudit`` command: a thin shell over the library.

Exit codes (see ``cli._common``): 0 success (log intact), 1 verification findings, 2 bad
usage or input, 3 could not do the work (store unreachable, key missing or unusable).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer

from accessaudit.cli import demo as demo_workload
from accessaudit.cli._common import (
    EXIT_FINDINGS,
    command_group,
    progress_bar,
    reported_errors,
    show_line,
)
from accessaudit.cli._options import (
    LOG_EVENTS_HELP,
    FormatOption,
    LogOptions,
    NewLogOptions,
    OutputFormat,
    configure_events,
    shared_options,
)
from accessaudit.cli.checkpoint import (
    AnchorCheck,
    AnchorDirOption,
    MaxAgeOption,
    PublicKeyOption,
    anchor_check,
    checkpoint,
    key_app,
)
from accessaudit.cli.doctor import doctor
from accessaudit.cli.evidence import grant_app, incident_app, legal_app, policy_app
from accessaudit.cli.recover import recover
from accessaudit.cli.report import report
from accessaudit.exceptions import ConfigurationError, MacKeyError, StoreError
from accessaudit.record.events import StoredEvent
from accessaudit.record.fields import AttributeValue
from accessaudit.record.findings import ExpectedHead, VerifyReport
from accessaudit.record.keys import MacKey
from accessaudit.record.log import log_fields
from accessaudit.record.notes import load_verifier_keys
from accessaudit.review._terminal import terminal_safe
from accessaudit.review.checkpoints import DEFAULT_MAX_AGE_HOURS
from accessaudit.review.export import MANIFEST, export_log, verify_export
from accessaudit.review.report import ReportFilter, record_report
from accessaudit.review.tail import follow as tail_follow
from accessaudit.review.tail import heads as tail_heads
from accessaudit.review.tail import latest, one_line
from accessaudit.review.verify import verify_store
from accessaudit.store import SqlStore
from accessaudit.store.bootstrap import init_store

__all__ = ["app", "demo", "export", "init", "main", "tail", "verify"]

app = command_group("Append-only, tamper-evident, verifiable audit log of access to customer data.")
app.add_typer(policy_app, name="policy")
app.add_typer(grant_app, name="grant")
app.add_typer(incident_app, name="incident")
app.add_typer(legal_app, name="legal")
app.add_typer(key_app, name="key")
app.command()(checkpoint)
app.command()(doctor)
app.command()(report)
app.command()(recover)


@app.callback()
def _main(
    log_events: Annotated[
        bool,
        typer.Option("--log-events", help=f"{LOG_EVENTS_HELP} (Also accepted after the command.)"),
    ] = False,
) -> None:
    configure_events(log_events)


WriterRoleOption = Annotated[
    str | None,
    typer.Option(help="PostgreSQL: create this role with SELECT and INSERT rights only."),
]


DdlGuardOption = Annotated[
    bool,
    typer.Option(
        "--ddl-guard",
        help="PostgreSQL, as a superuser: install event triggers that refuse DROP and ALTER "
        "of the log's tables to every role (an app's migrations included).",
    ),
]


@app.command()
@shared_options
def init(
    log: NewLogOptions, writer_role: WriterRoleOption = None, ddl_guard: DdlGuardOption = False
) -> None:
    """Create the key file, the log's tables and triggers, or upgrade an older log (idempotent)."""
    with reported_errors():
        lines = init_store(
            log.db,
            key_file=log.key_file,
            writer_role=writer_role,
            timeout=log.timeout,
            ddl_guard=ddl_guard,
        )
    for line in lines:
        show_line(line)


# -- verify ---------------------------------------------------------------------------------

ChainOption = Annotated[str | None, typer.Option(help="Verify only this chain.")]
SkipMacOption = Annotated[
    bool,
    typer.Option(
        "--skip-mac",
        help="Check hashes and links only (no key needed; without a key the run is not "
        "recorded, as recording needs one).",
    ),
]
ExpectHeadOption = Annotated[
    list[str] | None,
    typer.Option(
        "--expect-head",
        metavar="CHAIN:SEQ:HASH",
        help="A head printed by an earlier verify and kept outside the database; "
        "catches deleted newest records and rollback. Repeatable: --expect-head H1 "
        "--expect-head H2.",
    ),
]
ExportDirOption = Annotated[
    Path | None,
    typer.Option(
        "--export",
        metavar="DIR",
        help="Check an exported dataset instead of the database (offline; reads no log, "
        "so nothing is recorded).",
    ),
]


def _print_report(report: VerifyReport, output: OutputFormat) -> None:
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    # Chain ids, event ids and details come from the database: escaped, so that a forged
    # row cannot print a forged "intact" line.
    for chain in report.chains:
        show_line(
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
        show_line(f"{code:<18} chain {finding.chain_id} seq {where}{ident}: {finding.detail}")
    open_findings = sum(1 for f in report.findings if f.acknowledged_by is None)
    acknowledged = len(report.findings) - open_findings
    if not report.intact:
        typer.echo(f"NOT INTACT: {open_findings} finding(s)")
    elif acknowledged:  # a recovered log must not read like one that was never damaged
        typer.echo(f"intact, with {acknowledged} acknowledged finding(s) (see above)")
    else:
        typer.echo("intact")


def _key_if_any(log: LogOptions) -> tuple[MacKey | None, str | None]:
    """The key, or None and why there is none (for ``verify --skip-mac``, which needs none)."""
    try:
        return log.key(), None
    except MacKeyError as e:
        return None, str(e)


def _record_verify(
    store: SqlStore, actor: str, report: VerifyReport, chain: str | None, *, skip_mac: bool
) -> str | None:
    """Record this verify as an ``audit.report``; None, or why it could not be recorded.

    A log that fails its checks may refuse appends (a newest record that fails its MAC is
    never sealed over): its findings are shown all the same, or damaging the newest record
    would hide every other damage. An intact log that cannot record the read shows nothing
    (exit 3), like every other read.
    """
    options: dict[str, AttributeValue] = {"skip_mac": skip_mac}
    if chain is not None:
        options["chain"] = chain
    rows = sum(checked.rows for checked in report.chains)
    try:
        record_report(store, actor, "verify", ReportFilter(), rows, **options)
    except StoreError as e:
        if report.intact:
            raise
        return f"this verify could not be recorded in the log: {e}"
    return None


def _verify_log(
    log: LogOptions,
    chain: str | None,
    heads: list[ExpectedHead],
    *,
    skip_mac: bool,
    anchors: AnchorCheck | None = None,
) -> tuple[VerifyReport, str | None]:
    """Verify the log, then record that; the report and why it was not recorded, or None."""
    # The URL and the SQLite file are checked (exit 2) before the key is looked for.
    with log.open_unsealed() as reader:
        key, no_key = _key_if_any(log) if skip_mac else (log.key(), None)
        if skip_mac:
            report = verify_store(reader, None, chain_id=chain, expected_heads=heads)
            if anchors is not None:
                report.findings.extend(anchors.findings(reader))
    # Recorded before anything is shown, like every read of the log.
    if key is None:
        return report, f"this verify is not recorded in the log: {no_key}"
    with log.open(key=key) as store:
        if not skip_mac:  # checked with the key the store holds: the key is given once
            report = verify_store(store, chain_id=chain, expected_heads=heads)
            if anchors is not None:
                report.findings.extend(anchors.findings(store))
        return report, _record_verify(store, log.actor, report, chain, skip_mac=skip_mac)


def _verify_export(
    export: Path,
    log: LogOptions,
    *,
    narrowed: bool,
    skip_mac: bool,
    public_keys: list[Path] | None,
) -> VerifyReport:
    """Check an exported dataset offline, against its own manifest (``narrowed``: refused).

    With ``--public-key`` also against the signed checkpoints it holds; then no HMAC key
    is needed (a reviewer has none): its MACs are checked only if one is at hand.
    """
    if narrowed:
        msg = "--export checks the dataset's own manifest; drop --chain/--expect-head"
        raise ConfigurationError(msg)
    keys = load_verifier_keys(public_keys) if public_keys else None
    if skip_mac:
        key = None
    elif keys:
        key, _ = _key_if_any(log)
    else:
        key = log.key()
    return verify_export(export, key, keys)


@app.command()
@shared_options
def verify(
    log: LogOptions,
    chain: ChainOption = None,
    skip_mac: SkipMacOption = False,
    expect_head: ExpectHeadOption = None,
    export: ExportDirOption = None,
    anchor: AnchorDirOption = None,
    public_key: PublicKeyOption = None,
    max_checkpoint_age: MaxAgeOption = f"{DEFAULT_MAX_AGE_HOURS}h",
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Recompute every hash, link and MAC; report every finding. Exit 1 if any. Recorded."""
    not_recorded = None
    with reported_errors(as_json=output is OutputFormat.JSON):
        heads = [ExpectedHead.parse(text) for text in expect_head or []]
        if export is None:
            anchors = anchor_check(anchor, public_key, max_checkpoint_age)
            report, not_recorded = _verify_log(
                log, chain, heads, skip_mac=skip_mac, anchors=anchors
            )
        else:
            if anchor is not None:
                msg = "--export is checked against the checkpoints it holds: drop --anchor"
                raise ConfigurationError(msg)
            narrowed = bool(heads or chain)
            report = _verify_export(
                export, log, narrowed=narrowed, skip_mac=skip_mac, public_keys=public_key
            )
    if not_recorded is not None:
        typer.echo(f"warning: {terminal_safe(not_recorded)}", err=True)
    _print_report(report, output)
    if not report.intact:
        raise typer.Exit(EXIT_FINDINGS)


# -- demo, export, tail ---------------------------------------------------------------------

EventsOption = Annotated[int, typer.Option(min=1, max=10_000_000, help="How many events.")]
SeedOption = Annotated[int, typer.Option(help="Seed for a repeatable workload.")]


@app.command()
@shared_options
def demo(log: NewLogOptions, events: EventsOption = 2000, seed: SeedOption = 7) -> None:
    """Set up a log if needed, run a simulated support desk through the gate, verify."""
    with reported_errors():
        for line in init_store(log.db, key_file=log.key_file, timeout=log.timeout):
            show_line(line)
        with log.open() as store:
            tally = demo_workload.run(store, events, seed=seed)
            report = verify_store(store)
    show_line(f"recorded {sum(tally.values())} events in {store.url}:")
    for label, count in sorted(tally.items()):
        typer.echo(f"  {count:>7}  {label}")
    _print_report(report, OutputFormat.TABLE)
    if not report.intact:
        raise typer.Exit(EXIT_FINDINGS)


OutOption = Annotated[Path, typer.Option("--out", help="The dataset directory.")]


ExportAnchorOption = Annotated[
    Path | None,
    typer.Option(
        "--anchor",
        metavar="DIR",
        help="Copy into the dataset the newest signed checkpoint of each chain it holds in "
        "full (needs --public-key), so `verify --export DIR --public-key` can prove it "
        "complete without the HMAC key.",
    ),
]


@app.command()
@shared_options
def export(
    out: OutOption,
    log: LogOptions,
    anchor: ExportAnchorOption = None,
    public_key: PublicKeyOption = None,
) -> None:
    """Append what is new to a Parquet dataset (checked, atomic, incremental)."""
    with reported_errors():
        check = anchor_check(anchor, public_key, f"{DEFAULT_MAX_AGE_HOURS}h")
    anchors = None if check is None else (check.directory, check.keys)
    with reported_errors(), log.open() as store, progress_bar("exporting") as step:
        result = export_log(store, out, actor=log.actor, progress=step, anchors=anchors)
    for name in result.removed:
        show_line(f"removed {name} (left by an interrupted export; its range is exported again)")
    if not result.files:
        show_line(f"nothing new to export; {out} is up to date")
        return
    first = min(f.first_seq for f in result.files)
    last = max(f.last_seq for f in result.files)
    show_line(
        f"exported {result.rows} record(s), seq {first}..{last}, to {len(result.files)} new "
        f"file(s) in {out}; manifest: {out / MANIFEST}"
    )


LinesOption = Annotated[int, typer.Option("-n", "--lines", min=1, help="How many records.")]
FollowOption = Annotated[
    bool, typer.Option("--follow", "-f", help="Keep printing new records (Ctrl-C stops).")
]
IntervalOption = Annotated[
    float,
    typer.Option(min=0.1, max=3600.0, help="--follow: seconds between checks for new records."),
]


def _show_record(stored: StoredEvent, output: OutputFormat) -> None:
    """One record as one line: escaped text, or a JSON object."""
    if output is OutputFormat.JSON:
        typer.echo(json.dumps({"event_type": stored.event.event_type.value, **log_fields(stored)}))
    else:
        typer.echo(one_line(stored))


@app.command()
@shared_options
def tail(
    log: LogOptions,
    lines: LinesOption = 20,
    follow: FollowOption = False,
    interval: IntervalOption = 1.0,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """The newest records, one per line (--format json: one JSON object per line)."""
    with reported_errors(as_json=output is OutputFormat.JSON), log.open() as store:
        start = tail_heads(store)  # what is there now, on every chain
        shown = latest(store, lines, at=start)
        kind = "tail --follow" if follow else "tail"
        record_report(store, log.actor, kind, ReportFilter(), len(shown))
        for stored in shown:
            _show_record(stored, output)
        if follow:  # everything after that, our own audit.report included
            with contextlib.suppress(KeyboardInterrupt):
                for stored in tail_follow(store, start, interval=interval):
                    _show_record(stored, output)


def main() -> None:
    """Console-script entry point."""
    app()
