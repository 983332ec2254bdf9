"""The options ``accessaudit`` commands share, each declared once.

A command takes the options it shares with others as one parameter typed with an option set
(``log: LogOptions``); ``shared_options`` spreads that set's fields into the command's own
options, so they are given after the command name (``accessaudit verify --db URL``) and
listed by its ``--help``, and it adds ``--log-events`` to every command. The command receives
one ``LogOptions`` object that knows how to open the log and who is acting.
"""

from __future__ import annotations

import functools
import getpass
import inspect
import logging
import sys
from dataclasses import MISSING, dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, ParamSpec, TypeVar, cast, get_type_hints

import structlog
import typer

from accessaudit.record.keys import MacKey, load_key
from accessaudit.store import DEFAULT_CHAIN, DEFAULT_TIMEOUT, DEFAULT_URL, SqlStore

if TYPE_CHECKING:
    from collections.abc import Callable

P = ParamSpec("P")
R = TypeVar("R")


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


# -- option sets ----------------------------------------------------------------------------


class OptionSet:
    """Options several commands take, declared once as the fields of a frozen dataclass.

    Each field is annotated with its Typer option and has its default; a command that takes
    the set as a parameter gets each field as an option of its own (``shared_options``).
    """

    @classmethod
    def parameters(cls) -> list[inspect.Parameter]:
        """The set's fields as the keyword parameters Typer reads options from."""
        hints = get_type_hints(cls, include_extras=True)
        return [
            inspect.Parameter(
                field.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=inspect.Parameter.empty if field.default is MISSING else field.default,
                annotation=hints[field.name],
            )
            for field in fields(cast(Any, cls))
        ]

    @classmethod
    def taken_from(cls, values: dict[str, Any]) -> Any:
        """The set built from the parsed option values, which are removed from ``values``."""
        return cls(**{field.name: values.pop(field.name) for field in fields(cast(Any, cls))})


@dataclass(frozen=True, kw_only=True)
class StoreOptions(OptionSet):
    """Where the log is, its key and how long each database operation may take."""

    db: DbOption = DEFAULT_URL
    key_file: KeyFileOption = None
    timeout: TimeoutOption = DEFAULT_TIMEOUT

    def key(self) -> MacKey:
        """The HMAC key (``MacKeyError`` if there is none)."""
        return load_key(self.key_file)

    def open(self, *, key: MacKey | None = None, chain_id: str = DEFAULT_CHAIN) -> SqlStore:
        """The log, sealed with the key (looked for first: no key, no connection)."""
        sealed = self.key() if key is None else key
        return SqlStore(self.db, key=sealed, chain_id=chain_id, timeout=self.timeout)

    def open_unsealed(self) -> SqlStore:
        """The log without its key: it can be read and checked, not added to."""
        return SqlStore(self.db, timeout=self.timeout)


@dataclass(frozen=True, kw_only=True)
class LogOptions(StoreOptions):
    """An existing log and who is acting: every command that reads the log or adds to it."""

    by: ByOption = None

    @property
    def actor(self) -> str:
        """Who is acting, for the record: ``--by``, else the login name."""
        return self.by or login_name()


@dataclass(frozen=True, kw_only=True)
class NewLogOptions(StoreOptions):
    """A log the command sets up where missing (``init``, ``demo``): its key file too."""

    key_file: NewKeyFileOption = None


def _log_events_parameter() -> inspect.Parameter:
    return inspect.Parameter(
        "log_events", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=LogEventsOption
    )


def shared_options(command: Callable[P, R]) -> Callable[P, R]:
    """Give ``command`` its shared options: each ``OptionSet`` parameter's and ``--log-events``.

    Typer reads the returned function's ``__signature__``: the command's own parameters,
    then one keyword parameter per field of each ``OptionSet`` parameter (so ``--help``
    lists a command's own options first), then ``log_events`` (its callback has done its
    work by the time the command runs). Called by Typer, the function builds each set from
    the parsed values; called with the sets themselves, as its type says, it passes them on.
    """
    signature = inspect.signature(command, eval_str=True)
    option_sets: dict[str, type[OptionSet]] = {}
    own: list[inspect.Parameter] = []
    shared: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        kind = parameter.annotation
        if isinstance(kind, type) and issubclass(kind, OptionSet):
            option_sets[parameter.name] = kind
            shared += kind.parameters()
        else:
            own.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))
    parameters = [*own, *shared, _log_events_parameter()]
    names = [parameter.name for parameter in parameters]
    if len(set(names)) != len(names):
        msg = f"{command.__name__}: an option set repeats a parameter name: {sorted(names)}"
        raise TypeError(msg)

    @functools.wraps(command)
    def parsed(*args: Any, **values: Any) -> R:
        values.pop("log_events", None)
        given = signature.bind_partial(*args).arguments.keys() | values.keys()
        for name, option_set in option_sets.items():
            if name not in given:
                values[name] = option_set.taken_from(values)
        return command(*args, **values)

    # inspect.signature (and so Typer) reads __signature__; typeshed has no such attribute.
    parsed.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    parsed.__annotations__ = {p.name: p.annotation for p in parameters}
    parsed.__annotations__["return"] = signature.return_annotation
    return cast("Callable[P, R]", parsed)
