"""A small app's data model for the SQLAlchemy integration tests, built fresh per test.

Mapped classes are process-wide and ``load`` listeners stay on them, so each test maps its
own classes (on its own ``DeclarativeBase``) instead of sharing module-level ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from tests.gatekit import CANARY

#: Customers and how many contacts each has in the seeded data.
CONTACTS = {"acme": 3, "beta": 2}


@dataclass
class Models:
    """One test's mapped classes and tables."""

    metadata: MetaData
    Account: Any
    Contact: Any
    Invoice: Any
    documents: Table


def make_models() -> Models:
    """Fresh mapped classes: accounts (not protected), contacts, invoices, documents."""

    class Base(DeclarativeBase):
        metadata = MetaData()

    class Account(Base):
        __tablename__ = "accounts"
        id: Mapped[str] = mapped_column(String(20), primary_key=True)
        contacts: Mapped[list[Contact]] = relationship(back_populates="account")

    class Contact(Base):
        __tablename__ = "contacts"
        id: Mapped[int] = mapped_column(primary_key=True)
        customer_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
        email: Mapped[str] = mapped_column(String(100))
        account: Mapped[Account] = relationship(back_populates="contacts")
        invoices: Mapped[list[Invoice]] = relationship(back_populates="contact")

    class Invoice(Base):
        __tablename__ = "invoices"
        id: Mapped[int] = mapped_column(primary_key=True)
        customer_id: Mapped[str] = mapped_column(String(20))
        contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
        amount: Mapped[int] = mapped_column(Integer)
        contact: Mapped[Contact] = relationship(back_populates="invoices")

    documents = Table(
        "documents",
        Base.metadata,
        Column("id", Integer, primary_key=True),
        Column("customer_id", String(20), nullable=False),
        Column("body", String(200), nullable=False),
    )
    return Models(Base.metadata, Account, Contact, Invoice, documents)


def seed(models: Models, session: Any) -> None:
    """Contacts, invoices and documents of acme and beta (values are the canary)."""
    next_id = 1
    for customer, count in CONTACTS.items():
        account = models.Account(id=customer)
        session.add(account)
        for _ in range(count):
            contact = models.Contact(id=next_id, account=account, email=f"{CANARY}-{next_id}")
            session.add(contact)
            session.add(
                models.Invoice(id=next_id, customer_id=customer, contact=contact, amount=next_id)
            )
            session.execute(
                models.documents.insert().values(id=next_id, customer_id=customer, body=CANARY)
            )
            next_id += 1
    session.commit()
