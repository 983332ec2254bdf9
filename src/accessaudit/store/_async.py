"""Appends from coroutines: each turn of an event loop hands its tasks' appends to one thread.

A commit waits for the disk, so it cannot run on the event loop's thread. Handing each
append to a thread of its own (``asyncio.to_thread``) costs a hand-off per append and a
thread per waiting task, and under the GIL those threads take the loop's time. Instead the
appends that the loop's tasks make during one turn of the loop are queued, and at the end
of the turn one job takes all of them to the default executor, where the group commit
(``_group``) writes them in as few transactions as it can; one callback back on the loop
then resumes every waiting task with its own records or its own error.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import TYPE_CHECKING

from accessaudit.exceptions import DuplicateEvent
from accessaudit.store._group import own_copy

if TYPE_CHECKING:
    from accessaudit.record.events import AccessEvent, StoredEvent
    from accessaudit.store.sql import SqlStore

_Job = tuple["list[AccessEvent]", float, bool, "asyncio.Future[list[StoredEvent]]"]


class LoopAppends:
    """The appends of one event loop's tasks to one store, written a turn at a time."""

    def __init__(self, store: SqlStore, loop: asyncio.AbstractEventLoop) -> None:
        self._store, self._loop = store, loop
        self._pending: list[_Job] = []

    async def append(
        self, batch: list[AccessEvent], timeout: float, durable: bool
    ) -> list[StoredEvent]:
        """Queue ``batch`` for this turn's hand-off; its records once committed."""
        future: asyncio.Future[list[StoredEvent]] = self._loop.create_future()
        if not self._pending:  # the first of this turn: hand them all off at its end
            self._loop.call_soon(self._hand_off)
        self._pending.append((batch, timeout, durable, future))
        return await future

    def _hand_off(self) -> None:
        jobs, self._pending = self._pending, []
        self._loop.run_in_executor(None, self._write, jobs)

    def _write(self, jobs: list[_Job]) -> None:
        """In the worker thread: write every job; resume the tasks in one loop callback."""
        store = self._store
        try:
            outcomes = store._group.submit_all([(b, t, d) for b, t, d, _ in jobs])
            results: list[list[StoredEvent] | BaseException] = []
            for (batch, *_), outcome in zip(jobs, outcomes, strict=True):
                results.append(_settled(store, batch, outcome))
        except BaseException as e:  # noqa: BLE001 - every caller gets it (its own copy)
            results = [e, *(own_copy(e) for _ in jobs[1:])]
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            self._loop.call_soon_threadsafe(_resume, jobs, results)


def _settled(
    store: SqlStore, batch: list[AccessEvent], outcome: list[StoredEvent] | BaseException
) -> list[StoredEvent] | BaseException:
    """A job's records; a duplicate id resolved as ``append`` does (a retried batch)."""
    if not isinstance(outcome, DuplicateEvent):
        return outcome
    try:
        return store.earlier_append(batch, outcome)
    except BaseException as e:  # noqa: BLE001 - handed to its caller
        return e


def _resume(jobs: list[_Job], results: list[list[StoredEvent] | BaseException]) -> None:
    for (*_, future), result in zip(jobs, results, strict=True):
        if future.cancelled():
            continue  # the records are written all the same, as after a cancelled to_thread
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


_by_loop: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, weakref.WeakKeyDictionary[SqlStore, LoopAppends]
] = weakref.WeakKeyDictionary()


def loop_appends(store: SqlStore) -> LoopAppends:
    """The running loop's appends to ``store``."""
    loop = asyncio.get_running_loop()
    stores = _by_loop.setdefault(loop, weakref.WeakKeyDictionary())
    appends = stores.get(store)
    if appends is None:
        appends = stores[store] = LoopAppends(store, loop)
    return appends
