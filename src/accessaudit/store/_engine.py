"""Engines with bounded waits and the transaction settings the chain's ordering relies on.

SQLite: WAL with ``synchronous=FULL`` (NORMAL may lose a committed record on power loss),
a busy timeout, and ``BEGIN IMMEDIATE`` for appends so two writers can never both read the
same chain tail. pysqlite's own implicit transactions are switched off so that the BEGIN we
emit is the one that runs (the SQLAlchemy "pysqlite serializable" recipe). A log that must
exist is opened with SQLite's ``mode=rw``, so a file that is missing (a typo, or moved away
while the application runs) is an error, never a new empty log.

PostgreSQL (psycopg 3): READ COMMITTED, a connect timeout, and a ping at checkout, bounded by
the operation's deadline, so a connection the server killed or stopped answering on is
replaced instead of failing (or hanging) a caller. SQLAlchemy's own ``pool_pre_ping`` is not
used because its ping has no client-side bound. Connections are named ``accessaudit`` in
``pg_stat_activity`` unless the URL sets its own ``application_name``.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, InvalidatePoolError

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


def make_engine(url: URL, timeout: float, *, must_exist: bool = True) -> Engine:
    """An engine for ``url`` whose every wait (connect, lock, pool) is bounded by ``timeout``.

    ``must_exist`` (SQLite): open the file only if it exists; never create it.
    """
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, timeout, must_exist=must_exist)
    # connect_args win over the URL's query, so the default name is only set when the URL
    # has none: an operator (or a test) can tell its own connections apart.
    named = {} if "application_name" in url.query else {"application_name": "accessaudit"}
    engine = create_engine(
        url,
        isolation_level="READ COMMITTED",
        pool_timeout=timeout,
        pool_size=8,
        max_overflow=24,
        connect_args=named,
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


def file_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path`` now, or None if there is none."""
    try:
        status = os.stat(path)  # noqa: PTH116 - not Path.stat: runs on every checkout and append
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _sqlite_engine(url: URL, timeout: float, *, must_exist: bool) -> Engine:
    path = str(sqlite_path(url).absolute())  # fixed now: a later chdir changes nothing
    engine = create_engine(
        url,
        pool_timeout=timeout,
        pool_size=8,
        max_overflow=24,
        connect_args={"timeout": timeout, "check_same_thread": False},
    )

    if "uri" in url.query:  # the URL is a SQLite URI filename of the caller's own
        return _with_transactions(engine, timeout)
    # Checking that the file exists before connecting would race with its removal;
    # mode=rw makes SQLite itself refuse to create it (SQLITE_CANTOPEN instead).
    opened = f"file:{quote(path)}?mode={'rw' if must_exist else 'rwc'}"

    @event.listens_for(engine, "do_connect")
    def _open(_dialect: object, _record: object, cargs: list[Any], params: Any) -> None:
        cargs[0] = opened  # the absolute path: the file that the identity check stats
        params["uri"] = True

    @event.listens_for(engine, "connect")
    def _identify(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["accessaudit_file"] = file_identity(path)

    @event.listens_for(engine, "checkout")
    def _same_file(_dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: object) -> None:
        # A pooled connection keeps the file it opened. If the log was moved, deleted or
        # replaced since, it would write where nobody looks (or into a deleted inode): drop
        # every pooled connection and reopen by name, which fails if the file is gone. One
        # stat per operation; a move between this check and the write is not caught.
        if record.info.get("accessaudit_file") != file_identity(path):
            raise InvalidatePoolError(f"{path} is no longer the file this connection opened")

    return _with_transactions(engine, timeout)


def _with_transactions(engine: Engine, timeout: float) -> Engine:
    """``engine`` with the SQLite settings and the BEGIN the chain's ordering relies on."""

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


#: Between attempts to switch a SQLite file to WAL while another connection is switching it.
_WAL_RETRY_S: Final = 0.01


def switch_to_wal(driver: Any, timeout: float) -> str:
    """Put a SQLite file in WAL mode; the journal mode it is in afterwards.

    Changing the journal mode needs the file to itself. When several connections try at
    once (several ``accessaudit init`` on a new file), SQLite refuses some of them with
    "database is locked" at once, without waiting in its busy handler (waiting could
    deadlock them), so the switch is tried again until ``timeout`` runs out.
    """
    deadline = time.monotonic() + remaining(timeout)
    while True:
        try:
            (mode,) = driver.execute("PRAGMA journal_mode = WAL").fetchone()
            return str(mode)
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() + _WAL_RETRY_S >= deadline:
                raise
            time.sleep(_WAL_RETRY_S)
