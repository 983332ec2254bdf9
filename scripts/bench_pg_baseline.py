"""Baseline F for scripts/bench.py: raw psycopg, one INSERT + COMMIT per call, on PostgreSQL.

What a team would write for a durable audit row per read on a shared PostgreSQL: each
thread its own connection, ``synchronous_commit = on`` (so COMMIT waits for the WAL
flush, as the gate's decision record does), one row per call before the body runs. Run
from the same processes x threads as the gated PostgreSQL legs (see ``bench_gated``).
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import psycopg
from bench_threads import CUSTOMER, read_contacts
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from bench_threads import Call, Worker

P = ParamSpec("P")
R = TypeVar("R")
TABLE = (
    "CREATE TABLE IF NOT EXISTS f_audit_log (id BIGSERIAL PRIMARY KEY, "
    "occurred_at TIMESTAMPTZ NOT NULL, actor TEXT NOT NULL, purpose TEXT NOT NULL, "
    "resource TEXT NOT NULL, customer_id TEXT NOT NULL, function TEXT NOT NULL)"
)
INSERT = (
    "INSERT INTO f_audit_log (occurred_at, actor, purpose, resource, customer_id, function) "
    "VALUES (%s, %s, %s, %s, %s, %s)"
)


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL as libpq takes it (no driver name; options kept)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_table(url: str) -> None:
    """The baseline's table, in the schema the URL's search_path selects."""
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute(TABLE)


def psycopg_audited(
    connection: Callable[[], psycopg.Connection], resource: str
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Baseline F: INSERT + COMMIT on this thread's connection, then run the function."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            conn = connection()
            customer = kwargs.get("customer_id", args[0] if args else None)
            with conn.transaction():
                conn.execute(
                    INSERT,
                    (
                        datetime.now(UTC),
                        "api",
                        "service_delivery",
                        resource,
                        str(customer),
                        function.__qualname__,
                    ),
                )
            return function(*args, **kwargs)

        return wrapper

    return decorate


def baseline_worker(url: str) -> Worker:
    """Each thread's setup: its own connection, synchronous_commit on, autocommit off."""
    dsn = libpq_url(url)

    @contextmanager
    def worker() -> Iterator[Call]:
        conn = psycopg.connect(dsn, autocommit=True)
        conn.execute("SET synchronous_commit = on")
        read = psycopg_audited(lambda: conn, "crm.contacts")(read_contacts)
        try:
            yield lambda: read(CUSTOMER)
        finally:
            conn.close()

    return worker
