"""Hostile command-line input and hostile stored text: usage errors, never crashes or forgeries.

Every command and sub-command (enumerated from the Typer app, so new ones are covered) is
driven with arbitrary text in every argument and option, and holds to the options every
command shares; stored values that hold control characters, rich markup or spreadsheet
formulas are shown literally.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.main import get_command
from typer.testing import CliRunner

from accessaudit import EvidenceRegistry, SqlStore, load_key
from accessaudit.cli.app import app
from accessaudit.cli.report import _print_csv, _print_table
from accessaudit.record._clock import parse_when
from tests.strategies import make_event

if TYPE_CHECKING:
    from collections.abc import Iterator

runner = CliRunner()
INVALID_UTF8 = b"cust-\xff\xfe".decode("utf-8", "surrogateescape")  # as argv delivers it


def _leaves(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _leaves(command, (*path, name))
        else:
            yield (*path, name), command


COMMANDS = dict(_leaves(get_command(app)))


def _invoke(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.exit_code, result.stdout, result.stderr


def _assert_one_line_usage_error(code: int, out: str, err: str, *names: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ")
    assert err.count("\n") == 1, err  # one line
    for name in names:
        assert name in err
    assert "unexpected" not in err
    assert "Traceback" not in out + err


@pytest.fixture
def logdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An initialised, empty SQLite log with its key, as the current directory."""
    monkeypatch.chdir(tmp_path)
    for name in ("ACCESSAUDIT_DB", "ACCESSAUDIT_HMAC_KEY", "ACCESSAUDIT_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert _invoke("init")[0] == 0
    return tmp_path


# -- every command, any input ---------------------------------------------------------------

AWKWARD = [
    "", " ", "-", "--", "0", "1", "-1", "2.5", "99999999999999999999999", "1e309", "nan", "inf",
    "999999w", "7d", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00",
    "2026-01-01T00:00:00", "json", "csv", "table", "contact", "acme", "main",
    "main:1:" + "0" * 64, "\x00", "id\x00x", INVALID_UTF8, "\udcff", "\x1b[2J\x1b[H", "[bold]x",
    "=1+1", "a\nb", "\u202eevil", "x" * 300, ".", "..",
]  # fmt: skip
hostile_text = st.one_of(
    st.text(max_size=30),
    st.binary(max_size=20).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
    st.text(st.characters(categories=["Cc", "Cf", "Cs", "Zl", "Zp"]), max_size=8),
    st.sampled_from(AWKWARD),
)
# Options that would make one example run for minutes: --follow waits for new records until
# interrupted, and demo's --events is drawn from a few counts (int() reads any script's
# digits, so drawn text could ask for millions of events).
NEVER = {"--follow"}
EVENT_COUNTS = ["0", "1", "3", "-1", "x", "99999999999999999999", "\x00", INVALID_UTF8]


def _safe_path(value: str) -> str:
    # Tests run as root in CI containers: a drawn absolute path or ../ must not create files
    # outside the example's directory (init --key-file, export --out). U+2215 looks like /.
    return value.replace("/", "\u2215")


@st.composite
def invocations(draw: st.DrawFn, path: tuple[str, ...]) -> list[str]:
    """Any argument list for the command at ``path``: each option maybe, with any values."""
    options: list[str] = []
    positional: list[str] = []
    for param in COMMANDS[path].params:
        if param.param_type_name == "argument":
            positional.append(_safe_path(draw(hostile_text)))
            continue
        name = draw(st.sampled_from(param.opts))
        if NEVER & set(param.opts) or not (param.required or draw(st.booleans())):
            continue
        if param.is_flag:
            options.append(name)
            continue
        for _ in range(draw(st.integers(1, 2)) if param.multiple else 1):
            values = st.sampled_from(EVENT_COUNTS) if name == "--events" else hostile_text
            options += [name, _safe_path(draw(values))]
    if path == ("demo",) and "--events" not in options:
        options += ["--events", "2"]
    separator = ["--"] if draw(st.booleans()) else []
    return [*path, *options, *separator, *positional]


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_input_to_any_command_is_handled(
    logdir: Path, path: tuple[str, ...], data: st.DataObject
) -> None:
    """Arbitrary text and bytes anywhere: exit 0, 1 or 2, never a traceback or 'unexpected'."""
    args = data.draw(invocations(path), label="args")
    # Each example starts from the same empty log, in a directory of its own.
    workdir = Path(shutil.copytree(logdir, logdir.parent / f"{logdir.name}-example"))
    try:
        with contextlib.chdir(workdir):
            result = runner.invoke(app, args)
    finally:
        shutil.rmtree(workdir)
    output = result.stdout + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code in (0, 1, 2), output
    assert "Traceback" not in output
    assert "unexpected" not in result.stderr


def test_every_command_is_driven() -> None:
    """The enumeration finds every command, sub-commands of groups included."""
    assert {" ".join(path) for path in COMMANDS} >= {
        "init", "verify", "demo", "export", "tail", "report", "policy check", "grant issue",
        "grant revoke", "grant list", "incident open", "incident close", "incident list",
        "legal register", "legal list",
    }  # fmt: skip


def test_every_command_takes_log_events_and_says_how_to_repeat() -> None:
    """Each command accepts --log-events; each repeatable option's help shows how to repeat it."""
    for path, command in COMMANDS.items():
        options = {opt for param in command.params for opt in param.opts}
        assert "--log-events" in options, f"{path}: add `log_events: LogEventsOption = False`"
        for param in command.params:
            if getattr(param, "multiple", False):
                assert f"Repeatable: {param.opts[0]} " in param.help, (path, param.opts)


# -- the named cases, one by one ------------------------------------------------------------

GRANT = ["grant", "issue", "--customer", "acme", "--case", "C-1", "--category", "contact"]
LEGAL = ["legal", "register", "SUB-1", "--authority", "Court", "--customer", "acme"]


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["report", "--since", "999999w"], "--since"),
        (["report", "--until", "999999w"], "--until"),
        (["report", "--expiring-within", "999999w"], "--expiring-within"),
        (["report", "--since", "0001-01-01T00:00:00+14:00"], "--since"),
        ([*GRANT, "--expires", "999999w"], "--expires"),
        ([*GRANT, "--expires", "9999-12-31T23:59:59-14:00"], "--expires"),
        ([*LEGAL, "--expires", "999999w"], "--expires"),
        ([*LEGAL, "--expires", "7d", "--no-notify-until", "999999w"], "--no-notify-until"),
    ],
)
def test_times_out_of_range_are_usage_errors(logdir: Path, args: list[str], option: str) -> None:
    """A duration or time past the calendar is exit 2 naming the option; nothing recorded."""
    code, out, err = _invoke(*args)
    _assert_one_line_usage_error(code, out, err, f"{option}: ", "out of range")
    with SqlStore("sqlite:///accessaudit.db") as store:
        assert store.count() == 0


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("999999w", False),
        ("999999w", True),
        ("9999-12-31T23:59:59-14:00", False),
        ("0001-01-01T00:00:00+14:00", True),
    ],
)
def test_moments_past_the_calendar_are_value_errors(text: str, *, ago: bool) -> None:
    """parse_when says 'out of range' instead of letting OverflowError escape."""
    with pytest.raises(ValueError, match=r"is out of range: a time must fall within the years"):
        parse_when(text, datetime.now(UTC), ago=ago)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["grant", "revoke", INVALID_UTF8], "GRANT_ID"),
        (["grant", "revoke", "grant-\x00-1"], "GRANT_ID"),
        (["incident", "open", "INC\x001", "--all-customers"], "INCIDENT_ID"),
        (
            ["incident", "open", "INC-1", "--customer", "ok", "--customer", INVALID_UTF8],
            "--customer",
        ),
        (["incident", "close", INVALID_UTF8], "INCIDENT_ID"),
        ([*GRANT[:3], "a\x00b", *GRANT[4:], "--expires", "1d"], "--customer"),
        ([*GRANT, "--category", INVALID_UTF8, "--expires", "1d"], "--category"),
        ([*GRANT, "--expires", "1d", "--note", "n\x00te"], "--note"),
        (["legal", "register", INVALID_UTF8, *LEGAL[3:], "--expires", "1d"], "REFERENCE"),
        (["report", "--customer", INVALID_UTF8], "--customer"),
        (["report", "--actor", "a\x00"], "--actor"),
        (["tail", "--by", INVALID_UTF8], "--by"),
        (["verify", "--chain", "ma\x00in"], "--chain"),
        (["verify", "--db", INVALID_UTF8], "--db"),
        (["policy", "check", INVALID_UTF8], "FILE"),
        (["export", "--out", "out\x00dir"], "--out"),
    ],
)
def test_nul_and_invalid_utf8_are_refused_up_front(
    logdir: Path, args: list[str], option: str
) -> None:
    """An id, name or path with a NUL or non-UTF-8 bytes: exit 2 naming it; nothing recorded."""
    code, out, err = _invoke(*args)
    _assert_one_line_usage_error(code, out, err, option)
    assert re.search("NUL|null byte|UTF-8", err), err
    with SqlStore("sqlite:///accessaudit.db") as store:
        assert store.count() == 0


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["incident", "open", "", "--all-customers"], "INCIDENT_ID"),
        ([*GRANT, "--expires", "1d", "--note", ""], "--note"),
        (["report", "--since", ""], "--since"),
        (["tail", "--by", ""], "--by"),
    ],
)
def test_empty_values_are_refused_up_front(logdir: Path, args: list[str], option: str) -> None:
    """An empty id, note or time names the option, not a field of the record it would be."""
    code, out, err = _invoke(*args)
    _assert_one_line_usage_error(code, out, err, f"error: {option}: is empty")


