"""accessaudit.sqlalchemy: reads of protected tables are gated, refused or restricted.

Every test runs on SQLite and PostgreSQL, with the app's tables in the test's database and
real sessions: the reads are real queries, and the records are read back from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import (
    Column,
    Engine,
    MetaData,
    String,
    Table,
    bindparam,
    column,
    create_engine,
    func,
    literal_column,
    or_,
    select,
    table,
    text,
    true,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import (
    Session,
    aliased,
    joinedload,
    scoped_session,
    selectinload,
    sessionmaker,
    subqueryload,
)

from accessaudit import AccessDenied, ConfigurationError, EventType, ReasonCode, access_context
from accessaudit.review.report import ReportFilter, access_report
from accessaudit.sqlalchemy import CustomerData
from accessaudit.sqlalchemy._statements import ProtectedTable, named_in_text, text_reads
from tests.gatekit import CANARY, accesses, kinds, service
from tests.ormapp import CONTACTS, Models, make_models, seed

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from accessaudit import Gate, SqlStore
    from tests.conftest import Backend


WEEK = timedelta(days=7)


@dataclass
class App:
    """An app's engine, models and sessions, guarded by ``data``."""

    engine: Engine
    models: Models
    data: CustomerData
    sessions: sessionmaker[Session]


def app_url(backend: Backend, tmp_path: Path) -> str:
    """Where the app keeps its tables: a SQLite file, or the test's PostgreSQL schema."""
    if backend.name == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    return make_url(backend.url).set(drivername="postgresql+psycopg").render_as_string(False)


def seeded(url: str) -> tuple[Models, Engine]:
    """Fresh models, their tables created and seeded through an unguarded engine."""
    models = make_models()
    engine = create_engine(url)
    models.metadata.create_all(engine)
    with Session(engine) as session:
        seed(models, session)
    return models, engine


def guarded(gate: Gate, models: Models, mode: str = "enforce") -> CustomerData:
    """The three customer tables declared (not yet installed anywhere)."""
    data = CustomerData(gate, mode=mode)  # type: ignore[arg-type]
    data.protect(models.Contact, resource="crm.contacts", data_categories=["contact"])
    data.protect(models.Invoice, resource="billing.invoices")
    data.protect(models.documents, resource="app.documents", customer="customer_id")
    return data


def make_app(gate: Gate, url: str, mode: str = "enforce") -> App:
    """Tables created and seeded (before the guard is installed), then guarded."""
    models, engine = seeded(url)
    data = guarded(gate, models, mode)
    data.install(engine)
    return App(engine, models, data, sessionmaker(engine))


@pytest.fixture
def app(gate: Gate, backend: Backend, tmp_path: Path) -> Iterator[App]:
    """The guarded app on the test's database, in enforce mode."""
    built = make_app(gate, app_url(backend, tmp_path))
    yield built
    built.engine.dispose()


def refused(store: SqlStore) -> list[Any]:
    """The ungated_read denials in the store."""
    return [
        r.event
        for r in accesses(store)
        if r.event.event_type is EventType.ACCESS_DENIED
        and r.event.reason_code == ReasonCode.UNGATED_READ
    ]


# -- outside any gated access ---------------------------------------------------------------


def _orm_select(app: App, s: Session) -> object:
    return s.execute(select(app.models.Contact)).scalars().all()


def _get(app: App, s: Session) -> object:
    return s.get(app.models.Contact, 1)


def _legacy_query(app: App, s: Session) -> object:
    return s.query(app.models.Contact).all()


def _yield_per(app: App, s: Session) -> object:
    return list(s.execute(select(app.models.Contact).execution_options(yield_per=1)).scalars())


def _columns(app: App, s: Session) -> object:
    return s.execute(select(app.models.Contact.email)).all()


def _joined_from_unprotected(app: App, s: Session) -> object:
    accounts = select(app.models.Account).options(joinedload(app.models.Account.contacts))
    return s.execute(accounts).unique().scalars().all()


def _selectin_from_unprotected(app: App, s: Session) -> object:
    accounts = select(app.models.Account).options(selectinload(app.models.Account.contacts))
    return s.execute(accounts).scalars().all()


