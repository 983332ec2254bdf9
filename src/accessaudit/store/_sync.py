"""The time bound on lazily synced commits: one daemon thread that flushes writers when due.

A commit written with ``durable=False`` is on disk after the next durable commit of its
writer; this thread is the other bound, for a writer that goes quiet: ``sync_within``
seconds after the first such commit it asks the writer to flush (see ``_writer``).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
import weakref
from typing import Protocol


class _Flushable(Protocol):
    def flush_if_due(self) -> None: ...


class Flusher:
    """Calls ``flush_if_due`` on each scheduled writer at its time, from one daemon thread."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, weakref.ref[_Flushable]]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, writer: _Flushable, when: float) -> None:
        """Flush ``writer`` at ``when`` (``time.monotonic()``) if it is still due then."""
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._order), weakref.ref(writer)))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="accessaudit-sync", daemon=True
                )
                self._thread.start()
            # Woken only if this is now the earliest: waking the thread costs the caller a
            # GIL hand-off, which a gated call cannot afford each time.
            if self._heap[0][0] == when:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, ref = heapq.heappop(self._heap)
            writer = ref()
            if writer is not None:
                try:
                    writer.flush_if_due()
                except Exception:
                    # The writer stays due, so its next commit is a durable one, which fails
                    # (and fails its caller) if the disk really is gone; say so meanwhile.
                    logging.getLogger("accessaudit").exception(
                        "accessaudit could not flush lazily committed audit records to disk"
                    )

    def after_fork_in_child(self) -> None:
        """A forked child starts with no thread and nothing scheduled (the parent's are not its)."""
        self._reset()


flusher = Flusher()
os.register_at_fork(after_in_child=flusher.after_fork_in_child)
