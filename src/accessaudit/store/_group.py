"""Group commit: concurrent appends in one process share transactions.

A durable commit waits for the disk (SQLite's fsync) or the server (PostgreSQL's WAL flush).
One commit per gated call would make every thread queue behind every other thread's fsync.
Instead appends queue here, and whoever finds no transaction in progress becomes the
*leader*: it takes what is queued (up to ``max_records`` events), writes it all in one
transaction, hands each waiting caller its own records (or the error), and steps down; a
waiting caller then leads the next group. There is no background thread, so a lone caller
writes at once with no hand-off, nothing is ever queued without a caller waiting for it
(so there is nothing to flush at exit but the group in flight), and a fork only has to
wait for the group in flight and forget the parent's queue.

Each caller still returns only after the transaction holding *its* records has committed,
and fails closed with the transaction's error otherwise. The transaction runs under the
earliest deadline of its members, so no member waits past its own budget for an outcome it
could not learn. When a group fails for a reason that could be one member's fault (a
duplicate event id, say), each member is retried alone, so one bad batch cannot fail its
neighbours; an unavailable store fails the whole group at once.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from accessaudit.exceptions import CommitOutcomeUnknown, StoreUnavailable
from accessaudit.store._deadline import operation_deadline

if TYPE_CHECKING:
    from collections.abc import Callable

    from accessaudit.events import AccessEvent, StoredEvent

#: A member whose transaction is under way waits this long past its own deadline for the
#: outcome (the transaction itself is bounded by that deadline; this covers the hand-back).
HANDBACK_GRACE: Final = 1.0


@dataclass(eq=False)
class _Member:
    """One caller's batch and, once its group ran, what became of it."""

    batch: list[AccessEvent]
    timeout: float  # the caller's budget, for messages
    deadline: float  # time.monotonic() by which the caller needs an answer
    taken: bool = False  # picked into a group by a leader
    done: bool = False
    stored: list[StoredEvent] = field(default_factory=list)
    error: BaseException | None = None


class GroupCommit:
    """The queue of one store's appends; see the module docstring."""

    def __init__(
        self,
        write: Callable[[list[list[AccessEvent]]], list[list[StoredEvent]]],
        *,
        max_records: int,
        max_wait: float,
        timeout: float,
    ) -> None:
        self._write, self.max_records, self.max_wait = write, max_records, max_wait
        self.timeout = timeout
        self._reset()
        _live.add(self)

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[_Member] = deque()
        self._leading = False
        self._forking = False  # no new group may start: the process is about to fork

    def submit(self, batch: list[AccessEvent], timeout: float) -> list[StoredEvent]:
        """Store ``batch`` in the next group commit; return its records once committed."""
        member = _Member(batch, timeout, time.monotonic() + timeout)
        with self._cond:
            self._queue.append(member)
            if self.max_wait:  # a leader may be gathering a group: tell it there is more
                self._cond.notify_all()
            lead = self._await_turn(member)
        if lead:
            self._lead(member)
        if member.error is not None:
            raise member.error
        return member.stored

    def _await_turn(self, member: _Member) -> bool:
        """Wait (holding the condition) until ``member`` is done or may lead; True to lead."""
        while not member.done:
            if not (self._leading or self._forking or member.taken):
                self._leading = True
                return True
            now = time.monotonic()
            if not member.taken and now >= member.deadline:
                self._queue.remove(member)
                raise _no_slot(member)
            if member.taken and now >= member.deadline + HANDBACK_GRACE:
                raise CommitOutcomeUnknown(
                    f"appending to the audit log: no outcome within {member.timeout:g}s, so the "
                    "batch may or may not be stored; append the same batch again to find out"
                )
            limit = member.deadline + (HANDBACK_GRACE if member.taken else 0.0)
            self._cond.wait(limit - now)
        return False

    def _lead(self, own: _Member) -> None:
        """Write groups until ``own`` is done, then let a waiting caller lead."""
        try:
            while True:
                with self._cond:
                    if own.done:
                        return
                    if not own.taken and time.monotonic() >= own.deadline:
                        self._queue.remove(own)
                        own.done = True
                        own.error = _no_slot(own)
                        return
                    group = self._take()
                self._run(group)
        finally:
            with self._cond:
                self._leading = False
                self._cond.notify_all()

    def _take(self) -> list[_Member]:
        """Pop the next group (holding the condition): whole batches, up to ``max_records``."""
        if self.max_wait:
            gather_until = time.monotonic() + self.max_wait
            while self._queued_records() < self.max_records:
                left = gather_until - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        group: list[_Member] = []
        records = 0
        while self._queue and (
            not group or records + len(self._queue[0].batch) <= self.max_records
        ):
            member = self._queue.popleft()
            member.taken = True
            group.append(member)
            records += len(member.batch)
        return group

    def _queued_records(self) -> int:
        return sum(len(m.batch) for m in self._queue)

    def _run(self, group: list[_Member]) -> None:
        """One transaction for ``group``; each member gets its records or the error."""
        seconds = max(0.0, min(m.deadline for m in group) - time.monotonic())
        try:
            with operation_deadline(seconds):
                results = self._write([m.batch for m in group])
        except Exception as e:  # noqa: BLE001 - not swallowed: every member raises it
            if len(group) > 1 and not isinstance(e, StoreUnavailable):
                for member in group:  # could be one member's fault: give each its own chance
                    self._run([member])
                return
            self._settle(group, None, e)
        except BaseException:  # interrupted: the transaction's fate is unknown to the others
            unknown = CommitOutcomeUnknown(
                "appending to the audit log: the thread writing this group was interrupted, "
                "so the batch may or may not be stored; append the same batch again to find out"
            )
            self._settle(group, None, unknown)
            raise
        else:
            self._settle(group, results, None)

    def _settle(
        self,
        group: list[_Member],
        results: list[list[StoredEvent]] | None,
        error: BaseException | None,
    ) -> None:
        with self._cond:
            for i, member in enumerate(group):
                member.done = True
                if results is not None:
                    member.stored = results[i]
                member.error = error
            self._cond.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait until no group is queued or in flight; False if ``timeout`` ran out first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._leading or self._queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True


def _no_slot(member: _Member) -> StoreUnavailable:
    return StoreUnavailable(
        f"appending to the audit log: no write slot within {member.timeout:g}s (earlier "
        "appends in this process held it); nothing was stored"
    )


_live: weakref.WeakSet[GroupCommit] = weakref.WeakSet()
_held_over_fork: list[GroupCommit] = []


def _finish_groups_before_fork() -> None:
    # A child must not inherit a transaction in flight: SQLite keeps its file locks in
    # process-wide state that the child would copy without holding the locks (its own
    # connections could then corrupt the file). So the fork waits, up to each store's
    # timeout, for the group being written, and no new group starts until it is done.
    for group in list(_live):
        group._cond.acquire()
        _held_over_fork.append(group)
        group._forking = True
        deadline = time.monotonic() + group.timeout
        while group._leading and (left := deadline - time.monotonic()) > 0:
            group._cond.wait(left)


def _resume_in_parent() -> None:
    for group in _held_over_fork:
        group._forking = False
        group._cond.notify_all()
        group._cond.release()
    _held_over_fork.clear()


def _forget_parent_queues() -> None:
    # A forked child has only the thread that forked: the parent's waiters are not there to
    # be served, and their queue and condition (held at the fork) are the parent's.
    _held_over_fork.clear()
    for group in list(_live):
        group._reset()


os.register_at_fork(
    before=_finish_groups_before_fork,
    after_in_parent=_resume_in_parent,
    after_in_child=_forget_parent_queues,
)
