"""``accessaudit report``: access reports for reviewers and transparency reports for customers."""

from __future__ import annotations

import csv
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from accessaudit._cli_common import (
    ByOption,
    DbOption,
    KeyFileOption,
    TimeoutOption,
    login_name,
    reported_errors,
    time_option,
)
from accessaudit._clock import now_utc
from accessaudit.exceptions import ConfigurationError
from accessaudit.keys import load_key
from accessaudit.policy import Policy
from accessaudit.report import ReportFilter, access_report, customer_known, record_report
from accessaudit.store import SqlStore
from accessaudit.store._engine import DEFAULT_URL
from accessaudit.transparency import transparency_report


class ReportFormat(StrEnum):
    """How ``report`` prints."""

    TABLE = "table"
    JSON = "json"
    CSV = "csv"


def _print_table(title: str, rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(title=title.replace("_", " "), title_justify="left", show_lines=False)
    if not rows:
        console.print(f"{title.replace('_', ' ')}: none")
        return
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*("-" if v is None else str(v) for v in row.values()))
    console.print(table)


def _print_csv(sections: dict[str, list[dict[str, Any]]]) -> None:
    columns: dict[str, None] = {"section": None}
    for rows in sections.values():
        for row in rows:
            columns.update(dict.fromkeys(row))
    writer = csv.DictWriter(sys.stdout, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for name, rows in sections.items():
        for row in rows:
            writer.writerow(
                {
                    "section": name,
                    **{k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()},
                }
            )


def report(
    since: Annotated[
        str | None, typer.Option(help="Start: 7d (ago) or an ISO time with zone [default: all].")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="End (exclusive): as --since [default: no end].")
    ] = None,
    customer: Annotated[str | None, typer.Option(help="Only this customer.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor id.")] = None,
    purpose: Annotated[str | None, typer.Option(help="Only this purpose.")] = None,
    resource: Annotated[str | None, typer.Option(help="Only this resource.")] = None,
    transparency: Annotated[
        bool,
        typer.Option(
            "--transparency", help="The customer's transparency report (needs --customer)."
        ),
    ] = False,
    show_actors: Annotated[
        bool, typer.Option("--show-actors", help="Transparency: name actors, not only roles.")
    ] = False,
    summarise: Annotated[
        bool, typer.Option("--summarise", help="Transparency: one line per day and purpose.")
    ] = False,
    policy: Annotated[
        Path | None,
        typer.Option(help="Policy file (its [transparency] settings apply)."),
    ] = None,
    expiring_within: Annotated[
        str, typer.Option(help="Evidence expiring within this is listed (e.g. 7d).")
    ] = "7d",
    output: Annotated[ReportFormat, typer.Option("--format", help="Output format.")] = (
        ReportFormat.TABLE
    ),
    by: ByOption = None,
    db: DbOption = DEFAULT_URL,
    key_file: KeyFileOption = None,
    timeout: TimeoutOption = 5.0,
) -> None:
    """Accesses by purpose, actor, customer, day; denials; what stands out. Recorded."""
    with reported_errors(as_json=output is ReportFormat.JSON):
        now = now_utc()
        flt = ReportFilter(
            since=None if since is None else time_option(since, "--since", ago=True),
            until=None if until is None else time_option(until, "--until", ago=True),
            customer_id=customer,
            actor_id=actor,
            purpose=purpose,
            resource=resource,
        )
        window = time_option(expiring_within, "--expiring-within") - now
        if transparency and customer is None:
            raise ConfigurationError("--transparency is a report for one customer: add --customer")
        disclose = Policy.load(policy).disclose_withheld if policy else False
        with SqlStore(db, key=load_key(key_file), timeout=timeout) as store:
            # A customer with no accesses gets an empty transparency report; a reviewer's
            # report about a customer the log has never seen is more likely a typo.
            if not transparency and customer is not None and not customer_known(store, customer):
                raise ConfigurationError(f"no record in the log concerns customer {customer!r}")
            if transparency:
                result: Any = transparency_report(
                    store,
                    flt,
                    now=now,
                    show_actors=show_actors,
                    disclose_withheld=disclose,
                    summarise=summarise,
                )
                sections = {"accesses": result.table_rows()}
                rows = len(result.entries)
            else:
                result = access_report(store, flt, now=now, expiring_within=window)
                sections = result.sections
                rows = sum(len(r) for r in sections.values())
            # Recorded before anything is shown: no record, no report.
            kind = "transparency" if transparency else "access"
            extra = {"show_actors": show_actors} if transparency else {}
            record_report(store, by or login_name(), kind, flt, rows, **extra)
    if output is ReportFormat.JSON:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    elif output is ReportFormat.CSV:
        _print_csv(sections)
    else:
        # A terminal gets its own width; a pipe or file gets room for whole values.
        console = Console() if sys.stdout.isatty() else Console(width=220)
        if transparency:
            for line in result.heading():
                typer.echo(line)
        for name, section_rows in sections.items():
            _print_table(name, section_rows, console)
        if transparency and result.withheld_note is not None:
            typer.echo(result.withheld_note)
