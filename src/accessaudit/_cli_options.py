"""The options ``accessaudit`` commands share, each declared once as an annotated type."""

from __future__ import annotations

import getpass
import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Final

import structlog
import typer


def configure_events(log_events: bool) -> None:
    """Where structlog output goes: the CLI is an application, so it (not the library) decides.

    Each recorded event is written to stderr as JSON with ``--log-events``; otherwise only
    warnings are.
    """
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


def _log_events_given(value: bool) -> bool:
    # Given after the command: turn event output on. Not given, the setting made before the
    # command (``accessaudit --log-events report``) stands.
    if value:
        configure_events(log_events=True)
    return value


LOG_EVENTS_HELP: Final = "Also write each recorded event to stderr as JSON."
LogEventsOption = Annotated[
    bool,
    typer.Option(
        "--log-events",
        callback=_log_events_given,
        help=f"{LOG_EVENTS_HELP} (Also accepted before the command.)",
    ),
]
DbOption = Annotated[
    str,
    typer.Option(
        "--db", envvar="ACCESSAUDIT_DB", help="Database URL (sqlite:///FILE or postgresql://...)."
    ),
]
TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout", min=0.1, max=86_400.0, help="Seconds each database operation may take."
    ),
]
_KEY_FILE_HELP: Final = (
    "HMAC key file [default: $ACCESSAUDIT_HMAC_KEY, else $ACCESSAUDIT_KEY_FILE, "
    "else ./accessaudit.key]."
)
# A key file named on the command line that is not there is a typo (exit 2), like a --db
# file that does not exist; no key in any of the default places is "key missing" (exit 3).
KeyFileOption = Annotated[
    Path | None, typer.Option("--key-file", exists=True, dir_okay=False, help=_KEY_FILE_HELP)
]


def _in_a_directory(path: Path | None) -> Path | None:
    """A key file to create must be named in a directory that exists."""
    if path is None:
        return None
    try:
        there = path.parent.is_dir()
    except (OSError, ValueError):  # not usable as a path at all: CheckedCommand says why
        there = True
    if not there:
        msg = f"the directory {path.parent} does not exist; create it first"
        raise typer.BadParameter(msg)
    return path


NewKeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        dir_okay=False,
        callback=_in_a_directory,
        help=f"{_KEY_FILE_HELP} Created if it does not exist.",
    ),
]
ByOption = Annotated[
    str | None,
    typer.Option("--by", help="Who is acting, for the record [default: your login name]."),
]


class OutputFormat(StrEnum):
    """How a command prints its result."""

    TABLE = "table"
    JSON = "json"


FormatOption = Annotated[OutputFormat, typer.Option("--format", help="Output format.")]


def login_name() -> str:
    """Who runs the command, for records that need an actor."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in this environment
        return "unknown"
