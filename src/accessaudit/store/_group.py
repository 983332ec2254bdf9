"""Group commit: concurrent appends in one process share transactions.

A durable commit waits for the disk (SQLite's fsync) or the server (PostgreSQL's WAL flush).
One commit per gated call would make every thread queue behind every other thread's fsync.
Instead appends queue here, and whoever finds no transaction in progress becomes the
*leader*: it takes its own batch and what is queued (up to ``max_records`` events), writes
it all in one transaction, hands each waiting caller its own records (or the error), and
steps down; a waiting caller then leads the next group. There is no background thread, so a
lone caller writes at once with no hand-off, nothing is ever queued without a caller waiting for it
(so there is nothing to flush at exit but the group in flight), and a fork only has to
wait for the group in flight and forget the parent's queue.

Each caller still returns only after the transaction holding *its* records has committed,
and fails closed with the transaction's error otherwise. The transaction runs under the
earliest deadline of its members, so no member waits past its own budget for an outcome it
could not learn; a caller nearly out of time is not taken into others' groups, so that its
deadline cannot cut their transaction short. When a group fails for a reason that could be
one member's fault (a duplicate event id, say), each member is retried alone, so one bad
batch cannot fail its neighbours; an unavailable store fails the whole group at once.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from accessaudit.exceptions import ChainHalted, CommitOutcomeUnknown, StoreUnavailable
from accessaudit.store._deadline import operation_deadline

if TYPE_CHECKING:
    from collections.abc import Callable

    from accessaudit.record.events import AccessEvent, StoredEvent

#: A member whose transaction is under way waits this long past its own deadline for the
#: outcome (the transaction itself is bounded by that deadline; this covers the hand-back).
HANDBACK_GRACE: Final = 1.0
#: A batch whose caller has less than this share of its budget left is not taken into
#: another caller's group (its deadline would bound the whole transaction).
SHORT_BUDGET: Final = 0.25


@dataclass(eq=False)
class _Member:
    """One caller's batch and, once its group ran, what became of it."""

    batch: list[AccessEvent]
    durable: bool  # the caller waits for the disk, not only for the commit
    timeout: float  # the caller's budget, for messages
    deadline: float  # time.monotonic() by which the caller needs an answer
    # The caller's own wake-up, on the queue's lock: woken when it is done or may lead,
    # and by nothing else. (One shared condition woke every waiting thread at every
    # change; with 16 threads that herd cost more CPU than the records themselves.) Made
    # only when the caller has to wait: a lone caller leads at once and never does. Every
    # wait re-checks its member under the lock first, so a notice sent before it existed
    # is not lost.
    wake: threading.Condition | None = None
    taken: bool = False  # picked into a group by a leader
    leader: bool = False  # its own thread wrote the group
    done: bool = False
    stored: list[StoredEvent] = field(default_factory=list)
    error: BaseException | None = None


