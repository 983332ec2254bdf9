"""Input checks, output and error reporting shared by every ``accessaudit`` command.

Every command group is a ``CommandGroup``: its commands check their input before they run
(``CheckedCommand``) and every usage error is one escaped line on stderr (``CheckedGroup``),
like the errors ``reported_errors`` reports.

Exit codes: 0 success, 1 verification findings (or work refused because records failed
their checks), 2 bad usage or input, 3 could not do the work (store unreachable, key
missing or unusable).
"""

from __future__ import annotations

import errno
import json
import math
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from typer.core import TyperCommand, TyperGroup

from accessaudit.cli._options import LogEventsOption
from accessaudit.exceptions import AccessAuditError, ConfigurationError, IntegrityError
from accessaudit.record._clock import now_utc, parse_when
from accessaudit.review._terminal import terminal_safe

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from datetime import datetime

    from typer.models import CommandFunctionType

EXIT_FINDINGS, EXIT_USAGE, EXIT_UNAVAILABLE = 1, 2, 3
MAX_MESSAGE: Final = 10_000
"""Characters of an error message shown; a policy with thousands of faults stays readable."""


def show_line(text: str) -> None:
    """One line of human-readable output on stdout, escaped: it may quote stored text or input."""
    typer.echo(terminal_safe(text))


def _failure(message: str, code: int, *, as_json: bool) -> typer.Exit:
    """Print ``message`` as one safe line on stderr (and as JSON on stdout); the Exit to raise."""
    line = terminal_safe(message)
    if len(line) > MAX_MESSAGE:
        line = f"{line[:MAX_MESSAGE]}... ({len(line) - MAX_MESSAGE:,} more characters)"
    typer.echo(f"error: {line}", err=True)
    if as_json:
        typer.echo(json.dumps({"error": line, "exit_code": code}))
    return typer.Exit(code)


_PATH_ERRNOS: Final = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.EINVAL}
)
"""OS errors that mean "no such path can be used as given", i.e. bad input (exit 2)."""


@contextmanager
def reported_errors(*, as_json: bool = False) -> Iterator[None]:
    """Turn any failure into one line on stderr and a documented exit code.

    With ``as_json`` the same message also goes to stdout as ``{"error", "exit_code"}``, so
    a program reading the JSON output always gets JSON. The line is escaped
    (``terminal_safe``): messages quote input, and input may hold control characters.
    """
    try:
        yield
    except (typer.Exit, BrokenPipeError):
        # A reader that went away (``| head``) is no error of ours: typer exits quietly.
        raise
    except Exception as e:
        if isinstance(e, IntegrityError):  # the log or an export failed its checks
            message, code = str(e), EXIT_FINDINGS
        elif isinstance(e, AccessAuditError):
            # Every "your input is wrong" error (configuration, event, policy, evidence) is
            # also a ValueError; everything else means the work could not be done.
            usage = isinstance(e, ValueError)
            message, code = str(e), EXIT_USAGE if usage else EXIT_UNAVAILABLE
        elif isinstance(e, OSError) and e.strerror:
            # A file or directory the command was pointed at. A path the system cannot use
            # as written is bad input; a full disk, an I/O error or a permission is not.
            where = f"{e.filename}: " if e.filename is not None else ""
            usage = e.errno in _PATH_ERRNOS
            hint = "; check the path" if usage else ""
            message, code = f"{where}{e.strerror}{hint}", EXIT_USAGE if usage else EXIT_UNAVAILABLE
        else:
            # Not an error we anticipated: still one line and "could not do the work", never
            # a traceback that a script could take for exit code 1 ("findings").
            message, code = f"unexpected {type(e).__name__}: {str(e)[:300]}", EXIT_UNAVAILABLE
        raise _failure(message, code, as_json=as_json) from e


def _wants_json(ctx: typer.Context | None) -> bool:
    return ctx is not None and str(ctx.params.get("output")) == "json"


# -- checking what the command line gave, before any command runs --------------------------


_NAME_MAX: Final = 255
"""Longest file or directory name, in bytes, that common file systems accept."""


