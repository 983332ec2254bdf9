"""Where a gated call's time goes: microbenchmarks of each step, for scripts/bench.py.

One thread, one step at a time, µs per op (wall and CPU), the median over reps:

- decide: ``Policy.decide`` on a prepared request (pure, no I/O);
- build: the ``AccessEvent`` the gate builds for a decision (``Access._event``);
- encode+hash: ``seal_batch`` of one event (canonical encoding, leaf, link, MAC) and
  ``to_row`` (the column values);
- structlog: ``emit_appended`` of one sealed record, structlog configured as the CLI does
  with --log-events, to /dev/null;
- store_durable: one durable ``SqlStore.append`` of one event on SQLite, minus encode+hash
  and structlog (which ``append`` also does): validation, SQL, the commit and its fsync;
- store_lazy: the same with ``durable=False`` (committed, synced with the next durable
  commit), as the gate writes its outcome record.

An allowed gated call does decide once, build, encode+hash and structlog twice, and one
append of each kind (``access.allowed`` durable, then ``access.completed`` lazy). The whole
gated call is timed too, right after its parts; what it takes beyond their sum ("other")
is the gate's own bookkeeping (binding the arguments, reading the context, deadlines) and
the protected function itself.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

from bench_gated import POLICY, TIMEOUT_S
from bench_threads import CUSTOMER, SERVICE, read_contacts

from accessaudit import EventType, Gate, MacKey, Policy, SqlStore, access_context
from accessaudit.gate._access import Access, Target
from accessaudit.gate.policy import AccessRequest
from accessaudit.record._rows import to_row
from accessaudit.record.integrity import GENESIS_HASH, seal_batch
from accessaudit.record.log import emit_appended

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from accessaudit import AccessEvent

UNITS = ("wall_us", "cpu_us")
#: Pure steps are fast: run more of them per rep so the clock's resolution does not matter.
PURE_FACTOR = 10


def _per_op(op: Callable[[], object], count: int) -> tuple[float, float]:
    """Wall and CPU µs per op over ``count`` ops."""
    wall, cpu = time.perf_counter_ns(), time.process_time_ns()
    for _ in range(count):
        op()
    return (
        (time.perf_counter_ns() - wall) / 1000 / count,
        (time.process_time_ns() - cpu) / 1000 / count,
    )


def _median_of(reps: int, op: Callable[[], object], count: int) -> dict[str, float]:
    runs = [_per_op(op, count) for _ in range(reps)]
    return {
        "wall_us": statistics.median(w for w, _ in runs),
        "cpu_us": statistics.median(c for _, c in runs),
    }


def cpu_split(path: Path, key: MacKey, reps: int, ops: int) -> dict[str, Any]:
    """µs per op of each step of a gated call, on a fresh SQLite log at ``path``."""
    store = SqlStore(f"sqlite:///{path}", key=key, must_exist=False, timeout=TIMEOUT_S)
    with store:
        store.create_schema()
        policy = Policy.load(POLICY)
        gate = Gate(store, policy, service="bench")
        # The same request and record the gate makes for gated read_contacts("acme").
        target = Target(
            resource="crm.contacts",
            data_categories=frozenset(),
            field_names=(),
            action="read",
            function="bench_threads.read_contacts",
            customer_id=CUSTOMER,
        )
        with access_context(SERVICE):
            access = Access(gate.setup, target)
        request = AccessRequest(context=SERVICE, resource=target.resource, customer_id=CUSTOMER)
        now = gate.setup.clock()
        decision = policy.decide(request, None, now=now)
        if not decision.allowed:
            raise SystemExit(f"the benchmark's request is not allowed: {decision.explain()}")

        def build() -> AccessEvent:
            return access._event(EventType.ACCESS_ALLOWED, now, decision=decision)

        event = build()
        sealed = seal_batch("main", 1, GENESIS_HASH, [event], key)
        pure = ops * PURE_FACTOR
        steps = {
            "decide": _median_of(reps, lambda: policy.decide(request, None, now=now), pure),
            "build": _median_of(reps, build, pure),
            "encode_hash": _median_of(
                reps, lambda: to_row(seal_batch("main", 1, GENESIS_HASH, [event], key)[0]), pure
            ),
            "structlog": _median_of(reps, lambda: emit_appended(sealed), pure),
        }
        # Each append needs an event of its own (event ids are unique), built beforehand.
        fresh = iter([build() for _ in range(2 * reps * ops)])
        steps["append"] = _median_of(reps, lambda: store.append([next(fresh)]), ops)
        steps["append_lazy"] = _median_of(
            reps, lambda: store.append([next(fresh)], durable=False), ops
        )
        # The whole call, right after its parts: the same moment's fsync latency.
        read = gate.protect("crm.contacts")(read_contacts)
        with access_context(SERVICE):
            steps["gated_call"] = _median_of(reps, lambda: read(CUSTOMER), ops)
    steps["store_durable"] = _minus(steps["append"], steps["encode_hash"], steps["structlog"])
    steps["store_lazy"] = _minus(steps["append_lazy"], steps["encode_hash"], steps["structlog"])
    per_call = {
        "decide": 1,
        "build": 2,
        "encode_hash": 2,
        "structlog": 2,
        "store_durable": 1,
        "store_lazy": 1,
    }
    accounted = {unit: sum(steps[step][unit] * n for step, n in per_call.items()) for unit in UNITS}
    steps["other"] = _minus(steps["gated_call"], accounted)
    return {
        "steps": steps,
        "per_gated_call": per_call,
        "accounted": accounted,
        "ops_per_rep": {"pure": pure, "append": ops, "gated_call": ops},
    }


def _minus(whole: dict[str, float], *parts: dict[str, float]) -> dict[str, float]:
    return {unit: whole[unit] - sum(part[unit] for part in parts) for unit in UNITS}
