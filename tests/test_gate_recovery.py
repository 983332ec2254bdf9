"""Faults under concurrent gated calls, and recovery once they clear.

For each fault, eight threads call a gated read at once (so their records would share group
commits): every caller gets ``AuditUnavailable`` naming the timeout, no body runs, nothing is
stored. Then the fault clears, the same gate serves eight more calls, and the chain goes on
from where it stopped: no gap, nothing half-written, verify clean.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url

from accessaudit import (
    AuditUnavailable,
    Gate,
    MacKey,
    Policy,
    SqlStore,
    StoreUnavailable,
    access_context,
)
from accessaudit import verify_store as verify
from accessaudit.review.recovery import recover_chain
from accessaudit.store._append import lock_chain
from tests import tampering
from tests.gatekit import EXAMPLE_POLICY, Desk, service
from tests.strategies import make_event

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.conftest import Backend

POLICY = Policy.load(EXAMPLE_POLICY)
CALLERS = 8
TIMEOUT = 1.0


def _call_together(desk: Desk) -> list[object]:
    """Eight gated calls at once; what each returned or raised."""
    start = threading.Barrier(CALLERS)

    def call(_: int) -> object:
        start.wait()
        with access_context(service()):
            try:
                return desk.invoices("acme", limit=2)
            except AuditUnavailable as e:
                return e

    with ThreadPoolExecutor(CALLERS) as pool:
        return list(pool.map(call, range(CALLERS)))


def _fails_closed_then_recovers(
    store: SqlStore, key: MacKey, start_fault: Callable[[], None], clear_fault: Callable[[], None]
) -> None:
    desk = Desk(Gate(store, POLICY, timeout=TIMEOUT))
    if store.count() == 0:
        with access_context(service()):
            desk.invoices("acme")  # the log has a tail to continue from
    before = store.count()
    ran_before = len(desk.ran)
    start_fault()
    try:
        outcomes = _call_together(desk)
    finally:
        clear_fault()
    assert all(isinstance(o, AuditUnavailable) for o in outcomes), outcomes
    assert all(f"within {TIMEOUT:g}s" in str(o) for o in outcomes)
    assert len(desk.ran) == ran_before  # no body ran
    assert store.count() == before  # nothing stored, not even part of a group
    outcomes = _call_together(desk)
    assert outcomes == [(0, 1)] * CALLERS
    rows = [dict(r) for r in store.rows()]
    assert [r["seq"] for r in rows] == list(range(1, before + 2 * CALLERS + 1))
    report = verify(store, key)
    assert report.intact, report.findings


def _on_connect(store: SqlStore, listener: Callable[[Any, Any], None]) -> Callable[[], None]:
    """Apply ``listener`` to every new connection from now on; the return value undoes it."""
    store.close()  # so that every connection from now on is a new one

    def undo() -> None:
        event.remove(store._engine, "connect", listener)
        store.close()

    event.listen(store._engine, "connect", listener)
    return undo


def test_read_only_database(backend: Backend, store: SqlStore, key: MacKey) -> None:
    """The database refuses writes (a read-only mount, a hot standby), then allows them again."""
    undo: list[Callable[[], None]] = []

    def read_only(dbapi_connection: Any, _record: Any) -> None:
        if backend.name == "sqlite":
            dbapi_connection.execute("PRAGMA query_only = ON")
        else:
            dbapi_connection.execute("SET default_transaction_read_only = on")
            dbapi_connection.commit()

    _fails_closed_then_recovers(
        store,
        key,
        lambda: undo.append(_on_connect(store, read_only)),
        lambda: undo.pop()(),  # noqa: PLW0108 - the undo exists only once the fault starts
    )


def test_full_disk_on_sqlite(sqlite_backend: Backend, key: MacKey) -> None:
    """The file cannot grow (a full disk), then space is freed."""
    with SqlStore(sqlite_backend.url, key=key, timeout=TIMEOUT, must_exist=False) as store:
        store.create_schema()

        def no_growth(dbapi_connection: Any, _record: Any) -> None:
            (pages,) = dbapi_connection.execute("PRAGMA page_count").fetchone()
            dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

        store.append([make_event()])
        undo = _on_connect(store, no_growth)
        # Fill what room is left in the file's pages, as a disk fills up: big records, then
        # small ones, then gated reads until one cannot even record its decision.
        for size in (2000, 200, 1):
            with pytest.raises(StoreUnavailable, match="full"):  # noqa: PT012 - until full
                for _ in range(10_000):
                    store.append([make_event(justification="x" * size)])
        filler = Desk(Gate(store, POLICY, timeout=TIMEOUT))
        with access_context(service()):
            for _ in range(1000):
                with suppress(AuditUnavailable):
                    filler.invoices("acme", limit=2)
                if len(filler.ran) == _:  # this one did not run: the decision did not fit
                    break
        _fails_closed_then_recovers(store, key, lambda: None, undo)


def test_slow_database(backend: Backend, store: SqlStore, key: MacKey) -> None:
    """Another writer holds the chain past the timeout, then lets go."""
    held: list[Any] = []

    def hold() -> None:
        if backend.name == "sqlite":
            raw = sqlite3.connect(make_url(backend.url).database or "", isolation_level=None)
            raw.execute("BEGIN IMMEDIATE")
            held.append(raw)
            return
        conn = backend.owner.connect()
        conn.begin()
        lock_chain(conn, "main", 5.0)
        held.append(conn)

    def release() -> None:
        blocker = held.pop()
        blocker.rollback()
        blocker.close()

    _fails_closed_then_recovers(store, key, hold, release)


class _Proxy:
    """A TCP relay to PostgreSQL that can be cut: the network between app and database."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.close()  # refused, as an unreachable host would be
                continue
            server = socket.create_connection(self.target)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        """Drop every relayed connection and refuse new ones."""
        self.open.clear()
        for s in self.sockets:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes the relay threads blocked on them
            s.close()
        self.sockets.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.mark.postgres
