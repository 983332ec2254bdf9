"""A FastAPI + SQLAlchemy ORM app whose every read of customer data goes through accessaudit.

Run it (with fastapi and an ASGI server such as uvicorn installed)::

    uvicorn --factory examples.fastapi_app:create_app

It shows each way staff and services reach customer data, and what the gate does with the
ways they should not:

- ``GET /app/customers/{c}/contacts``: the service itself (``service_delivery``);
- ``GET /support/customers/{c}/contacts?ticket=T``: a support agent, on the grant the
  customer gave for ticket T (``support_request``);
- ``GET /ops/customers/{c}/contacts?incident=I``: an SRE on an open incident
  (``technical_problem``);
- ``POST /ops/customers/{c}/contacts/break-glass``: an SRE in an emergency, without an
  incident, with a justification (allowed by the policy, flagged ``break_glass``);
- ``GET /legal/customers/{c}/invoices?request=R``: legal, on a registered legal request
  (``legal_requirement``);
- ``run_invoice_job``: a service job outside any request (``service_delivery``);
- ``GET /buggy/customers/{c}/contacts``: a query that forgot its WHERE: 403,
  ``customer_mismatch``, nothing of the other customers leaves;
- ``GET /ungated/contacts``: a read with no gate at all: 403, ``ungated_read``.

Who is calling comes from the ``Authorization`` header, looked up in the app's own table of
users (``USERS``, standing in for real authentication): a client cannot name its own role.
"""

from __future__ import annotations

import dataclasses
import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, FastAPI, HTTPException
from sqlalchemy import ForeignKey, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from accessaudit import (
    AccessContext,
    ActorType,
    Gate,
    Policy,
    SqlStore,
    access_context,
    current_context,
    load_key,
)
from accessaudit.asgi import AccessContextMiddleware
from accessaudit.sqlalchemy import CustomerData

HERE = Path(__file__).parent


class Base(DeclarativeBase):
    """The app's own tables."""


class Contact(Base):
    """A customer's contact person: customer data."""

    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(200))


class Invoice(Base):
    """A customer's invoice: customer data."""

    __tablename__ = "invoices"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64), index=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    amount_cents: Mapped[int]


#: Bearer token -> who that is. A real app authenticates here (OIDC, sessions...).
USERS: dict[str, dict[str, Any]] = {
    "app-token": {"actor_id": "api", "actor_type": ActorType.SERVICE, "role": "app"},
    "agent-token": {"actor_id": "agent-7", "role": "support_agent"},
    "sre-token": {"actor_id": "sre-2", "role": "sre"},
    "legal-token": {"actor_id": "counsel-1", "role": "legal"},
}


def who(scope: Any) -> AccessContext | None:
    """The middleware's function: the caller's identity from the app's own user table.

    The purpose is set by each endpoint (it knows why it reads); None for an unknown caller,
    whose reads are then denied ``no_context``.
    """
    headers = dict(scope["headers"])
    token = headers.get(b"authorization", b"").decode("latin-1").removeprefix("Bearer ")
    user = USERS.get(token)
    return None if user is None else AccessContext(**user)


def for_purpose(purpose: str, **changes: Any) -> AbstractContextManager[Any]:
    """The caller's context, narrowed to why this endpoint reads (and on what evidence).

    An unknown caller gets no context at all: the gate denies the read ``no_context`` and
    records it with the request's id and client address.
    """
    caller = current_context()
    if caller is None:
        return nullcontext()
    return access_context(dataclasses.replace(caller, purpose=purpose, **changes))


