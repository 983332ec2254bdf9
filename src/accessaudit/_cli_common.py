"""Options, output formats and error reporting shared by every ``accessaudit`` command.

Exit codes: 0 success, 1 verification findings (or work refused because records failed
their checks), 2 bad usage or input, 3 could not do the work (store unreachable, key
missing or unusable).
"""

from __future__ import annotations

import getpass
import json
import sys
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from accessaudit._clock import now_utc, parse_when
from accessaudit.exceptions import AccessAuditError, ConfigurationError, IntegrityError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from datetime import datetime

EXIT_FINDINGS, EXIT_USAGE, EXIT_UNAVAILABLE = 1, 2, 3

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
def reported_errors(*, as_json: bool = False) -> Iterator[None]:
    """Turn any failure into one line on stderr and a documented exit code.

    With ``as_json`` the same message also goes to stdout as ``{"error", "exit_code"}``, so
    a program reading the JSON output always gets JSON.
    """
    try:
        yield
    except typer.Exit:
        raise
    except Exception as e:
        if isinstance(e, IntegrityError):  # the log or an export failed its checks
            message, code = str(e), EXIT_FINDINGS
        elif isinstance(e, AccessAuditError):
            # Every "your input is wrong" error (configuration, event, policy, evidence) is
            # also a ValueError; everything else means the work could not be done.
            usage = isinstance(e, ValueError)
            message, code = str(e), EXIT_USAGE if usage else EXIT_UNAVAILABLE
        else:
            # Not an error we anticipated: still one line and "could not do the work", never
            # a traceback that a script could take for exit code 1 ("findings").
            message, code = f"unexpected {type(e).__name__}: {str(e)[:300]}", EXIT_UNAVAILABLE
        typer.echo(f"error: {message}", err=True)
        if as_json:
            typer.echo(json.dumps({"error": message, "exit_code": code}))
        raise typer.Exit(code) from e


def command_group(help_text: str) -> typer.Typer:
    """A Typer app with the settings every accessaudit command group shares."""
    return typer.Typer(
        help=help_text,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        # Plain usage errors ("Usage: ... Error: ...") rather than boxed ones: easier to
        # read in logs and for scripts.
        rich_markup_mode=None,
    )


FormatOption = Annotated[OutputFormat, typer.Option("--format", help="Output format.")]
ByOption = Annotated[
    str | None,
    typer.Option("--by", help="Who is acting, for the record [default: your login name]."),
]


def login_name() -> str:
    """Who runs the command, for records that need an actor."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in this environment
        return "unknown"


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int], None] | None]:
    """A rows-so-far counter on a terminal's stderr; nothing when output is redirected."""
    if not sys.stderr.isatty():
        yield None
        return
    with Progress(
        TextColumn(label),
        SpinnerColumn(),
        TextColumn("{task.completed:,} rows"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=None)
        yield lambda rows: progress.update(task, completed=rows)


def time_option(text: str, option: str, *, ago: bool = False) -> datetime:
    """A ``WHEN`` option's value (duration or ISO time with zone), or a usage error naming it."""
    try:
        return parse_when(text, now_utc(), ago=ago)
    except ValueError as e:
        raise ConfigurationError(f"{option}: {e}") from e
