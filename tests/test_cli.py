"""The CLI: invoke the real commands, then check the outcome through the library."""

from __future__ import annotations

import json
import sqlite3
import stat
import uuid
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from accessaudit import (
    AuditUnavailable,
    EventType,
    Gate,
    MacKey,
    Policy,
    SqlStore,
    access_context,
    load_key,
    verify_store,
)
from accessaudit.cli.app import app
from tests import tampering
from tests.gatekit import EXAMPLE_POLICY, service
from tests.strategies import make_event

if TYPE_CHECKING:
    from pathlib import Path

    from accessaudit.record.events import StoredEvent
    from tests.conftest import Backend

runner = CliRunner()


def _invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_init_creates_private_key_and_schema_once(backend: Backend, in_tmp: Path) -> None:
    """Init says what it created, makes a 0600 key, and a second run changes nothing."""
    code, out, err = _invoke("init", "--db", backend.url)
    assert (code, err) == (0, "")
    assert "key file accessaudit.key: created (mode 0600)" in out
    assert "created table accessaudit_events" in out
    assert stat.S_IMODE((in_tmp / "accessaudit.key").stat().st_mode) == 0o600
    key = load_key()
    code, out, _ = _invoke("init", "--db", backend.url)
    assert code == 0
    assert "exists, kept" in out
    assert "created" not in out
    assert load_key() == key
    with SqlStore(backend.url, key=key) as store:
        assert store.append([make_event()])[0].seq == 1


def test_writer_role_on_sqlite_is_a_usage_error(in_tmp: Path) -> None:
    """Roles exist only on PostgreSQL; asking for one on SQLite exits 2."""
    code, _, err = _invoke("init", "--writer-role", "aa_writer")
    assert code == 2
    assert err == "error: database roles exist only on PostgreSQL\n"
    assert list(in_tmp.iterdir()) == []  # refused before anything was created


def test_demo_records_and_verifies(in_tmp: Path) -> None:
    """Demo fills the default SQLite log, verifies it and prints a summary."""
    code, out, err = _invoke("demo", "--events", "300", "--seed", "3")
    assert (code, err) == (0, "")
    assert "recorded 300 events" in out
    assert out.rstrip().endswith("intact")
    with SqlStore("sqlite:///accessaudit.db") as store:
        assert store.count() == 300
        assert verify_store(store, load_key()).intact
        denied = [r for r in store.read() if r.event.event_type == "access.denied"]
    assert denied
    assert all(r.event.reason_code for r in denied)


def test_verify_clean_log_in_json(backend: Backend, in_tmp: Path) -> None:
    """Verify --format json on an honest log: intact, with the head, exit 0."""
    _invoke("init", "--db", backend.url)
    with SqlStore(backend.url, key=load_key()) as store:
        store.append([make_event() for _ in range(4)])
        head = store.head()
    code, out, err = _invoke("verify", "--db", backend.url, "--format", "json")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert report["intact"] is True
    assert report["findings"] == []
    assert head is not None
    assert report["chains"] == [
        {"chain_id": "main", "rows": 4, "head_seq": 4, "head_hash": head.chain_hash}
    ]


def test_verify_reports_tampering_with_exit_1(backend: Backend, in_tmp: Path) -> None:
    """Findings are listed with code and seq, and the exit code is 1."""
    _invoke("init", "--db", backend.url)
    with SqlStore(backend.url, key=load_key()) as store:
        store.append([make_event() for _ in range(5)])
    backend.drop_guards()
    tampering.set_column(backend, 2, "customer_id", "globex")
    tampering.delete_seq(backend, 4)
    code, out, _ = _invoke("verify", "--db", backend.url, "--format", "json")
    assert code == 1
    found = [(f["code"], f["seq"]) for f in json.loads(out)["findings"]]
    assert found == [("modified_record", 2), ("missing_record", 4)]
    code, out, _ = _invoke("verify", "--db", backend.url)
    assert code == 1
    assert "modified_record    chain main seq 2" in out
    assert "NOT INTACT: 2 finding(s)" in out


