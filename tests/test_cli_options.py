"""The CLI's shared options: declared once as option sets, given to each command that takes them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from accessaudit.cli._options import LogOptions, NewLogOptions, OptionSet, shared_options
from accessaudit.cli.app import app

runner = CliRunner()


def _described(log: LogOptions, lines: int = 1) -> str:
    return f"{log.db} {log.key_file} {log.timeout} {log.actor} {lines}"


def _show(log: LogOptions, lines: int = 1) -> None:
    typer.echo(_described(log, lines))


@dataclass(frozen=True, kw_only=True)
class _Lines(OptionSet):
    lines: Annotated[int, typer.Option()] = 1


def _takes_lines_twice(log: LogOptions, more: _Lines, lines: int = 1) -> None:
    """Its own --lines and the option set's."""


def test_typer_parses_the_options_and_the_command_gets_one_option_set() -> None:
    """--db, --timeout and --by come after the command; it receives them as one LogOptions."""
    command = typer.Typer()
    command.command()(shared_options(_show))
    args = ["--lines", "2", "--db", "sqlite:///x.db", "--timeout", "3", "--by", "alice"]
    result = runner.invoke(command, [*args, "--log-events"])
    assert (result.exit_code, result.stdout) == (0, "sqlite:///x.db None 3.0 alice 2\n")


def test_a_command_called_with_its_option_set_gets_it_unchanged() -> None:
    """Called as its type says (with a LogOptions), the command receives that very object."""
    log = LogOptions(db="sqlite:///y.db", key_file=Path("k"), timeout=2.0, by="bob")
    assert shared_options(_described)(log, lines=3) == "sqlite:///y.db k 2.0 bob 3"


def test_an_option_set_may_not_repeat_a_parameter_name() -> None:
    """Two options under one name would shadow each other: refused when the command is made."""
    with pytest.raises(TypeError, match="repeats a parameter name"):
        shared_options(_takes_lines_twice)


@pytest.mark.parametrize(
    ("path", "option_set"),
    [
        (("init",), NewLogOptions),
        (("demo",), NewLogOptions),
        (("verify",), LogOptions),
        (("export",), LogOptions),
        (("tail",), LogOptions),
        (("report",), LogOptions),
        (("recover",), LogOptions),
        (("grant", "issue"), LogOptions),
        (("incident", "close"), LogOptions),
        (("legal", "list"), LogOptions),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else value.__name__,
)
def test_each_command_takes_every_option_of_its_set(
    path: tuple[str, ...], option_set: type[OptionSet]
) -> None:
    """The set's options (and --log-events) are the command's own, listed by its --help."""
    command = get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    names = {param.name for param in command.params}
    assert {p.name for p in option_set.parameters()} | {"log_events"} <= names
