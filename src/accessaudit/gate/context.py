"""Who is accessing customer data and why: the access context, held in a context variable.

Set it around the work (``with access_context(...)``) or on a function
(``@access_context(...)``); the previous context comes back on exit, also when the body
raises. A context variable follows the code that set it:

- asyncio: each task starts with a copy of its creator's context, so concurrent tasks never
  see each other's context, and ``asyncio.to_thread`` carries it into its worker thread.
- threads: a new thread (``threading.Thread``, a ``ThreadPoolExecutor`` worker) starts with
  *no* access context, and a gated call there is denied with ``no_context``. Carry it across
  explicitly: ``pool.submit(carry_context(fn), *args)`` runs ``fn`` in a copy of the context
  that was current when ``carry_context`` was called.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

from accessaudit.exceptions import FieldProblem, InvalidEvent
from accessaudit.gate.purposes import Purpose, parse_purpose
from accessaudit.record._validate import check_text, exact_text
from accessaudit.record.fields import FIELDS_BY_NAME, MAX_IDENTIFIER_CHARS, ActorType

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType

__all__ = [
    "AccessContext",
    "ContextScope",
    "RequestInfo",
    "access_context",
    "carry_context",
    "current_context",
    "current_request",
    "request_scope",
]

P = ParamSpec("P")
R = TypeVar("R")

_current: ContextVar[AccessContext | None] = ContextVar("accessaudit_context", default=None)
# Tokens to restore, innermost last. One variable for all scopes: a variable per scope would
# leave an entry behind in every thread's context for every scope ever entered.
_tokens: ContextVar[tuple[Token[AccessContext | None], ...]] = ContextVar(
    "accessaudit_context_tokens", default=()
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessContext:
    """Who acts (actor, type, role, on whose behalf), why (purpose, evidence, justification).

    ``purpose`` is kept as given: one outside the four is not rejected here but denied and
    recorded by the gate. ``actor_customer_id`` is set when the actor is one of a customer's
    own users (evidence ``customer_self``). ``break_glass`` asks for emergency access without
    an open incident, which only a policy that permits it for the role allows.
    Invalid values (empty, NUL, over-long text) raise ``InvalidEvent`` listing each.
    """

    actor_id: str
    actor_type: ActorType = ActorType.HUMAN
    role: str | None = None
    purpose: str | None = None
    evidence_ref: str | None = None
    justification: str | None = None
    on_behalf_of: str | None = None
    actor_customer_id: str | None = None
    request_id: str | None = None
    trace_id: str | None = None
    break_glass: bool = False
    _purpose: Purpose | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def known_purpose(self) -> Purpose | None:
        """``purpose`` as one of the four, or None (parsed once, when the context is made)."""
        return self._purpose

    def __post_init__(self) -> None:
        problems: list[FieldProblem] = []
        try:
            object.__setattr__(self, "actor_type", ActorType(self.actor_type))
        except ValueError:
            problems.append(
                FieldProblem("actor_type", f"must be human or service, got {self.actor_type!r}")
            )
        if not isinstance(self.break_glass, bool):
            problems.append(FieldProblem("break_glass", "must be True or False"))
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name in {"actor_type", "break_glass", "_purpose"} or (
                value is None and spec.name != "actor_id"
            ):
                continue
            record_field = FIELDS_BY_NAME.get(spec.name)
            limit = record_field.max_chars if record_field else MAX_IDENTIFIER_CHARS
            problem = check_text(spec.name, value, limit)
            if problem is not None:
                problems.append(problem)
            else:
                # An exact str from here on: a str subclass could override __eq__ and match
                # another customer's grant or id wherever it is compared.
                object.__setattr__(self, spec.name, exact_text(value))
        object.__setattr__(self, "_purpose", parse_purpose(self.purpose))
        if self.justification is not None and not self.justification.strip():
            # Only blanks is not a reason anybody gave.
            object.__setattr__(self, "justification", None)
        if problems:
            raise InvalidEvent(problems)


def current_context() -> AccessContext | None:
    """The access context in force here, or None."""
    return _current.get()


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestInfo:
    """The request an access happens in, known before (and without) any access context.

    Set by a web integration (``accessaudit.asgi``) for the whole request, so that even a
    denial for want of a context (an unauthenticated call) names its request, trace and
    client. The access context's own ``request_id`` and ``trace_id`` win where both are set.
    """

    request_id: str | None = None
    trace_id: str | None = None
    client_addr: str | None = None

    def __post_init__(self) -> None:
        problems = []
        for name in ("request_id", "trace_id", "client_addr"):
            value = getattr(self, name)
            if value is None:
                continue
            problem = check_text(name, value, MAX_IDENTIFIER_CHARS)
            if problem is not None:
                problems.append(problem)
            else:
                object.__setattr__(self, name, exact_text(value))
        if problems:
            raise InvalidEvent(problems)


_request: ContextVar[RequestInfo | None] = ContextVar("accessaudit_request", default=None)


def current_request() -> RequestInfo | None:
    """The request in force here (see ``request_scope``), or None."""
    return _request.get()


@contextmanager
def request_scope(info: RequestInfo) -> Iterator[RequestInfo]:
    """Put ``info`` in force for the block (a whole request, in a web integration)."""
    token = _request.set(info)
    try:
        yield info
    finally:
        _request.reset(token)


class ContextScope:
    """Puts an ``AccessContext`` in force: as a context manager, or as a decorator.

    Reusable and safe to share between threads and tasks: the way back to the replaced
    context is kept per thread or task, not on the scope object.
    """

    def __init__(self, context: AccessContext) -> None:
        self.context = context

    def __enter__(self) -> AccessContext:
        token = _current.set(self.context)
        _tokens.set((*_tokens.get(), token))
        return self.context

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # ``with`` blocks nest within a thread or task, so the innermost token is ours.
        tokens = _tokens.get()
        if not tokens:
            raise RuntimeError(_ACROSS_CONTEXTS)
        *rest, token = tokens
        try:
            _current.reset(token)
        except ValueError:
            raise RuntimeError(_ACROSS_CONTEXTS) from None
        _tokens.set(tuple(rest))

    def __call__(self, function: Callable[P, R]) -> Callable[P, R]:
        """Run every call of ``function`` (sync or async) inside this context."""
        if inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function):
            # A generator's body runs piecemeal in its consumer's context, so the context
            # cannot be held around it; set it where the generator is consumed instead.
            msg = (
                f"@access_context cannot wrap the generator function {function.__qualname__}; "
                "use `with access_context(...)` where it is iterated"
            )
            raise TypeError(msg)
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                with self:
                    return await function(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with self:
                return function(*args, **kwargs)

        return run


_ACROSS_CONTEXTS: Final = (
    "access_context was left in another context than it was entered in, so the access "
    "context it set was never seen by the code in between. This happens with a FastAPI "
    "sync `yield` dependency (its entry and exit run in different worker threads): use "
    "accessaudit.asgi.AccessContextMiddleware, or an `async def` dependency"
)


def access_context(context: AccessContext | None = None, /, **values: Any) -> ContextScope:
    """A scope for ``context``, or for ``AccessContext(**values)``.

    >>> with access_context(actor_id="agent-7", role="support_agent",
    ...                     purpose="support_request", evidence_ref="grant-1"):
    ...     pass
    """
    if context is None:
        context = AccessContext(**values)
    elif values:
        msg = "pass either an AccessContext or its fields, not both"
        raise TypeError(msg)
    return ContextScope(context)


def carry_context(function: Callable[P, R]) -> Callable[P, R]:
    """``function``, bound to the context current now, for running in another thread.

    Each call runs in a fresh copy of that context, so the same bound function can run in
    several threads at once.
    """
    snapshot = contextvars.copy_context()

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return snapshot.copy().run(function, *args, **kwargs)

    return run
