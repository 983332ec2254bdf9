"""How the gate reads ids from calls, and what it does with odd ones; types under mypy."""

from __future__ import annotations

import asyncio
import functools
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, assert_type

import pytest

from accessaudit import (
    AccessDenied,
    EventType,
    Gate,
    InvalidEvent,
    Policy,
    ReasonCode,
    access_context,
)
from tests.gatekit import EXAMPLE_POLICY, Desk, accesses, agent, kinds, service

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Iterator

    from accessaudit import SqlStore


def _read(gate: Gate, **declared: Any) -> Any:
    @gate.protect("crm.contacts", **declared)
    def read(customer_id: object, ids: object = None) -> int:
        return 1

    return read


@pytest.mark.parametrize(
    ("arguments", "reason", "detail"),
    [
        ((None, None), ReasonCode.CUSTOMER_UNRESOLVED, "argument 'customer_id' is NoneType"),
        (({"id": 1}, None), ReasonCode.CUSTOMER_UNRESOLVED, "is dict, not a customer id"),
        (("", None), ReasonCode.CUSTOMER_UNRESOLVED, "must not be empty"),
        (("acme", iter(["a"])), ReasonCode.INVALID_REQUEST, "must be an id or a list"),
        (("acme", {"a": 1}), ReasonCode.INVALID_REQUEST, "must be an id or a list"),
        (("acme", ["a", 1.5]), ReasonCode.INVALID_REQUEST, "[1] is float, not an id"),
        (("acme", ["a", "x" * 257]), ReasonCode.INVALID_REQUEST, "[1] is 257 characters"),
    ],
)
def test_unusable_ids_are_denied_and_recorded(
    gate: Gate,
    store: SqlStore,
    arguments: tuple[object, object],
    reason: ReasonCode,
    detail: str,
) -> None:
    """The denial says what was wrong with the argument without quoting its value."""
    read = _read(gate, subjects="ids")
    with access_context(service()), pytest.raises(AccessDenied) as caught:
        read(*arguments)
    assert caught.value.reason is reason
    assert detail in str(caught.value)
    (denied,) = accesses(store)
    assert denied.event.subject_ids == ()


def test_numbers_are_ids_and_getters_may_fail(gate: Gate, store: SqlStore) -> None:
    """Integer ids are recorded as text; a getter that raises means 'customer unresolved'."""
    with access_context(service()):
        _read(gate, subjects="ids")(42, [7, "u-8"])
        failing = _read(gate, customer=lambda args: args["customer_id"]["missing"])
        with pytest.raises(AccessDenied, match="the getter raised TypeError"):
            failing("acme")
    first = accesses(store)[0].event
    assert (first.customer_id, first.subject_ids) == ("42", ("7", "u-8"))


def test_bad_declarations_fail_at_import_time(gate: Gate) -> None:
    """An empty resource name or a NUL in a field name is refused when declared."""
    with pytest.raises(ValueError, match="resource: must not be empty"):
        gate.protect("")
    with pytest.raises(ValueError, match=r"fields\[0\]: contains a NUL"):
        gate.guard("crm.contacts", customer_id="acme", fields=["a\x00"])


def test_a_custom_count(gate: Gate, store: SqlStore) -> None:
    """count= tells the gate how many records a result holds."""

    @gate.protect("crm.contacts", count=lambda page: len(page["items"]))
    def page(customer_id: str) -> dict[str, list[int]]:
        return {"items": [1, 2, 3]}

    @gate.protect("crm.contacts")
    def one(customer_id: str) -> object:
        return object()

    with access_context(service()):
        page("acme")
        one("acme")
    counts = [r.event.record_count for r in accesses(store) if r.event.decision is None]
    assert counts == [3, None]


