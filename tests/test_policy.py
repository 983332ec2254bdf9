"""Policies: one schema for every route in, faults reported with key paths, pure decisions."""

from __future__ import annotations

import json
import os
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from accessaudit import (
    AccessContext,
    AccessRequest,
    ActorType,
    EvidenceKind,
    Grant,
    Incident,
    LegalRequest,
    Policy,
    PolicyError,
    Purpose,
    ReasonCode,
    ResourceRule,
)
from accessaudit.gate._policy_schema import POLICY_SCHEMA
from accessaudit.gate.policy import UnusualVolume

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "policy.toml"
SCHEMA_FILE = ROOT / "schemas" / "policy.v1.schema.json"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _document() -> dict[str, Any]:
    with EXAMPLE.open("rb") as handle:
        return tomllib.load(handle)


def test_schema_file_matches_the_code() -> None:
    """schemas/policy.v1.schema.json is exactly the schema the library validates with."""
    if os.environ.get("ACCESSAUDIT_REGENERATE_SCHEMAS") == "1":
        SCHEMA_FILE.write_text(json.dumps(POLICY_SCHEMA, indent=2, ensure_ascii=False) + "\n")
    assert json.loads(SCHEMA_FILE.read_text()) == POLICY_SCHEMA
    jsonschema.Draft202012Validator.check_schema(POLICY_SCHEMA)


def test_example_policy_loads_with_its_rules() -> None:
    """The shipped example is valid and means what it says."""
    policy = Policy.load(EXAMPLE)
    assert policy.roles["support_agent"] == {Purpose.SUPPORT_REQUEST}
    assert policy.resources["billing.invoices"].data_categories == {"billing", "contact"}
    assert Purpose.TECHNICAL_PROBLEM not in policy.resources["billing.invoices"].purposes
    assert policy.break_glass_roles == {"sre"}
    assert policy.evidence[Purpose.SERVICE_DELIVERY] == {
        EvidenceKind.SERVICE_IDENTITY,
        EvidenceKind.CUSTOMER_SELF,
    }
    assert policy.source == str(EXAMPLE)
    assert policy.version.startswith("sha256:")
    assert len(policy.version) == len("sha256:") + 64


def test_three_routes_in_give_the_same_policy() -> None:
    """File, mapping and Python values describing one policy have one version."""
    from_file = Policy.load(EXAMPLE)
    from_mapping = Policy.from_dict(_document())
    built = Policy.build(
        roles={r: sorted(p) for r, p in from_file.roles.items()},
        resources={
            name: {
                "data_categories": rule.data_categories,
                "purposes": rule.purposes,
                **({"description": rule.description} if rule.description else {}),
            }
            for name, rule in from_file.resources.items()
        },
        break_glass_roles=["sre"],
        name="example-saas",
    )
    assert from_file.version == from_mapping.version == built.version
    assert Policy.from_dict(from_file.to_dict()).version == from_file.version


def test_version_changes_with_meaning_only() -> None:
    """Reordered lists keep the version; one more purpose for a resource changes it."""
    document = _document()
    base = Policy.from_dict(document).version
    document["roles"]["app"] = list(reversed(document["roles"]["app"]))
    document["resources"]["crm.contacts"]["purposes"].reverse()
    assert Policy.from_dict(document).version == base
    document["resources"]["app.documents"]["purposes"].append("support_request")
    assert Policy.from_dict(document).version != base


def _problems(document: Any) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        Policy.from_dict(document, source="test.toml")
    assert str(caught.value).startswith("invalid policy test.toml: ")
    return [str(p) for p in caught.value.problems]


def test_every_fault_is_reported_with_its_key_path() -> None:
    """Several mistakes at once: each one named by where it is and what is wrong."""
    document = _document()
    document["roles"]["support_agent"] = ["support_request", "marketing"]
    del document["resources"]["billing.invoices"]["data_categories"]
    document["resources"]["crm.contacts"]["purposes"][0] = "analytics"
    document["retention"] = 30
    problems = _problems(document)
    assert len(problems) == 4
    assert any(p.startswith("(top level): Additional properties") for p in problems)
    assert any(p.startswith("roles.support_agent[1]: 'marketing' is not one of") for p in problems)
    assert any(
        p.startswith("resources.\"billing.invoices\": 'data_categories' is a required property")
        for p in problems
    )
    assert any(
        p.startswith("resources.\"crm.contacts\".purposes[0]: 'analytics'") for p in problems
    )


