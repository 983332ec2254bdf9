"""Reports: SQL aggregates that agree with the records, what stands out, transparency."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner

from accessaudit import (
    AccessContext,
    AccessDenied,
    ActorType,
    EventType,
    Gate,
    SqlStore,
    access_context,
    load_key,
)
from accessaudit.cli.app import app
from accessaudit.exceptions import ConfigurationError
from accessaudit.review.report import ReportFilter, access_report, record_report
from accessaudit.review.transparency import transparency_report
from tests.gatekit import EXAMPLE_POLICY, Desk, FakeClock, agent, service
from tests.strategies import make_event

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import Backend

runner = CliRunner()


def _week(gate: Gate, clock: FakeClock) -> dict[str, Any]:
    """Five days at a desk: services, a support case, mistakes, break-glass, a legal hold."""
    desk = Desk(gate)
    registry = gate.registry
    grant = registry.issue_grant(
        customer_id="acme",
        case_id="CASE-1",
        data_categories=["contact"],
        expires_at=clock.now + timedelta(days=4, hours=12),
        issued_by="acme-admin",
    )
    legal = registry.register_legal_request(
        "SUB-1",
        authority="Court",
        customer_id="acme",
        expires_at=clock.now + timedelta(days=30),
        notify_after=clock.now + timedelta(days=60),
        registered_by="legal-1",
    )
    for day in range(5):
        with access_context(service()):
            desk.invoices("acme")
            desk.invoices("globex")
        with access_context(agent(grant.grant_id, actor_id="agent-1")):
            desk.contacts("acme", ["c-1"])
        with access_context(agent(None, actor_id="agent-2")), pytest.raises(AccessDenied):
            desk.contacts("globex", ["g-1"])
        if day == 3:  # a busy day for agent-1
            with access_context(agent(grant.grant_id, actor_id="agent-1")):
                for _ in range(25):
                    desk.contacts("acme", [])
        clock.advance(days=1)
    glass = AccessContext(
        actor_id="sre-1",
        role="sre",
        purpose="technical_problem",
        break_glass=True,
        justification="pager: outage",
    )
    with access_context(glass):
        desk.contacts("globex", [])
    lawyer = AccessContext(
        actor_id="legal-1", role="legal", purpose="legal_requirement", evidence_ref="SUB-1"
    )
    with access_context(lawyer):
        desk.invoices("acme")
    # Written past the gate (as a buggy integration might): support with no live grant.
    gate.setup.store.append(
        [
            make_event(
                occurred_at=clock(),
                evidence_ref=grant.grant_id,
                actor_id="agent-9",
                customer_id="acme",
            )
        ]
    )
    return {"grant": grant, "legal": legal}


def _decisions(store: SqlStore) -> list[Any]:
    kinds = (EventType.ACCESS_ALLOWED, EventType.ACCESS_DENIED)
    return [r.event for r in store.read() if r.event.event_type in kinds]


def test_the_counts_agree_with_the_records(gate: Gate, clock: FakeClock, store: SqlStore) -> None:
    """Every aggregate equals the same count done record by record."""
    _week(gate, clock)
    report = access_report(store, ReportFilter(), now=clock.now, expiring_within=timedelta(days=7))
    records = _decisions(store)
    by_purpose = Counter(e.purpose for e in records)
    assert {r["purpose"]: r["accesses"] for r in report.sections["by_purpose"]} == by_purpose
    denied = Counter(e.purpose for e in records if e.event_type is EventType.ACCESS_DENIED)
    assert {r["purpose"]: r["denied"] for r in report.sections["by_purpose"]} == {
        p: denied.get(p, 0) for p in by_purpose
    }
    days = Counter(e.occurred_at.strftime("%Y-%m-%d") for e in records)
    assert {r["day"]: r["accesses"] for r in report.sections["per_day"]} == days
    actors = Counter((e.role, e.actor_id) for e in records)
    assert {
        (r["role"], r["actor_id"]): r["accesses"] for r in report.sections["by_actor"]
    } == actors
    reasons = Counter(e.reason_code for e in records if e.event_type is EventType.ACCESS_DENIED)
    assert {r["reason_code"]: r["denied"] for r in report.sections["denials"]} == reasons


def test_what_stands_out(gate: Gate, clock: FakeClock, store: SqlStore) -> None:
    """Break-glass, support outside a live grant, an unusually busy day, expiring evidence."""
    found = _week(gate, clock)
    report = access_report(store, ReportFilter(), now=clock.now, expiring_within=timedelta(days=7))
    sections = report.sections
    assert [(r["actor_id"], r["justification"]) for r in sections["break_glass"]] == [
        ("sre-1", "pager: outage")
    ]
    (outside,) = sections["support_outside_grant"]
    assert (outside["evidence_ref"], outside["accesses"]) == (found["grant"].grant_id, 1)
    assert outside["why"] == "outside the grant's validity"
    (busy,) = sections["unusual_volume"]
    assert (busy["actor_id"], busy["accesses"]) == ("agent-1", 26)
    expiring = {r["ref"] for r in sections["expiring_evidence"]}
    assert expiring == set()  # the grant has expired, the legal request runs another 25 days
    later = access_report(store, ReportFilter(), now=clock.now, expiring_within=timedelta(days=30))
    assert {r["ref"] for r in later.sections["expiring_evidence"]} == {"SUB-1"}


def test_filters_and_periods(gate: Gate, clock: FakeClock, store: SqlStore) -> None:
    """Customer, actor, purpose, resource and period narrow every section alike."""
    _week(gate, clock)
    start = min(e.occurred_at for e in _decisions(store))
    only = ReportFilter(customer_id="globex", purpose="service_delivery")
    report = access_report(store, only, now=clock.now, expiring_within=timedelta(days=1))
    assert [
        (r["customer_id"], r["resource"], r["accesses"]) for r in report.sections["by_customer"]
    ] == [("globex", "billing.invoices", 5)]
    first_day = ReportFilter(since=start, until=start + timedelta(days=1))
    report = access_report(store, first_day, now=clock.now, expiring_within=timedelta(days=1))
    assert [r["accesses"] for r in report.sections["per_day"]] == [4]
    with pytest.raises(ConfigurationError, match=r"ends .* before it starts"):
        ReportFilter(since=start, until=start)


def test_transparency_shows_roles_and_honours_legal_holds(
    gate: Gate, clock: FakeClock, store: SqlStore
) -> None:
    """Acme sees roles, not names; the legal access is held back until its date."""
    _week(gate, clock)
    flt = ReportFilter(customer_id="acme")
    report = transparency_report(store, flt, now=clock.now)
    assert report.withheld == 1
    assert "withheld_note" not in report.to_dict()
    assert {e["role"] for e in report.entries} == {"app", "support_agent"}
    assert all("actor_id" not in e for e in report.entries)
    assert all(e["purpose"] != "legal_requirement" for e in report.entries)
    told = transparency_report(store, flt, now=clock.now, disclose_withheld=True)
    assert "1 access(es) are not shown yet" in told.to_dict()["withheld_note"]
    after = transparency_report(store, flt, now=clock.now + timedelta(days=61), show_actors=True)
    assert after.withheld == 0
    assert "legal-1" in {e["actor_id"] for e in after.entries}
    short = transparency_report(store, flt, now=clock.now, summarise=True)
    assert sum(e["accesses"] for e in short.entries) == len(report.entries)
    assert len(short.entries) < len(report.entries)


def test_reading_the_log_is_recorded(store: SqlStore) -> None:
    """record_report appends audit.report with who, which filters and how many rows."""
    record_report(store, "auditor-1", "access", ReportFilter(customer_id="acme"), 12)
    (event,) = [r.event for r in store.read()]
    assert event.event_type is EventType.AUDIT_REPORT
    assert (event.actor_id, event.record_count, event.customer_visible) == ("auditor-1", 12, False)
    assert event.attributes["customer_id"] == "acme"


def _cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("ACCESSAUDIT_DB", "ACCESSAUDIT_HMAC_KEY", "ACCESSAUDIT_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert runner.invoke(app, ["demo", "--events", "400"]).exit_code == 0


def test_cli_report_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """JSON and CSV carry the same counts; each run is recorded."""
    _cli(tmp_path, monkeypatch)
    as_json = runner.invoke(app, ["report", "--format", "json", "--by", "auditor"])
    assert as_json.exit_code == 0, as_json.stderr
    sections = json.loads(as_json.stdout)["sections"]
    as_csv = runner.invoke(app, ["report", "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    purposes = {r["purpose"]: int(r["accesses"]) for r in rows if r["section"] == "by_purpose"}
    assert purposes == {r["purpose"] or "": r["accesses"] for r in sections["by_purpose"]}
    table = runner.invoke(app, ["report"])
    assert "by purpose" in table.stdout
    with SqlStore("sqlite:///accessaudit.db") as store:
        reports = [r.event for r in store.read() if r.event.event_type is EventType.AUDIT_REPORT]
    assert reports[0].actor_id == "auditor"
    assert len(reports) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "last tuesday"], "--since: 'last tuesday' is neither a duration"),
        (["--since", "2d", "--until", "5d"], "before it starts"),
        (["--customer", "nobody"], "no record in the log concerns customer 'nobody'"),
        (["--transparency"], "--transparency is a report for one customer"),
        (["--format", "xml"], "Invalid value for '--format'"),
    ],
)
def test_cli_report_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    """Each mistake is one line and exit 2; nothing is recorded."""
    _cli(tmp_path, monkeypatch)
    result = runner.invoke(app, ["report", *args])
    assert result.exit_code == 2
    assert message in result.stderr
    with SqlStore("sqlite:///accessaudit.db") as store:
        assert store.count() == 400


def test_cli_transparency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The customer's report lists only that customer, with roles."""
    _cli(tmp_path, monkeypatch)
    result = runner.invoke(
        app, ["report", "--customer", "acme", "--transparency", "--format", "json"]
    )
    assert result.exit_code == 0, result.stderr
    entries = json.loads(result.stdout)["entries"]
    assert entries
    assert all("actor_id" not in e for e in entries)
    with SqlStore("sqlite:///accessaudit.db", key=load_key()) as store:
        last = next(iter(store.read(store.count()))).event
    assert (last.event_type, last.attributes["report"]) == (EventType.AUDIT_REPORT, "transparency")