def test_async_generators_closed_early_or_failing(gate: Gate, store: SqlStore) -> None:
    """An async generator left early is completed with stopped_early; a failing one, failed."""

    @gate.protect("crm.contacts")
    async def rows(customer_id: str, fail: bool) -> AsyncGenerator[int, None]:
        yield 1
        if fail:
            raise LookupError
        yield 2

    async def main() -> None:
        with access_context(service()):
            generator = rows("acme", fail=False)
            assert await anext(generator) == 1
            await generator.aclose()
            with pytest.raises(LookupError):
                _ = [item async for item in rows("acme", fail=True)]

    asyncio.run(main())
    assert kinds(store) == [
        "access.allowed:allowed",
        "access.completed:allowed",
        "access.allowed:allowed",
        "access.failed:allowed",
    ]
    stopped, failed = accesses(store)[1].event, accesses(store)[3].event
    assert stopped.attributes["stopped_early"] is True
    assert (failed.record_count, failed.attributes["error_type"]) == (1, "builtins.LookupError")


def test_generators_failing_midway_count_what_they_handed_out(gate: Gate, store: SqlStore) -> None:
    """Items yielded before an exception were handed out, and are counted on the failure."""

    @gate.protect("crm.contacts")
    def rows(customer_id: str) -> Iterator[int]:
        yield 1
        yield 2
        raise LookupError

    with access_context(service()), pytest.raises(LookupError):
        list(rows("acme"))
    failed = accesses(store)[-1].event
    assert failed.record_count == 2


def test_static_types_are_kept(desk: Desk) -> None:
    """The decorated functions' return types are what they were (checked by mypy)."""
    with access_context(service()):
        assert_type(desk.invoices("acme", limit=1), tuple[int, ...])
        assert_type(desk.contacts("acme", ["c"]), list[dict[str, str]])
        assert_type(desk.contacts_of({"customer": "acme"}), dict[str, str])


@pytest.fixture
def desk(gate: Gate) -> Desk:
    """Protected functions over the test's gate."""
    return Desk(gate)


def test_mypy_strict_rejects_a_call_the_original_would_reject(tmp_path: Path) -> None:
    """A wrong argument type to a gated function is a mypy --strict error, as without it."""
    source = tmp_path / "use_gate.py"
    source.write_text(
        textwrap.dedent(
            """
            from accessaudit import Gate

            def build(gate: Gate) -> None:
                @gate.protect("crm.contacts")
                def read(customer_id: str, limit: int = 10) -> list[int]:
                    return []

                ok: list[int] = read("acme", limit=3)
                bad = read("acme", limit="three")
            """
        )
    )
    root = Path(__file__).parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(source)],
        capture_output=True,
        text=True,
        cwd=root,
        check=False,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, result.stdout
    assert ':10: error: Argument "limit" to "read" has incompatible type "str"' in errors[0]


def test_a_guard_is_a_new_access_each_time_it_is_entered(gate: Gate, store: SqlStore) -> None:
    """Re-entering one guard records a new decision and outcome, and counts against grants."""
    grant = gate.registry.issue_grant(
        customer_id="acme",
        case_id="CASE-1",
        data_categories=["contact"],
        expires_at=gate.setup.clock() + timedelta(days=1),
        issued_by="agent-7",
        max_records=2,
    )
    guard = gate.guard("crm.contacts", customer_id="acme")
    with access_context(agent(grant.grant_id)):
        for _ in range(2):
            with guard as access:
                access.record_count = 1
        with pytest.raises(AccessDenied, match="2 read so far"), guard:
            pass  # pragma: no cover - never entered
    other = gate.guard("crm.contacts", customer_id="acme")
    with (
        access_context(service()),
        other,
        pytest.raises(RuntimeError, match="already running"),
        other,
    ):
        pass  # pragma: no cover - never entered
    assert kinds(store)[:4] == ["access.allowed:allowed", "access.completed:allowed"] * 2
    assert kinds(store)[4] == "access.denied:evidence_scope_exceeded"


def test_an_unknown_result_size_is_withheld_under_a_capped_grant(
    gate: Gate, store: SqlStore
) -> None:
    """A capped grant cannot be charged for what cannot be counted: the result is withheld."""
    grant = gate.registry.issue_grant(
        customer_id="acme",
        case_id="CASE-1",
        data_categories=["contact"],
        expires_at=gate.setup.clock() + timedelta(days=1),
        issued_by="agent-7",
        max_records=100,
    )

    @gate.protect("crm.contacts")
    def profile(customer_id: str) -> dict[str, str]:
        return {"email": "x"}

    with access_context(agent(grant.grant_id)), pytest.raises(AccessDenied, match="unknown"):
        profile("acme")
    assert kinds(store)[-1] == "access.failed:evidence_scope_exceeded"


