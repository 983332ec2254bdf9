"""Group commit: concurrent appends in one process share transactions, each caller its own.

To make sharing deterministic, the first transaction is held at its COMMIT until the other
callers have queued; everything else is real: real threads, real databases, real commits.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
import structlog

from accessaudit import (
    ConfigurationError,
    DuplicateEvent,
    MacKey,
    SqlStore,
    StoreUnavailable,
    verify_store,
)
from accessaudit.exceptions import ChainHalted
from accessaudit.store._deadline import operation_deadline
from tests import tampering, writerkit
from tests.strategies import make_event

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from accessaudit import AccessEvent, StoredEvent
    from tests.conftest import Backend


def _queued(store: SqlStore) -> int:
    """Callers waiting for a transaction (peeks at the queue: the test's only private read)."""
    return len(store._group._queue)


@contextmanager
def _commits(store: SqlStore, hold_first_until: Callable[[], bool] | None) -> Iterator[list[int]]:
    """Count COMMITs on ``store``; hold the first one until ``hold_first_until()`` is true."""

    def before(n: int) -> None:
        if n == 1 and hold_first_until is not None:
            for _ in range(30_000):  # a hang detector (60 s), not a time bound
                if hold_first_until():
                    return
                time.sleep(0.002)
            raise AssertionError("the held commit was never released")

    with writerkit.commits(store, before) as counted:
        yield counted


def _in_threads(store: SqlStore, batches: list[list[AccessEvent]]) -> list[Any]:
    """Append each batch from its own thread, the first one first; results or exceptions."""

    def append(batch: list[AccessEvent]) -> Any:
        try:
            return store.append(batch)
        except Exception as e:  # noqa: BLE001 - the test inspects what each caller got
            return e

    with ThreadPoolExecutor(len(batches)) as pool:
        first = pool.submit(append, batches[0])
        while store._group._leader is None and not first.done():  # the first one leads
            time.sleep(0.001)
        rest = [pool.submit(append, b) for b in batches[1:]]
        return [first.result()] + [f.result() for f in rest]


def _committed(backend: Backend, key: MacKey, stored: list[StoredEvent]) -> bool:
    """Seen over a separate connection: these records are in the log, exactly as returned."""
    with SqlStore(backend.url, key=key) as other:
        ids = {str(s.event.event_id): s.seq for s in other.read()}
    return all(ids.get(str(s.event.event_id)) == s.seq for s in stored)


def test_waiting_callers_share_one_transaction(
    backend: Backend, store: SqlStore, key: MacKey
) -> None:
    """Fifteen callers queued behind a commit are written by one transaction, each its own."""
    batches = [[make_event(request_id=f"r{i}")] for i in range(16)]
    with _commits(store, hold_first_until=lambda: _queued(store) == 15) as commits:
        results = _in_threads(store, batches)
    assert len(commits) == 2
    assert all(isinstance(r, list) for r in results)
    seqs = sorted(r[0].seq for r in results)
    assert seqs == list(range(1, 17))
    for batch, result in zip(batches, results, strict=True):
        assert result[0].event == batch[0]
    assert _committed(backend, key, [r[0] for r in results])
    assert verify_store(store, key).intact


def test_callers_return_only_after_their_own_commit(
    backend: Backend, store: SqlStore, key: MacKey
) -> None:
    """Each caller, on return, finds its records committed as seen from another connection."""
    seen: list[bool] = []

    def append_and_look(i: int) -> None:
        stored = store.append([make_event(request_id=f"t{i}-{j}") for j in range(1 + i % 3)])
        seen.append(_committed(backend, key, stored))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(append_and_look, range(24)))
    assert seen == [True] * 24
    rows = [dict(r) for r in store.rows()]
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert verify_store(store, key).intact


def test_groups_are_bounded_by_batch_max_records(backend: Backend, key: MacKey) -> None:
    """A bound of 4 records: 12 queued events take 3 transactions; a larger batch goes alone."""
    with SqlStore(backend.url, key=key, batch_max_records=4, must_exist=False) as store:
        store.create_schema()
        batches = [[make_event()] for _ in range(13)]
        with _commits(store, hold_first_until=lambda: _queued(store) == 12) as commits:
            _in_threads(store, batches)
        assert len(commits) == 1 + 3
        with _commits(store, hold_first_until=None) as commits:
            stored = store.append([make_event() for _ in range(9)])
        assert len(commits) == 1
        assert [s.seq for s in stored] == list(range(14, 23))


def test_batch_max_wait_gathers_a_group(backend: Backend, key: MacKey) -> None:
    """A leader allowed to wait takes a second caller into its transaction."""
    with SqlStore(
        backend.url, key=key, batch_max_records=2, batch_max_wait=4.0, must_exist=False
    ) as store:
        store.create_schema()
        with _commits(store, hold_first_until=None) as commits:
            results = _in_threads(store, [[make_event()], [make_event()]])
        assert len(commits) == 1
        assert sorted(r[0].seq for r in results) == [1, 2]