def test_a_report_that_cannot_be_recorded_is_not_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed: when its read cannot be recorded, the report is refused and not printed.

    Here the key is not the log's, so the chain's newest record does not check out under it
    and appends stop (exit 1, as for any halted chain), with a hint about the key.
    """
    _cli(tmp_path, monkeypatch)
    (tmp_path / "accessaudit.key").write_text("00" * 40)  # the wrong key: appends refuse
    (tmp_path / "accessaudit.key").chmod(0o600)
    result = runner.invoke(app, ["report", "--format", "json"])
    assert result.exit_code == 1
    assert "(unknown_key); if the key given is not the one this log is written" in result.stderr
    assert "by_purpose" not in result.stdout


def _int(value: object) -> int:
    assert isinstance(value, int | Decimal)
    return int(value)


def test_the_counts_agree_with_hand_written_sql(
    backend: Backend, gate: Gate, clock: FakeClock, store: SqlStore
) -> None:
    """The report's figures equal independent SQL counts over the raw table."""
    _week(gate, clock)
    report = access_report(store, ReportFilter(), now=clock.now, expiring_within=timedelta(0))
    decisions = "event_type IN ('access.allowed', 'access.denied')"
    by_purpose = backend.sql(
        "SELECT purpose, count(*), "
        "sum(CASE WHEN event_type = 'access.denied' THEN 1 ELSE 0 END) "
        f"FROM accessaudit_events WHERE {decisions} GROUP BY purpose"
    )
    assert sorted((str(p), _int(n), _int(d)) for p, n, d in by_purpose) == sorted(
        (str(r["purpose"]), r["accesses"], r["denied"]) for r in report.sections["by_purpose"]
    )
    by_customer = backend.sql(
        "SELECT customer_id, resource, count(*) FROM accessaudit_events "
        f"WHERE {decisions} GROUP BY customer_id, resource"
    )
    assert sorted((str(c), str(r), _int(n)) for c, r, n in by_customer) == sorted(
        (str(r["customer_id"]), str(r["resource"]), r["accesses"])
        for r in report.sections["by_customer"]
    )