def test_invalid_utf8_from_the_environment_names_the_variable(logdir: Path) -> None:
    """$ACCESSAUDIT_DB is checked like --db, and the message says where the value came from."""
    code, out, err = _invoke("tail", env={"ACCESSAUDIT_DB": f"sqlite:///{INVALID_UTF8}"})
    _assert_one_line_usage_error(code, out, err, "--db (from $ACCESSAUDIT_DB): ", "UTF-8")


def test_json_mode_usage_errors_are_json(logdir: Path) -> None:
    """With --format json, an input refused up front is also a JSON object on stdout."""
    code, out, err = _invoke("grant", "list", "--format", "json", "--customer", "a\x00")
    assert code == 2
    assert json.loads(out) == {"error": err.removeprefix("error: ").rstrip("\n"), "exit_code": 2}


@pytest.mark.parametrize(
    ("args", "names"),
    [
        ([*GRANT, "--expires", "1d", "--max-records", "9" * 30], ["--max-records"]),
        (["tail", "--timeout", "nan"], ["--timeout"]),
        (["tail", "--timeout", "inf"], ["--timeout"]),
        (["tail", "--timeout", "1e309"], ["--timeout"]),
        (["tail", "--interval", "1e9"], ["--interval"]),
        (["tail", "-n", "many"], ["--lines"]),
        (["report", "--format", "\x1b[2Jxml"], ["--format", "\\x1b"]),
        (["report", "--bogus"], ["No such option: --bogus", "report --help"]),
        (["no-such-command"], ["No such command"]),
        (["grant", "issue"], ["Missing option"]),
        (["demo", "--events", "0"], ["--events"]),
    ],
)
def test_usage_errors_are_one_line(logdir: Path, args: list[str], names: list[str]) -> None:
    """Bad numbers and unknown options too: one escaped line on stderr, exit 2, nothing done."""
    code, out, err = _invoke(*args)
    _assert_one_line_usage_error(code, out, err, *names)
    assert "\x1b" not in err


