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

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from accessaudit._clock import to_iso
from accessaudit.context import AccessContext, current_context
from accessaudit.decisions import AccessDecision, ReasonCode
from accessaudit.events import AccessEvent
from accessaudit.evidence import Grant, LegalRequest
from accessaudit.exceptions import (
    AccessDenied,
    AuditUnavailable,
    MacKeyError,
    StoreError,
)
from accessaudit.fields import ActorType, AttributeValue, Decision, EventType
from accessaudit.policy import AccessRequest
from accessaudit.purposes import EvidenceKind, Purpose, parse_purpose
from accessaudit.store._deadline import operation_deadline

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from contextlib import AbstractContextManager
    from datetime import datetime

    from accessaudit.events import StoredEvent
    from accessaudit.evidence import Evidence
    from accessaudit.policy import Policy
    from accessaudit.registry import EvidenceRegistry
    from accessaudit.store import SqlStore

_log = logging.getLogger("accessaudit")

_EVIDENCE_FOR: Final = {
    Purpose.TECHNICAL_PROBLEM: EvidenceKind.INCIDENT,
    Purpose.SUPPORT_REQUEST: EvidenceKind.GRANT,
    Purpose.LEGAL_REQUIREMENT: EvidenceKind.LEGAL_REQUEST,
}
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


class Access:
    """One access attempt through a gate; ``begin`` before the protected code, then one outcome."""

    def __init__(self, setup: GateSetup, target: Target) -> None:
        self._setup, self.target = setup, target
        self.context: AccessContext | None = current_context()
        self.decision: AccessDecision | None = None
        self.record: StoredEvent | None = None
        """The committed ``access.allowed`` (or ``access.denied``) record."""
        self._evidence: Evidence | None = None
        self._finished = False

    # -- before -----------------------------------------------------------------------------

    def begin(self) -> None:
        """Decide and durably record the decision; raise unless allowed."""
        setup, target = self._setup, self.target
        with self._recording("record the access decision", "the protected code did not run"):
            self._evidence = self._lookup()
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
            decision = setup.policy.decide(request, self._evidence, now=now)
            event_type = EventType.ACCESS_ALLOWED if decision.allowed else EventType.ACCESS_DENIED
            event = self._event(event_type, now, decision=decision)
            (self.record,) = setup.store.append([event])
        self.decision = decision
        if not decision.allowed:
            self._finished = True
            raise AccessDenied(
                f"access to {target.resource} denied, {decision.explain()} "
                f"(recorded as seq {self.record.seq} of chain {self.record.chain_id})",
                decision=decision,
                record=self.record,
            )

    def _lookup(self) -> Evidence | None:
        ctx = self.context
        purpose = parse_purpose(ctx.purpose) if ctx is not None else None
        if ctx is None or ctx.evidence_ref is None or purpose not in _EVIDENCE_FOR:
            return None
        return self._setup.registry.lookup(_EVIDENCE_FOR[purpose], ctx.evidence_ref)

    # -- after ------------------------------------------------------------------------------

    def check_allowance(self, count: int | None, *, handed_out: int = 0) -> None:
        """Refuse to hand out ``count`` records if that takes a grant past its allowance.

        Under a grant with an allowance, a result whose size is unknown (``None``) is
        refused too: it cannot be counted against it. The refusal is recorded
        (``access.failed``, reason ``evidence_scope_exceeded``, with ``handed_out``: what
        already left, e.g. a generator's earlier items) and raised as ``AccessDenied``.
        """
        grant = self._evidence
        if not isinstance(grant, Grant) or grant.max_records is None:
            return
        left = grant.max_records - grant.records_used
        if count is not None and count <= left:
            return
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
        self._finish(
            EventType.ACCESS_FAILED,
            record_count=handed_out,
            reason=decision.reason,
            extra={"withheld": True},
        )
        raise AccessDenied(
            f"result of {self.target.resource} withheld, {decision.explain()}", decision=decision
        )

    def complete(self, record_count: int | None, *, stopped_early: bool = False) -> None:
        """Record that the protected code returned; raises ``AuditUnavailable`` if it cannot."""
        if not stopped_early:  # a generator's items were checked one by one
            self.check_allowance(record_count)
        extra: dict[str, AttributeValue] = {"stopped_early": True} if stopped_early else {}
        self._finish(EventType.ACCESS_COMPLETED, record_count=record_count, extra=extra)

    def fail(self, error: BaseException, *, handed_out: int | None = None) -> None:
        """Record that the protected code raised (its type only); never masks ``error``."""
        kind = type(error)
        try:
            self._finish(
                EventType.ACCESS_FAILED,
                record_count=handed_out,
                extra={"error_type": f"{kind.__module__}.{kind.__qualname__}"[:1024]},
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
    ) -> None:
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
            self._setup.store.append([event])

    # -- shared -----------------------------------------------------------------------------

    def _recording(self, doing: str, consequence: str) -> AbstractContextManager[None]:
        timeout = self._setup.timeout
        resource = self.target.resource
        message = f"could not {doing} for {resource} within {timeout:g}s, so {consequence}"
        return _recording(timeout, message)

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
        is_decision = event_type in (EventType.ACCESS_ALLOWED, EventType.ACCESS_DENIED)
        return AccessEvent(
            event_type=event_type,
            occurred_at=now,
            **who,
            customer_id=target.customer_id,
            resource=target.resource,
            action=target.action,
            data_categories=tuple(sorted(target.data_categories or self._policy_categories())),
            field_names=target.field_names,
            subject_ids=target.subject_ids if target.subject_problem is None else (),
            record_count=record_count,
            decision=(
                (Decision.ALLOWED if decision.allowed else Decision.DENIED)
                if is_decision and decision is not None
                else None
            ),
            reason_code=(reason or (decision.reason if decision else None)),
            policy_version=setup.policy.version,
            origin_host=setup.host,
            origin_pid=os.getpid(),
            origin_service=setup.service,
            attributes=attributes,
        )

    def _policy_categories(self) -> frozenset[str]:
        rule = self._setup.policy.resources.get(self.target.resource)
        return rule.data_categories if rule is not None else frozenset()


@contextmanager
def _recording(timeout: float, message: str) -> Iterator[None]:
    """Bound the store work inside by ``timeout``; turn its failures into ``AuditUnavailable``."""
    try:
        with operation_deadline(timeout):
            yield
    except (StoreError, MacKeyError) as e:
        raise AuditUnavailable(f"{message}: {e}") from e