def _problem(value: object) -> str | None:
    """What makes a parsed option value unusable, or None."""
    if isinstance(value, list | tuple):
        return next(filter(None, map(_problem, value)), None)
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number; give one such as 5 or 0.5"
    is_path = isinstance(value, Path)
    if is_path:
        value = str(value)
    if not isinstance(value, str):
        return None
    if not value:
        # An empty id or name would otherwise be refused deep down, naming a record field.
        return "is empty; give a value, or leave the option out"
    if "\x00" in value:
        return (
            f"{value[:80]!r} contains a NUL character, which no id, name or "
            "path may hold; remove it"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Bytes that are not UTF-8 reach Python from argv as lone surrogates
        # (surrogateescape); nothing can store or send them as text.
        return (
            f"{value[:80]!r} is not valid UTF-8 text; give it in UTF-8 "
            "(check the terminal's or the script's encoding)"
        )
    if is_path and any(len(part.encode()) > _NAME_MAX for part in Path(value).parts):
        return f"{value[:80]!r}... has a name longer than {_NAME_MAX} bytes; shorten it"
    return None


def _label(ctx: typer.Context, param: Any) -> str:
    """How the user named a parameter: its long option, or an argument's metavar."""
    long_names = [opt for opt in param.opts if opt.startswith("--")]
    if param.param_type_name == "option" and long_names:
        label = long_names[0]
    else:  # an argument, shown as in the usage line (GRANT_ID)
        label = param.metavar or str(param.name).upper()
    source = ctx.get_parameter_source(param.name)
    if source is not None and source.name == "ENVIRONMENT" and param.envvar:
        label += f" (from ${param.envvar})"
    return str(label)


class CheckedCommand(TyperCommand):
    """A command that refuses unusable input up front, naming the option it came in.

    Empty text, text with a NUL character or with bytes that are not UTF-8 (in any
    argument, option or option's environment variable), file names no file system takes
    and numbers that are not finite are usage errors (exit 2) before the command runs:
    deeper down they would surface as "unexpected" encoding, OS or driver errors, or as a
    complaint about a record field the user never named.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        rest = super().parse_args(ctx, args)
        for param in self.get_params(ctx):
            if param.name is None or param.name not in ctx.params:
                continue
            problem = _problem(ctx.params[param.name])
            if problem is not None:
                message = f"{_label(ctx, param)}: {problem}"
                raise _failure(message, EXIT_USAGE, as_json=_wants_json(ctx))
        return rest


@contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    """Click's usage errors (unknown option, bad value) as one line, like every other error."""
    try:
        yield
    except typer.TyperException as e:  # typer exports only the base of click's errors
        # A group called without a command shows its help; typer itself tells that error
        # by its name (typer.rich_utils), as it is not exported either.
        if type(e).__name__ == "NoArgsIsHelpError":
            raise
        ctx = getattr(e, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        raise _failure(e.format_message() + hint, e.exit_code, as_json=_wants_json(ctx)) from e


class CheckedGroup(TyperGroup):
    """A command group whose usage errors are one line on stderr, exit 2."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        with _one_line_usage_errors():
            return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        with _one_line_usage_errors():
            return super().invoke(ctx)


class CommandGroup(typer.Typer):
    """A Typer app whose commands check their input (``CheckedCommand``) unless told otherwise."""

    def command(
        self,
        name: str | None = None,
        *,
        cls: type[TyperCommand] | None = None,
        **settings: Any,
    ) -> Callable[[CommandFunctionType], CommandFunctionType]:
        """Register a command, as ``typer.Typer.command``; its input is checked up front."""
        return super().command(name, cls=cls or CheckedCommand, **settings)


def _group_options(log_events: LogEventsOption = False) -> None:
    """Options a command group takes before its command (``accessaudit grant --log-events``)."""


def command_group(help_text: str) -> CommandGroup:
    """A Typer app with the settings every accessaudit command group shares."""
    return CommandGroup(
        cls=CheckedGroup,
        callback=_group_options,
        help=help_text,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        # Plain help rather than boxed panels, easier to read in logs; usage errors are one
        # line (CheckedGroup), like every other error.
        rich_markup_mode=None,
    )


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