def test_a_huge_line_count_is_just_everything(logdir: Path) -> None:
    """A line count far beyond the log (tail -n) shows the whole log, with no overflow."""
    with SqlStore("sqlite:///accessaudit.db", key=load_key()) as store:
        store.append([make_event()])
    code, out, err = _invoke("tail", "-n", "9" * 30)
    assert (code, err) == (0, "")
    assert out.split()[0] == "1"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xff\xfe\x00b\x00i\x00n", "is not UTF-8 text (byte 0xff at offset 0)"),
        (b"version = 1\n\x00\x01\x02", "(syntax)"),
        (b"a = " + b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"version = 1\n" + b"# padding\n" * 200_000, "is larger than 1,048,576 bytes"),
    ],
    ids=["binary", "nul", "deep", "huge"],
)
def test_hostile_policy_files_are_usage_errors(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    """Binary, non-UTF-8, deeply nested or huge policy files: exit 2, one line, the reason."""
    path = tmp_path / "policy.toml"
    path.write_bytes(content)
    for args in (["policy", "check", str(path)], ["report", "--policy", str(path)]):
        code, out, err = _invoke(*args)
        _assert_one_line_usage_error(code, out, err, f"invalid policy {path}", problem)


LONG = "x" * 300


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["export", "--out", LONG], ["--out", "longer than 255 bytes"]),
        (["verify", "--export", f"{LONG}/data"], ["--export", "longer than 255 bytes"]),
        (["init", "--key-file", LONG], ["--key-file", "longer than 255 bytes"]),
        (["init", "--key-file", "no-such-dir/k.key"], ["--key-file", "does not exist"]),
        (["verify", "--db", f"sqlite:///{LONG}.db"], ["File name too long; check the path"]),
        (["demo", "--db", f"sqlite:///{LONG}.db"], ["File name too long; check the path"]),
    ],
)
def test_unusable_paths_are_usage_errors(logdir: Path, args: list[str], names: list[str]) -> None:
    """Names no file system allows, or in a directory that is not there: exit 2, one line."""
    code, out, err = _invoke(*args)
    _assert_one_line_usage_error(code, out, err, *names)
    assert sorted(p.name for p in logdir.iterdir()) == ["accessaudit.db", "accessaudit.key"]


