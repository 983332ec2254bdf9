"""The hand-written audit decorators scripts/bench.py measures the gate against.

Each wraps the same ``read_contacts`` and records one row (or line) per call, before the
body runs, with what a team would log: when, who, why, what, for which customer. None of
them decides anything or chains anything.

- A: SQLAlchemy ORM, a declarative model, ``Session.add`` + ``commit`` per call, into a
  SQLite file with SQLAlchemy's and SQLite's defaults (rollback journal): what a team
  would write without accessaudit. A 30 s busy timeout so concurrent threads wait, not fail.
- B: stdlib ``logging``, one JSON line per call through a ``FileHandler``: not durable
  (flushed, never fsynced), no gate.
- C: raw ``sqlite3``, one INSERT + COMMIT per call, ``journal_mode=WAL`` and
  ``synchronous=FULL``, each thread its own connection: the floor for a durable record.
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from bench_threads import CUSTOMER, read_contacts, run_reps, summarise
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from bench_threads import Call
    from sqlalchemy import Engine

P = ParamSpec("P")
R = TypeVar("R")
BUSY_TIMEOUT_S = 30.0
RESOURCE = "crm.contacts"


def _customer(args: tuple[object, ...], kwargs: dict[str, object]) -> str:
    return str(kwargs.get("customer_id", args[0] if args else ""))


# -- A: SQLAlchemy ORM ---------------------------------------------------------------------


class _Base(DeclarativeBase):
    pass


class AuditRow(_Base):
    """One access, as a team's own audit table would hold it."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    occurred_at: Mapped[datetime]
    actor: Mapped[str]
    purpose: Mapped[str]
    resource: Mapped[str]
    customer_id: Mapped[str]
    function: Mapped[str]


def orm_audited(engine: Engine, resource: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Baseline A: commit an ``AuditRow`` through the ORM, then run the function."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with Session(engine) as session:
                session.add(
                    AuditRow(
                        occurred_at=datetime.now(UTC),
                        actor="api",
                        purpose="service_delivery",
                        resource=resource,
                        customer_id=_customer(args, kwargs),
                        function=function.__qualname__,
                    )
                )
                session.commit()
            return function(*args, **kwargs)

        return wrapper

    return decorate


def _measure(read: Callable[[str], object], reps: int, threads: int, calls: int) -> dict[str, Any]:
    """Reps of ``read(CUSTOMER)`` from ``threads`` threads (a baseline needs no context)."""

    @contextmanager
    def worker() -> Iterator[Call]:
        yield lambda: read(CUSTOMER)

    return summarise(run_reps(reps, threads, calls, worker))


def leg_orm(path: Path, reps: int, threads: int, calls: int) -> dict[str, Any]:
    """Baseline A at ``threads`` threads, on a fresh SQLite file."""
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": BUSY_TIMEOUT_S})
    _Base.metadata.create_all(engine)
    read = orm_audited(engine, RESOURCE)(read_contacts)
    try:
        return _measure(read, reps, threads, calls)
    finally:
        engine.dispose()


# -- B: JSON lines through logging ---------------------------------------------------------


def json_logged(
    logger: logging.Logger, resource: str
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Baseline B: log one JSON line, then run the function."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            line = {
                "ts": time.time(),
                "event": "access",
                "actor": "api",
                "purpose": "service_delivery",
                "resource": resource,
                "customer_id": _customer(args, kwargs),
                "function": function.__qualname__,
            }
            logger.info(json.dumps(line))
            return function(*args, **kwargs)

        return wrapper

    return decorate


def leg_logging(path: Path, reps: int, threads: int, calls: int) -> dict[str, Any]:
    """Baseline B at ``threads`` threads, into a fresh file."""
    logger = logging.getLogger(f"bench.baseline_b.{uuid.uuid4().hex}")
    logger.propagate = False  # only our file, whatever the root logger has
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(path)
    logger.addHandler(handler)
    read = json_logged(logger, RESOURCE)(read_contacts)
    try:
        return _measure(read, reps, threads, calls)
    finally:
        logger.removeHandler(handler)
        handler.close()


# -- C: raw sqlite3, durable -----------------------------------------------------------------

_C_TABLE = (
    "CREATE TABLE audit_log (id INTEGER PRIMARY KEY, occurred_at TEXT NOT NULL, "
    "actor TEXT NOT NULL, purpose TEXT NOT NULL, resource TEXT NOT NULL, "
    "customer_id TEXT NOT NULL, function TEXT NOT NULL)"
)
_C_INSERT = (
    "INSERT INTO audit_log (occurred_at, actor, purpose, resource, customer_id, function) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def _connect_c(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
    conn.execute("PRAGMA synchronous = FULL")  # per connection: every COMMIT is fsynced
    return conn


def sqlite_audited(
    connection: Callable[[], sqlite3.Connection], resource: str
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Baseline C: INSERT + COMMIT on this thread's connection, then run the function."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            conn = connection()
            with conn:  # commits, or rolls back on error
                conn.execute(
                    _C_INSERT,
                    (
                        datetime.now(UTC).isoformat(),
                        "api",
                        "service_delivery",
                        resource,
                        _customer(args, kwargs),
                        function.__qualname__,
                    ),
                )
            return function(*args, **kwargs)

        return wrapper

    return decorate


def leg_sqlite3(path: Path, reps: int, threads: int, calls: int) -> dict[str, Any]:
    """Baseline C at ``threads`` threads, on a fresh WAL file."""
    with _connect_c(path) as setup:
        setup.execute("PRAGMA journal_mode = WAL")  # a property of the file, set once
        setup.execute(_C_TABLE)
    setup.close()
    local = threading.local()
    read = sqlite_audited(lambda: local.conn, RESOURCE)(read_contacts)

    @contextmanager
    def worker() -> Iterator[Call]:
        local.conn = _connect_c(path)  # each thread its own connection
        try:
            yield lambda: read(CUSTOMER)
        finally:
            local.conn.close()

    return summarise(run_reps(reps, threads, calls, worker))