class GroupCommit:
    """The queue of one store's appends; see the module docstring."""

    def __init__(
        self,
        write: Callable[[list[list[AccessEvent]], bool], list[list[StoredEvent]]],
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
        # The queue's lock, reentrant (a settling leader finishes each member under it).
        self._lock = threading.RLock()
        # Waited on only by a gathering leader, drain() and the fork hooks.
        self._cond = threading.Condition(self._lock)
        self._queue: deque[_Member] = deque()
        self._running: list[_Member] = []
        self._leader: int | None = None  # the thread writing a group, if any
        self._forking = False  # no new group may start: the process is about to fork

    def submit(
        self, batch: list[AccessEvent], timeout: float, *, durable: bool = True
    ) -> list[StoredEvent]:
        """Store ``batch`` in the next group commit; return its records once committed.

        A group is durable if any of its members asked for that.
        """
        (outcome,) = self.submit_all([(batch, timeout, durable)], raise_first=True)
        assert not isinstance(outcome, BaseException)  # raised instead  # noqa: S101
        return outcome

    def submit_all(
        self, items: list[tuple[list[AccessEvent], float, bool]], *, raise_first: bool = False
    ) -> list[list[StoredEvent] | BaseException]:
        """Several callers' batches ((batch, timeout, durable) each) from this one thread.

        They are queued together, so they normally share one transaction; each gets its
        own records or its own error back, as if each had called ``submit``. (How an
        event loop hands all the appends of its tasks to one thread: see ``_async``.)
        With ``raise_first`` the first error is raised instead of returned.
        """
        if self._leader == threading.get_ident():
            # This thread is writing a group right now and called again: the garbage
            # collector finishing an abandoned gated generator mid-transaction, say. Waiting
            # would wait for itself until the deadline (and hold up its own group's
            # callers): fail this append at once instead; the group in progress goes on.
            raise StoreUnavailable(
                "appending to the audit log from inside this store's own transaction (a "
                "finalizer run by the garbage collector?): nothing was stored"
            )
        now = time.monotonic()
        members = [
            _Member(batch, durable, timeout, now + timeout) for batch, timeout, durable in items
        ]
        try:
            with self._cond:
                self._queue.extend(members)
                if self.max_wait:  # a leader may be gathering a group: tell it there is more
                    self._cond.notify_all()
            for member in members:
                self._see_through(member, raise_first=raise_first)
        except BaseException:
            for member in members:
                self._abandon(member)
            raise
        outcomes: list[list[StoredEvent] | BaseException] = []
        for member in members:
            if member.error is None:
                outcomes.append(member.stored)
            elif raise_first:
                # The thread that wrote the group raises the original.
                raise member.error if member.leader else own_copy(member.error)
            else:
                outcomes.append(member.error if member.leader else own_copy(member.error))
        return outcomes

    def _see_through(self, member: _Member, *, raise_first: bool) -> None:
        """Wait until ``member`` is written, leading a group when it is this thread's turn."""
        try:
            with self._cond:
                group = self._take(member) if self._await_turn(member) else None
        except StoreUnavailable as e:  # its deadline passed before an outcome
            if raise_first:
                raise
            member.done, member.error = True, e
            return
        if group is not None:
            try:
                self._run(group)
            finally:
                with self._cond:
                    self._step_down()

    def _abandon(self, member: _Member) -> None:
        """The caller is leaving with an error: it must not stay queued, nor keep the lead."""
        with self._cond:
            if not member.taken:
                with contextlib.suppress(ValueError):  # already gone after a timeout
                    self._queue.remove(member)
            if self._leader == threading.get_ident():  # interrupted between lead and write
                self._step_down()

    def _step_down(self) -> None:
        """The lead is free (condition held): the oldest waiting caller may take it."""
        self._leader = None
        self._cond.notify_all()
        self._wake_next()

    def _wake_next(self) -> None:
        for member in self._queue:
            if not member.taken:
                if member.wake is not None:
                    member.wake.notify()
                return

    def _await_turn(self, member: _Member) -> bool:
        """Wait (holding the condition) until ``member`` is done or may lead; True to lead."""
        while not member.done:
            if not (self._leader is not None or self._forking or member.taken):
                self._leader = threading.get_ident()
                member.leader = True
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
            if member.wake is None:
                member.wake = threading.Condition(self._lock)
            member.wake.wait(limit - now)
        return False

    def _take(self, own: _Member) -> list[_Member]:
        """The leader's group (condition held): its own batch, then queued ones in order.

        At most ``max_records`` records. The leader writes exactly one group and steps down.
        Queued batches whose caller's deadline has passed are dropped (nothing was stored for
        them); a batch whose caller has less than a quarter of its budget left is not taken
        into someone else's group, where its short deadline would cut the whole transaction
        short: it is written in a group of its own when its caller leads, or times out.
        """
        if self.max_wait:
            gather_until = time.monotonic() + self.max_wait
            while self._queued_records() < self.max_records:
                left = gather_until - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        self._queue.remove(own)
        own.taken = True
        group, records = [own], len(own.batch)
        now = time.monotonic()
        if own.deadline - now < own.timeout * SHORT_BUDGET:
            return group  # short of time itself: do not shorten others' transaction
        for member in list(self._queue):
            left = member.deadline - now
            if left <= 0:
                self._queue.remove(member)
                self._finish(member, None, _no_slot(member))
            elif left >= member.timeout * SHORT_BUDGET and (
                records + len(member.batch) <= self.max_records
            ):
                self._queue.remove(member)
                member.taken = True
                group.append(member)
                records += len(member.batch)
        return group

    def _queued_records(self) -> int:
        return sum(len(m.batch) for m in self._queue)

    def _run(self, group: list[_Member]) -> None:
        """One transaction for ``group``; each member gets its records or the error."""
        seconds = max(0.0, min(m.deadline for m in group) - time.monotonic())
        with self._cond:
            self._running = group
        try:
            with operation_deadline(seconds):
                results = self._write([m.batch for m in group], any(m.durable for m in group))
        except Exception as e:  # noqa: BLE001 - not swallowed: every member raises it
            # Retried one by one only if one member may be the cause (a reused event id); a
            # store that is down or a chain that is halted would fail each of them again.
            if len(group) > 1 and not isinstance(e, StoreUnavailable | ChainHalted):
                self._retry_one_by_one(group)
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

    def _retry_one_by_one(self, group: list[_Member]) -> None:
        """The group failed for a reason one member may have caused: give each its chance."""
        try:
            for member in group:
                self._run([member])
        finally:  # interrupted: the members not tried yet were not written
            untried = [m for m in group if not m.done]
            for member in untried:
                self._finish(member, None, _interrupted(member))

    def _settle(
        self,
        group: list[_Member],
        results: list[list[StoredEvent]] | None,
        error: BaseException | None,
    ) -> None:
        with self._cond:
            for i, member in enumerate(group):
                self._finish(member, None if results is None else results[i], error)
            self._running = []

    def _finish(
        self, member: _Member, stored: list[StoredEvent] | None, error: BaseException | None
    ) -> None:
        with self._cond:
            member.done = True
            member.stored = stored or []
            member.error = error
            if member.wake is not None:
                member.wake.notify()
            self._cond.notify_all()  # drain() may be waiting for it

    def drain(self, timeout: float) -> bool:
        """Wait until the batches queued or being written now are done; False on timeout.

        Batches queued later are not waited for, so a steady stream of appends cannot keep
        ``close()`` waiting for its whole timeout.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            waiting = [*self._queue, *self._running]
            while not all(m.done for m in waiting):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True


def _interrupted(member: _Member) -> StoreUnavailable:
    return StoreUnavailable(
        f"appending to the audit log: the thread writing this batch's group was interrupted "
        f"before writing it ({len(member.batch)} event(s)); nothing of it was stored"
    )


def own_copy(error: BaseException) -> BaseException:
    """The group's error for one more waiting caller: its own object, same class and cause.

    Raising one exception object in several threads would splice their tracebacks (and
    frames holding other callers' batches) together.
    """
    try:
        mine = copy.copy(error)
    except Exception:  # noqa: BLE001 - an exception that cannot be copied is shared
        return error
    mine.__cause__, mine.__traceback__ = error.__cause__, None
    return mine


def _no_slot(member: _Member) -> StoreUnavailable:
    return StoreUnavailable(
        f"appending to the audit log: no write slot within {member.timeout:g}s (earlier "
        "appends in this process held it); nothing was stored"
    )


_live: weakref.WeakSet[GroupCommit] = weakref.WeakSet()
# One fork at a time: the hooks hold every store's condition from before the fork to after.
_fork_lock = threading.Lock()
_held_over_fork: list[GroupCommit] = []


def _finish_groups_before_fork() -> None:
    # A child must not inherit a transaction in flight: SQLite keeps its file locks in
    # process-wide state that the child would copy without holding the locks (its own
    # connections could then corrupt the file). So the fork waits, up to each store's
    # timeout, for the group being written, and no new group starts until it is done.
    _fork_lock.acquire()
    for group in sorted(_live, key=id):  # one order for every fork: no lock-order deadlock
        group._cond.acquire()
        _held_over_fork.append(group)
        group._forking = True
        deadline = time.monotonic() + group.timeout
        while group._leader is not None and (left := deadline - time.monotonic()) > 0:
            group._cond.wait(left)


def _resume_in_parent() -> None:
    for group in _held_over_fork:
        group._forking = False
        group._cond.notify_all()
        group._wake_next()
        group._cond.release()
    _held_over_fork.clear()
    _fork_lock.release()


def _forget_parent_queues() -> None:
    # A forked child has only the thread that forked: the parent's waiters are not there to
    # be served, and their queue and condition (held at the fork) are the parent's.
    global _fork_lock  # noqa: PLW0603 - replaced, not released: it belongs to the parent
    _fork_lock = threading.Lock()
    _held_over_fork.clear()
    for group in list(_live):
        group._reset()


os.register_at_fork(
    before=_finish_groups_before_fork,
    after_in_parent=_resume_in_parent,
    after_in_child=_forget_parent_queues,
)