def test_one_bad_batch_does_not_fail_its_group(store: SqlStore, key: MacKey) -> None:
    """A batch reusing a stored event id fails alone; the others in its group are stored."""
    (stored,) = store.append([make_event()])
    reused = make_event(event_id=stored.event.event_id, request_id="something else")
    batches = [[make_event()], [make_event()], [reused], [make_event()]]
    with _commits(store, hold_first_until=lambda: _queued(store) == 3):
        results = _in_threads(store, batches)
    assert isinstance(results[2], DuplicateEvent)
    good = [r for i, r in enumerate(results) if i != 2]
    assert all(isinstance(r, list) for r in good)
    assert store.count() == 4
    assert verify_store(store, key).intact


def _kill_at_inserts(pg_backend: Backend, which: set[int]) -> Callable[[str, Any], None]:
    """A statement hook terminating the writer's backend before the n-th INSERT, n in which."""
    inserts: list[int] = []

    def kill(statement: str, driver: Any) -> None:
        if statement.startswith("INSERT"):
            inserts.append(1)
            if len(inserts) in which:  # waits until the backend is gone: no race with it
                pg_backend.sql(
                    "SELECT pg_terminate_backend(:pid, 5000)", pid=driver.info.backend_pid
                )

    return kill


@pytest.mark.postgres
@pytest.mark.parametrize("kills", [{2}, {2, 3}])
def test_connection_killed_mid_batch_retries_once_then_fails_the_group(
    pg_backend: Backend, key: MacKey, kills: set[int]
) -> None:
    """A group's connection killed before COMMIT was sent: retried once, then failed.

    Nothing of it was written, so the group is tried once more on a new connection.
    Killed again, all its callers fail, none is stored; either way the chain continues
    without a gap.
    """
    with SqlStore(pg_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        store.append([make_event()])
        batches = [[make_event(request_id=f"k{i}")] for i in range(8)]
        with (
            writerkit.on_statement(store, _kill_at_inserts(pg_backend, kills)),
            _commits(store, hold_first_until=lambda: _queued(store) == 7),
        ):
            results = _in_threads(store, batches)
        assert isinstance(results[0], list)
        if kills == {2}:  # the retry wrote the group of seven
            assert all(isinstance(r, list) for r in results), results
            assert store.count() == 9
        else:
            assert all(isinstance(r, StoreUnavailable) for r in results[1:]), results
            assert store.count() == 2  # the first caller's record after the one before
        again = store.append([make_event()])
        assert again[0].seq == store.count()
        assert verify_store(store, key).intact


def test_a_caller_queued_past_its_deadline_gets_unavailable(backend: Backend, key: MacKey) -> None:
    """Queued behind a transaction that takes too long, a caller gives up with nothing stored."""
    with SqlStore(backend.url, key=key, timeout=1, must_exist=False) as store:
        store.create_schema()
        queued = threading.Event()
        late = make_event(request_id="late")

        def hold_until_queued_caller_gave_up() -> bool:
            if _queued(store) == 1:
                queued.set()
            return queued.is_set() and _queued(store) == 0

        with _commits(store, hold_first_until=hold_until_queued_caller_gave_up):
            results = _in_threads(store, [[make_event()], [late]])
        assert isinstance(results[1], StoreUnavailable)
        assert "no write slot within 1s" in str(results[1])
        stored_ids = {s.event.event_id for s in store.read()}
        assert late.event_id not in stored_ids
        assert store.append([late])[0].seq == store.count()  # and the chain goes on


@pytest.mark.postgres
def test_a_caller_nearly_out_of_time_does_not_cut_others_short(
    pg_backend: Backend, key: MacKey
) -> None:
    """A queued caller with almost no budget left is not taken into the next group.

    Taken in, its deadline would bound the whole transaction (PostgreSQL's lock and
    statement timeouts, the client-side watchdog) and fail every caller with it.
    """
    with SqlStore(pg_backend.url, key=key, timeout=5, must_exist=False) as store:
        store.create_schema()
        store.append([make_event()])
        hurried = make_event(request_id="hurried")
        patient = [make_event(request_id=f"patient-{i}") for i in range(3)]
        outcomes: dict[str, Any] = {}

        def hurried_append() -> None:
            try:
                with operation_deadline(0.4):  # its caller's own, shorter budget
                    outcomes["hurried"] = store.append([hurried])
            except StoreUnavailable as e:
                outcomes["hurried"] = e

        def all_queued() -> bool:
            # Hold the first commit until the hurried caller has used nearly all its budget
            # (the patient ones still have most of theirs).
            return _queued(store) == 4 and time.monotonic() >= released_at

        released_at = time.monotonic() + 0.39
        with _commits(store, hold_first_until=all_queued), ThreadPoolExecutor(5) as pool:
            first = pool.submit(store.append, [make_event()])
            while store._group._leader is None:
                time.sleep(0.001)
            pool.submit(hurried_append)
            rest = [pool.submit(store.append, [e]) for e in patient]
            results = [f.result() for f in rest]
            first.result()
        assert [r[0].event.request_id for r in results] == [e.request_id for e in patient]
        assert isinstance(outcomes["hurried"], StoreUnavailable | list)
        assert verify_store(store, key).intact


def test_close_finishes_the_append_in_flight(
    backend: Backend, store: SqlStore, key: MacKey
) -> None:
    """close() waits for the group being written, so an append racing shutdown is kept."""
    release = threading.Event()
    with _commits(store, hold_first_until=release.is_set):
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(store.append, [make_event()])
            while store._group._leader is None:
                time.sleep(0.002)
            threading.Timer(0.2, release.set).start()
            store.close()
            with SqlStore(backend.url, key=key) as other:
                assert other.count() == 1  # committed before close() returned
        assert pending.result()[0].seq == 1
    assert store.count() == 1


def _exit_code(pid: int) -> int | None:
    """The child's exit code; None (and the child killed) if it hangs (a detector, not a bound)."""
    for _ in range(600):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_waits_for_the_group_in_flight(backend: Backend, key: MacKey) -> None:
    """Forking while a transaction is in flight waits for it; the child then writes alone.

    (A child must not inherit an open SQLite transaction: SQLite's lock state is
    process-wide, and the copy would believe it holds locks it does not.)
    """
    # structlog's default PrintLogger has a lock that a parent thread may hold at the fork
    # (emitting its record): not ours to fix, so keep the events quiet here.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with SqlStore(backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        store.append([make_event()])  # the parent's pool now holds a connection
        release = threading.Event()
        with _commits(store, hold_first_until=release.is_set), ThreadPoolExecutor(1) as pool:
            pending = pool.submit(store.append, [make_event(request_id="parent")])
            while store._group._leader is None:
                time.sleep(0.002)
            threading.Timer(0.3, release.set).start()
            pid = os.fork()
            if pid == 0:  # the child: the parent's threads do not exist here
                code = 1
                try:
                    store.append([make_event(request_id="child")])
                    code = 0
                finally:
                    os._exit(code)
            with SqlStore(backend.url, key=key) as other:
                committed_at_fork = other.count()
            pending.result()
        assert _exit_code(pid) == 0
        assert committed_at_fork >= 2  # the parent's group was done before the fork
        requests = [s.event.request_id for s in store.read()]
        assert sorted(str(r) for r in requests[1:]) == ["child", "parent"]
        assert verify_store(store, key).intact


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"batch_max_records": 0}, "batch_max_records must be a whole number"),
        ({"batch_max_records": True}, "batch_max_records must be a whole number"),
        ({"batch_max_records": 2.5}, "batch_max_records must be a whole number"),
        ({"batch_max_wait": -1.0}, "batch_max_wait must be 0 or more"),
        ({"batch_max_wait": 5.0}, "less than the timeout (5s)"),
        ({"batch_max_wait": float("nan")}, "batch_max_wait must be 0 or more"),
    ],
)
def test_batch_settings_are_checked(
    tmp_path: Any, key: MacKey, options: dict[str, Any], words: str
) -> None:
    """Unusable batch settings are refused up front, naming the setting."""
    with pytest.raises(ConfigurationError, match=words.replace("(", r"\(").replace(")", r"\)")):
        SqlStore(f"sqlite:///{tmp_path / 'a.db'}", key=key, must_exist=False, **options)


