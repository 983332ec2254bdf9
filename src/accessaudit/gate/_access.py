"""One gated access attempt: decide, record, and record the outcome.

``Access`` is the engine behind both gate forms (the decorator and ``Gate.guard``). Its
order of work is the library's central promise:

1. decide (pure) from the access context, the resource and the looked-up evidence;
2. append the ``access.allowed`` or ``access.denied`` record and wait for its commit;
   if that fails within the timeout: ``AuditUnavailable``, and the caller's code never runs;
3. denied: ``AccessDenied``; allowed: the caller's code runs;
4. append ``access.completed`` (with a record count where known) or ``access.failed``
   (with the exception's type only, never its message).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from accessaudit.exceptions import (
    AccessDenied,
    AuditUnavailable,
    ConfigurationError,
    MacKeyError,
    StoreError,
)
from accessaudit.gate._allowance import ALLOWANCE_EVENTS, RESERVED, records_used
from accessaudit.gate.context import AccessContext, RequestInfo, current_context, current_request
from accessaudit.gate.decisions import AccessDecision, ReasonCode
from accessaudit.gate.evidence import ENDING_EVENTS, Grant, LegalRequest
from accessaudit.gate.policy import AccessRequest
from accessaudit.gate.purposes import cited_evidence_kind
from accessaudit.record._clock import to_iso
from accessaudit.record.events import AccessEvent
from accessaudit.record.fields import ActorType, AttributeValue, Decision, EventType
from accessaudit.store import PreconditionFailed

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime
    from types import TracebackType

    from accessaudit.gate.evidence import Evidence
    from accessaudit.gate.policy import Policy
    from accessaudit.gate.registry import EvidenceRegistry
    from accessaudit.record.events import StoredEvent
    from accessaudit.store import ChainView, Precondition, SqlStore

_log = logging.getLogger("accessaudit")

#: How often an access decides again when the evidence changed between its lookup and the
#: commit of its decision. A withdrawal or a taken allowance is seen by the next decision,
#: which then denies: a second attempt is all it normally takes.
_DECISION_ATTEMPTS: Final = 3
#: Recorded as the actor when code reads with no access context at all.
NO_CONTEXT_ACTOR: Final = "(no access context)"


@dataclass(frozen=True, slots=True)
class GateSetup:
    """What every access through one gate shares."""

    store: SqlStore
    policy: Policy
    registry: EvidenceRegistry
    timeout: float
    clock: Callable[[], datetime]
    service: str | None
    host: str
    durable_outcomes: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """What one call reads: resolved from the call's arguments before deciding."""

    resource: str
    data_categories: frozenset[str]
    field_names: tuple[str, ...]
    action: str
    function: str | None
    customer_id: str | None
    customer_problem: str | None = None
    subject_ids: tuple[str, ...] = ()
    subject_problem: str | None = None


