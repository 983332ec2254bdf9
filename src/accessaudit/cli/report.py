"""``accessaudit report``: access reports for reviewers and transparency reports for customers."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from accessaudit.cli._common import reported_errors, show_line, time_option
from accessaudit.cli._options import LogOptions, OptionSet, shared_options
from accessaudit.exceptions import ConfigurationError
from accessaudit.gate.policy import DEFAULT_UNUSUAL_VOLUME, Policy
from accessaudit.record._clock import now_utc
from accessaudit.review._terminal import spreadsheet_safe, terminal_safe
from accessaudit.review.report import (
    AccessReport,
    ReportFilter,
    access_report,
    customer_known,
    record_report,
)
from accessaudit.review.transparency import TransparencyReport, transparency_report

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from accessaudit.store import SqlStore

__all__ = ["report"]


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


# -- what to report on, and for whom -------------------------------------------------------

SinceOption = Annotated[
    str | None, typer.Option(help="Start: 7d (ago) or an ISO time with zone [default: all].")
]
UntilOption = Annotated[
    str | None, typer.Option(help="End (exclusive): as --since [default: no end].")
]
CustomerOption = Annotated[str | None, typer.Option(help="Only this customer.")]
ActorOption = Annotated[str | None, typer.Option(help="Only this actor id.")]
PurposeOption = Annotated[str | None, typer.Option(help="Only this purpose.")]
ResourceOption = Annotated[str | None, typer.Option(help="Only this resource.")]


@dataclass(frozen=True, kw_only=True)
class Selection(OptionSet):
    """Which access decisions a report covers: a period and optional equality filters."""

    since: SinceOption = None
    until: UntilOption = None
    customer: CustomerOption = None
    actor: ActorOption = None
    purpose: PurposeOption = None
    resource: ResourceOption = None

    def report_filter(self) -> ReportFilter:
        """The library's filter; a time that cannot be read is a usage error naming its option."""
        return ReportFilter(
            since=None if self.since is None else time_option(self.since, "--since", ago=True),
            until=None if self.until is None else time_option(self.until, "--until", ago=True),
            customer_id=self.customer,
            actor_id=self.actor,
            purpose=self.purpose,
            resource=self.resource,
        )


TransparencyFlag = Annotated[
    bool,
    typer.Option("--transparency", help="The customer's transparency report (needs --customer)."),
]
ShowActorsFlag = Annotated[
    bool, typer.Option("--show-actors", help="Transparency: name actors, not only roles.")
]
SummariseFlag = Annotated[
    bool, typer.Option("--summarise", help="Transparency: one line per day and purpose.")
]
PolicyOption = Annotated[
    Path | None,
    typer.Option(help="Policy file (its [transparency] and [review] settings apply)."),
]


@dataclass(frozen=True, kw_only=True)
class TransparencyOptions(OptionSet):
    """The customer's transparency report instead of the reviewers' report, and its settings."""

    transparency: TransparencyFlag = False
    show_actors: ShowActorsFlag = False
    summarise: SummariseFlag = False
    policy: PolicyOption = None

    def settings(self) -> Policy | None:
        """The policy whose report settings apply, if one was given."""
        return Policy.load(self.policy) if self.policy is not None else None


ExpiringWithinOption = Annotated[
    str, typer.Option(help="Evidence expiring within this is listed (e.g. 7d).")
]
ReportFormatOption = Annotated[
    ReportFormat,
    typer.Option(
        "--format",
        help="Output format. csv: a text cell starting with = + - @, tab or carriage "
        "return gets a leading ' so that spreadsheets never run it as a formula.",
    ),
]


# -- the command ----------------------------------------------------------------------------


def _make(
    store: SqlStore,
    flt: ReportFilter,
    view: TransparencyOptions,
    *,
    now: datetime,
    window: timedelta,
    policy: Policy | None,
) -> AccessReport | TransparencyReport:
    """The report asked for, made from ``store``, with ``policy``'s settings if given."""
    if view.transparency:
        return transparency_report(
            store,
            flt,
            now=now,
            show_actors=view.show_actors,
            disclose_withheld=policy is not None and policy.disclose_withheld,
            summarise=view.summarise,
        )
    # A customer with no accesses gets an empty transparency report; a reviewer's report
    # about a customer the log has never seen is more likely a typo.
    if flt.customer_id is not None and not customer_known(store, flt.customer_id):
        raise ConfigurationError(f"no record in the log concerns customer {flt.customer_id!r}")
    unusual = DEFAULT_UNUSUAL_VOLUME if policy is None else policy.unusual_volume
    return access_report(store, flt, now=now, expiring_within=window, unusual=unusual)


def _record(
    store: SqlStore,
    actor: str,
    flt: ReportFilter,
    made: AccessReport | TransparencyReport,
    *,
    show_actors: bool,
) -> None:
    """Record the report as an ``audit.report``: before it is shown, so no record, no report."""
    if isinstance(made, TransparencyReport):
        rows = len(made.entries)
        record_report(store, actor, "transparency", flt, rows, show_actors=show_actors)
    else:
        rows = sum(len(section) for section in made.sections.values())
        record_report(store, actor, "access", flt, rows)


def _print_report(made: AccessReport | TransparencyReport, output: ReportFormat) -> None:
    if output is ReportFormat.JSON:
        typer.echo(json.dumps(made.to_dict(), indent=2))
        return
    if isinstance(made, TransparencyReport):
        sections = {"accesses": made.table_rows()}
    else:
        sections = made.sections
    if output is ReportFormat.CSV:
        _print_csv(sections)
        return
    # A terminal gets its own width; a pipe or file gets room for whole values.
    console = Console() if sys.stdout.isatty() else Console(width=220)
    if isinstance(made, TransparencyReport):
        for line in made.heading():
            show_line(line)
    for name, rows in sections.items():
        _print_table(name, rows, console)
    if isinstance(made, TransparencyReport) and made.withheld_note is not None:
        typer.echo(made.withheld_note)


@shared_options
def report(
    selection: Selection,
    view: TransparencyOptions,
    log: LogOptions,
    expiring_within: ExpiringWithinOption = "7d",
    output: ReportFormatOption = ReportFormat.TABLE,
) -> None:
    """Accesses by purpose, actor, customer, day; denials; what stands out. Recorded."""
    with reported_errors(as_json=output is ReportFormat.JSON):
        now = now_utc()
        flt = selection.report_filter()
        window = time_option(expiring_within, "--expiring-within") - now
        if view.transparency and flt.customer_id is None:
            raise ConfigurationError("--transparency is a report for one customer: add --customer")
        policy = view.settings()
        with log.open() as store:
            made = _make(store, flt, view, now=now, window=window, policy=policy)
            _record(store, log.actor, flt, made, show_actors=view.show_actors)
    _print_report(made, output)