def test_unreachable_postgres_then_back(pg_backend: Backend, key: MacKey) -> None:
    """The network to PostgreSQL goes down (pooled connections die too), then comes back."""
    url = make_url(pg_backend.url)
    proxy = _Proxy((url.host or "127.0.0.1", url.port or 5432))
    try:
        via_proxy = url.set(host="127.0.0.1", port=proxy.port)
        with SqlStore(
            via_proxy.render_as_string(hide_password=False), key=key, timeout=TIMEOUT
        ) as store:
            store.create_schema()
            _fails_closed_then_recovers(store, key, proxy.cut, proxy.open.set)
    finally:
        proxy.close()


def test_forged_newest_record_then_recovery(backend: Backend, store: SqlStore, key: MacKey) -> None:
    """A forged newest record fails every concurrent gated call closed, naming it.

    Once recovered, the same gate serves again; verify passes, the forgery acknowledged.
    """
    desk = Desk(Gate(store, POLICY, timeout=TIMEOUT))
    with access_context(service()):
        desk.invoices("acme")
    forged = store.count() + 1
    tampering.insert_row(backend, tampering.forged_copy(store, 1, forged))
    outcomes = _call_together(desk)
    assert all(isinstance(o, AuditUnavailable) for o in outcomes), outcomes
    named = f"chain 'main' seq {forged}: MAC does not match the chain hash (bad_mac)"
    assert all(named in str(o) for o in outcomes)
    assert desk.ran == ["invoices"]  # no body ran
    assert store.count() == forged  # nothing stored
    recover_chain(store, halted_seq=forged, actor="oncall", reason="forged row, see INC-1")
    assert _call_together(desk) == [(0, 1)] * CALLERS
    assert store.count() == forged + 1 + 2 * CALLERS
    report = verify(store, key)
    assert report.intact
    assert [(f.code.value, f.seq, f.acknowledged_by) for f in report.findings] == [
        ("bad_mac", forged, forged + 1)
    ]