def _subquery_from_unprotected(app: App, s: Session) -> object:
    accounts = select(app.models.Account).options(subqueryload(app.models.Account.contacts))
    return s.execute(accounts).scalars().all()


def _lazy_from_unprotected(app: App, s: Session) -> object:
    account = s.get(app.models.Account, "acme")
    assert account is not None
    return account.contacts


def _core_table(app: App, s: Session) -> object:
    with app.engine.connect() as conn:
        return conn.execute(select(app.models.documents)).all()


def _text(app: App, s: Session) -> object:
    return s.execute(text("SELECT body FROM documents")).all()


def _driver_sql(app: App, s: Session) -> object:
    return s.connection().exec_driver_sql("select email from contacts").all()


def _exists_subquery(app: App, s: Session) -> object:
    contacts = app.models.Contact
    return (
        s.execute(
            select(app.models.Account).where(app.models.Account.contacts.any(contacts.email != ""))
        )
        .scalars()
        .all()
    )


UNGATED_READS = [
    _orm_select,
    _get,
    _legacy_query,
    _yield_per,
    _columns,
    _joined_from_unprotected,
    _selectin_from_unprotected,
    _subquery_from_unprotected,
    _lazy_from_unprotected,
    _core_table,
    _text,
    _driver_sql,
    _exists_subquery,
]


@pytest.mark.parametrize("read", UNGATED_READS, ids=lambda f: f.__name__.strip("_"))
def test_a_read_outside_any_gate_is_refused_after_its_denial_is_committed(
    app: App, store: SqlStore, read: Any
) -> None:
    """ORM, Query, get, loaders, streams, Core, text and driver SQL: AccessDenied, recorded."""
    with app.sessions() as session, pytest.raises(AccessDenied) as caught:
        read(app, session)
    assert caught.value.decision is not None
    assert caught.value.decision.reason is ReasonCode.UNGATED_READ
    assert caught.value.record is not None  # committed before the refusal was raised
    (denial,) = refused(store)
    assert denial.resource in {"crm.contacts", "app.documents"}
    assert denial.decision.value == "denied"
    assert denial.attributes["mode"] == "enforce"
    assert denial.attributes["function"].endswith(read.__name__)
    assert CANARY not in repr(store.read())


def test_reads_of_unprotected_tables_and_writes_are_not_gated(app: App, store: SqlStore) -> None:
    """Accounts are not customer data; inserting a contact is a write, not a read."""
    with app.sessions() as session:
        assert len(session.execute(select(app.models.Account)).scalars().all()) == 2
        session.add(app.models.Contact(id=99, customer_id="acme", email="x"))
        session.commit()
    assert accesses(store) == []


def test_observe_mode_lets_ungated_reads_run_and_records_each_once(
    gate: Gate, backend: Backend, tmp_path: Path, store: SqlStore
) -> None:
    """Adoption: the read returns its rows; one access.ungated record per query."""
    app = make_app(gate, app_url(backend, tmp_path), mode="observe")
    try:
        with app.sessions() as session:
            rows = session.execute(select(app.models.Contact)).scalars().all()
            joined = _joined_from_unprotected(app, session)
    finally:
        app.engine.dispose()
    assert len(rows) == sum(CONTACTS.values())
    assert len(joined) == 2  # type: ignore[arg-type]
    assert kinds(store) == ["access.ungated:ungated_read", "access.ungated:ungated_read"]
    assert all(r.event.attributes["mode"] == "observe" for r in accesses(store))


def test_the_report_lists_reads_outside_the_gate_by_place(
    gate: Gate, backend: Backend, tmp_path: Path, store: SqlStore
) -> None:
    """The report's ungated_reads section: one row per resource, place and outcome."""
    app = make_app(gate, app_url(backend, tmp_path), mode="observe")
    try:
        with app.sessions() as session:
            for _ in range(3):
                _orm_select(app, session)
            _core_table(app, session)
    finally:
        app.engine.dispose()
    report = access_report(store, ReportFilter(), now=datetime.now(UTC), expiring_within=WEEK)
    rows = {(r["resource"], r["function"]): r for r in report.sections["ungated_reads"]}
    here = f"{__name__}."
    contacts = rows["crm.contacts", here + "_orm_select"]
    assert (contacts["reads"], contacts["table"]) == (3, "contacts")
    assert contacts["outcome"] == "let through (observe mode)"
    assert rows["app.documents", here + "_core_table"]["reads"] == 1
    assert len(rows) == 2


