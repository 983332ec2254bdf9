"""Engines with bounded waits and the transaction settings the chain's ordering relies on.

SQLite: WAL with ``synchronous=FULL`` (NORMAL may lose a committed record on power loss),
a busy timeout, and ``BEGIN IMMEDIATE`` for appends so two writers can never both read the
same chain tail. pysqlite's own implicit transactions are switched off so that the BEGIN we
emit is the one that runs (the SQLAlchemy "pysqlite serializable" recipe).

PostgreSQL (psycopg 3): READ COMMITTED, a connect timeout, and a ping at checkout, bounded by
the operation's deadline, so a connection the server killed or stopped answering on is
replaced instead of failing (or hanging) a caller. SQLAlchemy's own ``pool_pre_ping`` is not
used because its ping has no client-side bound.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError

from accessaudit.exceptions import ConfigurationError
from accessaudit.store._deadline import remaining, socket_deadline

if TYPE_CHECKING:
    from sqlalchemy.pool import ConnectionPoolEntry

DEFAULT_URL: Final = "sqlite:///accessaudit.db"
WRITE_OPTION: Final = "accessaudit_write"


def parse_url(url: str) -> URL:
    """Validate a database URL and pin the driver; raise ``ConfigurationError`` if unusable."""
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018 - a port that is not a number only fails when read
    except (ArgumentError, ValueError) as e:
        # The URL itself is not echoed: it may hold a password.
        raise ConfigurationError(
            f"the database URL is not valid ({e}); use e.g. {DEFAULT_URL} or "
            "postgresql://user@host:5432/dbname"
        ) from e
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ConfigurationError(
                "an in-memory SQLite database would lose the audit log; name a file, "
                f"e.g. {DEFAULT_URL}"
            )
        return parsed.set(drivername="sqlite+pysqlite")
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    raise ConfigurationError(
        f"unsupported database {backend!r} in {parsed.render_as_string(hide_password=True)}; "
        "accessaudit supports sqlite and postgresql"
    )


def sqlite_path(url: URL) -> Path:
    """The file a SQLite URL names."""
    return Path(url.database or "")


def make_engine(url: URL, timeout: float) -> Engine:
    """An engine for ``url`` whose every wait (connect, lock, pool) is bounded by ``timeout``."""
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, timeout)
    engine = create_engine(
        url,
        isolation_level="READ COMMITTED",
        pool_timeout=timeout,
        pool_size=8,
        max_overflow=24,
        connect_args={"application_name": "accessaudit"},
    )

    @event.listens_for(engine, "do_connect")
    def _connect_budget(_dialect: object, _record: object, _args: object, params: Any) -> None:
        # Connecting spends from the operation's budget too. libpq's connect_timeout is whole
        # seconds, and values below 2 mean 2.
        params["connect_timeout"] = max(2, math.ceil(remaining(timeout)))

    @event.listens_for(engine, "connect")
    def _mark_new(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["accessaudit_new"] = True

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: object) -> None:
        if record.info.pop("accessaudit_new", False):
            return  # just connected: nothing to check
        try:
            # A healthy ping takes a millisecond; a quarter of the budget leaves the rest for
            # a fresh connection if this one is dead.
            with socket_deadline(dbapi_connection.pgconn.socket, remaining(timeout) / 4):
                engine.dialect.do_ping(dbapi_connection)
        except Exception as e:
            # The pool discards this connection and checks out another (a fresh one if need be).
            raise DisconnectionError("pooled connection did not answer a ping") from e

    return engine


def _sqlite_engine(url: URL, timeout: float) -> Engine:
    engine = create_engine(
        url,
        pool_timeout=timeout,
        pool_size=8,
        max_overflow=24,
        connect_args={"timeout": timeout, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: object) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (see below)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            cursor.execute("PRAGMA synchronous = FULL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # IMMEDIATE takes the write lock before we read the chain tail, so two processes
        # cannot both extend the same tail; readers use a deferred (snapshot) transaction.
        # Lock waits get what is left of the operation's budget, not a fresh timeout.
        immediate = connection.get_execution_options().get(WRITE_OPTION, False)
        busy_ms = max(1, int(remaining(timeout) * 1000))
        connection.connection.driver_connection.execute(  # type: ignore[union-attr]
            f"PRAGMA busy_timeout = {busy_ms}"
        )
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