def test_a_halted_chain_fails_the_whole_group_at_once(
    backend: Backend, store: SqlStore, key: MacKey
) -> None:
    """A forged tail halts a group's one transaction; its members are not retried one by one."""
    store.append([make_event(), make_event()])
    tampering.insert_row(backend, tampering.forged_copy(store, 2, 3))
    transactions: list[int] = []

    def on_begin(statement: str, _driver: Any) -> None:
        if not statement.startswith("BEGIN"):
            return
        transactions.append(1)
        for _ in range(30_000):  # the first caller's transaction waits for the other two
            if len(transactions) > 1 or _queued(store) == 2:
                return
            time.sleep(0.002)
        raise AssertionError("the other callers never queued")

    with writerkit.on_statement(store, on_begin):
        results = _in_threads(store, [[make_event()] for _ in range(3)])
    assert all(isinstance(r, ChainHalted) for r in results), results
    assert all("chain 'main' seq 3" in str(r) for r in results)
    assert len(transactions) == 2  # the first caller's, then one for the group of two
    assert store.count() == 3


def test_an_append_from_inside_the_stores_own_transaction_fails_at_once(store: SqlStore) -> None:
    """An append re-entered while this thread writes a group fails at once; the group goes on.

    (A garbage-collector finalizer may do that.) Waiting would wait for itself.
    """
    nested: list[Exception] = []

    def precondition(_view: object) -> None:
        try:
            store.append([make_event()])
        except StoreUnavailable as e:
            nested.append(e)

    (stored,) = store.append([make_event()], precondition=precondition)
    assert "inside this store's own transaction" in str(nested[0])
    assert [r.seq for r in store.read()] == [stored.seq]