# -- inside a gated access ------------------------------------------------------------------


def test_a_gated_read_of_its_customer_records_the_rows_it_loaded(
    app: App, gate: Gate, store: SqlStore
) -> None:
    """The outcome's record_count is the number of rows loaded, not a guess from the result."""
    contacts = app.models.Contact

    @gate.protect("crm.contacts")
    def emails(customer_id: str) -> int:
        with app.sessions() as session:
            rows = session.scalars(select(contacts).where(contacts.customer_id == customer_id))
            return len(list(rows))

    with access_context(service()):
        assert emails("acme") == CONTACTS["acme"]
    _, completed = accesses(store)
    assert completed.event.event_type is EventType.ACCESS_COMPLETED
    assert completed.event.record_count == CONTACTS["acme"]


def test_a_forgotten_where_fails_the_access_and_withholds_the_result(
    app: App, gate: Gate, store: SqlStore
) -> None:
    """Rows of other customers are never handed out: customer_mismatch, recorded."""
    got: list[object] = []

    @gate.protect("crm.contacts")
    def everyone(customer_id: str) -> list[object]:
        with app.sessions() as session:
            rows = session.scalars(select(app.models.Contact)).all()
            got.extend(rows)
            return list(rows)

    with access_context(service()), pytest.raises(AccessDenied) as caught:
        everyone("acme")
    assert caught.value.decision is not None
    assert caught.value.decision.reason is ReasonCode.CUSTOMER_MISMATCH
    assert got == []
    assert kinds(store) == ["access.allowed:allowed", "access.failed:customer_mismatch"]
    assert accesses(store)[-1].event.attributes["withheld"] is True


def test_swallowing_the_mismatch_still_withholds_the_result(
    app: App, gate: Gate, store: SqlStore
) -> None:
    """The protected code cannot catch its way past the check: the caller gets AccessDenied."""

    @gate.protect("crm.contacts")
    def careless(customer_id: str) -> str:
        with app.sessions() as session:
            with contextlib.suppress(AccessDenied):
                session.scalars(select(app.models.Contact)).all()
            return "done"

    with access_context(service()), pytest.raises(AccessDenied, match="customer_mismatch"):
        careless("acme")
    assert kinds(store) == ["access.allowed:allowed", "access.failed:customer_mismatch"]


def test_a_lazy_load_of_another_customers_row_inside_the_gate_fails_it(
    app: App, gate: Gate, store: SqlStore
) -> None:
    """Session.get of beta's contact inside acme's access: refused as it loads."""

    @gate.protect("crm.contacts")
    def one(customer_id: str, contact_id: int) -> object:
        with app.sessions() as session:
            return session.get(app.models.Contact, contact_id)

    with access_context(service()):
        assert one("acme", 1) is not None
        with pytest.raises(AccessDenied, match="customer_mismatch"):
            one("acme", CONTACTS["acme"] + 1)


