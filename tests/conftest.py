"""Fixtures: every store test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``ACCESSAUDIT_TEST_POSTGRES_URL`` (default: the local server). Each
test gets a fresh schema, selected through the connection's search_path, and drops it after.
Outside CI an unreachable server skips the PostgreSQL tests with the reason; with CI=true it
fails them, so a CI run can never pass without having exercised PostgreSQL.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import structlog
from hypothesis import HealthCheck, settings
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from accessaudit import Gate, MacKey, Policy, SqlStore
from accessaudit.gate import context as context_module
from tests.gatekit import EXAMPLE_POLICY, FakeClock

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

PG_URL = os.environ.get(
    "ACCESSAUDIT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() == "true"

# No wall-clock bounds in tests, Hypothesis' per-example deadline included: timing belongs in
# scripts/bench*. ACCESSAUDIT_HYPOTHESIS_EXAMPLES raises the example count for deeper runs.
#
# On a developer's machine each run draws new examples (and replays any failure saved in
# .hypothesis/), so repeated runs keep exploring. In CI (CI=true) every run draws the same
# examples: seeded from each test's own source (derandomize), with no example database, so two
# runs of one commit exercise the same branches, report the same coverage, and a failure
# recurs on a re-run (its reproducing blob is printed). Both profiles start from Hypothesis'
# "default", not from its own "ci" profile (which it loads whenever any CI variable is set, even
# CI=false): the choice is made here, by the same CI=true test as for PostgreSQL.
settings.register_profile(
    "accessaudit",
    parent=settings.get_profile("default"),
    deadline=None,
    max_examples=int(os.environ.get("ACCESSAUDIT_HYPOTHESIS_EXAMPLES", "100")),
)
settings.register_profile(
    "accessaudit-ci",
    parent=settings.get_profile("accessaudit"),
    derandomize=True,
    print_blob=True,
    # As in Hypothesis' "ci" profile: a loaded CI machine must not fail a test for being slow.
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("accessaudit-ci" if IN_CI else "accessaudit")


def _pg_problem() -> str | None:
    engine = create_engine(
        make_url(PG_URL).set(drivername="postgresql+psycopg"),
        connect_args={"connect_timeout": 3},
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:  # noqa: BLE001 - any failure means "not reachable"
        return f"PostgreSQL at {PG_URL} is not reachable: {str(e).splitlines()[0]}"
    finally:
        engine.dispose()
    return None


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The server URL, or a skip (fail under CI) when it cannot be reached."""
    problem = _pg_problem()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"{problem}; CI must run the PostgreSQL tests")
        pytest.skip(f"{problem}; set ACCESSAUDIT_TEST_POSTGRES_URL to run them")
    return PG_URL


@dataclass
class Backend:
    """A database for one test: the URL a store uses, and an owner connection for raw SQL."""

    name: str
    url: str
    owner: Engine

    def sql(self, statement: str, **params: object) -> list[tuple[object, ...]]:
        """Run raw SQL as the database owner, committed; return any rows."""
        with self.owner.begin() as conn:
            result = conn.execute(text(statement), params)
            return [tuple(r) for r in result] if result.returns_rows else []

    def drop_guards(self) -> None:
        """Remove the append-only triggers, as an owner bent on tampering could."""
        if self.name == "sqlite":
            self.sql("DROP TRIGGER IF EXISTS accessaudit_events_no_update")
            self.sql("DROP TRIGGER IF EXISTS accessaudit_events_no_delete")
        else:
            self.sql("ALTER TABLE accessaudit_events DISABLE TRIGGER ALL")


def _schema_url(base: str, schema: str, role: str | None = None) -> str:
    options = f"-csearch_path={schema}" + (f" -crole={role}" if role else "")
    return make_url(base).update_query_dict({"options": options}).render_as_string(False)


@pytest.fixture
def pg_backend(postgres_url: str) -> Iterator[Backend]:
    """A fresh PostgreSQL schema for one test."""
    schema = f"aa_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        make_url(postgres_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = _schema_url(postgres_url, schema)
    owner = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    try:
        yield Backend("postgresql", url, owner)
    finally:
        owner.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> Iterator[Backend]:
    """A SQLite file for one test."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    owner = create_engine(url)
    yield Backend("sqlite", url, owner)
    owner.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each test using this runs once per database."""
    fixture = "sqlite_backend" if request.param == "sqlite" else "pg_backend"
    return request.getfixturevalue(fixture)  # type: ignore[no-any-return]


@pytest.fixture
def key() -> MacKey:
    """A fresh random HMAC key."""
    return MacKey(os.urandom(32))


@pytest.fixture
def store(backend: Backend, key: MacKey) -> Iterator[SqlStore]:
    """An initialised store on the test's database."""
    with SqlStore(backend.url, key=key, must_exist=False) as audit_store:
        audit_store.create_schema()
        yield audit_store


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Each test starts from structlog's defaults (the CLI configures it when it runs)."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _no_access_context() -> Iterator[None]:
    """Each test starts without an access context, whatever an earlier one left behind."""
    token = context_module._current.set(None)
    yield
    context_module._current.reset(token)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory with no key or database in the environment."""
    monkeypatch.chdir(tmp_path)
    for name in ("ACCESSAUDIT_DB", "ACCESSAUDIT_HMAC_KEY", "ACCESSAUDIT_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def clock() -> FakeClock:
    """A settable clock for the gate and its evidence (no sleeping in tests)."""
    return FakeClock()


@pytest.fixture
def gate(store: SqlStore, clock: FakeClock) -> Gate:
    """A gate over the test's store with the example policy."""
    return Gate(store, Policy.load(EXAMPLE_POLICY), service="test-app", clock=clock)