def create_app(
    audit_url: str | None = None,
    app_url: str | None = None,
    key_file: Path | None = None,
    policy_file: Path = HERE / "policy.toml",
) -> FastAPI:
    """The app, its tables and its gate (defaults: SQLite files in the working directory)."""
    store = SqlStore(
        audit_url or os.environ.get("ACCESSAUDIT_DB", "sqlite:///accessaudit.db"),
        key=load_key(key_file or Path(os.environ.get("ACCESSAUDIT_KEY_FILE", "accessaudit.key"))),
        must_exist=False,
    )
    store.create_schema()
    gate = Gate(store, Policy.load(policy_file), service="crm-api")
    engine = create_engine(app_url or "sqlite:///crm.db")
    Base.metadata.create_all(engine)
    customer_data = CustomerData(gate)
    customer_data.protect(Contact, resource="crm.contacts", data_categories=["contact"])
    customer_data.protect(Invoice, resource="billing.invoices")
    customer_data.install(engine)
    sessions = sessionmaker(engine)

    @gate.protect("crm.contacts", customer="customer_id")
    def contacts_of(session: Session, customer_id: str) -> list[dict[str, Any]]:
        query = select(Contact).where(Contact.customer_id == customer_id)
        return [{"id": c.id, "name": c.name, "email": c.email} for c in session.scalars(query)]

    @gate.protect("billing.invoices", customer="customer_id")
    def invoices_of(session: Session, customer_id: str) -> list[dict[str, Any]]:
        query = select(Invoice).where(Invoice.customer_id == customer_id)
        return [{"id": i.id, "amount_cents": i.amount_cents} for i in session.scalars(query)]

    @gate.protect("crm.contacts", customer="customer_id")
    def contacts_forgetting_the_where(session: Session, customer_id: str) -> list[str]:
        return [c.email for c in session.scalars(select(Contact))]  # the bug

    app = FastAPI(title="crm-api")
    app.add_middleware(AccessContextMiddleware, context=who)
    app.state.gate, app.state.sessions = gate, sessions

    @app.get("/app/customers/{customer_id}/contacts")
    def app_contacts(customer_id: str) -> list[dict[str, Any]]:
        with for_purpose("service_delivery"), sessions() as session:
            return contacts_of(session, customer_id)

    @app.get("/support/customers/{customer_id}/contacts")
    def support_contacts(customer_id: str, ticket: str) -> list[dict[str, Any]]:
        grant = gate.registry.grant_for_case(customer_id, ticket)
        if grant is None:
            raise HTTPException(404, f"no live grant from {customer_id} for ticket {ticket}")
        with for_purpose("support_request", evidence_ref=grant.grant_id), sessions() as session:
            return contacts_of(session, customer_id)

    @app.get("/ops/customers/{customer_id}/contacts")
    def ops_contacts(customer_id: str, incident: str) -> list[dict[str, Any]]:
        with for_purpose("technical_problem", evidence_ref=incident), sessions() as session:
            return contacts_of(session, customer_id)

    @app.post("/ops/customers/{customer_id}/contacts/break-glass")
    def break_glass_contacts(
        customer_id: str, justification: Annotated[str, Body(embed=True)]
    ) -> list[dict[str, Any]]:
        emergency = for_purpose("technical_problem", break_glass=True, justification=justification)
        with emergency, sessions() as session:
            return contacts_of(session, customer_id)

    @app.get("/legal/customers/{customer_id}/invoices")
    def legal_invoices(customer_id: str, request: str) -> list[dict[str, Any]]:
        with for_purpose("legal_requirement", evidence_ref=request), sessions() as session:
            return invoices_of(session, customer_id)

    @app.get("/buggy/customers/{customer_id}/contacts")
    def buggy_contacts(customer_id: str) -> list[str]:
        with for_purpose("service_delivery"), sessions() as session:
            return contacts_forgetting_the_where(session, customer_id)

    @app.get("/ungated/contacts")
    def ungated_contacts() -> list[str]:
        with sessions() as session:  # no gated function: the integration refuses it
            return [c.email for c in session.scalars(select(Contact))]

    app.state.invoices_of = invoices_of
    return app


def run_invoice_job(app: FastAPI, customer_id: str) -> int:
    """A service job outside any request: the nightly invoice run for one customer."""
    service = AccessContext(
        actor_id="invoice-job",
        actor_type=ActorType.SERVICE,
        role="app",
        purpose="service_delivery",
    )
    with access_context(service), app.state.sessions() as session:
        return len(app.state.invoices_of(session, customer_id))