def test_core_and_column_reads_inside_the_gate_must_show_they_keep_to_the_customer(
    app: App, gate: Gate, store: SqlStore
) -> None:
    """`customer column = id` ANDed in the WHERE: runs; anything less: withheld before it runs."""
    documents, contacts = app.models.documents, app.models.Contact
    aliased_documents = documents.alias("d")
    by_customer = {
        "core": select(documents.c.id).where(documents.c.customer_id == "beta"),
        "alias": select(aliased_documents.c.id).where(
            aliased_documents.c.customer_id == "beta", aliased_documents.c.id > 0
        ),
    }
    unproven = {
        "no where": select(documents.c.id),
        "another customer": select(documents.c.id).where(documents.c.customer_id == "acme"),
        "or": select(documents.c.id).where(
            or_(documents.c.customer_id == "beta", documents.c.id > 0)
        ),
        "by id only": select(documents.c.body).where(documents.c.id == 1),
    }

    @gate.protect("app.documents")
    def run(customer_id: str, query: Any) -> list[Any]:
        with app.engine.connect() as conn:
            return list(conn.execute(query).all())

    @gate.protect("crm.contacts")
    def emails(customer_id: str, *, filtered: bool) -> list[Any]:
        query = select(contacts.email, contacts.customer_id)
        if filtered:
            query = query.where(contacts.customer_id == customer_id)
        with app.sessions() as session:
            return list(session.execute(query).all())

    with access_context(service()):
        for query in by_customer.values():
            assert len(run("beta", query)) == CONTACTS["beta"]
        assert {row.customer_id for row in emails("acme", filtered=True)} == {"acme"}
        for name, query in unproven.items():
            with pytest.raises(AccessDenied, match="customer_mismatch") as caught:
                run("beta", query)
            assert "WHERE does not keep table to the gated customer" in str(caught.value), name
        with pytest.raises(AccessDenied, match="customer_mismatch"):
            emails("acme", filtered=False)
    assert kinds(store)[-2:] == ["access.allowed:allowed", "access.failed:customer_mismatch"]


def test_reads_that_cannot_be_kept_to_the_customer_are_withheld(
    app: App, gate: Gate, store: SqlStore
) -> None:
    """The table inside a subquery or SQL text, under a gate: customer_mismatch."""
    documents = app.models.documents

    @gate.protect("app.documents")
    def in_subquery(customer_id: str) -> list[Any]:
        inner = select(documents.c.body).subquery()
        with app.engine.connect() as conn:
            return list(conn.execute(select(inner)).all())

    @gate.protect("app.documents")
    def as_text(customer_id: str) -> list[Any]:
        with app.engine.connect() as conn:
            return list(conn.execute(text("select body from documents")).all())

    with access_context(service()):
        for read in (in_subquery, as_text):
            with pytest.raises(AccessDenied, match="customer_mismatch"):
                read("acme")
    assert kinds(store)[-1] == "access.failed:customer_mismatch"


def test_a_gate_covers_only_its_own_resource(app: App, gate: Gate, store: SqlStore) -> None:
    """Reading invoices inside a contacts access is an ungated read of billing.invoices."""

    @gate.protect("crm.contacts")
    def with_invoices(customer_id: str) -> object:
        with app.sessions() as session:
            contact = session.scalars(
                select(app.models.Contact).where(app.models.Contact.customer_id == customer_id)
            ).first()
            assert contact is not None
            return list(contact.invoices)

    with access_context(service()), pytest.raises(AccessDenied, match="ungated_read"):
        with_invoices("acme")
    (denial,) = refused(store)
    assert denial.resource == "billing.invoices"
    assert denial.attributes["table"] == "invoices"


def test_a_lazy_query_handed_back_by_a_gated_function_is_refused_when_it_runs(
    app: App, gate: Gate, store: SqlStore
) -> None:
    """The SQL runs after the access ended: it is an ungated read, not part of the access."""
    session = app.sessions()

    @gate.protect("crm.contacts")
    def later(customer_id: str) -> object:
        contacts = app.models.Contact
        return session.query(contacts).filter(contacts.customer_id == customer_id)

    with access_context(service()):
        query: Any = later("acme")
        with pytest.raises(AccessDenied, match="ungated_read"):
            query.all()
    session.close()
    assert kinds(store) == [
        "access.allowed:allowed",
        "access.completed:allowed",
        "access.denied:ungated_read",
    ]


def test_a_guard_opens_a_gated_read_at_the_query(app: App, gate: Gate, store: SqlStore) -> None:
    """gate.guard around one query: allowed, and its rows counted without record_count."""
    contacts = app.models.Contact
    with access_context(service()), app.sessions() as session:
        with gate.guard("crm.contacts", customer_id="beta"):
            rows = session.scalars(select(contacts).where(contacts.customer_id == "beta")).all()
        assert len(rows) == CONTACTS["beta"]
    assert accesses(store)[-1].event.record_count == CONTACTS["beta"]


