"""Client-side deadlines for PostgreSQL calls.

``statement_timeout`` and ``lock_timeout`` are enforced by the server. A server that stops
answering (a stopped backend, a host gone dark while its kernel still holds the TCP
connection) enforces nothing, and libpq would wait forever. So every bounded operation runs
under a deadline: when it passes, a single watchdog thread shuts the connection's socket,
the blocked call fails at once, SQLAlchemy discards the connection, and the caller gets
``StoreUnavailable``.

The deadline is per operation, not per statement: ``operation_deadline`` sets it once (in a
context variable, so it follows the calling thread or task) and everything inside, pool
checkout included, spends from the same budget.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from accessaudit.exceptions import StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Iterator

_deadline: ContextVar[float | None] = ContextVar("accessaudit_deadline", default=None)


class operation_deadline:  # noqa: N801 - used like the function it replaced
    """Give everything inside ``seconds`` in total (an enclosing deadline still applies).

    A class rather than a generator-based context manager: it runs several times per
    gated call, and this form costs a third as much.
    """

    __slots__ = ("_seconds", "_token")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    def __enter__(self) -> None:
        deadline = time.monotonic() + self._seconds
        outer = _deadline.get()
        self._token = _deadline.set(deadline if outer is None else min(outer, deadline))

    def __exit__(self, *_exc: object) -> None:
        _deadline.reset(self._token)


def remaining(default: float) -> float:
    """Seconds left of the current operation's deadline, or ``default`` outside one."""
    deadline = _deadline.get()
    return default if deadline is None else max(0.0, deadline - time.monotonic())


class _Watchdog:
    """One daemon thread that shuts sockets whose deadline passed before they were released."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, int] = {}  # token -> duplicate fd of the guarded socket
        self._fired: set[int] = set()
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, fd: int, seconds: float) -> int:
        # A duplicate keeps the socket itself alive: if the connection closes its fd and the
        # number is reused, shutting our duplicate still only touches the guarded socket.
        duplicate = os.dup(fd)
        with self._cond:
            token = next(self._tokens)
            self._armed[token] = duplicate
            heapq.heappush(self._heap, (time.monotonic() + seconds, token))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="accessaudit-deadline", daemon=True
                )
                self._thread.start()
            elif self._heap[0][1] == token:
                # Woken only for a deadline earlier than the one it waits for: every bounded
                # database call arms a guard, and waking the thread each time (to go back to
                # sleep) cost a switch of the GIL per call.
                self._cond.notify()
        return token

    def disarm(self, token: int) -> bool:
        """Release a guard; True if its deadline had passed and the socket was shut."""
        with self._cond:
            duplicate = self._armed.pop(token, None)
            fired = token in self._fired
            self._fired.discard(token)
        if duplicate is not None:
            os.close(duplicate)
        return fired

    def after_fork_in_child(self) -> None:
        """Start afresh in a forked child, whose copy of the thread does not run."""
        # The condition may even have been held by that thread at the moment of the fork.
        for duplicate in self._armed.values():
            os.close(duplicate)
        self._reset()

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)  # released before its deadline
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, token = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                self._fired.add(token)
                _shut(self._armed[token])


def _shut(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the peer: the blocked call has failed on its own
    finally:
        sock.detach()  # the fd stays ours to close in disarm()


_watchdog = _Watchdog()
os.register_at_fork(after_in_child=_watchdog.after_fork_in_child)


@contextmanager
def socket_deadline(fd: int, seconds: float) -> Iterator[None]:
    """Shut socket ``fd`` if the block takes longer than ``seconds``."""
    token = _watchdog.arm(fd, seconds)
    released = False
    try:
        yield
    except Exception as e:
        released = True
        if _watchdog.disarm(token) and not isinstance(e, StoreUnavailable):
            raise StoreUnavailable(
                f"the database did not answer within {seconds:.3g}s; the connection was closed"
            ) from e
        raise
    finally:
        if not released:  # normal exit, or a BaseException such as KeyboardInterrupt
            _watchdog.disarm(token)
