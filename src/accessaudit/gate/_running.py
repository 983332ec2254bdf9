"""The gated access whose protected code is running here, held in a context variable.

Integrations (``accessaudit.sqlalchemy``) ask it whether a query runs inside a gated access,
for which resource and customer, and tell it what the query loaded. It is set only while the
protected code itself runs: a lazy query the code hands back and the caller runs later is
outside, and is treated as the ungated read it is.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    from accessaudit.gate._access import Access

_running: ContextVar[Access | None] = ContextVar("accessaudit_running_access", default=None)


def running_access() -> Access | None:
    """The innermost gated access whose protected code is running here, or None.

    An access that has ended is not running, even where a context copied while it ran
    (a task or thread it started) still names it.
    """
    access = _running.get()
    return None if access is None or access.finished else access


@contextmanager
def running(access: Access) -> Iterator[None]:
    """Mark ``access``'s protected code as running for the duration of the block."""
    token = _running.set(access)
    try:
        yield
    finally:
        _running.reset(token)