def test_hidden_coroutines_and_returned_generators_are_followed(
    gate: Gate, store: SqlStore
) -> None:
    """Coroutines behind plain wrappers and returned generators are recorded once run.

    The outcome is written when the coroutine or generator has actually run, with what it
    produced or how it failed, not when the plain function returned it.
    """
    order: list[str] = []

    def hide(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def plain(*args: Any, **kwargs: Any) -> Any:
            return function(*args, **kwargs)

        return plain

    @gate.protect("crm.contacts")
    @hide
    async def fetch(customer_id: str, fail: bool = False) -> list[int]:
        order.append(f"body, records so far: {len(accesses(store))}")
        if fail:
            raise LookupError
        return [1, 2]

    @gate.protect("crm.contacts")
    def lazily(customer_id: str) -> Iterator[int]:
        return (i for i in range(3))

    with access_context(service()):
        assert asyncio.run(fetch("acme")) == [1, 2]
        with pytest.raises(LookupError):
            asyncio.run(fetch("acme", fail=True))
        assert list(lazily("acme")) == [0, 1, 2]
    assert order == ["body, records so far: 1", "body, records so far: 3"]
    counts = [(r.event.event_type.value, r.event.record_count) for r in accesses(store)]
    assert counts == [
        ("access.allowed", None),
        ("access.completed", 2),
        ("access.allowed", None),
        ("access.failed", None),
        ("access.allowed", None),
        ("access.completed", 3),
    ]


def test_a_generator_failing_to_close_is_recorded_as_failed(gate: Gate, store: SqlStore) -> None:
    """If closing the body raises, the outcome is a failure, not a lost record."""

    @gate.protect("crm.contacts")
    def rows(customer_id: str) -> Iterator[int]:
        try:
            yield 1
            yield 2
        finally:
            raise OSError  # e.g. a cursor that cannot be closed

    with access_context(service()):
        generator = rows("acme")
        next(generator)
        with pytest.raises(OSError):  # noqa: PT011 - the body's own error
            generator.close()  # type: ignore[attr-defined]
    failed = accesses(store)[-1].event
    assert (failed.event_type, failed.attributes["error_type"]) == (
        EventType.ACCESS_FAILED,
        "builtins.OSError",
    )


@pytest.mark.parametrize(
    ("bad", "error"), [(lambda result: -1, TypeError), (lambda result: 1 / 0, ZeroDivisionError)]
)
def test_a_broken_count_fails_the_access(
    gate: Gate, store: SqlStore, bad: Callable[[Any], int], error: type[Exception]
) -> None:
    """A count= that raises or gives nonsense is recorded as the access failing."""

    @gate.protect("crm.contacts", count=bad)
    def rows(customer_id: str) -> list[int]:
        return [1]

    with access_context(service()), pytest.raises(error):
        rows("acme")
    assert kinds(store)[-1] == "access.failed:allowed"


def test_host_and_service_name_the_origin(store: SqlStore) -> None:
    """A gate's host id and service name go into every record it writes."""
    gate = Gate(store, Policy.load(EXAMPLE_POLICY), host="web-3", service="billing-api")
    with access_context(service()):
        _read(gate)("acme")
    origins = {(s.event.origin_host, s.event.origin_service) for s in store.read()}
    assert origins == {("web-3", "billing-api")}


@pytest.mark.parametrize(("option", "value"), [("host", ""), ("service", "a\x00b"), ("host", 7)])
def test_unusable_origin_names_are_refused_up_front(
    store: SqlStore, option: str, value: object
) -> None:
    """An empty or non-text host id or service name fails when the gate is made."""
    with pytest.raises(InvalidEvent, match=option):
        Gate(store, Policy.load(EXAMPLE_POLICY), **{option: value})  # type: ignore[arg-type]
