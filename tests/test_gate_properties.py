"""Property: no body ever runs without its ``access.allowed`` record already committed.

Random sequences of gated calls (functions, generators, coroutines, guards), with random
contexts (allowed or not) and random store outages. Each body checks, over a separate
connection, that the decision record of its own call is committed before it does anything.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accessaudit import (
    AccessContext,
    AccessDenied,
    ActorType,
    AuditUnavailable,
    Gate,
    Policy,
    SqlStore,
    access_context,
    current_context,
    verify_store,
)
from tests.gatekit import EXAMPLE_POLICY
from tests.test_gate_faults import _hold_write_lock, _release

if TYPE_CHECKING:
    from collections.abc import Iterator

    from accessaudit import MacKey
    from tests.conftest import Backend

SHAPES = ("function", "generator", "coroutine", "guard")
ROLES = ("app", "support_agent", None)  # only "app" may read for service_delivery


class Witness:
    """Bodies report here; each checks its decision record is visible to another session."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.ran: list[str] = []

    def body(self) -> None:
        """Called first thing by every protected body."""
        ctx = current_context()
        assert ctx is not None
        assert ctx.request_id is not None
        rows = self.backend.sql(
            "SELECT count(*) FROM accessaudit_events "
            "WHERE request_id = :r AND event_type = 'access.allowed'",
            r=ctx.request_id,
        )
        assert rows == [(1,)], f"body of {ctx.request_id} ran before its record was committed"
        self.ran.append(ctx.request_id)


def _protected(gate: Gate, witness: Witness) -> dict[str, Any]:
    @gate.protect("crm.contacts")
    def function(customer_id: str) -> list[int]:
        witness.body()
        return [1]

    @gate.protect("crm.contacts")
    def generator(customer_id: str) -> Iterator[int]:
        witness.body()
        yield 1
        yield 2

    @gate.protect("crm.contacts")
    async def coroutine(customer_id: str) -> list[int]:
        witness.body()
        return [1]

    def guard(customer_id: str) -> None:
        with gate.guard("crm.contacts", customer_id=customer_id):
            witness.body()

    return {
        "function": function,
        "generator": lambda c: next(iter(generator(c))),
        "coroutine": lambda c: asyncio.run(coroutine(c)),
        "guard": guard,
    }


calls = st.lists(
    st.tuples(st.sampled_from(SHAPES), st.sampled_from(ROLES), st.booleans()),
    min_size=1,
    max_size=6,
)


def test_no_body_runs_without_a_committed_decision(backend: Backend, key: MacKey) -> None:
    """Across random calls, contexts and outages, ran == allowed-and-committed, in order."""
    with SqlStore(backend.url, key=key, must_exist=False, timeout=2) as store:
        store.create_schema()
        gate = Gate(store, Policy.load(EXAMPLE_POLICY), timeout=0.3)
        witness = Witness(backend)
        protected = _protected(gate, witness)
        examples = 15 if backend.name == "postgresql" else 30

        @settings(
            max_examples=examples, suppress_health_check=[HealthCheck.function_scoped_fixture]
        )
        @given(calls)
        def run(sequence: list[tuple[str, str | None, bool]]) -> None:
            for shape, role, outage in sequence:
                request = str(uuid.uuid4())
                ctx = AccessContext(
                    actor_id="svc",
                    actor_type=ActorType.SERVICE,
                    role=role,
                    purpose="service_delivery",
                    request_id=request,
                )
                # Nothing can be recorded during an outage, not even a denial; otherwise
                # only "app" may read for service_delivery.
                expected = AuditUnavailable if outage else (None if role == "app" else AccessDenied)
                blocker = _hold_write_lock(backend) if outage else None
                raised: type[Exception] | None = None
                why = ""
                try:
                    with access_context(ctx):
                        protected[shape]("acme")
                except (AccessDenied, AuditUnavailable) as e:
                    raised, why = type(e), str(e)
                finally:
                    if blocker is not None:
                        _release(blocker)
                assert raised is expected, why
                assert (request in witness.ran) is (expected is None)
                if blocker is None and role == "app":
                    assert witness.ran[-1] == request

        run()
        allowed = backend.sql(
            "SELECT request_id FROM accessaudit_events WHERE event_type = 'access.allowed' "
            "ORDER BY seq"
        )
        assert [r[0] for r in allowed] == witness.ran
        assert verify_store(store, key).intact
