"""examples/fastapi_app.py, the README's web app: every path it shows, checked in the log."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from fastapi.testclient import TestClient

from accessaudit import create_key_file
from examples.fastapi_app import Contact, Invoice, create_app, run_invoice_job
from tests.gatekit import accesses, kinds

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from fastapi import FastAPI
    from sqlalchemy.orm import Session

    from accessaudit import Gate, SqlStore
    from tests.conftest import Backend


@pytest.fixture
def app(backend: Backend, tmp_path: Path) -> Iterator[FastAPI]:
    """The example app on the test's audit database, with acme's and globex's data."""
    key_file = tmp_path / "audit.key"
    create_key_file(key_file)
    built = create_app(backend.url, f"sqlite:///{tmp_path / 'crm.db'}", key_file)
    with built.state.sessions() as session:
        _seed(session)
    yield built
    built.state.gate.setup.store.close()


def _seed(session: Session) -> None:
    # Seeding writes, which are not gated.
    for n, customer in enumerate(["acme", "acme", "globex"], start=1):
        session.add(Contact(id=n, customer_id=customer, name=f"n{n}", email=f"e{n}@x"))
        session.add(Invoice(id=n, customer_id=customer, contact_id=n, amount_cents=100 * n))
    session.commit()


def _as(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _gate(app: FastAPI) -> Gate:
    gate: Gate = app.state.gate
    return gate


def _store(app: FastAPI) -> SqlStore:
    return _gate(app).setup.store


def test_every_purpose_reads_through_the_gate(app: FastAPI) -> None:
    """Service, support on a ticket's grant, SRE on an incident, legal on a request: allowed."""
    gate = _gate(app)
    now = gate.setup.clock()
    gate.registry.issue_grant(
        customer_id="acme",
        case_id="T-100",
        data_categories=["contact"],
        expires_at=now + timedelta(days=1),
        issued_by="acme-admin",
    )
    gate.registry.open_incident("INC-7", opened_by="sre-2", customers=["acme"])
    gate.registry.register_legal_request(
        "LR-1",
        authority="court",
        customer_id="acme",
        expires_at=now + timedelta(days=30),
        registered_by="counsel-1",
    )
    with TestClient(app) as client:
        service = client.get("/app/customers/acme/contacts", headers=_as("app-token"))
        support = client.get(
            "/support/customers/acme/contacts",
            params={"ticket": "T-100"},
            headers=_as("agent-token"),
        )
        ops = client.get(
            "/ops/customers/acme/contacts", params={"incident": "INC-7"}, headers=_as("sre-token")
        )
        legal = client.get(
            "/legal/customers/acme/invoices", params={"request": "LR-1"}, headers=_as("legal-token")
        )
        no_ticket = client.get(
            "/support/customers/acme/contacts",
            params={"ticket": "T-404"},
            headers=_as("agent-token"),
        )
    assert [len(r.json()) for r in (service, support, ops, legal)] == [2, 2, 2, 2]
    assert no_ticket.status_code == 404
    completed = [
        r.event for r in accesses(_store(app)) if r.event.event_type.value == "access.completed"
    ]
    assert [(e.purpose, e.record_count) for e in completed] == [
        ("service_delivery", 2),
        ("support_request", 2),
        ("technical_problem", 2),
        ("legal_requirement", 2),
    ]
    assert all(e.origin_client_addr == "testclient" for e in completed)


def test_the_service_job_and_the_break_glass_path(app: FastAPI) -> None:
    """A job outside any request; an SRE's emergency read, flagged with its justification."""
    assert run_invoice_job(app, "globex") == 1
    with TestClient(app) as client:
        emergency = client.post(
            "/ops/customers/globex/contacts/break-glass",
            json={"justification": "pager: globex login outage"},
            headers=_as("sre-token"),
        )
        refused = client.post(
            "/ops/customers/globex/contacts/break-glass",
            json={"justification": "curious"},
            headers=_as("agent-token"),
        )
    assert emergency.status_code == 200
    assert refused.status_code == 403
    assert refused.json()["reason_code"] == "role_not_allowed"
    allowed = [r.event for r in accesses(_store(app)) if r.event.reason_code == "break_glass"]
    assert allowed[0].attributes["break_glass"] is True
    assert allowed[0].justification == "pager: globex login outage"
    assert accesses(_store(app))[0].event.actor_id == "invoice-job"


def test_the_mistakes_are_refused_and_recorded(app: FastAPI) -> None:
    """A forgotten WHERE, an ungated read, an unknown caller: 403 problems, no data out."""
    with TestClient(app) as client:
        buggy = client.get("/buggy/customers/acme/contacts", headers=_as("app-token"))
        ungated = client.get("/ungated/contacts", headers=_as("app-token"))
        anonymous = client.get("/app/customers/acme/contacts")
    assert [r.status_code for r in (buggy, ungated, anonymous)] == [403, 403, 403]
    assert [r.json()["reason_code"] for r in (buggy, ungated, anonymous)] == [
        "customer_mismatch",
        "ungated_read",
        "no_context",
    ]
    for answer in (buggy, ungated, anonymous):
        assert "@x" not in answer.text  # no email of anyone
    assert kinds(_store(app)) == [
        "access.allowed:allowed",
        "access.failed:customer_mismatch",
        "access.denied:ungated_read",
        "access.denied:no_context",
    ]
    denial = accesses(_store(app))[-1].event
    assert denial.request_id == anonymous.headers["x-request-id"]
