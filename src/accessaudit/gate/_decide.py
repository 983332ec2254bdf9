"""The evidence half of ``Policy.decide``: whether what the context cites justifies a read.

Pure functions of their arguments. Checks run from the most telling failure to the least: a
grant for another customer is reported as that, even if it has also expired.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from accessaudit.gate.decisions import AccessDecision, ReasonCode
from accessaudit.gate.evidence import EVIDENCE_TYPES, Grant, Incident, LegalRequest
from accessaudit.gate.purposes import (
    EVIDENCE_NEEDED,
    EVIDENCE_NOUNS,
    EvidenceKind,
    Purpose,
    cited_evidence_kind,
)
from accessaudit.record._clock import to_iso
from accessaudit.record.fields import ActorType

if TYPE_CHECKING:
    from datetime import datetime

    from accessaudit.gate.context import AccessContext
    from accessaudit.gate.evidence import Evidence
    from accessaudit.gate.policy import AccessRequest, Policy


def deny(version: str, reason: ReasonCode, detail: str) -> AccessDecision:
    """A refusal for ``reason``."""
    return AccessDecision(allowed=False, reason=reason, policy_version=version, detail=detail)


def allow(version: str, detail: str, *, break_glass: bool = False) -> AccessDecision:
    """A permission, flagged when it is a break-glass access."""
    reason = ReasonCode.BREAK_GLASS if break_glass else ReasonCode.ALLOWED
    return AccessDecision(
        allowed=True, reason=reason, policy_version=version, detail=detail, break_glass=break_glass
    )


def check_evidence(
    policy: Policy,
    purpose: Purpose,
    request: AccessRequest,
    evidence: Evidence | None,
    *,
    categories: frozenset[str],
    now: datetime,
) -> AccessDecision:
    """Whether the evidence for ``purpose`` covers this customer, these categories, now."""
    ctx, customer = request.context, request.customer_id
    if ctx is None or customer is None:  # decide() answers these before asking
        msg = "check_evidence needs a context and a customer"
        raise ValueError(msg)
    kind = cited_evidence_kind(purpose)
    if kind is None:  # service delivery: who is asking is the evidence
        return _service(policy, ctx, customer)
    version = policy.version
    if ctx.evidence_ref is None:
        if purpose is Purpose.TECHNICAL_PROBLEM and ctx.break_glass:
            return _break_glass(policy, ctx, "no incident given")
        needed = EVIDENCE_NEEDED[kind]
        return deny(version, ReasonCode.MISSING_EVIDENCE, f"{purpose.value} needs {needed}")
    if evidence is None or not isinstance(evidence, EVIDENCE_TYPES[kind]):
        what = EVIDENCE_NOUNS[kind]
        return deny(version, ReasonCode.EVIDENCE_NOT_FOUND, f"no {what} {ctx.evidence_ref!r}")
    if not evidence.intact:
        return deny(
            version,
            ReasonCode.EVIDENCE_TAMPERED,
            f"the audit records of {ctx.evidence_ref!r} fail their integrity check",
        )
    if isinstance(evidence, Grant):
        decision = _grant(
            version, evidence, customer, categories, requested=request.requested_records, now=now
        )
    elif isinstance(evidence, Incident):
        decision = _incident(version, evidence, customer, now)
    else:
        decision = _legal(version, evidence, customer, now)
    if not decision.allowed and purpose is Purpose.TECHNICAL_PROBLEM and ctx.break_glass:
        return _break_glass(policy, ctx, decision.detail)
    return decision


def _service(policy: Policy, ctx: AccessContext, customer: str) -> AccessDecision:
    accepted = policy.evidence[Purpose.SERVICE_DELIVERY]
    version = policy.version
    if EvidenceKind.SERVICE_IDENTITY in accepted and ctx.actor_type is ActorType.SERVICE:
        return allow(version, f"service {ctx.actor_id} serving customer {customer}")
    if EvidenceKind.CUSTOMER_SELF in accepted and ctx.actor_customer_id is not None:
        if ctx.actor_customer_id != customer:
            return deny(
                version,
                ReasonCode.EVIDENCE_CUSTOMER_MISMATCH,
                f"a user of customer {ctx.actor_customer_id} "
                f"may not read customer {customer}'s data",
            )
        return allow(version, f"customer {customer}'s own user {ctx.actor_id}")
    wanted = " or ".join(EVIDENCE_NEEDED[kind] for kind in sorted(accepted))
    return deny(
        version,
        ReasonCode.MISSING_EVIDENCE,
        f"service_delivery needs {wanted}; {ctx.actor_id} is neither",
    )


def _break_glass(policy: Policy, ctx: AccessContext, why: str) -> AccessDecision:
    version = policy.version
    if ctx.role not in policy.break_glass_roles:
        return deny(
            version,
            ReasonCode.MISSING_EVIDENCE,
            f"{why}, and break-glass is not permitted for role {ctx.role!r}",
        )
    if ctx.justification is None:
        return deny(
            version, ReasonCode.MISSING_EVIDENCE, f"{why}; break-glass access needs a justification"
        )
    return allow(version, f"break-glass by {ctx.actor_id} ({why})", break_glass=True)


def _grant(
    version: str,
    grant: Grant,
    customer: str,
    categories: frozenset[str],
    *,
    requested: int,
    now: datetime,
) -> AccessDecision:
    ref = grant.grant_id
    if grant.customer_id != customer:
        return deny(
            version,
            ReasonCode.EVIDENCE_CUSTOMER_MISMATCH,
            f"grant {ref} (case {grant.case_id}) is for customer {grant.customer_id}, "
            f"not {customer}",
        )
    if grant.revoked_at is not None:  # from its record on (see Grant.status)
        return deny(
            version,
            ReasonCode.EVIDENCE_REVOKED,
            f"grant {ref} was revoked at {to_iso(grant.revoked_at)}",
        )
    if grant.expires_at <= now:
        return deny(
            version,
            ReasonCode.EVIDENCE_EXPIRED,
            f"grant {ref} expired at {to_iso(grant.expires_at)}",
        )
    uncovered = categories - grant.data_categories
    if uncovered:
        return deny(
            version,
            ReasonCode.EVIDENCE_SCOPE_EXCEEDED,
            f"grant {ref} covers {sorted(grant.data_categories)}, not {sorted(uncovered)}",
        )
    left = grant.records_left
    if left is not None and (left <= 0 or requested > left):
        return deny(
            version,
            ReasonCode.EVIDENCE_SCOPE_EXCEEDED,
            f"grant {ref} allows {grant.max_records} records; {grant.records_used} read so far "
            "or held by accesses in progress"
            + (f", {requested} more asked for" if requested else ""),
        )
    return allow(version, f"grant {ref} (case {grant.case_id}) of customer {customer}")


def _incident(version: str, incident: Incident, customer: str, now: datetime) -> AccessDecision:
    ref = incident.incident_id
    if not incident.covers(customer):
        return deny(
            version,
            ReasonCode.EVIDENCE_CUSTOMER_MISMATCH,
            f"incident {ref} does not concern customer {customer}",
        )
    if incident.closed_at is not None:
        return deny(
            version,
            ReasonCode.EVIDENCE_EXPIRED,
            f"incident {ref} was closed at {to_iso(incident.closed_at)}",
        )
    return allow(version, f"open incident {ref}")


def _legal(version: str, request: LegalRequest, customer: str, now: datetime) -> AccessDecision:
    ref = request.reference
    if request.customer_id != customer:
        return deny(
            version,
            ReasonCode.EVIDENCE_CUSTOMER_MISMATCH,
            f"legal request {ref} names customer {request.customer_id}, not {customer}",
        )
    if request.expires_at <= now:
        return deny(
            version,
            ReasonCode.EVIDENCE_EXPIRED,
            f"legal request {ref} expired at {to_iso(request.expires_at)}",
        )
    return allow(version, f"legal request {ref} from {request.authority}")
