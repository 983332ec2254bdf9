"""Watching (and disturbing) the statements a store's writer sends to the real database.

The writer talks to the driver directly (see ``accessaudit.store._writer``), so SQLAlchemy's
engine events do not see its statements. ``on_statement`` puts a thin wrapper around the
writer's driver connection: every statement still goes to the real database; the hook runs
first, and may count it, hold it up, or break the connection the way a server would.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from accessaudit import SqlStore


class _Cursor:
    def __init__(self, real: Any, connection: Any, hook: Callable[[str, Any], None]) -> None:
        self._real, self._connection, self._hook = real, connection, hook

    def executemany(self, statement: str, *args: Any, **kwargs: Any) -> Any:
        self._hook(statement, self._connection)
        return self._real.executemany(statement, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _Connection:
    def __init__(self, real: Any, hook: Callable[[str, Any], None]) -> None:
        self._real, self._hook = real, hook

    def execute(self, statement: str, *args: Any, **kwargs: Any) -> Any:
        self._hook(statement, self._real)
        return self._real.execute(statement, *args, **kwargs)

    def executemany(self, statement: str, *args: Any, **kwargs: Any) -> Any:
        self._hook(statement, self._real)
        return self._real.executemany(statement, *args, **kwargs)

    def cursor(self) -> _Cursor:
        return _Cursor(self._real.cursor(), self._real, self._hook)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@contextmanager
def on_statement(store: SqlStore, hook: Callable[[str, Any], None]) -> Iterator[None]:
    """Run ``hook`` before each statement the store's writer sends, inside the block.

    Also on a connection the writer opens meanwhile (after one broke, say).
    """
    writer = store._writer
    opened = writer._driver
    with writer._lock:
        writer._driver = lambda: _Connection(opened(), hook)  # type: ignore[method-assign]
    try:
        yield
    finally:
        with writer._lock:
            writer._driver = opened  # type: ignore[method-assign]


def writer_backend_pid(store: SqlStore) -> int:
    """PostgreSQL: the server process of the store's writing connection (opened if need be)."""
    with store._writer._lock:
        return int(store._writer._driver().info.backend_pid)


@contextmanager
def commits(store: SqlStore, before: Callable[[int], None] | None = None) -> Iterator[list[int]]:
    """Count the writer's COMMITs; ``before(n)`` runs before the n-th (1-based) is sent."""
    counted: list[int] = []

    def hook(statement: str, _driver: Any) -> None:
        if statement == "COMMIT":
            counted.append(1)
            if before is not None:
                before(len(counted))

    with on_statement(store, hook):
        yield counted


def driver_error(store: SqlStore, message: str) -> Exception:
    """An OperationalError of the store's driver, as a failing database raises it."""
    error: Exception = store._engine.dialect.loaded_dbapi.OperationalError(message)
    return error