def test_a_stream_fails_at_the_first_row_of_another_customer(
    app: App, gate: Gate, store: SqlStore
) -> None:
    """yield_per inside a gate: acme's rows come out, beta's first row stops the stream."""
    contacts = app.models.Contact
    seen: list[str] = []
    ordered = select(contacts).order_by(contacts.id).execution_options(yield_per=1)

    def read(session: Session) -> None:
        with gate.guard("crm.contacts", customer_id="acme"):
            stream = session.scalars(ordered)
            try:
                seen.extend(c.customer_id for c in stream)
            finally:
                stream.close()  # the driver's server-side cursor, left open by the error

    with access_context(service()), app.sessions() as session, pytest.raises(AccessDenied):
        read(session)
    assert seen == ["acme"] * CONTACTS["acme"]
    assert kinds(store)[-1] == "access.failed:customer_mismatch"


# -- declaring and installing -----------------------------------------------------------------


def test_bad_declarations_are_refused_with_what_to_fix(gate: Gate) -> None:
    """Unknown customer attribute or column, a non-model, a second owner, a bad mode."""
    models = make_models()
    data = CustomerData(gate)
    with pytest.raises(ConfigurationError, match="no mapped column attribute 'tenant'"):
        data.protect(models.Contact, resource="crm.contacts", customer="tenant")
    with pytest.raises(ConfigurationError, match="has no column 'tenant'"):
        data.protect(models.documents, resource="app.documents", customer="tenant")
    with pytest.raises(TypeError, match="neither a mapped class nor a Table"):
        data.protect(dict, resource="x")
    data.protect(models.documents, resource="app.documents")
    with pytest.raises(ConfigurationError, match=r"already protected as 'app\.documents'"):
        data.protect(models.documents, resource="other")
    with pytest.raises(ValueError, match="mode must be"):
        CustomerData(gate, mode="audit")  # type: ignore[arg-type]
    engine = create_engine("sqlite://")
    data.install(engine)
    with pytest.raises(ConfigurationError, match="already installed"):
        CustomerData(gate).install(engine)
    with pytest.raises(TypeError, match="cannot install on str"):
        data.install("sqlite://")  # type: ignore[arg-type]


def test_each_engine_judges_its_rows_by_its_own_declarations(
    gate: Gate, backend: Backend, tmp_path: Path, store: SqlStore
) -> None:
    """One mapped class, two guarded engines: each judges its rows by its own CustomerData.

    Two apps, or two tests, in one process may protect the same mapped class.
    """
    models, enforced = seeded(app_url(backend, tmp_path))
    observed = create_engine(f"sqlite:///{tmp_path / 'second.db'}")
    models.metadata.create_all(observed)
    with Session(observed) as session:
        seed(models, session)
    guarded(gate, models, "enforce").install(enforced)
    guarded(gate, models, "observe").install(observed)
    accounts = select(models.Account).options(joinedload(models.Account.contacts))
    try:
        with Session(observed) as session:  # row-level: contacts come in through a join
            assert len(session.execute(accounts).unique().scalars().all()) == 2
        with Session(enforced) as session, pytest.raises(AccessDenied, match="ungated_read"):
            session.execute(accounts).unique().scalars().all()
    finally:
        enforced.dispose()
        observed.dispose()
    assert kinds(store) == ["access.ungated:ungated_read", "access.denied:ungated_read"]


def test_installing_on_a_sessionmaker_guards_the_engines_it_uses(
    gate: Gate, backend: Backend, tmp_path: Path, store: SqlStore
) -> None:
    """Install on the session factory only: its engine is guarded from the first query."""
    models = make_models()
    engine = create_engine(app_url(backend, tmp_path))
    models.metadata.create_all(engine)
    with Session(engine) as session:
        seed(models, session)
    data = CustomerData(gate)
    data.protect(models.Contact, resource="crm.contacts")
    factory = sessionmaker()
    scoped = scoped_session(sessionmaker(bind=engine))
    data.install(factory)
    data.install(scoped)
    try:
        with factory(bind=engine) as session, pytest.raises(AccessDenied):
            session.execute(select(models.Contact)).all()
        with pytest.raises(AccessDenied):
            scoped.execute(select(models.Contact)).all()
    finally:
        scoped.remove()
        engine.dispose()
    assert len(refused(store)) == 2