def test_references_between_sections_must_resolve() -> None:
    """A break-glass role that may not use technical_problem, a purpose no role has."""
    document = _document()
    document["purposes"]["technical_problem"]["break_glass_roles"] = ["support_agent"]
    document["roles"]["legal"] = ["support_request"]
    problems = _problems(document)
    assert problems == [
        "purposes.technical_problem.break_glass_roles[0]: role 'support_agent' may not use "
        "technical_problem (list technical_problem for it under [roles], or remove it here)",
        'resources."crm.contacts".purposes[3]: no role may use legal_requirement, so this grants '
        "nothing (give a role that purpose under [roles], or remove it here)",
        'resources."billing.invoices".purposes[2]: no role may use legal_requirement, so this '
        "grants nothing (give a role that purpose under [roles], or remove it here)",
        'resources."app.documents".purposes[1]: no role may use legal_requirement, so this grants '
        "nothing (give a role that purpose under [roles], or remove it here)",
    ]


def test_evidence_can_be_narrowed_not_widened() -> None:
    """service_delivery may be limited to service identities; a grant for it is refused."""
    document = _document()
    document["purposes"]["service_delivery"] = {"evidence": ["service_identity"]}
    assert Policy.from_dict(document).evidence[Purpose.SERVICE_DELIVERY] == {
        EvidenceKind.SERVICE_IDENTITY
    }
    document["purposes"]["service_delivery"] = {"evidence": ["grant"]}
    assert _problems(document)[0].startswith("purposes.service_delivery.evidence[0]: 'grant'")


def test_syntax_errors_name_the_file_and_line(tmp_path: Path) -> None:
    """A broken TOML file is reported with its path and the parser's line and column."""
    path = tmp_path / "policy.toml"
    path.write_text('version = 1\n[roles\napp = ["service_delivery"]\n')
    with pytest.raises(PolicyError, match=rf"invalid policy {path}: \(syntax\): .*line 2"):
        Policy.load(path)