def test_a_key_file_option_naming_nothing_is_a_usage_error(logdir: Path) -> None:
    """--key-file that does not exist or is a directory is a typo (2), not a missing key (3)."""
    code, out, err = _invoke("tail", "--key-file", "no-such.key")
    _assert_one_line_usage_error(code, out, err, "--key-file", "does not exist")
    code, out, err = _invoke("init", "--key-file", ".")
    _assert_one_line_usage_error(code, out, err, "--key-file", "is a directory")


# -- hostile stored text --------------------------------------------------------------------

HOSTILE_ID = "acme\x1b[2J\x1b[H\nFORGED 99 access.allowed\u2028\u202e[bold]x[/bold]:smile:\x7f\x9b"


def _no_controls(text: str) -> None:
    forbidden = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
    assert not forbidden.search(text), repr(text)


def test_report_tables_show_stored_text_literally(logdir: Path) -> None:
    """Escape sequences are escaped, rich markup and emoji codes are shown as written."""
    with SqlStore("sqlite:///accessaudit.db", key=load_key()) as store:
        store.append([make_event(customer_id=HOSTILE_ID, actor_id="[red]agent[/red]")])
    code, out, err = _invoke("report")
    assert (code, err) == (0, "")
    _no_controls(out)
    flat = re.sub(r"\s", "", out)
    assert "[red]agent[/red]" in flat
    assert r"acme\x1b[2J\x1b[H\nFORGED99access.allowed\u2028\u202e[bold]x[/bold]:smile:" in flat
    assert "FORGED" not in "".join(line[:10] for line in out.splitlines())