# -- async sessions ---------------------------------------------------------------------------


def async_url(url: str) -> str:
    """The same database through the asyncio drivers (aiosqlite, psycopg's async mode)."""
    parsed = make_url(url)
    driver = (
        "sqlite+aiosqlite" if parsed.drivername.startswith("sqlite") else "postgresql+psycopg_async"
    )
    return parsed.set(drivername=driver).render_as_string(False)


async def _async_get(session: AsyncSession, models: Models) -> object:
    return await session.get(models.Contact, 1)


async def _async_selectin(session: AsyncSession, models: Models) -> object:
    query = select(models.Account).options(selectinload(models.Account.contacts))
    return (await session.scalars(query)).all()


async def _async_joined(session: AsyncSession, models: Models) -> object:
    query = select(models.Account).options(joinedload(models.Account.contacts))
    return (await session.execute(query)).unique().scalars().all()


async def _async_stream(session: AsyncSession, models: Models) -> object:
    return [c async for c in await session.stream_scalars(select(models.Contact))]


async def _async_core(session: AsyncSession, models: Models) -> object:
    return (await session.execute(select(models.documents))).all()


@pytest.mark.parametrize(
    "read",
    [_async_get, _async_selectin, _async_joined, _async_stream, _async_core],
    ids=lambda f: f.__name__.strip("_"),
)
def test_async_reads_outside_a_gate_are_refused(
    gate: Gate, backend: Backend, tmp_path: Path, store: SqlStore, read: Any
) -> None:
    """AsyncSession.get, selectin and joined loaders, stream_scalars, Core: ungated_read."""
    url = app_url(backend, tmp_path)
    models, engine = seeded(url)
    engine.dispose()
    aengine = create_async_engine(async_url(url))
    guarded(gate, models).install(async_sessionmaker(aengine))

    async def scenario() -> None:
        try:
            async with AsyncSession(aengine) as session:
                with pytest.raises(AccessDenied, match="ungated_read"):
                    await read(session, models)
        finally:
            await aengine.dispose()

    asyncio.run(scenario())
    assert kinds(store) == ["access.denied:ungated_read"]


def test_async_sessions_are_gated_the_same_way(
    gate: Gate, backend: Backend, tmp_path: Path, store: SqlStore
) -> None:
    """AsyncSession: ungated reads refused, gated ones checked row by row and counted."""
    url = app_url(backend, tmp_path)
    models, engine = seeded(url)
    engine.dispose()
    contacts = models.Contact
    data = guarded(gate, models)
    aengine = create_async_engine(async_url(url))
    data.install(aengine)

    @gate.protect("crm.contacts")
    async def mine(customer_id: str, *, everyone: bool = False) -> int:
        query = select(contacts)
        if not everyone:
            query = query.where(contacts.customer_id == customer_id)
        async with AsyncSession(aengine) as session:
            return len((await session.scalars(query)).all())

    async def scenario() -> None:
        async with AsyncSession(aengine) as session:
            with pytest.raises(AccessDenied, match="ungated_read"):
                await session.execute(select(contacts))
        with access_context(service()):
            assert await mine("acme") == CONTACTS["acme"]
            with pytest.raises(AccessDenied, match="customer_mismatch"):
                await mine("acme", everyone=True)
        await aengine.dispose()

    asyncio.run(scenario())
    assert kinds(store) == [
        "access.denied:ungated_read",
        "access.allowed:allowed",
        "access.completed:allowed",
        "access.allowed:allowed",
        "access.failed:customer_mismatch",
    ]
    assert accesses(store)[2].event.record_count == CONTACTS["acme"]
    # The refused query's caller is found across SQLAlchemy's greenlet.
    assert str(accesses(store)[0].event.attributes["function"]).endswith("scenario")


# -- SQL text: what can be detected ----------------------------------------------------------

_TABLES = {"contacts": ProtectedTable("contacts", "crm.contacts", "customer_id", ())}