def test_cli_report_on_each_database(backend: Backend, gate: Gate, clock: FakeClock) -> None:
    """The command works against PostgreSQL as against SQLite."""
    _week(gate, clock)
    key = gate.setup.store.key
    assert key is not None
    env = {"ACCESSAUDIT_HMAC_KEY": key.secret.hex()}
    args = ["report", "--db", backend.url, "--format", "json"]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.stderr
    sections = json.loads(result.stdout)["sections"]
    assert len(sections["support_outside_grant"]) == 1
    assert sum(r["accesses"] for r in sections["by_purpose"]) == len(_decisions(gate.setup.store))


def test_legal_accesses_stay_hidden_while_any_hold_runs(
    gate: Gate, clock: FakeClock, store: SqlStore
) -> None:
    """A denied legal access (mistyped reference) does not reveal a request under a hold."""
    _week(gate, clock)
    lawyer = AccessContext(
        actor_id="legal-1", role="legal", purpose="legal_requirement", evidence_ref="SUB-l"
    )
    with access_context(lawyer), pytest.raises(AccessDenied):
        Desk(gate).invoices("acme")
    report = transparency_report(store, ReportFilter(customer_id="acme"), now=clock.now)
    assert report.withheld == 2
    assert all(e["purpose"] != "legal_requirement" for e in report.entries)