def test_a_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    """The message says which file and why it could not be read."""
    with pytest.raises(PolicyError, match=r"nope.toml: \(file\): cannot be read: No such file"):
        Policy.load(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"version = 1\n\xff\xfe", r"\(file\): is not UTF-8 text \(byte 0xff at offset 12\)"),
        (b"\x7fELF\x02\x01\x01\x00\x00", r"\(syntax\): "),
        (b"a = " + b"[" * 50_000 + b"]" * 50_000, r"\(syntax\): .* nested too deeply"),
        (b"x = 1\n" * 200_000, r"\(file\): is larger than 1,048,576 bytes"),
    ],
    ids=["not-utf8", "binary", "deep", "huge"],
)
def test_files_that_are_no_policy_are_policy_errors(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    """Binary, non-UTF-8, absurdly nested or huge files: a PolicyError saying so, no crash."""
    path = tmp_path / "policy.toml"
    path.write_bytes(content)
    with pytest.raises(PolicyError, match=rf"invalid policy {path}: {problem}"):
        Policy.load(path)


def test_a_path_with_a_nul_is_a_policy_error() -> None:
    """A path the operating system cannot even name is reported, not raised as ValueError."""
    with pytest.raises(PolicyError, match=r"\(file\): cannot be read: the path contains a NUL"):
        Policy.load("policy\x00.toml")


def test_direct_construction_is_checked_too() -> None:
    """The dataclass constructor runs the same checks as a file."""
    policy = Policy.load(EXAMPLE)
    with pytest.raises(PolicyError, match="break_glass_roles"):
        Policy(
            roles=policy.roles,
            resources=policy.resources,
            evidence=policy.evidence,
            break_glass_roles=frozenset({"legal"}),
        )


names = st.from_regex(r"[a-j][a-j_.:/-]{0,7}", fullmatch=True)
purposes = st.sets(st.sampled_from(list(Purpose)), min_size=1)


@st.composite
def policy_documents(draw: st.DrawFn) -> dict[str, Any]:
    """Valid policy mappings: every resource purpose usable by some role."""
    roles = draw(st.dictionaries(names.map(lambda n: "r" + n), purposes, min_size=1, max_size=4))
    usable = sorted({p for ps in roles.values() for p in ps})
    resources = draw(
        st.dictionaries(
            names.map(lambda n: "res" + n),
            st.tuples(
                st.lists(names, min_size=1, max_size=3, unique=True),
                st.lists(st.sampled_from(usable), min_size=1, max_size=4, unique=True),
            ),
            min_size=1,
            max_size=4,
        )
    )
    return {
        "version": 1,
        "roles": {r: [p.value for p in ps] for r, ps in roles.items()},
        "resources": {
            n: {"data_categories": categories, "purposes": [p.value for p in allowed]}
            for n, (categories, allowed) in resources.items()
        },
    }


@given(policy_documents(), st.randoms())
def test_round_trip_and_order_independence(document: dict[str, Any], rng: Any) -> None:
    """to_dict/from_dict keeps the policy; shuffling lists and keys keeps the version."""
    policy = Policy.from_dict(document)
    assert Policy.from_dict(policy.to_dict()) == policy
    shuffled = json.loads(json.dumps(document))
    for rule in shuffled["resources"].values():
        rng.shuffle(rule["purposes"])
        rng.shuffle(rule["data_categories"])
    items = list(shuffled["roles"].items())
    rng.shuffle(items)
    shuffled["roles"] = dict(items)
    assert Policy.from_dict(shuffled).version == policy.version


# -- decide(): pure, one reason per failed rule ---------------------------------------------

POLICY = Policy.load(EXAMPLE)


def _ask(
    context: AccessContext | None,
    resource: str = "crm.contacts",
    customer: str | None = "acme",
    evidence: Grant | Incident | LegalRequest | None = None,
    **request: Any,
) -> ReasonCode:
    decision = POLICY.decide(
        AccessRequest(context=context, resource=resource, customer_id=customer, **request),
        evidence,
        now=NOW,
    )
    assert decision.policy_version == POLICY.version
    assert decision.allowed == (decision.reason in (ReasonCode.ALLOWED, ReasonCode.BREAK_GLASS))
    return decision.reason


def _agent(**changes: Any) -> AccessContext:
    values: dict[str, Any] = {
        "actor_id": "agent-7",
        "role": "support_agent",
        "purpose": "support_request",
        "evidence_ref": "g-1",
    }
    return AccessContext(**{**values, **changes})


def _grant(**changes: Any) -> Grant:
    values: dict[str, Any] = {
        "grant_id": "g-1",
        "customer_id": "acme",
        "case_id": "CASE-1",
        "data_categories": frozenset({"contact"}),
        "issued_at": NOW - timedelta(hours=1),
        "issued_by": "agent-7",
        "expires_at": NOW + timedelta(days=1),
    }
    return Grant(**{**values, **changes})


def test_decide_walks_the_rules_in_order() -> None:
    """Each rule, broken on its own, gives its own reason code."""
    assert _ask(_agent(), evidence=_grant()) is ReasonCode.ALLOWED
    assert _ask(None) is ReasonCode.NO_CONTEXT
    assert _ask(_agent(purpose="support")) is ReasonCode.UNKNOWN_PURPOSE
    assert _ask(_agent(purpose=None)) is ReasonCode.UNKNOWN_PURPOSE
    assert _ask(_agent(role="sre")) is ReasonCode.ROLE_NOT_ALLOWED
    assert _ask(_agent(role=None)) is ReasonCode.ROLE_NOT_ALLOWED
    assert _ask(_agent(), resource="hr.salaries") is ReasonCode.RESOURCE_NOT_IN_POLICY
    undeclared = frozenset({"health"})
    assert _ask(_agent(), data_categories=undeclared) is ReasonCode.RESOURCE_NOT_IN_POLICY
    assert _ask(_agent(), resource="app.documents") is ReasonCode.PURPOSE_NOT_ALLOWED_FOR_RESOURCE
    assert _ask(_agent(), customer=None) is ReasonCode.CUSTOMER_UNRESOLVED
    assert _ask(_agent(evidence_ref=None)) is ReasonCode.MISSING_EVIDENCE
    assert _ask(_agent()) is ReasonCode.EVIDENCE_NOT_FOUND
    assert _ask(_agent(), customer="globex", evidence=_grant()) is (
        ReasonCode.EVIDENCE_CUSTOMER_MISMATCH
    )
    assert _ask(_agent(), evidence=_grant(expires_at=NOW)) is ReasonCode.EVIDENCE_EXPIRED
    assert _ask(_agent(), evidence=_grant(revoked_at=NOW)) is ReasonCode.EVIDENCE_REVOKED
    billing = _ask(_agent(), resource="billing.invoices", evidence=_grant())
    assert billing is ReasonCode.EVIDENCE_SCOPE_EXCEEDED
    used_up = _grant(max_records=5, records_used=5)
    assert _ask(_agent(), evidence=used_up) is ReasonCode.EVIDENCE_SCOPE_EXCEEDED
    too_many = _grant(max_records=5, records_used=3)
    assert _ask(_agent(), evidence=too_many, requested_records=3) is (
        ReasonCode.EVIDENCE_SCOPE_EXCEEDED
    )
    assert _ask(_agent(), evidence=too_many, requested_records=2) is ReasonCode.ALLOWED
    assert _ask(_agent(), evidence=_grant(intact=False)) is ReasonCode.EVIDENCE_TAMPERED
    assert _ask(_agent(), invalid="too many ids") is ReasonCode.INVALID_REQUEST


def test_a_grant_for_the_wrong_purpose_kind_is_not_found() -> None:
    """An incident cited for a support request is not a grant."""
    incident = Incident(
        incident_id="g-1",
        opened_at=NOW,
        opened_by="sre",
        customers=frozenset({"acme"}),
        all_customers=False,
    )
    assert _ask(_agent(), evidence=incident) is ReasonCode.EVIDENCE_NOT_FOUND


def test_service_delivery_needs_a_service_or_the_customer_itself() -> None:
    """A service identity or the customer's own user; a human engineer is neither."""
    app = AccessContext(
        actor_id="api", actor_type=ActorType.SERVICE, role="app", purpose="service_delivery"
    )
    assert _ask(app) is ReasonCode.ALLOWED
    own = AccessContext(
        actor_id="u-1", role="customer_user", purpose="service_delivery", actor_customer_id="acme"
    )
    assert _ask(own) is ReasonCode.ALLOWED
    assert _ask(own, customer="globex") is ReasonCode.EVIDENCE_CUSTOMER_MISMATCH
    engineer = AccessContext(actor_id="eng-1", role="app", purpose="service_delivery")
    assert _ask(engineer) is ReasonCode.MISSING_EVIDENCE


def test_incidents_and_break_glass() -> None:
    """Open incidents covering the customer allow; break-glass needs the role and a reason."""
    sre = AccessContext(
        actor_id="sre-1", role="sre", purpose="technical_problem", evidence_ref="INC-1"
    )
    incident = Incident(
        incident_id="INC-1",
        opened_at=NOW - timedelta(days=2),
        opened_by="sre-1",
        customers=frozenset({"acme"}),
        all_customers=False,
    )
    assert _ask(sre, evidence=incident) is ReasonCode.ALLOWED
    assert _ask(sre, customer="globex", evidence=incident) is ReasonCode.EVIDENCE_CUSTOMER_MISMATCH
    closed = Incident(
        incident_id="INC-1",
        opened_at=NOW - timedelta(days=2),
        opened_by="sre-1",
        customers=frozenset(),
        all_customers=True,
        closed_at=NOW - timedelta(days=1),
    )
    assert _ask(sre, customer="globex", evidence=closed) is ReasonCode.EVIDENCE_EXPIRED
    glass = AccessContext(
        actor_id="sre-1", role="sre", purpose="technical_problem", break_glass=True
    )
    assert _ask(glass) is ReasonCode.MISSING_EVIDENCE  # no justification
    justified = AccessContext(
        actor_id="sre-1",
        role="sre",
        purpose="technical_problem",
        break_glass=True,
        justification="pager: login outage",
    )
    assert _ask(justified) is ReasonCode.BREAK_GLASS
    assert _ask(justified, evidence=closed) is ReasonCode.BREAK_GLASS


def test_legal_requests_name_one_customer_until_they_lapse() -> None:
    """A legal request covers its customer until expiry, nobody else."""
    lawyer = AccessContext(
        actor_id="legal-1", role="legal", purpose="legal_requirement", evidence_ref="SUB-1"
    )
    request = LegalRequest(
        reference="SUB-1",
        authority="District Court",
        customer_id="acme",
        registered_at=NOW - timedelta(days=1),
        registered_by="legal-1",
        expires_at=NOW + timedelta(days=30),
    )
    assert _ask(lawyer, evidence=request) is ReasonCode.ALLOWED
    assert _ask(lawyer, customer="globex", evidence=request) is (
        ReasonCode.EVIDENCE_CUSTOMER_MISMATCH
    )
    lapsed = LegalRequest(
        reference="SUB-1",
        authority="District Court",
        customer_id="acme",
        registered_at=NOW - timedelta(days=40),
        registered_by="legal-1",
        expires_at=NOW - timedelta(days=10),
    )
    assert _ask(lawyer, evidence=lapsed) is ReasonCode.EVIDENCE_EXPIRED


def test_every_reason_code_is_documented() -> None:
    """Each code has a meaning, and each denial code says how to fix it."""
    readme = (ROOT / "README.md").read_text()
    for code in ReasonCode:
        assert code.meaning
        assert f"`{code.value}`" in readme
        if code not in (ReasonCode.ALLOWED, ReasonCode.BREAK_GLASS):
            assert code.fix


def test_direct_construction_fills_in_defaults() -> None:
    """A Policy built from typed values, without evidence rules, decides like a loaded one."""
    policy = Policy(
        roles={"app": frozenset({Purpose.SERVICE_DELIVERY})},
        resources={
            "crm.contacts": ResourceRule(
                frozenset({"contact"}), frozenset({Purpose.SERVICE_DELIVERY})
            )
        },
        evidence={},
    )
    app = AccessContext(
        actor_id="api", actor_type=ActorType.SERVICE, role="app", purpose="service_delivery"
    )
    request = AccessRequest(context=app, resource="crm.contacts", customer_id="acme")
    assert policy.decide(request, now=NOW).reason is ReasonCode.ALLOWED
    assert policy.evidence[Purpose.SUPPORT_REQUEST] == {EvidenceKind.GRANT}


def test_an_unknown_purpose_wins_over_a_malformed_request() -> None:
    """A misspelt purpose is reported as such even when the ids are unusable too."""
    assert _ask(_agent(purpose="suport_request"), invalid="1001 ids") is (
        ReasonCode.UNKNOWN_PURPOSE
    )


def test_the_transparency_setting() -> None:
    """disclose_withheld defaults to false, can be set, and typos in its table are refused."""
    document = _document()
    assert Policy.from_dict(document).disclose_withheld is False
    document["transparency"] = {"disclose_withheld": True}
    assert Policy.from_dict(document).disclose_withheld is True
    document["transparency"] = {"disclose_withheld": "yes"}
    assert _problems(document)[0].startswith("transparency.disclose_withheld: 'yes' is not")


def test_review_settings_are_read_checked_and_versioned() -> None:
    """[review] sets the unusual-volume thresholds; the defaults said aloud change nothing."""
    document = _document()
    base = Policy.from_dict(document)
    assert base.unusual_volume == UnusualVolume(3, 20)
    document["review"] = {"unusual_factor": 3.0, "unusual_minimum": 20}
    assert Policy.from_dict(document).version == base.version
    document["review"] = {"unusual_factor": 2.5, "unusual_minimum": 50}
    stricter = Policy.from_dict(document)
    assert stricter.unusual_volume == UnusualVolume(2.5, 50)
    assert stricter.version != base.version
    assert Policy.from_dict(stricter.to_dict()) == stricter
    document["review"] = {"unusual_factor": 0.5, "unusual_minimum": True, "window": 3}
    problems = _problems(document)
    assert any(p.startswith("review.unusual_factor: 0.5 is less than") for p in problems)
    assert any(p.startswith("review.unusual_minimum: True is not of type") for p in problems)
    assert any("'window' was unexpected" in p for p in problems)