@given(
    st.sampled_from(
        [
            "SELECT * FROM {}",
            "select body from {} where 1=1",
            "WITH x AS (SELECT * FROM {}) SELECT * FROM x",
            "TABLE {}",
            "(select 1 from {})",
            ";select * from {}",
            "update {} set body = body returning body",
            "insert into archive select * from {}",
            "copy {} to stdout",
        ]
    ),
    st.sampled_from(["", "  ", "\n", "-- a comment\n", "/* note */ ", "-- x\r"]),
    st.sampled_from(["contacts", "CONTACTS", '"contacts"', "main.contacts", "[contacts]"]),
)
def test_sql_text_naming_a_protected_table_is_seen_however_written(
    shape: str, lead: str, name: str
) -> None:
    """Case, quoting, a schema prefix, comments, parentheses and RETURNING hide nothing."""
    sql = lead + shape.format(name)
    assert text_reads(sql)
    assert [t.key for t in named_in_text(sql, _TABLES)] == ["contacts"]


@given(st.text(max_size=200))
def test_any_sql_text_is_classified_without_error(sql: str) -> None:
    """Arbitrary text never raises; a table is only reported when its name is a word in it."""
    found = named_in_text(sql, _TABLES)
    assert text_reads(sql) in (True, False)
    assert found == [] or "contacts" in sql.lower()


def test_writes_and_other_words_are_not_reads() -> None:
    """INSERT/UPDATE/DELETE are not reads; a longer word containing the name is not the name."""
    assert not text_reads("INSERT INTO contacts VALUES (1)")
    assert not text_reads("  update contacts set x = 1")
    assert text_reads("update contacts set x = 1 returning email")
    assert text_reads("insert into archive select * from contacts")
    assert named_in_text("select * from contacts_archive", _TABLES) == []


# -- ways around the gate found in review: each is refused or kept to the customer -----------


def _lower_table(app: App, s: Session) -> object:
    documents = table("documents", column("body"), column("customer_id"))
    return s.execute(select(documents)).all()


def _text_from(app: App, s: Session) -> object:
    return s.execute(select(literal_column("body")).select_from(text("documents"))).all()


def _textual_select(app: App, s: Session) -> object:
    return s.execute(text("SELECT body FROM documents").columns(column("body"))).all()


def _other_schema_or_case(app: App, s: Session) -> object:
    schema = "main" if app.engine.dialect.name == "sqlite" else None
    other = Table("DOCUMENTS", MetaData(), Column("body", String), schema=schema)
    return s.execute(select(other)).all()


def _update_returning(app: App, s: Session) -> object:
    documents = app.models.documents
    update = documents.update().values(body=documents.c.body).returning(documents.c.body)
    return s.execute(update).all()


def _insert_from_select(app: App, s: Session) -> object:
    accounts, documents = app.models.Account.__table__, app.models.documents
    copy = accounts.insert().from_select(["id"], select(documents.c.body))
    return s.execute(copy).all()


def _driver_sql_variant(sql: str) -> Any:
    def read(app: App, s: Session) -> object:
        return s.connection().exec_driver_sql(sql).all()

    read.__name__ = f"_driver_sql_{sql[:6].strip()}"
    return read


AROUND_THE_GATE = [
    _lower_table,
    _text_from,
    _textual_select,
    _other_schema_or_case,
    _update_returning,
    _insert_from_select,
    _driver_sql_variant(";select body from documents"),
    _driver_sql_variant("(select body from documents)"),
    _driver_sql_variant("-- x\rselect body from documents"),
    _driver_sql_variant('select body from U&"\\0064ocuments"'),
]


@pytest.mark.parametrize("read", AROUND_THE_GATE, ids=lambda f: f.__name__.strip("_"))
def test_reads_around_the_gate_are_refused(app: App, store: SqlStore, read: Any) -> None:
    """Lower-case table(), text FROMs, other schemas or cases, reading DML, driver SQL: refused.

    Each is refused outside a gate, and the denial recorded.
    """
    with app.sessions() as session, pytest.raises(AccessDenied, match="ungated_read"):
        read(app, session)
    assert len(refused(store)) >= 1