def test_expected_head_catches_truncation(backend: Backend, in_tmp: Path) -> None:
    """The head printed by one verify, passed back later, exposes deleted newest records."""
    _invoke("init", "--db", backend.url)
    with SqlStore(backend.url, key=load_key()) as store:
        store.append([make_event() for _ in range(3)])
    _, out, _ = _invoke("verify", "--db", backend.url)
    head = next(line.split("head ")[1] for line in out.splitlines() if "head main:" in line)
    assert head.startswith("main:3:")  # the head verified; its own audit.report is seq 4
    backend.drop_guards()
    tampering.delete_seq(backend, 4)
    tampering.delete_seq(backend, 3)
    code, out, _ = _invoke("verify", "--db", backend.url, "--expect-head", head)
    assert code == 1
    assert "truncated" in out
    code, _, err = _invoke("verify", "--db", backend.url, "--expect-head", "main:3")
    assert code == 2
    assert "CHAIN:SEQ:HASH" in err


def test_skip_mac_needs_no_key_and_says_so(in_tmp: Path) -> None:
    """Without the key, --skip-mac still checks hashes and links, and says what it skipped."""
    _invoke("demo", "--events", "20")
    (in_tmp / "accessaudit.key").unlink()
    code, _, err = _invoke("verify")
    assert code == 3
    assert "no HMAC key" in err
    code, out, _ = _invoke("verify", "--skip-mac")
    assert code == 0
    assert "MACs not checked" in out


def test_missing_database_is_exit_2(in_tmp: Path) -> None:
    """A SQLite file that does not exist is bad input, and is not created."""
    code, out, err = _invoke("verify", "--db", "sqlite:///nope.db")
    assert code == 2
    assert out == ""
    assert err.startswith("error: the SQLite database nope.db does not exist")
    assert not (in_tmp / "nope.db").exists()


@pytest.mark.parametrize(
    ("command", "db", "message"),
    [
        ("report", "sqlite:///junk.db", "junk.db is not an SQLite database: check --db"),
        ("verify", "sqlite:///junk.db", "junk.db is not an SQLite database: check --db"),
        ("tail", "sqlite:///empty.db", "the database holds no audit log"),
        ("init", "sqlite:///no-dir/x.db", "the directory no-dir does not exist"),
    ],
)
def test_a_db_that_names_no_log_is_exit_2(
    in_tmp: Path, command: str, db: str, message: str
) -> None:
    """A file that is no SQLite database, one with no log in it, a missing directory: usage."""
    (in_tmp / "junk.db").write_text("not a database\n")
    sqlite3.connect(in_tmp / "empty.db").close()
    assert _invoke("init")[0] == 0  # a key, so that only --db is wrong
    code, out, err = _invoke(command, "--db", db)
    assert (code, out) == (2, "")
    assert message in err
    assert (in_tmp / "junk.db").read_text() == "not a database\n"  # left as it was
    assert not (in_tmp / "no-dir").exists()


def test_a_gate_on_a_database_with_no_log_fails_closed(in_tmp: Path) -> None:
    """To a gated caller, a URL that names no log is one more store that cannot record."""
    sqlite3.connect(in_tmp / "empty.db").close()
    store = SqlStore("sqlite:///empty.db", key=MacKey(bytes(32)))
    gate = Gate(store, Policy.load(EXAMPLE_POLICY))
    ran: list[str] = []

    @gate.protect("crm.contacts")
    def contacts(customer_id: str) -> list[str]:
        ran.append(customer_id)
        return []

    with access_context(service()), pytest.raises(AuditUnavailable, match="holds no audit log"):
        contacts("acme")
    assert ran == []
    store.close()


@pytest.mark.postgres
def test_unreachable_postgres_is_exit_3(in_tmp: Path, postgres_url: str) -> None:
    """A server that cannot be reached is 'could not check', exit 3."""
    _invoke("demo", "--events", "5")
    url = make_url(postgres_url).set(port=1).render_as_string(hide_password=False)
    code, _, err = _invoke("verify", "--db", url, "--timeout", "1")
    assert code == 3
    assert "unavailable" in err