class _EvidenceChanged(PreconditionFailed):
    """The evidence an allowed decision rested on changed before its record was committed."""

    def __init__(self, reason: ReasonCode, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Access:
    """One access attempt through a gate; ``begin`` before the protected code, then one outcome."""

    def __init__(self, setup: GateSetup, target: Target) -> None:
        self._setup, self.target = setup, target
        self.context: AccessContext | None = current_context()
        self.request: RequestInfo | None = current_request()
        self.decision: AccessDecision | None = None
        self.record: StoredEvent | None = None
        """The committed ``access.allowed`` (or ``access.denied``) record."""
        self._evidence: Evidence | None = None
        ctx = self.context
        self._kind = cited_evidence_kind(ctx.known_purpose) if ctx else None
        """The kind of recorded evidence this access cites, if its purpose needs one."""
        self._relied_on: str | None = None
        """The reference of the recorded evidence an allowed decision rested on, if any."""
        self._reserved: int | None = None
        """Records of a capped grant's allowance this access holds (see ``_allowance``)."""
        self._finished = False
        self.rows_loaded: int | None = None
        """Rows of the resource an integration saw the protected code load, if it watched."""
        self.violation: AccessDecision | None = None
        """Why the result must be withheld, found while the protected code ran."""

    @property
    def finished(self) -> bool:
        """Whether the access has ended: denied, or its outcome recorded."""
        return self._finished

    # -- told by an integration while the protected code runs ------------------------------

    def count_loaded(self, rows: int) -> None:
        """Count ``rows`` loaded from the resource; the outcome records the total."""
        self.rows_loaded = (self.rows_loaded or 0) + rows

    def withhold(self, reason: ReasonCode, detail: str) -> AccessDenied:
        """Mark the result as never to be handed out; the error for the protected code.

        Whatever the protected code does with the error, the access ends as
        ``access.failed`` with ``reason`` and ``withheld``, and the caller gets
        ``AccessDenied``.
        """
        decision = AccessDecision(
            allowed=False, reason=reason, policy_version=self._setup.policy.version, detail=detail
        )
        if self.violation is None:
            self.violation = decision
        return self._withheld_error(decision)

    def _withheld_error(self, decision: AccessDecision) -> AccessDenied:
        return AccessDenied(
            f"result of {self.target.resource} withheld, {decision.explain()}", decision=decision
        )

    def refuse(self, decision: AccessDecision, extra: dict[str, AttributeValue]) -> AccessDenied:
        """Durably record ``decision`` (a denial the policy did not make); the error to raise.

        For reads the gate never saw (an integration caught them at the query): the record
        is ``access.denied`` like any other denial, committed before the query is refused.
        """
        self.decision = decision
        _drive(self._refusal_steps(decision, extra), self._setup.store)
        assert self.record is not None  # noqa: S101 - the steps stored it or raised
        return AccessDenied(
            f"read of {self.target.resource} refused, {decision.explain()} "
            f"(recorded as seq {self.record.seq} of chain {self.record.chain_id})",
            decision=decision,
            record=self.record,
        )

    def observe(self, decision: AccessDecision, extra: dict[str, AttributeValue]) -> None:
        """Record a read the gate never saw and let it happen (``access.ungated``).

        For adopting the gate: the read goes ahead, but not unrecorded. The record is
        committed before the read runs, durable as the gate's outcomes are.
        """
        self.decision = decision
        _drive(self._refusal_steps(decision, extra, observed=True), self._setup.store)

    def _refusal_steps(
        self, decision: AccessDecision, extra: dict[str, AttributeValue], *, observed: bool = False
    ) -> _Steps:
        event_type = EventType.ACCESS_UNGATED if observed else EventType.ACCESS_DENIED
        event = self._event(event_type, self._setup.clock(), decision=decision, extra=extra)
        consequence = "the read did not run"
        with self._recording("record a read outside the gate", consequence):
            (self.record,) = yield _Append(
                [event], None, durable=not observed or self._setup.durable_outcomes
            )
        self._finished = True

    # -- before -----------------------------------------------------------------------------

    def begin(self) -> None:
        """Decide and durably record the decision; raise unless allowed.

        An allowed decision that rests on recorded evidence is committed only if, at the
        commit, the evidence is still not withdrawn and (for a capped grant) its allowance
        is still free: otherwise nothing is stored and the access is decided again on what
        the chain says now. So no ``access.allowed`` record ever follows, in chain order,
        the withdrawal of the evidence it cites.
        """
        _drive(self._begin_steps(), self._setup.store)

    async def begin_async(self) -> None:
        """``begin`` without blocking the event loop."""
        if self._kind is not None:
            # Evidence is looked up in the store before deciding: all of it in a thread.
            await asyncio.to_thread(self.begin)
        else:
            await _drive_async(self._begin_steps(), self._setup.store)

    def _begin_steps(self) -> _Steps:
        with self._recording("record the access decision", "the protected code did not run"):
            changed: _EvidenceChanged | None = None
            for _ in range(_DECISION_ATTEMPTS):
                decision, event = self._decide()
                check = self._still_holds if self._relied_on is not None else None
                try:
                    (self.record,) = yield _Append([event], check, durable=True)
                    break
                except _EvidenceChanged as e:
                    changed = e
            else:
                # Still changing after every attempt: deny, and record that, as any denial.
                assert changed is not None  # noqa: S101 - the loop ran and failed each time
                decision, event = self._denied_because(changed)
                (self.record,) = yield _Append([event], None, durable=True)
        self.decision = decision
        if not decision.allowed:
            self._finished = True
            raise AccessDenied(
                f"access to {self.target.resource} denied, {decision.explain()} "
                f"(recorded as seq {self.record.seq} of chain {self.record.chain_id})",
                decision=decision,
                record=self.record,
            )

    def _decide(self) -> tuple[AccessDecision, AccessEvent]:
        """The decision on the evidence as it stands now, and the record saying so."""
        setup, target = self._setup, self.target
        self._evidence = evidence = self._lookup()
        request = AccessRequest(
            context=self.context,
            resource=target.resource,
            customer_id=target.customer_id,
            data_categories=target.data_categories,
            customer_problem=target.customer_problem,
            requested_records=len(target.subject_ids),
            invalid=target.subject_problem,
        )
        now = setup.clock()
        decision = setup.policy.decide(request, evidence, now=now)
        # Break-glass is allowed *without* the evidence it may cite (a closed incident, say).
        rests_on_evidence = decision.allowed and not decision.break_glass and evidence
        self._relied_on = self.context.evidence_ref if rests_on_evidence and self.context else None
        reserve: dict[str, AttributeValue] = {}
        self._reserved = None
        if self._relied_on and isinstance(evidence, Grant) and evidence.max_records is not None:
            # Held until the outcome is recorded: the ids asked for, or, when the result's
            # size is unknown until it is there, everything that is left.
            self._reserved = len(target.subject_ids) or evidence.records_left
            reserve[RESERVED] = self._reserved
        event_type = EventType.ACCESS_ALLOWED if decision.allowed else EventType.ACCESS_DENIED
        return decision, self._event(event_type, now, decision=decision, extra=reserve)

    def _denied_because(self, changed: _EvidenceChanged) -> tuple[AccessDecision, AccessEvent]:
        decision = AccessDecision(
            allowed=False,
            reason=changed.reason,
            policy_version=self._setup.policy.version,
            detail=f"{changed} each time the access was decided ({_DECISION_ATTEMPTS} attempts)",
        )
        self._relied_on, self._reserved = None, None
        return decision, self._event(
            EventType.ACCESS_DENIED, self._setup.clock(), decision=decision
        )

    def _lookup(self) -> Evidence | None:
        ctx, kind = self.context, self._kind
        if ctx is None or ctx.evidence_ref is None or kind is None:
            return None
        return self._setup.registry.lookup(kind, ctx.evidence_ref)

    @property
    def _cited(self) -> str:
        ctx = self.context
        return repr(ctx.evidence_ref) if ctx is not None else "(none)"

    def _still_holds(self, chain: ChainView) -> None:
        """Precondition of the allowed record: the evidence not withdrawn, its allowance free.

        Runs inside the append's transaction (see ``store._guarded``).
        """
        ref, grant, ending = self._relied_on, self._evidence, self._endings
        if ref is None:
            return
        chain.hold(ref)  # a withdrawal or a use on another chain is now seen, or waits
        cap = grant.max_records if isinstance(grant, Grant) else None
        types = ending | (set(ALLOWANCE_EVENTS) if cap is not None else set())
        uses = chain.uses(ref, types) if types else []
        if any(u.event_type in ending for u in uses):
            raise _EvidenceChanged(ReasonCode.EVIDENCE_REVOKED, f"{ref} was withdrawn")
        held = self._reserved
        if cap is not None and held is not None and records_used(uses) + held > cap:
            raise _EvidenceChanged(
                ReasonCode.EVIDENCE_SCOPE_EXCEEDED, f"the allowance of {ref} is taken"
            )

    def _not_withdrawn(self, chain: ChainView) -> None:
        """Precondition of the outcome of a read whose result is still held back."""
        ref, ending = self._relied_on, self._endings
        if ref is not None and ending:
            chain.hold(ref)
        if ref is not None and ending and chain.uses(ref, ending):
            raise _EvidenceChanged(ReasonCode.EVIDENCE_REVOKED, f"{ref} was withdrawn")

    @property
    def _endings(self) -> set[str]:
        """The record types that withdraw evidence of this access's kind (may be none)."""
        return {t.value for t in ENDING_EVENTS[self._kind]} if self._kind else set()

    # -- after ------------------------------------------------------------------------------

    def check_allowance(self, count: int | None, *, handed_out: int = 0) -> None:
        """Refuse to hand out ``count`` records if that takes a grant past its allowance.

        See ``_allowance_steps``.
        """
        _drive(self._allowance_steps(count, handed_out), self._setup.store)

    async def check_allowance_async(self, count: int | None, *, handed_out: int = 0) -> None:
        """``check_allowance`` without blocking the event loop."""
        await _drive_async(self._allowance_steps(count, handed_out), self._setup.store)

    def _allowance_steps(self, count: int | None, handed_out: int) -> _Steps:
        """Refuse to hand out ``count`` records if that takes a grant past its allowance.

        Under a grant with an allowance, a result whose size is unknown (``None``) is
        refused too: it cannot be counted against it. The refusal is recorded
        (``access.failed``, reason ``evidence_scope_exceeded``, with ``handed_out``: what
        already left, e.g. a generator's earlier items) and raised as ``AccessDenied``.
        """
        grant, left = self._evidence, self._reserved
        if not isinstance(grant, Grant) or left is None:
            return
        if count is not None and count <= left:
            return
        yield from ()  # a generator even when nothing is recorded
        detail = (
            f"grant {grant.grant_id} allows {left} more records and the result's size is "
            "unknown (pass count= to the gate)"
            if count is None
            else f"grant {grant.grant_id} allowed {left} more records; the result has {count}"
        )
        decision = AccessDecision(
            allowed=False,
            reason=ReasonCode.EVIDENCE_SCOPE_EXCEEDED,
            policy_version=self._setup.policy.version,
            detail=detail,
        )
        yield from self._finish(
            EventType.ACCESS_FAILED,
            record_count=handed_out,
            reason=decision.reason,
            extra={"withheld": True},
        )
        raise AccessDenied(
            f"result of {self.target.resource} withheld, {decision.explain()}", decision=decision
        )

    def complete(
        self, record_count: int | None, *, stopped_early: bool = False, result_held: bool = False
    ) -> None:
        """Record that the protected code returned; raises ``AuditUnavailable`` if it cannot.

        ``result_held``: the result has not been handed to the caller yet, so evidence
        withdrawn while the code ran still wins: the result is withheld (``AccessDenied``,
        recorded as ``access.failed`` with reason ``evidence_revoked``).
        """
        steps = self._complete_steps(record_count, stopped_early, result_held)
        _drive(steps, self._setup.store)

    async def complete_async(
        self, record_count: int | None, *, stopped_early: bool = False, result_held: bool = False
    ) -> None:
        """``complete`` without blocking the event loop."""
        steps = self._complete_steps(record_count, stopped_early, result_held)
        await _drive_async(steps, self._setup.store)

    def _complete_steps(
        self, record_count: int | None, stopped_early: bool, result_held: bool
    ) -> _Steps:
        if self.violation is not None:
            yield from self._withheld(self.violation)
        if self.rows_loaded is not None:
            record_count = self.rows_loaded
        if not stopped_early:  # a generator's items were checked one by one
            yield from self._allowance_steps(record_count, 0)
        extra: dict[str, AttributeValue] = {"stopped_early": True} if stopped_early else {}
        check = self._not_withdrawn if result_held and self._relied_on else None
        try:
            yield from self._finish(
                EventType.ACCESS_COMPLETED, record_count=record_count, extra=extra, check=check
            )
        except _EvidenceChanged:
            self._finished = False
            yield from self._withheld(
                AccessDecision(
                    allowed=False,
                    reason=ReasonCode.EVIDENCE_REVOKED,
                    policy_version=self._setup.policy.version,
                    detail=f"the evidence {self._cited} was withdrawn while it was being read",
                )
            )

    def _withheld(self, decision: AccessDecision) -> _Steps:
        """Record the result as withheld for ``decision`` and raise ``AccessDenied``."""
        yield from self._finish(
            EventType.ACCESS_FAILED,
            record_count=0,
            reason=decision.reason,
            extra={"withheld": True},
        )
        raise self._withheld_error(decision) from None

    def fail(self, error: BaseException, *, handed_out: int | None = None) -> None:
        """Record that the protected code raised (its type only); never masks ``error``."""
        _drive(self._fail_steps(error, handed_out), self._setup.store)

    async def fail_async(self, error: BaseException, *, handed_out: int | None = None) -> None:
        """``fail`` without blocking the event loop."""
        await _drive_async(self._fail_steps(error, handed_out), self._setup.store)

    def _fail_steps(self, error: BaseException, handed_out: int | None) -> _Steps:
        kind = type(error)
        extra: dict[str, AttributeValue] = {
            "error_type": f"{kind.__module__}.{kind.__qualname__}"[:1024]
        }
        if self.violation is not None:
            extra["withheld"] = True
        try:
            yield from self._finish(
                EventType.ACCESS_FAILED,
                record_count=handed_out,
                reason=None if self.violation is None else self.violation.reason,
                extra=extra,
            )
        except AuditUnavailable as lost:
            # The caller is getting ``error`` and no data; the allowed record stands. Losing
            # the failure record is reported here rather than replacing the real error, by
            # type only: the traceback would carry ``error``'s message, which may hold data.
            _log.error(
                "accessaudit could not record the failure of an allowed access to %s "
                "(the protected code raised %s): %s",
                self.target.resource,
                f"{kind.__module__}.{kind.__qualname__}",
                lost,
            )

    def _finish(
        self,
        event_type: EventType,
        *,
        record_count: int | None = None,
        reason: ReasonCode | None = None,
        extra: dict[str, AttributeValue] | None = None,
        check: Precondition | None = None,
    ) -> _Steps:
        if self._finished:
            return
        self._finished = True
        allowed = self.record
        link: dict[str, AttributeValue] = (
            {"access_event_id": str(allowed.event.event_id)} if allowed else {}
        )
        event = self._event(
            event_type,
            self._setup.clock(),
            record_count=record_count,
            reason=reason,
            extra={**link, **(extra or {})},
        )
        with self._recording("record the access outcome", "the result was withheld"):
            yield _Append([event], check, durable=self._setup.durable_outcomes)

    # -- shared -----------------------------------------------------------------------------

    def _recording(self, doing: str, consequence: str) -> _Recording:
        return _Recording(self, doing, consequence)

    def _event(
        self,
        event_type: EventType,
        now: datetime,
        *,
        decision: AccessDecision | None = None,
        record_count: int | None = None,
        reason: ReasonCode | None = None,
        extra: dict[str, AttributeValue] | None = None,
    ) -> AccessEvent:
        setup, target, ctx = self._setup, self.target, self.context
        decision = decision or self.decision
        attributes: dict[str, AttributeValue] = {}
        if target.function is not None:
            attributes["function"] = target.function
        if ctx is not None and ctx.actor_customer_id is not None:
            attributes["actor_customer_id"] = ctx.actor_customer_id
        if decision is not None and decision.break_glass:
            attributes["break_glass"] = True
        legal = self._evidence
        if isinstance(legal, LegalRequest) and legal.notify_after is not None:
            attributes["notify_after"] = to_iso(legal.notify_after)
        attributes.update(extra or {})
        is_decision = event_type in (EventType.ACCESS_ALLOWED, EventType.ACCESS_DENIED)
        varying: dict[str, Any] = {
            "event_type": event_type,
            "occurred_at": now,
            "record_count": record_count,
            "decision": (
                (Decision.ALLOWED if decision.allowed else Decision.DENIED)
                if is_decision and decision is not None
                else None
            ),
            "reason_code": (reason or (decision.reason if decision else None)),
            "origin_pid": os.getpid(),
            "attributes": attributes,
        }
        if self.record is not None:
            # The outcome: the same actor, target and origin as the decision record, which
            # validated them; only what differs is validated again.
            return self.record.event.derive(**varying)
        request = self.request
        who: dict[str, Any] = (
            {"actor_id": NO_CONTEXT_ACTOR, "actor_type": ActorType.SERVICE}
            if ctx is None
            else {
                "actor_id": ctx.actor_id,
                "actor_type": ctx.actor_type,
                "role": ctx.role,
                "on_behalf_of": ctx.on_behalf_of,
                "purpose": ctx.purpose,
                "evidence_ref": ctx.evidence_ref,
                "justification": ctx.justification,
                "request_id": ctx.request_id,
                "trace_id": ctx.trace_id,
            }
        )
        if request is not None:
            # The request's ids where the context has none; denials without one included.
            who["request_id"] = who.get("request_id") or request.request_id
            who["trace_id"] = who.get("trace_id") or request.trace_id
            who["origin_client_addr"] = request.client_addr
        return AccessEvent(
            **varying,
            **who,
            customer_id=target.customer_id,
            resource=target.resource,
            action=target.action,
            data_categories=tuple(sorted(target.data_categories or self._policy_categories())),
            field_names=target.field_names,
            subject_ids=target.subject_ids if target.subject_problem is None else (),
            policy_version=setup.policy.version,
            origin_host=setup.host,
            origin_service=setup.service,
        )

    def _policy_categories(self) -> frozenset[str]:
        rule = self._setup.policy.resources.get(self.target.resource)
        return rule.data_categories if rule is not None else frozenset()


@dataclass(frozen=True, slots=True)
class _Append:
    """One append an access asks its driver for (see ``_drive``)."""

    batch: list[AccessEvent]
    check: Precondition | None
    durable: bool


#: An access's work as steps: it yields the appends it needs and is sent their records (or
#: has their error thrown in). One body of logic, driven by ``_drive`` for callers on a
#: thread and by ``_drive_async`` for coroutines, which must never block their loop.
_Steps = Generator[_Append, "list[StoredEvent]", None]


def _drive(steps: _Steps, store: SqlStore) -> None:
    """Run ``steps`` on this thread: each append is ``store.append``."""
    try:
        request = next(steps)
        while True:
            try:
                stored = store.append(
                    request.batch, precondition=request.check, durable=request.durable
                )
            except BaseException as e:  # noqa: BLE001 - thrown into the steps, which decide
                request = steps.throw(e)
            else:
                request = steps.send(stored)
    except StopIteration:
        return


async def _drive_async(steps: _Steps, store: SqlStore) -> None:
    """Run ``steps`` in a coroutine: each append is ``store.append_async``."""
    try:
        request = next(steps)
        while True:
            try:
                stored = await store.append_async(
                    request.batch, precondition=request.check, durable=request.durable
                )
            except BaseException as e:  # noqa: BLE001 - thrown into the steps, which decide
                request = steps.throw(e)
            else:
                request = steps.send(stored)
    except StopIteration:
        return


class _Recording:
    """Bound the store work inside by the gate's timeout; its failures become ``AuditUnavailable``.

    A class rather than a ``@contextmanager`` generator, with its message written only on
    failure: it wraps both appends of every gated call, where each microsecond is paid
    under the GIL.
    """

    __slots__ = ("_access", "_budget", "_consequence", "_doing")

    def __init__(self, access: Access, doing: str, consequence: str) -> None:
        self._access, self._doing, self._consequence = access, doing, consequence

    def __enter__(self) -> None:
        setup = self._access._setup
        self._budget = setup.store.budget(setup.timeout)
        self._budget.__enter__()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._budget.__exit__(kind, error, trace)
        if isinstance(error, StoreError | MacKeyError | ConfigurationError):
            # A store whose URL names no log (a ConfigurationError to a command line user)
            # is, to a gated caller, one more store that cannot record: the same fail-closed
            # error.
            timeout, resource = self._access._setup.timeout, self._access.target.resource
            raise AuditUnavailable(
                f"could not {self._doing} for {resource} within {timeout:g}s, so "
                f"{self._consequence}: {error}"
            ) from error