def test_reads_inside_a_gate_cannot_reach_other_customers_rows(
    app: App, gate: Gate, store: SqlStore
) -> None:
    """Copies of the table beside a checked or filtered one, replaced bound values: withheld.

    An aliased copy beside the entity, a self-join, a scalar subquery over the table, a
    bound value replaced when executed: none of beta's rows are handed out.
    """
    contacts, documents = app.models.Contact, app.models.documents
    other_contact = aliased(contacts)
    other_docs = documents.alias("d2")
    attempts = {
        "entity and an alias's column": lambda s: s.execute(
            select(contacts, other_contact.email)
            .join(other_contact, true())
            .where(contacts.customer_id == "acme")
        ).all(),
        "self-join filtered on one side": lambda s: s.execute(
            select(documents.c.body, other_docs.c.body)
            .select_from(documents.join(other_docs, true()))
            .where(documents.c.customer_id == "acme")
        ).all(),
        "scalar subquery in the columns": lambda s: s.execute(
            select(
                documents.c.body,
                select(func.count()).select_from(other_docs).scalar_subquery(),
            ).where(documents.c.customer_id == "acme")
        ).all(),
        "bound value replaced": lambda s: s.execute(
            select(documents.c.body).where(
                documents.c.customer_id == bindparam("cid", value="acme")
            ),
            {"cid": "beta"},
        ).all(),
    }

    @gate.protect("crm.contacts")
    def as_contacts(customer_id: str, query: Any) -> object:
        with app.sessions() as session:
            return query(session)

    @gate.protect("app.documents")
    def as_documents(customer_id: str, query: Any) -> object:
        with app.sessions() as session:
            return query(session)

    with access_context(service()):
        for name, query in attempts.items():
            run = as_contacts if name.startswith("entity") else as_documents
            with pytest.raises(AccessDenied, match="customer_mismatch"):
                run("acme", query)
            assert kinds(store)[-1] == "access.failed:customer_mismatch", name


def test_a_result_handed_back_unread_is_refused_when_read(
    app: App, gate: Gate, store: SqlStore
) -> None:
    """Rows of a Result iterated after the access ended are late loads: refused, recorded."""
    contacts = app.models.Contact
    session = app.sessions()

    @gate.protect("crm.contacts")
    def later(customer_id: str) -> Any:
        return session.scalars(select(contacts))  # no list(): the rows load in the caller

    try:
        with access_context(service()):
            result = later("acme")
            with pytest.raises(AccessDenied, match="ungated_read"):
                result.all()
    finally:
        session.close()
    assert kinds(store)[-1] == "access.denied:ungated_read"


def test_a_session_on_an_option_engine_is_guarded_too(
    app: App, gate: Gate, store: SqlStore
) -> None:
    """engine.execution_options(...) shares the guard: rows are still checked one by one."""
    option_engine = app.engine.execution_options(compiled_cache=None)

    @gate.protect("crm.contacts")
    def everyone(customer_id: str) -> list[Any]:
        with Session(option_engine) as session:
            return list(session.scalars(select(app.models.Contact)))

    with access_context(service()), pytest.raises(AccessDenied, match="customer_mismatch"):
        everyone("acme")


def test_a_task_outliving_its_access_is_not_inside_it(
    app: App, gate: Gate, store: SqlStore
) -> None:
    """A task made inside a gated coroutine keeps its context, not the finished access."""
    contacts = app.models.Contact
    tasks: list[asyncio.Task[Any]] = []

    def read() -> object:
        with app.sessions() as session:
            query = select(contacts).where(contacts.customer_id == "acme")
            return session.scalars(query).all()

    @gate.protect("crm.contacts")
    async def spawn(customer_id: str) -> None:
        tasks.append(asyncio.get_running_loop().create_task(_later(read)))

    async def scenario() -> None:
        with access_context(service()):
            await spawn("acme")
            with pytest.raises(AccessDenied, match="ungated_read"):
                await tasks[0]

    asyncio.run(scenario())


async def _later(read: Any) -> object:
    await asyncio.sleep(0)
    return read()
