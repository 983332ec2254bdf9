"""The customer transparency report: safe to hand to the customer, and complete for them."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner

from accessaudit import AccessContext, AccessDenied, ActorType, Gate, SqlStore, access_context
from accessaudit.cli import demo as demo_workload
from accessaudit.cli.app import app
from accessaudit.gate.registry import EvidenceRegistry
from accessaudit.review.report import ReportFilter
from accessaudit.review.transparency import CUSTOMER_DENIAL, EMERGENCY_ACCESS, WITHHELD
from accessaudit.review.transparency import transparency_report as report_of
from tests.gatekit import Desk, FakeClock, agent, grant

if TYPE_CHECKING:
    from pathlib import Path

runner = CliRunner()


def _text(store: SqlStore, customer: str, clock: FakeClock, **options: Any) -> str:
    report = report_of(store, ReportFilter(customer_id=customer), now=clock.now, **options)
    return json.dumps(report.to_dict()) + json.dumps(report.table_rows())


def _sre(incident: str | None, **changes: Any) -> AccessContext:
    values: dict[str, Any] = {
        "actor_id": "sre-1",
        "role": "sre",
        "purpose": "technical_problem",
        "evidence_ref": incident,
    }
    return AccessContext(**{**values, **changes})


def test_another_customers_grant_is_never_shown(
    gate: Gate, clock: FakeClock, store: SqlStore
) -> None:
    """An agent citing globex's grant for acme: acme sees a refusal, not globex's grant id."""
    desk = Desk(gate)
    theirs = grant(gate, "globex", case_id="CASE-G")
    ours = grant(gate, "acme")
    with access_context(agent(theirs)), pytest.raises(AccessDenied):
        desk.contacts("acme", ["c-1"])
    with access_context(agent(ours)):
        desk.contacts("acme", ["c-1"])
    shown = _text(store, "acme", clock, show_actors=True)
    assert theirs not in shown
    assert "globex" not in shown
    entries = report_of(store, ReportFilter(customer_id="acme"), now=clock.now).entries
    refused, allowed = entries
    assert (refused["evidence_ref"], refused["outcome"]) == (
        WITHHELD,
        CUSTOMER_DENIAL["evidence_customer_mismatch"],
    )
    assert (allowed["evidence_ref"], allowed["basis"]) == (ours, "your support grant")


def test_another_customers_incident_and_made_up_references_are_withheld(
    gate: Gate, clock: FakeClock, store: SqlStore
) -> None:
    """Only incidents that concern the customer are named; unknown references never are."""
    desk = Desk(gate)
    gate.registry.open_incident("INC-GLOBEX-9", customers=["globex"], opened_by="sre-1")
    gate.registry.open_incident("INC-ACME-1", customers=["acme"], opened_by="sre-1")
    with access_context(_sre("INC-GLOBEX-9")), pytest.raises(AccessDenied):
        desk.contacts("acme", [])
    with access_context(agent("grant-of-initech-42")), pytest.raises(AccessDenied):
        desk.contacts("acme", [])
    with access_context(_sre("INC-ACME-1")):
        desk.contacts("acme", [])
    shown = _text(store, "acme", clock)
    for foreign in ("INC-GLOBEX-9", "globex", "grant-of-initech-42", "initech"):
        assert foreign not in shown
    refs = [
        e["evidence_ref"]
        for e in report_of(store, ReportFilter(customer_id="acme"), now=clock.now).entries
    ]
    assert refs == [WITHHELD, WITHHELD, "INC-ACME-1"]


def test_break_glass_is_shown_as_emergency_access(
    gate: Gate, clock: FakeClock, store: SqlStore
) -> None:
    """Break-glass is named as such, with no incident and none of the engineer's words."""
    glass = _sre(None, break_glass=True, justification="pager: globex outage spilled over")
    with access_context(glass):
        Desk(gate).contacts("acme", [])
    (entry,) = report_of(store, ReportFilter(customer_id="acme"), now=clock.now).entries
    assert (entry["purpose"], entry["emergency_access"], entry["basis"]) == (
        "technical_problem",
        True,
        EMERGENCY_ACCESS,
    )
    assert "written justification recorded" in entry["justification"]
    assert "globex" not in json.dumps(entry)


def test_a_user_of_another_customer_is_not_named(
    gate: Gate, clock: FakeClock, store: SqlStore
) -> None:
    """Even with actors shown, a foreign customer's user appears as withheld."""
    intruder = AccessContext(
        actor_id="globex-user-3",
        actor_type=ActorType.HUMAN,
        role="customer_user",
        purpose="service_delivery",
        actor_customer_id="globex",
    )
    with access_context(intruder), pytest.raises(AccessDenied):
        Desk(gate).invoices("acme")
    (entry,) = report_of(
        store, ReportFilter(customer_id="acme"), now=clock.now, show_actors=True
    ).entries
    assert entry["actor_id"] == WITHHELD
    assert "globex" not in json.dumps(entry)


