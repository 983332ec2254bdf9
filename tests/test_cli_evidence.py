"""CLI for policies and evidence: invoke the commands, check the result through the library."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from accessaudit import (
    EventType,
    EvidenceRegistry,
    SqlStore,
    StoreUnavailable,
    load_key,
    verify_store,
)
from accessaudit.cli import evidence as cli_evidence
from accessaudit.cli.app import app
from tests.gatekit import EXAMPLE_POLICY

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.conftest import Backend

runner = CliRunner()
ROOT = Path(__file__).parent.parent


def _invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def db(backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An initialised log in the test's database, used through $ACCESSAUDIT_DB."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ACCESSAUDIT_HMAC_KEY", raising=False)
    monkeypatch.delenv("ACCESSAUDIT_KEY_FILE", raising=False)
    monkeypatch.setenv("ACCESSAUDIT_DB", backend.url)
    assert _invoke("init")[0] == 0
    return backend.url


@contextmanager
def _registry(url: str) -> Iterator[EvidenceRegistry]:
    with SqlStore(url, key=load_key()) as store:
        yield EvidenceRegistry(store)


def test_policy_check_prints_the_version(tmp_path: Path) -> None:
    """A valid file: exit 0 with its version; JSON mode gives the same as an object."""
    code, out, err = _invoke("policy", "check", str(EXAMPLE_POLICY))
    assert (code, err) == (0, "")
    assert out.startswith(f"{EXAMPLE_POLICY}: valid; version sha256:")
    assert out.endswith("; 5 role(s), 3 resource(s)\n")
    code, out, _ = _invoke("policy", "check", str(EXAMPLE_POLICY), "--format", "json")
    assert json.loads(out)["valid"] is True


def test_policy_check_names_each_fault_and_exits_2(tmp_path: Path) -> None:
    """Every fault, with its key path, on one stderr line."""
    bad = tmp_path / "bad.toml"
    bad.write_text(
        EXAMPLE_POLICY.read_text().replace('"support_request"]', '"support_requests"]', 1)
    )
    code, out, err = _invoke("policy", "check", str(bad))
    assert (code, out) == (2, "")
    assert err.startswith(f"error: invalid policy {bad}: roles.support_agent[0]: ")
    assert "'support_requests' is not one of" in err
    assert err.count("\n") == 1


def test_grant_lifecycle(db: str) -> None:
    """Issue, list, revoke: each step is an event in the chain, seen by the library."""
    code, out, err = _invoke(
        "grant", "issue", "--customer", "acme", "--case", "CASE-17", "--category", "contact",
        "--category", "billing", "--expires", "3d", "--max-records", "50", "--by", "agent-7",
        "--note", "customer asked by email",
    )  # fmt: skip
    assert (code, err) == (0, "")
    grant_id = out.strip()
    with _registry(db) as registry:
        (grant,) = registry.grants()
    assert grant.grant_id == grant_id
    assert (grant.customer_id, grant.case_id, grant.max_records) == ("acme", "CASE-17", 50)
    assert grant.data_categories == {"contact", "billing"}
    assert grant.issued_by == "agent-7"
    assert timedelta(days=3) - (grant.expires_at - grant.issued_at) < timedelta(seconds=5)
    code, out, _ = _invoke("grant", "list")
    assert code == 0
    assert out.splitlines()[1].startswith(f"live    {grant_id}  acme")
    assert _invoke("grant", "revoke", grant_id, "--by", "acme-admin")[:2] == (
        0,
        f"{grant_id} revoked\n",
    )
    code, out, err = _invoke("grant", "revoke", grant_id)
    assert code == 2
    assert err.startswith(f"error: grant {grant_id} was already revoked at ")
    listed = json.loads(_invoke("grant", "list", "--format", "json")[1])
    assert [(g["status"], g["revoked_by"]) for g in listed] == [("revoked", "acme-admin")]
    with SqlStore(db) as store:
        types = [r.event.event_type for r in store.read()]
        assert types == [
            EventType.GRANT_ISSUED,
            EventType.AUDIT_REPORT,  # the first list
            EventType.GRANT_REVOKED,
            EventType.AUDIT_REPORT,  # the second
        ]
        assert verify_store(store, load_key()).intact


def test_incident_lifecycle(db: str) -> None:
    """Open for named customers, list, close; opening the same id twice is refused."""
    assert _invoke("incident", "open", "INC-9", "--customer", "acme", "--customer", "globex")[
        :2
    ] == (0, "INC-9 open\n")
    code, _, err = _invoke("incident", "open", "INC-9", "--all-customers")
    assert (code, err) == (2, "error: incident INC-9 already exists; use a new id\n")
    code, _, err = _invoke("incident", "open", "INC-10")
    assert code == 2
    assert "--customer ... or --all-customers" in err
    assert _invoke("incident", "close", "INC-9")[:2] == (0, "INC-9 closed\n")
    with _registry(db) as registry:
        (incident,) = registry.incidents()
    assert incident.customers == {"acme", "globex"}
    assert incident.closed_at is not None
    rows = json.loads(_invoke("incident", "list", "--format", "json")[1])
    assert rows[0]["status"] == "closed"


def test_legal_requests_keep_their_notification_hold(db: str) -> None:
    """A legal request names a customer, an authority, an expiry and a hold date."""
    code, out, err = _invoke(
        "legal", "register", "SUB-2026-17", "--authority", "District Court",
        "--customer", "acme", "--expires", "2099-01-01T00:00:00Z",
        "--no-notify-until", "2098-06-30T00:00:00+02:00",
    )  # fmt: skip
    assert (code, out, err) == (0, "SUB-2026-17 registered\n", "")
    with _registry(db) as registry:
        (request,) = registry.legal_requests("acme")
        assert registry.legal_requests("globex") == []
    assert request.notify_after == datetime(2098, 6, 29, 22, 0, tzinfo=UTC)
    assert request.expires_at == datetime(2099, 1, 1, tzinfo=UTC)
    with SqlStore(db) as store:
        (record,) = store.read()
    assert record.event.customer_visible is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--expires", "soon"], "--expires: 'soon' is neither a duration"),
        (["--expires", "2099-01-01T00:00:00"], "has no timezone; add one"),
        (["--expires", "2001-01-01T00:00:00Z"], "is not in the future"),
    ],
)
def test_bad_times_are_usage_errors(db: str, args: list[str], message: str) -> None:
    """Unparseable, zone-less and past expiries: exit 2, nothing recorded."""
    code, _, err = _invoke(
        "grant", "issue", "--customer", "acme", "--case", "C", "--category", "contact", *args
    )
    assert code == 2
    assert message in err
    with SqlStore(db) as store:
        assert store.count() == 0


def test_evidence_commands_need_the_key(db: str, tmp_path: Path) -> None:
    """Without the HMAC key nothing can be recorded or checked: exit 3."""
    (tmp_path / "accessaudit.key").unlink()
    code, _, err = _invoke("incident", "list")
    assert code == 3
    assert "key" in err


def test_every_command_is_documented() -> None:
    """Each command and sub-command has help text and appears in the README."""
    readme = (ROOT / "README.md").read_text()
    commands = [c.name or getattr(c.callback, "__name__", "") for c in app.registered_commands]
    for group in app.registered_groups:
        sub = group.typer_instance
        assert sub is not None
        commands += [f"{group.name} {c.name}" for c in sub.registered_commands]
    assert sorted(commands) == [
        "checkpoint",
        "demo",
        "doctor",
        "export",
        "grant issue",
        "grant list",
        "grant revoke",
        "incident close",
        "incident list",
        "incident open",
        "init",
        "key new-signing-key",
        "legal list",
        "legal register",
        "policy check",
        "recover",
        "report",
        "tail",
        "verify",
    ]
    for command in commands:
        code, out, _ = _invoke(*command.split(), "--help")
        assert code == 0
        assert "Usage:" in out
        assert f"accessaudit {command}" in readme


@pytest.mark.parametrize(
    ("command", "customer", "rows"),
    [
        (["grant", "list"], None, 2),
        (["grant", "list", "--customer", "acme"], "acme", 1),
        (["incident", "list", "--format", "json"], None, 1),
        (["legal", "list", "--customer", "globex"], "globex", 0),
    ],
)
def test_each_list_is_recorded(
    db: str, command: list[str], customer: str | None, rows: int
) -> None:
    """A list is a read of the log: one audit.report (who, which filter, how many rows)."""
    expires = datetime.now(UTC) + timedelta(days=2)
    with _registry(db) as registry:
        for who in ("acme", "globex"):
            registry.issue_grant(
                customer_id=who,
                case_id="C-1",
                data_categories=["contact"],
                expires_at=expires,
                issued_by="agent-1",
            )
        registry.open_incident("INC-1", all_customers=True, opened_by="sre-1")
    with SqlStore(db) as store:
        before = store.count()
    code, _, err = _invoke(*command, "--by", "auditor-3")
    assert (code, err) == (0, "")
    with SqlStore(db) as store:
        (read,) = [r.event for r in store.read(before + 1)]
    assert read.event_type is EventType.AUDIT_REPORT
    assert (read.actor_id, read.record_count, read.customer_id) == ("auditor-3", rows, customer)
    assert read.attributes["report"] == " ".join(command[:2])


def test_a_list_that_cannot_be_recorded_is_not_shown(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No record, no list: if the audit.report cannot be appended, nothing is printed (3)."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise StoreUnavailable("the audit store is unavailable: refused for the test")

    monkeypatch.setattr(cli_evidence, "record_report", refuse)
    for command in (["grant", "list"], ["incident", "list"], ["legal", "list"]):
        code, out, err = _invoke(*command)
        assert (code, out) == (3, "")
        assert err == "error: the audit store is unavailable: refused for the test\n"


def test_repeatable_options_say_how_in_their_help() -> None:
    """--category and --customer are repeated, not comma-separated, and --help says so."""
    grant_help = " ".join(_invoke("grant", "issue", "--help")[1].split())
    assert "Repeatable: --category contact --category billing." in grant_help
    incident_help = " ".join(_invoke("incident", "open", "--help")[1].split())
    assert "Repeatable: --customer acme --customer globex." in incident_help
