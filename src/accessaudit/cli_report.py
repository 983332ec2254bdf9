"""``accessaudit report``: access reports for reviewers and transparency reports for customers."""

from __future__ import annotations

import csv
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from accessaudit._cli_common import (
    reported_errors,
    show_line,
    time_option,
)
from accessaudit._cli_options import LogOptions, shared_options
from accessaudit._clock import now_utc
from accessaudit._terminal import spreadsheet_safe, terminal_safe
from accessaudit.exceptions import ConfigurationError
from accessaudit.policy import Policy
from accessaudit.report import ReportFilter, access_report, customer_known, record_report
from accessaudit.transparency import transparency_report


class ReportFormat(StrEnum):
    """How ``report`` prints."""

    TABLE = "table"
    JSON = "json"
    CSV = "csv"


_MIN_TEXT_WIDTH = 12
"""Narrowest a folded free-text column may get before the records are listed instead."""


def _table_cell(value: Any) -> str:
    return "-" if value is None else terminal_safe(str(value))


def _print_table(title: str, rows: list[dict[str, Any]], console: Console) -> None:
    """One report section, each value shown whole and literally, whatever the console's width.

    Values come from the log: they are escaped (``terminal_safe``) and handed to rich as
    ``Text``, so ``[bold]`` or ``:smile:`` in an id is shown as written, never interpreted.
    Ids, times and counts (values without spaces) are never cut or broken: when the table is
    wider than the console, only free-text columns (values with spaces, e.g. a
    justification) wrap; when even that does not fit, each row is listed as ``name: value``
    lines instead.
    """
    heading = title.replace("_", " ")
    if not rows:
        console.print(Text(f"{heading}: none"))
        return
    columns = list(rows[0])
    cells = [[_table_cell(row.get(column)) for column in columns] for row in rows]
    widths = [
        max(cell_len(column), *(cell_len(row[i]) for row in cells))
        for i, column in enumerate(columns)
    ]
    text_columns = {i for i in range(len(columns)) if any(" " in row[i] for row in cells)}
    borders = 3 * len(columns) + 1  # "| " before each value, " " after, one closing "|"
    fixed = sum(w for i, w in enumerate(widths) if i not in text_columns) + borders
    if fixed + _MIN_TEXT_WIDTH * len(text_columns) > console.width:
        _print_records(heading, columns, cells, console)
        return
    fits = fixed + sum(widths[i] for i in text_columns) <= console.width
    table = Table(title=Text(heading), title_justify="left", show_lines=not fits)
    for i, column in enumerate(columns):
        if i in text_columns:
            table.add_column(Text(column), overflow="fold", no_wrap=False)
        else:
            table.add_column(Text(column), overflow="fold", no_wrap=True, min_width=widths[i])
    for row in cells:
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)


def _print_records(
    heading: str, columns: list[str], cells: list[list[str]], console: Console
) -> None:
    """A section too wide for the console: one block of ``name: value`` lines per row."""
    console.print(Text(heading))
    for row in cells:
        console.print()
        for column, cell in zip(columns, row, strict=True):
            console.print(Text(f"  {column}: {cell}", overflow="fold"))


def _csv_cell(value: Any) -> Any:
    """A value for a CSV cell: lists as JSON text, text that looks like a formula quoted."""
    if isinstance(value, list):
        return json.dumps(value)
    return spreadsheet_safe(value) if isinstance(value, str) else value


def _print_csv(sections: dict[str, list[dict[str, Any]]]) -> None:
    """Every section's rows as CSV, with a ``section`` column; safe to open in a spreadsheet.

    A text cell starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a
    leading ``'`` (OWASP's advice against CSV injection): a value from the log must never
    run as a formula on a reviewer's machine. JSON output is the exact form.
    """
    columns: dict[str, None] = {"section": None}
    for rows in sections.values():
        for row in rows:
            columns.update(dict.fromkeys(row))
    # Records end in CRLF (RFC 4180): with a bare LF, the csv module would leave a value
    # holding a CR unquoted, and readers would split the record there.
    writer = csv.DictWriter(sys.stdout, fieldnames=list(columns), lineterminator="\r\n")
    writer.writeheader()
    for name, rows in sections.items():
        for row in rows:
            writer.writerow({"section": name, **{k: _csv_cell(v) for k, v in row.items()}})


@shared_options
def report(
    log: LogOptions,
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
    output: Annotated[
        ReportFormat,
        typer.Option(
            "--format",
            help="Output format. csv: a text cell starting with = + - @, tab or carriage "
            "return gets a leading ' so that spreadsheets never run it as a formula.",
        ),
    ] = ReportFormat.TABLE,
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
        with log.open() as store:
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
            record_report(store, log.actor, kind, flt, rows, **extra)
    if output is ReportFormat.JSON:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    elif output is ReportFormat.CSV:
        _print_csv(sections)
    else:
        # A terminal gets its own width; a pipe or file gets room for whole values.
        console = Console() if sys.stdout.isatty() else Console(width=220)
        if transparency:
            for line in result.heading():
                show_line(line)
        for name, section_rows in sections.items():
            _print_table(name, section_rows, console)
        if transparency and result.withheld_note is not None:
            typer.echo(result.withheld_note)