def test_summarise_gives_one_line_per_day_and_purpose(
    gate: Gate, clock: FakeClock, store: SqlStore
) -> None:
    """Counts per day and purpose add up to the full report's entries."""
    desk = Desk(gate)
    acme_grant = grant(gate, "acme", expires_at=clock.now + timedelta(days=5))
    for _ in range(2):
        with access_context(agent(acme_grant)):
            desk.contacts("acme", [])
            desk.contacts("acme", [])
        with access_context(agent(None)), pytest.raises(AccessDenied):
            desk.contacts("acme", [])
        clock.advance(days=1)
    flt = ReportFilter(customer_id="acme")
    full = report_of(store, flt, now=clock.now).entries
    short = report_of(store, flt, now=clock.now, summarise=True)
    assert [(e["day"], e["purpose"], e["accesses"], e["refused"]) for e in short.entries] == [
        ("2026-11-29", "support_request", 3, 1),
        ("2026-11-30", "support_request", 3, 1),
    ]
    assert sum(e["accesses"] for e in short.entries) == len(full) == 6
    assert short.to_dict()["summarised"] is True


def test_every_demo_customer_sees_only_their_own_identifiers(store: SqlStore) -> None:
    """Across a simulated week, no customer's report holds another's id, grant or incident."""
    demo_workload.run(store, 1500, seed=11)
    registry = EvidenceRegistry(store)
    now = max(r.event.occurred_at for r in store.read())
    incidents = registry.incidents()
    for customer in demo_workload.CUSTOMERS:
        foreign = {c for c in demo_workload.CUSTOMERS if c != customer}
        foreign |= {g.grant_id for g in registry.grants() if g.customer_id != customer}
        foreign |= {g.case_id for g in registry.grants() if g.customer_id != customer}
        foreign |= {i.incident_id for i in incidents if not i.covers(customer)}
        foreign |= {r.reference for r in registry.legal_requests() if r.customer_id != customer}
        for options in ({}, {"show_actors": True}, {"summarise": True}):
            report = report_of(
                store, ReportFilter(customer_id=customer), now=now + timedelta(days=400), **options
            )
            shown = json.dumps(report.to_dict()) + json.dumps(report.table_rows())
            leaked = sorted(f for f in foreign if f in shown)
            assert leaked == [], f"{customer}'s report shows {leaked}"
            assert report.entries, f"the demo gives {customer} accesses"


def test_cli_report_of_a_customer_with_no_accesses_is_empty(
    in_tmp: Path,
) -> None:
    """Exit 0 and an empty report (JSON and table), with customer, period and generation time."""
    assert runner.invoke(app, ["init"]).exit_code == 0
    args = ["report", "--customer", "newco", "--transparency", "--since", "30d"]
    as_json = runner.invoke(app, [*args, "--format", "json"])
    assert as_json.exit_code == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert (document["customer_id"], document["entries"]) == ("newco", [])
    assert document["period"]["since"] is not None
    assert document["period"]["until"] is None
    assert document["generated_at"].endswith("Z")
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.stderr
    assert "Accesses to the data of customer newco" in table.stdout
    assert "Period: " in table.stdout
    assert "Generated: " in table.stdout


def test_cli_table_shows_categories_in_words(in_tmp: Path) -> None:
    """Data categories read as words, not Python list syntax; denials in the customer's words."""
    assert runner.invoke(app, ["demo", "--events", "600"]).exit_code == 0
    table = runner.invoke(app, ["report", "--customer", "acme", "--transparency"])
    assert table.exit_code == 0, table.stderr
    assert "['" not in table.stdout
    assert "contact" in table.stdout
    assert "Accesses to the data of customer acme" in table.stdout
    assert "evidence_customer_mismatch" not in table.stdout


def test_cli_heading_escapes_what_the_customer_id_holds(in_tmp: Path) -> None:
    """A customer id with a terminal escape is shown escaped in the heading, not obeyed."""
    assert runner.invoke(app, ["init"]).exit_code == 0
    table = runner.invoke(app, ["report", "--customer", "ac\x1b[2Jme", "--transparency"])
    assert table.exit_code == 0, table.stderr
    assert "\x1b" not in table.stdout
    assert "customer ac\\x1b[2Jme" in table.stdout
