"""What the gate decided and why: stable reason codes and the decision value.

Reason codes are stored in the log and documented in the README; they are never renamed or
reused. Each carries what it means and how a caller fixes it, so an ``AccessDenied`` message
tells the reader which rule failed and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = ["REASONS", "AccessDecision", "ReasonCode"]


class ReasonCode(StrEnum):
    """Why an access was allowed or denied."""

    ALLOWED = "allowed"
    BREAK_GLASS = "break_glass"
    NO_CONTEXT = "no_context"
    UNKNOWN_PURPOSE = "unknown_purpose"
    ROLE_NOT_ALLOWED = "role_not_allowed"
    RESOURCE_NOT_IN_POLICY = "resource_not_in_policy"
    PURPOSE_NOT_ALLOWED_FOR_RESOURCE = "purpose_not_allowed_for_resource"
    CUSTOMER_UNRESOLVED = "customer_unresolved"
    MISSING_EVIDENCE = "missing_evidence"
    EVIDENCE_NOT_FOUND = "evidence_not_found"
    EVIDENCE_EXPIRED = "evidence_expired"
    EVIDENCE_REVOKED = "evidence_revoked"
    EVIDENCE_CUSTOMER_MISMATCH = "evidence_customer_mismatch"
    EVIDENCE_SCOPE_EXCEEDED = "evidence_scope_exceeded"
    EVIDENCE_TAMPERED = "evidence_tampered"
    INVALID_REQUEST = "invalid_request"
    UNGATED_READ = "ungated_read"
    CUSTOMER_MISMATCH = "customer_mismatch"

    @property
    def meaning(self) -> str:
        """One line: what this code says about the access."""
        return REASONS[self][0]

    @property
    def fix(self) -> str:
        """One line: what the caller can do about it (empty for allowed accesses)."""
        return REASONS[self][1]


REASONS: Final[dict[ReasonCode, tuple[str, str]]] = {
    ReasonCode.ALLOWED: ("the policy allows this access with the evidence given", ""),
    ReasonCode.BREAK_GLASS: (
        "emergency access without an open incident, permitted by the policy and flagged",
        "",
    ),
    ReasonCode.NO_CONTEXT: (
        "no access context: nobody said who is reading or why",
        "wrap the call in `with access_context(actor_id=..., role=..., purpose=...)`; "
        "in a worker thread, submit carry_context(fn) so the caller's context goes along",
    ),
    ReasonCode.UNKNOWN_PURPOSE: (
        "the purpose is not one of the four the promise allows",
        "use service_delivery, technical_problem, support_request or legal_requirement",
    ),
    ReasonCode.ROLE_NOT_ALLOWED: (
        "the actor's role may not use this purpose",
        "act in a role the policy's [roles] table lists for this purpose",
    ),
    ReasonCode.RESOURCE_NOT_IN_POLICY: (
        "the resource, or a data category it declares, is not in the policy",
        "add the resource and its data_categories to the policy's [resources] table",
    ),
    ReasonCode.PURPOSE_NOT_ALLOWED_FOR_RESOURCE: (
        "the policy does not allow this purpose for this resource",
        "use a purpose listed in the resource's `purposes`, or change the policy",
    ),
    ReasonCode.CUSTOMER_UNRESOLVED: (
        "the customer whose data this is could not be determined from the call",
        "pass the customer id argument the gate was told to read",
    ),
    ReasonCode.MISSING_EVIDENCE: (
        "the purpose needs evidence and none was given",
        "set evidence_ref in the access context to the grant, incident or legal request",
    ),
    ReasonCode.EVIDENCE_NOT_FOUND: (
        "no evidence of the kind this purpose needs has that reference",
        "check the reference with `accessaudit grant|incident|legal list`",
    ),
    ReasonCode.EVIDENCE_EXPIRED: (
        "the evidence is no longer in force (expired, or the incident is closed)",
        "get a new grant, open a new incident or register the renewed legal request",
    ),
    ReasonCode.EVIDENCE_REVOKED: (
        "the customer's grant was revoked",
        "ask the customer for a new grant",
    ),
    ReasonCode.EVIDENCE_CUSTOMER_MISMATCH: (
        "the evidence is for another customer",
        "use evidence issued for the customer whose data is being read",
    ),
    ReasonCode.EVIDENCE_SCOPE_EXCEEDED: (
        "the evidence does not cover this data (categories or record allowance)",
        "ask for a grant that covers the resource's data categories and volume",
    ),
    ReasonCode.EVIDENCE_TAMPERED: (
        "the evidence's own audit record fails its integrity check",
        "run `accessaudit verify` and investigate; the evidence cannot be trusted",
    ),
    ReasonCode.INVALID_REQUEST: (
        "the access could not be described as a valid audit record",
        "fix the listed fields (e.g. too many subject ids, empty identifiers)",
    ),
    ReasonCode.UNGATED_READ: (
        "a query read a protected table outside any gated access to it",
        "run the query inside a @gate.protect function for that resource, or open a gated "
        "read around it: `with gate.guard(resource, customer_id=...):`",
    ),
    ReasonCode.CUSTOMER_MISMATCH: (
        "a gated read loaded, or could load, rows of another customer than the one it was for",
        "filter the query by the gated customer (e.g. .where(Model.customer_id == customer_id))",
    ),
}


@dataclass(frozen=True, slots=True)
class AccessDecision:
    """The verdict on one access request, from ``Policy.decide``."""

    allowed: bool
    reason: ReasonCode
    policy_version: str
    detail: str
    """What was checked and what was found, in one sentence; identifiers only."""
    break_glass: bool = False

    def explain(self) -> str:
        """A message for the caller: the rule that failed, what was found and how to fix it."""
        text = f"{self.reason.value}: {self.detail}"
        return f"{text}; to fix: {self.reason.fix}" if self.reason.fix else text
