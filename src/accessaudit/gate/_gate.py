"""The gate: no read of customer data without an allowed purpose and a committed record.

Two forms over one engine (``_access.Access``):

- ``@gate.protect("billing.invoices", customer="customer_id")`` on a function or method,
  sync or async, plain or generator; the wrapped function keeps its signature.
- ``with gate.guard("crm.contacts", customer_id=cid) as access:`` (or ``async with``) for
  code that is not one function; set ``access.record_count`` before leaving the block.

Every call: decide -> commit the decision record -> run (allowed) or ``AccessDenied``
(denied, already recorded) -> commit the outcome. If a record cannot be committed within
the gate's timeout the caller gets ``AuditUnavailable`` and the protected code does not run.

Async callers: the decision is made on the event loop (it is pure) and the records are
written by ``SqlStore.append_async``, which hands all the appends of one turn of the loop to
a worker thread together: the loop never waits for a commit, and 64 tasks share a few
hand-offs instead of making three each. Only a purpose whose evidence must be looked up in
the store first decides in a worker thread (``asyncio.to_thread``, which carries the access
context).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import socket
from collections.abc import Callable, Collection, Iterable, Mapping, Set
from types import AsyncGeneratorType, GeneratorType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from accessaudit.exceptions import FieldProblem, InvalidEvent
from accessaudit.gate._access import Access, GateSetup, Target
from accessaudit.gate._running import running
from accessaudit.gate.registry import EvidenceRegistry
from accessaudit.record._clock import now_utc
from accessaudit.record._validate import check_text, exact_text
from accessaudit.record.fields import MAX_IDENTIFIER_CHARS, MAX_LIST_ITEMS

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Generator
    from contextlib import AbstractContextManager
    from datetime import datetime
    from types import TracebackType

    from accessaudit.gate.policy import Policy
    from accessaudit.store import SqlStore

P = ParamSpec("P")
R = TypeVar("R")

#: How to find a value in a call: a parameter name, or a function of the bound arguments.
ArgumentGetter = str | Callable[[Mapping[str, Any]], object]


class Gate:
    """Checks every protected read against ``policy`` and records it in ``store``.

    ``timeout`` (default: the store's) bounds the wait for each record's commit.
    ``service`` names this application in every record's ``origin_service``; ``host``
    (default: the machine's host name) goes into ``origin_host``: give each host or container
    a stable id when host names are not meaningful.

    The decision record (``access.allowed``/``access.denied``) is always durable (fsynced, or
    flushed by PostgreSQL) before the protected code runs. The outcome record
    (``access.completed``/``access.failed``) is always committed before the result is handed
    out, so killing the application never loses an outcome it acted on; by default it
    reaches the disk with the next decision or within the store's ``sync_within``, which
    saves one fsync per call. ``durable_outcomes=True`` waits for the disk for outcomes too
    (about half the throughput), closing the power-loss window.
    """

    def __init__(
        self,
        store: SqlStore,
        policy: Policy,
        *,
        timeout: float | None = None,
        service: str | None = None,
        host: str | None = None,
        clock: Callable[[], datetime] = now_utc,
        durable_outcomes: bool = False,
    ) -> None:
        problems = [
            problem
            for name, value in (("service", service), ("host", host))
            if value is not None
            and (problem := check_text(name, value, MAX_IDENTIFIER_CHARS)) is not None
        ]
        if problems:  # found now, not as a failure of every call
            raise InvalidEvent(problems)
        self.setup = GateSetup(
            store=store,
            policy=policy,
            registry=EvidenceRegistry(store, clock=clock),
            timeout=store.timeout if timeout is None else timeout,
            clock=clock,
            service=service,
            host=socket.gethostname() if host is None else host,
            durable_outcomes=durable_outcomes,
        )

    @property
    def registry(self) -> EvidenceRegistry:
        """Where this gate finds grants, incidents and legal requests."""
        return self.setup.registry

    def guard(
        self,
        resource: str,
        *,
        customer_id: object,
        subject_ids: object = (),
        data_categories: Iterable[str] = (),
        fields: Iterable[str] = (),
        action: str = "read",
    ) -> Guard:
        """A context manager around code that reads ``resource`` for ``customer_id``."""
        spec = _Spec.make(resource, data_categories, fields, action)
        customer, problem = _customer(customer_id, "customer_id")
        subjects, subject_problem = _subjects(subject_ids, "subject_ids")
        target = spec.target(None, customer, problem, subjects, subject_problem)
        return Guard(self.setup, target)

    def protect(
        self,
        resource: str,
        *,
        customer: ArgumentGetter = "customer_id",
        subjects: ArgumentGetter | None = None,
        data_categories: Iterable[str] = (),
        fields: Iterable[str] = (),
        action: str = "read",
        count: Callable[[Any], int | None] | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """A decorator gating every call of a function that reads ``resource``.

        ``customer`` and ``subjects`` say where the call's customer id and subject ids are:
        a parameter name or a function of the bound arguments. ``count`` gives the number of
        records in a result; by default it is the length of a list, tuple or set, 0 for
        None, the number of items a generator yields, and unknown otherwise.
        """
        spec = _Spec.make(resource, data_categories, fields, action)

        def decorate(function: Callable[P, R]) -> Callable[P, R]:
            signature = inspect.signature(function)
            for getter in (customer, subjects):
                if isinstance(getter, str) and getter not in signature.parameters:
                    msg = f"{function.__qualname__} has no parameter {getter!r} to read ids from"
                    raise TypeError(msg)
            name = f"{function.__module__}.{function.__qualname__}"[:1024]

            def start(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Access:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                arguments = bound.arguments
                cust, problem = _customer(_get(customer, arguments), _named(customer, "customer"))
                subj, subj_problem = (
                    ((), None)
                    if subjects is None
                    else _subjects(_get(subjects, arguments), _named(subjects, "subjects"))
                )
                return Access(self.setup, spec.target(name, cust, problem, subj, subj_problem))

            return _wrap(function, start, count or _count)

        return decorate


class Guard:
    """A guarded block: ``with`` or ``async with``; set ``record_count`` inside.

    Each entry is a new access, decided with the context in force at that moment. A guard
    covers one block at a time.
    """

    def __init__(self, setup: GateSetup, target: Target) -> None:
        self._setup, self._target = setup, target
        self.access: Access | None = None
        self.record_count: int | None = None
        self._running: AbstractContextManager[None] | None = None

    def _start(self) -> Access:
        if self.access is not None:
            msg = "this guard's block is already running; call gate.guard(...) for another"
            raise RuntimeError(msg)
        self.record_count = None
        self.access = Access(self._setup, self._target)
        return self.access

    def _run(self, access: Access) -> None:
        """The block is the protected code: integrations see it as this access."""
        self._running = running(access)
        self._running.__enter__()

    def _end(self) -> Access:
        access, self.access = self.access, None
        if access is None:  # pragma: no cover - only reachable by calling __exit__ by hand
            msg = "this guard was not entered"
            raise RuntimeError(msg)
        scope, self._running = self._running, None
        if scope is not None:
            # Left in another context than it was entered in (a sync yield dependency):
            # the variable cannot be reset there, but the outcome must still be recorded.
            with contextlib.suppress(ValueError):
                scope.__exit__(None, None, None)
        return access

    def __enter__(self) -> Guard:
        access = self._start()
        try:
            access.begin()
        except BaseException:
            self.access = None
            raise
        self._run(access)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        access = self._end()
        if exc is None:
            access.complete(self.record_count)
        else:
            access.fail(exc)

    async def __aenter__(self) -> Guard:
        access = self._start()
        try:
            await access.begin_async()
        except BaseException:
            self.access = None
            raise
        self._run(access)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        access = self._end()
        if exc is None:
            await access.complete_async(self.record_count)
        else:
            await access.fail_async(exc)


# -- declaring and resolving what a call reads ------------------------------------------------


class _Spec:
    """The resource part of a declaration, checked once when the gate is declared."""

    def __init__(
        self, resource: str, categories: frozenset[str], fields: tuple[str, ...], action: str
    ) -> None:
        self.resource, self.categories, self.fields, self.action = (
            resource,
            categories,
            fields,
            action,
        )

    @classmethod
    def make(
        cls, resource: str, categories: Iterable[str], fields: Iterable[str], action: str
    ) -> _Spec:
        cats, names = frozenset(categories), tuple(fields)
        # Every limit the records will hold these to is checked here, at declaration: a
        # declaration the log cannot record would otherwise fail every call.
        problems = [
            p
            for p in (
                check_text("resource", resource, MAX_IDENTIFIER_CHARS),
                check_text("action", action, MAX_IDENTIFIER_CHARS),
                *(check_text(f"data_categories[{c!r}]", c, MAX_IDENTIFIER_CHARS) for c in cats),
                *(check_text(f"fields[{i}]", f, MAX_IDENTIFIER_CHARS) for i, f in enumerate(names)),
                *(
                    FieldProblem(what, f"has {n} items, over the limit of {MAX_LIST_ITEMS}")
                    for what, n in (("data_categories", len(cats)), ("fields", len(names)))
                    if n > MAX_LIST_ITEMS
                ),
            )
            if p is not None
        ]
        if problems:
            raise InvalidEvent(problems)
        return cls(
            exact_text(resource),
            frozenset(exact_text(c) for c in cats),
            tuple(exact_text(f) for f in names),
            exact_text(action),
        )

    def target(
        self,
        function: str | None,
        customer: str | None,
        customer_problem: str | None,
        subjects: tuple[str, ...],
        subject_problem: str | None,
    ) -> Target:
        return Target(
            resource=self.resource,
            data_categories=self.categories,
            field_names=self.fields,
            action=self.action,
            function=function,
            customer_id=customer,
            customer_problem=customer_problem,
            subject_ids=subjects,
            subject_problem=subject_problem,
        )


def _named(getter: ArgumentGetter, what: str) -> str:
    return f"argument {getter!r}" if isinstance(getter, str) else f"the {what} getter"


def _get(getter: ArgumentGetter, arguments: Mapping[str, Any]) -> object:
    if isinstance(getter, str):
        return arguments.get(getter)
    try:
        return getter(arguments)
    except Exception as e:  # noqa: BLE001 - any failure means "could not tell"
        # The type only: the message may quote the argument values.
        return _Unresolved(f"the getter raised {type(e).__name__}")


class _Unresolved:
    def __init__(self, why: str) -> None:
        self.why = why


def as_identifier(value: object) -> str | None:
    """An id from the caller as an exact ``str``, or None if it is not an id.

    Subclasses are copied to plain text through the base types' own methods: a subclass's
    ``__str__`` or ``__eq__`` could otherwise make one id pass for another.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return int.__repr__(value)
    return exact_text(value) if isinstance(value, str) else None


def _customer(value: object, where: str) -> tuple[str | None, str | None]:
    """The customer id, or None and why not (never quoting the value itself)."""
    if isinstance(value, _Unresolved):
        return None, value.why
    customer = as_identifier(value)
    if customer is None:
        return None, f"{where} is {type(value).__name__}, not a customer id"
    problem = check_text("customer_id", customer, MAX_IDENTIFIER_CHARS)
    return (None, f"{where}: {problem.problem}") if problem else (customer, None)


def _subjects(value: object, where: str) -> tuple[tuple[str, ...], str | None]:
    """Subject ids as text, or () and what is wrong with them."""
    if isinstance(value, _Unresolved):
        return (), value.why
    if value is None:
        return (), None
    single = as_identifier(value)
    if single is not None:
        value = (single,)
    if not isinstance(value, Collection) or isinstance(value, Mapping | bytes):
        # An iterator would be used up here and reach the function empty.
        return (), f"{where} must be an id or a list, tuple or set of ids"
    if len(value) > MAX_LIST_ITEMS:
        return (), f"{where} has {len(value)} ids, over the limit of {MAX_LIST_ITEMS}"
    ids = []
    for index, item in enumerate(value):
        text = as_identifier(item)
        problem = None if text is None else check_text("id", text, MAX_IDENTIFIER_CHARS)
        if text is None or problem is not None:
            what = problem.problem if problem else f"is {type(item).__name__}, not an id"
            return (), f"{where}[{index}] {what}"
        ids.append(text)
    return tuple(ids), None


def _count(result: object) -> int | None:
    if result is None:
        return 0
    if isinstance(result, list | tuple | Set):
        return len(result)
    return None


# -- wrapping the four kinds of function ------------------------------------------------------


def _counted(access: Access, result: object, count: Callable[[Any], int | None]) -> int | None:
    """``count(result)``, checked; a failing or nonsensical count is the access failing."""
    try:
        return _checked_count(result, count)
    except Exception as e:
        access.fail(e)
        raise


def _checked_count(result: object, count: Callable[[Any], int | None]) -> int | None:
    number = count(result)
    if number is not None and (
        isinstance(number, bool) or not isinstance(number, int) or number < 0
    ):
        msg = f"count= must give a non-negative int or None, not {type(number).__name__}"
        raise TypeError(msg)
    return number


def _wrap(
    function: Callable[P, R],
    start: Callable[[tuple[Any, ...], dict[str, Any]], Access],
    count: Callable[[Any], int | None],
) -> Callable[P, R]:
    if inspect.isasyncgenfunction(function):
        return _wrap_async_generator(function, start)  # type: ignore[return-value]
    if inspect.isgeneratorfunction(function):
        return _wrap_generator(function, start)  # type: ignore[return-value]
    if inspect.iscoroutinefunction(function):
        return _wrap_coroutine(function, start, count)

    @functools.wraps(function)
    def gated(*args: P.args, **kwargs: P.kwargs) -> R:
        access = start(args, kwargs)
        access.begin()
        try:
            with running(access):
                result = function(*args, **kwargs)
        except BaseException as e:
            access.fail(e)
            raise
        # What the body handed back may still have to run: an undetected coroutine (a
        # wrapper hid it), or a generator. The access is over only when that has run.
        if isinstance(result, GeneratorType):
            return _iterate(access, result)  # type: ignore[return-value]
        if isinstance(result, AsyncGeneratorType):
            return _aiterate(access, result)  # type: ignore[return-value]
        if inspect.isawaitable(result):
            return _awaited(access, result, count)  # type: ignore[return-value]
        access.complete(_counted(access, result, count), result_held=True)
        return result

    return gated


async def _awaited(
    access: Access, awaitable: Awaitable[Any], count: Callable[[Any], int | None]
) -> Any:
    try:
        with running(access):
            result = await awaitable
    except BaseException as e:
        await access.fail_async(e)
        raise
    try:
        number = _checked_count(result, count)
    except Exception as e:
        await access.fail_async(e)
        raise
    await access.complete_async(number, result_held=True)
    return result


def _wrap_coroutine(
    function: Callable[..., Any],
    start: Callable[[tuple[Any, ...], dict[str, Any]], Access],
    count: Callable[[Any], int | None],
) -> Callable[..., Any]:
    @functools.wraps(function)
    async def gated(*args: Any, **kwargs: Any) -> Any:
        access = start(args, kwargs)
        await access.begin_async()
        return await _awaited(access, function(*args, **kwargs), count)

    return gated


def _wrap_generator(
    function: Callable[..., Generator[Any, Any, Any]],
    start: Callable[[tuple[Any, ...], dict[str, Any]], Access],
) -> Callable[..., Generator[Any, Any, Any]]:
    @functools.wraps(function)
    def gated(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        # Runs at the first next(): that is when the protected body would start.
        access = start(args, kwargs)
        access.begin()
        return (yield from _iterate(access, function(*args, **kwargs)))

    return gated


def _iterate(access: Access, inner: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    """Hand out ``inner``'s items within the grant's allowance; record how it ended."""
    yielded = 0
    try:
        with running(access):  # the body runs piecemeal: it is the protected code each time
            item = next(inner)
        while True:
            access.check_allowance(yielded + 1, handed_out=yielded)
            yielded += 1
            try:
                sent = yield item
            except GeneratorExit:
                raise
            except BaseException as e:  # noqa: BLE001 - thrown in by the consumer: pass it on
                with running(access):
                    item = inner.throw(e)
            else:
                with running(access):
                    item = inner.send(sent)
    except StopIteration as stop:
        access.complete(yielded)
        return stop.value
    except GeneratorExit:
        _close_then(access, inner.close, yielded)
        raise
    except BaseException as e:
        try:
            inner.close()
        finally:
            access.fail(e, handed_out=yielded)
        raise


def _close_then(access: Access, close: Callable[[], object], yielded: int) -> None:
    """Close the inner generator, then record the early stop (or how closing failed)."""
    try:
        with running(access):
            close()
    except BaseException as e:
        access.fail(e, handed_out=yielded)
        raise
    access.complete(yielded, stopped_early=True)


def _wrap_async_generator(
    function: Callable[..., AsyncGenerator[Any, Any]],
    start: Callable[[tuple[Any, ...], dict[str, Any]], Access],
) -> Callable[..., AsyncGenerator[Any, Any]]:
    @functools.wraps(function)
    async def gated(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        access = start(args, kwargs)
        await access.begin_async()
        # Async generators have no ``yield from``: forward items, asend, athrow and aclose.
        inner = _aiterate(access, function(*args, **kwargs))
        try:
            item = await anext(inner)
            while True:
                try:
                    sent = yield item
                except GeneratorExit:
                    raise
                except BaseException as e:  # noqa: BLE001 - thrown in by the consumer
                    item = await inner.athrow(e)
                else:
                    item = await inner.asend(sent)
        except StopAsyncIteration:
            return
        finally:
            await inner.aclose()

    return gated


async def _aiterate(access: Access, inner: AsyncGenerator[Any, Any]) -> AsyncGenerator[Any, Any]:
    """The async twin of ``_iterate`` (store work in a thread, off the event loop)."""
    yielded = 0
    try:
        with running(access):
            item = await anext(inner)
        while True:
            await access.check_allowance_async(yielded + 1, handed_out=yielded)
            yielded += 1
            try:
                sent = yield item
            except GeneratorExit:
                raise
            except BaseException as e:  # noqa: BLE001 - as in _iterate
                with running(access):
                    item = await inner.athrow(e)
            else:
                with running(access):
                    item = await inner.asend(sent)
    except StopAsyncIteration:
        await access.complete_async(yielded)
    except GeneratorExit:
        try:
            with running(access):
                await inner.aclose()
        except BaseException as e:
            await access.fail_async(e, handed_out=yielded)
            raise
        await access.complete_async(yielded, stopped_early=True)
        raise
    except BaseException as e:
        try:
            await inner.aclose()
        finally:
            await access.fail_async(e, handed_out=yielded)
        raise