def test_db_from_environment(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ACCESSAUDIT_DB selects the database when --db is absent."""
    monkeypatch.setenv("ACCESSAUDIT_DB", "sqlite:///from-env.db")
    assert _invoke("demo", "--events", "10")[0] == 0
    assert (in_tmp / "from-env.db").exists()
    assert not (in_tmp / "accessaudit.db").exists()


@pytest.mark.parametrize(
    "args",
    [["verify", "--format", "xml"], ["demo", "--events", "0"], ["nonsense"], ["verify", "--bogus"]],
)
def test_bad_usage_is_exit_2(in_tmp: Path, args: list[str]) -> None:
    """Unknown options, commands and out-of-range values exit 2 with a message on stderr."""
    code, out, err = _invoke(*args)
    assert code == 2
    assert out == ""
    assert err


def test_every_top_level_command_has_help() -> None:
    """Each top-level command documents itself in --help (groups: test_cli_evidence)."""
    names = [c.name or c.callback.__name__ for c in app.registered_commands if c.callback]
    assert sorted(names) == [
        "checkpoint",
        "demo",
        "doctor",
        "export",
        "init",
        "recover",
        "report",
        "tail",
        "verify",
    ]
    for name in names:
        code, out, _ = _invoke(name, "--help")
        assert code == 0
        assert "Usage:" in out
        assert "--db" in out


@pytest.mark.postgres
def test_init_with_writer_role_on_postgres(pg_backend: Backend, in_tmp: Path) -> None:
    """The --writer-role of init creates a role with SELECT and INSERT only, and says so."""
    role = f"aa_cli_writer_{uuid.uuid4().hex[:8]}"
    try:
        code, out, err = _invoke("init", "--db", pg_backend.url, "--writer-role", role)
        assert (code, err) == (0, "")
        assert f"role {role}: may SELECT and INSERT only" in out
        grants = pg_backend.sql(
            "SELECT privilege_type FROM information_schema.role_table_grants "
            "WHERE grantee = :role AND table_name = 'accessaudit_events' ORDER BY 1",
            role=role,
        )
        assert grants == [("INSERT",), ("SELECT",)]
    finally:
        pg_backend.sql(f"DROP OWNED BY {role}")
        pg_backend.sql(f"DROP ROLE IF EXISTS {role}")


@pytest.mark.postgres
def test_bad_role_name_is_refused_before_anything_is_created(
    pg_backend: Backend, in_tmp: Path
) -> None:
    """A role name that is not a plain identifier exits 2 and creates nothing."""
    code, _, err = _invoke("init", "--db", pg_backend.url, "--writer-role", "x; DROP TABLE t")
    assert code == 2
    assert "not a plain lower-case SQL identifier" in err
    assert list(in_tmp.iterdir()) == []


def test_init_with_key_in_environment_writes_no_file(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With $ACCESSAUDIT_HMAC_KEY set, init writes no key file and demo uses that key."""
    monkeypatch.setenv("ACCESSAUDIT_HMAC_KEY", "cd" * 32)
    code, out, _ = _invoke("demo", "--events", "5")
    assert code == 0
    assert "using $ACCESSAUDIT_HMAC_KEY" in out
    assert not (in_tmp / "accessaudit.key").exists()
    with SqlStore("sqlite:///accessaudit.db") as store:
        assert verify_store(store, load_key()).intact


@pytest.mark.parametrize(
    "url",
    ["postgresql://auditor:s3cret-pw@db.example:notaport/app", "not a url at all"],
)
def test_unusable_url_is_exit_2_without_echoing_secrets(in_tmp: Path, url: str) -> None:
    """A malformed URL is one line, exit 2, and never repeats its password."""
    code, out, err = _invoke("verify", "--db", url)
    assert code == 2
    assert out == ""
    assert err.startswith("error: the database URL is not valid")
    assert "s3cret-pw" not in err
    assert len(err.splitlines()) == 1


@pytest.mark.postgres
@pytest.mark.parametrize(
    "query", ["?sslmode=bogus", "?bogus=1", "", "NOPORT"], ids=["sslmode", "option", "db", "port"]
)
def test_unusable_postgres_settings_are_exit_2(in_tmp: Path, postgres_url: str, query: str) -> None:
    """Settings the driver refuses, or a database that does not exist, are bad input (2)."""
    url = make_url(postgres_url)
    url = url.set(port=99999) if query == "NOPORT" else url
    text = url.render_as_string(hide_password=False)
    text = text.rsplit("/", 1)[0] + "/no_such_db" if query == "" else text
    text += query if query not in ("", "NOPORT") else ""
    code, _, err = _invoke("verify", "--db", text, "--skip-mac")
    assert code == 2, err
    assert err.startswith("error: ")
    assert len(err.splitlines()) == 1


def test_existing_unusable_key_file_fails_init(in_tmp: Path) -> None:
    """Init does not call an existing but unusable key file 'kept'."""
    (in_tmp / "accessaudit.key").mkdir()
    code, out, err = _invoke("init")
    assert code == 3
    assert "cannot read the key file" in err
    assert "exists, kept" not in out


@pytest.mark.parametrize(
    ("head", "message"),
    [("main:0:" + "a" * 64, "CHAIN:SEQ:HASH"), ("\udcff:1:" + "a" * 64, "--expect-head: ")],
)
def test_impossible_expected_heads_are_refused(in_tmp: Path, head: str, message: str) -> None:
    """Seq 0 or an undecodable chain id in --expect-head is a usage error."""
    _invoke("demo", "--events", "5")
    code, _, err = _invoke("verify", "--expect-head", head)
    assert code == 2
    assert message in err


def test_directory_as_database_is_exit_2(in_tmp: Path) -> None:
    """--db naming a directory says so, with the usage exit code."""
    (in_tmp / "logs").mkdir()
    code, _, err = _invoke("verify", "--db", "sqlite:///logs")
    assert code == 2
    assert "is a directory" in err


def test_json_mode_errors_are_json_too(in_tmp: Path) -> None:
    """With --format json, a failure also prints a JSON object with the message and code."""
    code, out, err = _invoke("verify", "--db", "sqlite:///nope.db", "--format", "json")
    assert code == 2
    assert json.loads(out) == {"error": err.removeprefix("error: ").rstrip("\n"), "exit_code": 2}


def _audit_reads(url: str, after: int = 0) -> list[StoredEvent]:
    with SqlStore(url) as store:
        return [r for r in store.read(after + 1) if r.event.event_type is EventType.AUDIT_REPORT]


def test_verify_records_the_read_before_showing_it(backend: Backend, in_tmp: Path) -> None:
    """Each verify of the database appends one audit.report: who, how many rows checked."""
    _invoke("init", "--db", backend.url)
    with SqlStore(backend.url, key=load_key()) as store:
        store.append([make_event() for _ in range(3)])
    code, out, err = _invoke("verify", "--db", backend.url, "--by", "auditor-1", "--chain", "main")
    assert (code, err) == (0, "")
    assert out.rstrip().endswith("intact")
    (read,) = _audit_reads(backend.url)
    assert read.seq == 4
    assert (read.event.actor_id, read.event.record_count) == ("auditor-1", 3)
    assert read.event.attributes == {"report": "verify", "skip_mac": False, "chain": "main"}
    code, _, _ = _invoke("verify", "--db", backend.url, "--skip-mac")
    assert code == 0
    assert [r.event.attributes["skip_mac"] for r in _audit_reads(backend.url, 4)] == [True]


def test_verify_without_a_key_or_of_an_export_is_not_recorded(in_tmp: Path) -> None:
    """--skip-mac with no key cannot append (it says so on stderr); --export reads no log."""
    _invoke("demo", "--events", "10")
    assert _invoke("export", "--out", "dataset")[0] == 0
    with SqlStore("sqlite:///accessaudit.db") as store:
        count = store.count()
    code, _, err = _invoke("verify", "--export", "dataset")
    assert (code, err) == (0, "")
    (in_tmp / "accessaudit.key").unlink()
    code, out, err = _invoke("verify", "--skip-mac")
    assert code == 0
    assert "MACs not checked" in out
    assert err.startswith("warning: this verify is not recorded in the log: no HMAC key")
    with SqlStore("sqlite:///accessaudit.db") as store:
        assert store.count() == count


def test_verify_shows_findings_even_when_the_log_refuses_the_record(
    backend: Backend, in_tmp: Path
) -> None:
    """A forged newest record halts appends; verify still reports it (exit 1) and warns."""
    _invoke("init", "--db", backend.url)
    with SqlStore(backend.url, key=load_key()) as store:
        store.append([make_event() for _ in range(3)])
    backend.drop_guards()
    tampering.set_column(backend, 3, "mac", "0" * 64)
    code, out, err = _invoke("verify", "--db", backend.url)
    assert code == 1
    assert "bad_mac" in out
    assert err.startswith("warning: this verify could not be recorded in the log: ")
    assert _audit_reads(backend.url) == []


@pytest.mark.parametrize(
    "args",
    [
        ["--log-events", "tail"],
        ["tail", "--log-events"],
        ["--log-events", "grant", "list"],
        ["grant", "--log-events", "list"],
        ["grant", "list", "--log-events"],
    ],
)
def test_log_events_before_or_after_the_command(in_tmp: Path, args: list[str]) -> None:
    """--log-events works as a global option, as a group's and as the command's own."""
    _invoke("init")
    code, _, err = _invoke(*args)
    assert code == 0
    (line,) = err.splitlines()
    assert json.loads(line)["event"] == "audit.report"
    code, _, err = _invoke(*[arg for arg in args if arg != "--log-events"])
    assert (code, err) == (0, "")