@pytest.mark.parametrize("width", [80, 120])
def test_tables_never_cut_ids_or_times(width: int) -> None:
    """At 80 and 120 columns every id and time is shown whole; free text wraps instead."""
    ids = [f"grant-0193a2b4-{i:04d}-7777-8888-aaaabbbbcccc" for i in range(3)]
    rows: list[dict[str, Any]] = [
        {
            "seq": 148 + i,
            "actor_id": f"sre-{i}@example.com",
            "role": "sre",
            "customer_id": "initech-corporation-eu-west-1",
            "resource": "crm.contacts",
            "evidence_ref": ref,
            "justification": "pager: checkout failing for every customer since 03:00 " * 3,
            "occurred_at": "2026-11-25T00:48:43.748549Z",
        }
        for i, ref in enumerate(ids)
    ]
    narrow = [{k: row[k] for k in ("seq", "role", "justification", "occurred_at")} for row in rows]
    for section in (rows, narrow, [{"kind": "grant", "ref": r} for r in ids]):
        buffer = io.StringIO()
        _print_table("break_glass", section, Console(file=buffer, width=width))
        output = buffer.getvalue()
        assert "…" not in output
        assert max(map(len, output.splitlines())) <= width
        flat = re.sub(r"\s", "", output)
        for row in section:
            for value in map(str, row.values()):
                assert " " in value or value in flat  # free text may wrap between columns


def test_csv_neutralises_formulas(capsys: pytest.CaptureFixture[str]) -> None:
    """Cells that a spreadsheet would run get a leading quote; everything else is exact."""
    values = ['=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "plain", "a\rb"]
    _print_csv({"by_customer": [{"customer_id": v, "accesses": -1} for v in values]})
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["customer_id"] for r in rows] == [
        "'=HYPERLINK(\"http://x\")", "'+1", "'-2+3", "'@SUM(A1)", "'\tx", "'\rx", "plain", "a\rb",
    ]  # fmt: skip
    assert {r["accesses"] for r in rows} == {"-1"}  # numbers are numbers


def test_report_csv_and_json_through_the_cli(logdir: Path) -> None:
    """CSV output is neutralised, JSON output keeps the stored value exactly."""
    formula = "=cmd|' /C calc'!A0"
    with SqlStore("sqlite:///accessaudit.db", key=load_key()) as store:
        store.append([make_event(customer_id=formula)])
    code, out, _ = _invoke("report", "--format", "csv")
    assert code == 0
    cells = {r["customer_id"] for r in csv.DictReader(io.StringIO(out)) if r["customer_id"]}
    assert cells == {f"'{formula}"}
    code, out, _ = _invoke("report", "--format", "json")
    assert json.loads(out)["sections"]["by_customer"][0]["customer_id"] == formula


def test_evidence_lists_escape_stored_ids(logdir: Path) -> None:
    """An incident id or note with control characters cannot forge lines in the list."""
    with SqlStore("sqlite:///accessaudit.db", key=load_key()) as store:
        registry = EvidenceRegistry(store)
        registry.open_incident(HOSTILE_ID, customers=["acme"], opened_by="sre-1")
        registry.issue_grant(
            customer_id=HOSTILE_ID,
            case_id="CASE\r\n1",
            data_categories=["contact"],
            expires_at=datetime.now(UTC) + timedelta(days=1),
            issued_by="agent-1",
        )
    for command in (["incident", "list"], ["grant", "list"]):
        code, out, _ = _invoke(*command)
        assert code == 0
        _no_controls(out)
        assert len(out.splitlines()) == 2  # the header and the one row
    code, out, _ = _invoke("incident", "list", "--format", "json")
    assert json.loads(out)[0]["incident_id"] == HOSTILE_ID  # JSON stays exact
