"""The gated access whose protected code is running here, held in a context variable.

Integrations (``accessaudit.sqlalchemy``) ask it whether a query runs inside a gated access,
for which resource and customer, and tell it what the query loaded. It is set only while the
protected code itself runs: a lazy query the code hands back and the caller runs later is
outside, and is treated as the ungated read it is.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from accessaudit.gate._access import Access

_running: ContextVar[Access | None] = ContextVar("accessaudit_running_access", default=None)


def running_access() -> Access | None:
    """The innermost gated access whose protected code is running here, or None.

    An access that has ended is not running, even where a context copied while it ran
    (a task or thread it started) still names it.
    """
    access = _running.get()
    return None if access is None or access.finished else access


class running:  # noqa: N801 - used like the context-manager function it replaces
    """Mark ``access``'s protected code as running for the duration of the block.

    A class, not a ``@contextmanager`` generator: it wraps every gated call, and a plain
    ``__enter__``/``__exit__`` costs a fraction of a generator's setup and teardown.
    """

    __slots__ = ("_access", "_token")

    def __init__(self, access: Access) -> None:
        self._access = access

    def __enter__(self) -> None:
        self._token = _running.set(self._access)

    def __exit__(self, *exc_info: object) -> None:
        _running.reset(self._token)