def test_expiring_evidence_follows_the_customer_filter(
    gate: Gate, clock: FakeClock, store: SqlStore
) -> None:
    """A report about one customer lists only that customer's expiring evidence."""
    gate.registry.issue_grant(
        customer_id="globex",
        case_id="C-9",
        data_categories=["contact"],
        expires_at=clock.now + timedelta(days=1),
        issued_by="globex-admin",
    )
    window = timedelta(days=7)
    mine = access_report(
        store, ReportFilter(customer_id="acme"), now=clock.now, expiring_within=window
    )
    theirs = access_report(
        store, ReportFilter(customer_id="globex"), now=clock.now, expiring_within=window
    )
    assert mine.sections["expiring_evidence"] == []
    assert [r["customer_id"] for r in theirs.sections["expiring_evidence"]] == ["globex"]


def test_cli_bad_expiring_window_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unreadable --expiring-within is one line and exit 2, like every other time option."""
    _cli(tmp_path, monkeypatch)
    result = runner.invoke(app, ["report", "--expiring-within", "soonish"])
    assert result.exit_code == 2
    assert "--expiring-within: 'soonish' is neither a duration" in result.stderr


def _as(actor: str, role: str = "app") -> AccessContext:
    return AccessContext(
        actor_id=actor, actor_type=ActorType.SERVICE, role=role, purpose="service_delivery"
    )


def _reads_by(desk: Desk, actor: str, n: int, role: str = "app") -> None:
    """``n`` read attempts; denied ones (a role the policy lacks) count as attempts too."""
    with access_context(_as(actor, role)):
        for _ in range(n):
            with contextlib.suppress(AccessDenied):
                desk.invoices("acme")


def _unusual(store: SqlStore, clock: FakeClock, **period: Any) -> list[dict[str, Any]]:
    report = access_report(
        store, ReportFilter(**period), now=clock.now, expiring_within=timedelta(days=1)
    )
    return list(report.sections["unusual_volume"])


def test_a_new_actor_is_compared_with_their_roles_usual_day(
    gate: Gate, clock: FakeClock, store: SqlStore
) -> None:
    """No days of their own yet: a newcomer's busy first day is judged by their role's."""
    desk = Desk(gate)
    for _ in range(5):
        _reads_by(desk, "svc-a", 2)
        _reads_by(desk, "svc-b", 2)
        clock.advance(days=1)
    _reads_by(desk, "svc-new", 30)  # new: no usual day of its own
    _reads_by(desk, "svc-quiet", 3)  # new as well, and not busy
    _reads_by(desk, "batch-1", 50, role="batch")  # alone in its role: nothing to compare with
    (busy,) = _unusual(store, clock)
    assert (busy["actor_id"], busy["role"], busy["accesses"]) == ("svc-new", "app", 30)
    assert (busy["usual_per_day"], busy["usual_from"]) == (2, "role")


def test_the_usual_day_comes_from_before_the_period(
    gate: Gate, clock: FakeClock, store: SqlStore
) -> None:
    """A report of one day judges it by the days before: its own median, that day left out."""
    desk = Desk(gate)
    for _ in range(5):
        _reads_by(desk, "svc-a", 1)
        clock.advance(days=1)
    today = clock.now.replace(hour=0, minute=0, second=0, microsecond=0)
    _reads_by(desk, "svc-a", 25)
    (busy,) = _unusual(store, clock, since=today)
    assert (busy["actor_id"], busy["accesses"], busy["usual_per_day"]) == ("svc-a", 25, 1)
    assert busy["usual_from"] == "own"
    assert _unusual(store, clock, since=today, actor_id="svc-b") == []


def test_the_policy_sets_what_counts_as_unusual(
    backend: Backend, gate: Gate, clock: FakeClock, store: SqlStore, tmp_path: Path
) -> None:
    """[review] in the policy file: a smaller spike stands out; without it, the defaults."""
    desk = Desk(gate)
    for _ in range(5):
        _reads_by(desk, "svc-a", 2)
        clock.advance(days=1)
    _reads_by(desk, "svc-a", 5)
    assert _unusual(store, clock) == []  # 5 accesses: not 3x 2 and 20
    policy = tmp_path / "policy.toml"
    policy.write_text(
        EXAMPLE_POLICY.read_text() + "\n[review]\nunusual_factor = 2\nunusual_minimum = 4\n"
    )
    key = gate.setup.store.key
    assert key is not None
    args = ["report", "--db", backend.url, "--policy", str(policy), "--format", "json"]
    result = runner.invoke(app, args, env={"ACCESSAUDIT_HMAC_KEY": key.secret.hex()})
    assert result.exit_code == 0, result.stderr
    (busy,) = json.loads(result.stdout)["sections"]["unusual_volume"]
    assert (busy["actor_id"], busy["accesses"], busy["usual_per_day"]) == ("svc-a", 5, 2)
