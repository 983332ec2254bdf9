"""The access policy: who may use which purpose, on which resources, with which evidence.

A policy comes from a TOML file (``Policy.load``), a mapping of the same shape
(``Policy.from_dict``) or the constructor. Every route checks the same JSON Schema
(``schemas/policy.v1.schema.json``) plus the rules a schema cannot express, and reports every
fault with its key path. ``Policy.decide`` is pure: evidence is looked up by the caller (the
gate) and passed in, so a decision depends only on its inputs and can be replayed.

The policy's ``version`` is a SHA-256 of its canonical JSON form: two files that say the same
thing (whatever their key order, comments or list order) have the same version, and each
decision record names the version that made it.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from jsonschema import Draft202012Validator

from accessaudit.exceptions import FieldProblem, PolicyError
from accessaudit.gate._decide import check_evidence, deny
from accessaudit.gate._policy_schema import POLICY_SCHEMA
from accessaudit.gate.decisions import AccessDecision, ReasonCode
from accessaudit.gate.purposes import ACCEPTED_EVIDENCE, EvidenceKind, Purpose

if TYPE_CHECKING:
    from datetime import datetime

    from jsonschema import ValidationError

    from accessaudit.gate.context import AccessContext
    from accessaudit.gate.evidence import Evidence

__all__ = [
    "DEFAULT_UNUSUAL_VOLUME",
    "MAX_POLICY_BYTES",
    "AccessRequest",
    "Policy",
    "ResourceRule",
    "UnusualVolume",
]

_VALIDATOR = Draft202012Validator(POLICY_SCHEMA)
MAX_POLICY_BYTES: Final = 1 << 20
"""A policy file larger than this is refused unread (it would be a wrong path, not a policy)."""


@dataclass(frozen=True, slots=True)
class ResourceRule:
    """One resource: the data categories it holds and the purposes it may be read for."""

    data_categories: frozenset[str]
    purposes: frozenset[Purpose]
    description: str | None = None


@dataclass(frozen=True, slots=True)
class UnusualVolume:
    """When ``report`` calls an actor's day unusual (the policy's ``[review]`` table).

    At ``factor`` times a usual day, and at least ``minimum`` accesses.
    """

    factor: float = 3
    minimum: int = 20


#: The thresholds a policy without a ``[review]`` table has.
DEFAULT_UNUSUAL_VOLUME: Final = UnusualVolume()


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessRequest:
    """One attempt to read a resource, as the gate sees it before deciding."""

    context: AccessContext | None
    resource: str
    customer_id: str | None
    data_categories: frozenset[str] = frozenset()
    """Categories the code declares it reads; empty means all of the resource's."""
    customer_problem: str | None = None
    """Why ``customer_id`` could not be determined, when it is None."""
    requested_records: int = 0
    """Records asked for up front (e.g. subject ids), checked against a grant's allowance."""
    invalid: str | None = None
    """Why the request cannot be described as a valid record (e.g. too many subject ids)."""


def _key_path(parts: Iterable[str | int]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            plain = part.replace("_", "").replace("-", "").isalnum()
            name = part if plain else json.dumps(part)
            text += f".{name}" if text else name
    return text or "(top level)"


def _schema_problem(error: ValidationError) -> FieldProblem:
    where = _key_path(error.absolute_path)
    hints = {
        "additionalProperties": "remove it or check its spelling",
        "enum": "allowed purposes: " + ", ".join(p.value for p in Purpose),
        "required": "add it",
        "pattern": "use letters, digits and _ . : / - only",
    }
    return FieldProblem(where, error.message, hints.get(str(error.validator), ""))


def _cross_problems(document: Mapping[str, Any]) -> list[FieldProblem]:
    """Rules the schema cannot state: references between sections must resolve."""
    problems = []
    roles: Mapping[str, list[str]] = document["roles"]
    may_fix = {role for role, purposes in roles.items() if "technical_problem" in purposes}
    purposes = document.get("purposes", {})
    glass = purposes.get("technical_problem", {}).get("break_glass_roles", [])
    for index, role in enumerate(glass):
        if role not in may_fix:
            problems.append(
                FieldProblem(
                    f"purposes.technical_problem.break_glass_roles[{index}]",
                    f"role {role!r} may not use technical_problem",
                    "list technical_problem for it under [roles], or remove it here",
                )
            )
    usable = {p for role_purposes in roles.values() for p in role_purposes}
    for name, rule in document["resources"].items():
        for index, purpose in enumerate(rule["purposes"]):
            if purpose not in usable:
                problems.append(
                    FieldProblem(
                        f"{_key_path(['resources', name, 'purposes'])}[{index}]",
                        f"no role may use {purpose}, so this grants nothing",
                        "give a role that purpose under [roles], or remove it here",
                    )
                )
    return problems


def _typed(document: Mapping[str, Any]) -> dict[str, Any]:
    """Policy fields from a checked document: immutable, with every default filled in."""
    purposes = document.get("purposes", {})
    return {
        "roles": MappingProxyType(
            {r: frozenset(map(Purpose, p)) for r, p in document["roles"].items()}
        ),
        "resources": MappingProxyType(
            {
                name: ResourceRule(
                    frozenset(rule["data_categories"]),
                    frozenset(map(Purpose, rule["purposes"])),
                    rule.get("description"),
                )
                for name, rule in document["resources"].items()
            }
        ),
        "evidence": MappingProxyType(
            {
                p: frozenset(
                    map(
                        EvidenceKind,
                        purposes.get(p.value, {}).get("evidence", ACCEPTED_EVIDENCE[p]),
                    )
                )
                for p in Purpose
            }
        ),
        "break_glass_roles": frozenset(
            purposes.get("technical_problem", {}).get("break_glass_roles", ())
        ),
        "disclose_withheld": document.get("transparency", {}).get("disclose_withheld", False),
        "unusual_volume": UnusualVolume(
            document.get("review", {}).get("unusual_factor", DEFAULT_UNUSUAL_VOLUME.factor),
            document.get("review", {}).get("unusual_minimum", DEFAULT_UNUSUAL_VOLUME.minimum),
        ),
        "name": document.get("name"),
    }


def _check(document: Any, source: str) -> None:
    errors = sorted(_VALIDATOR.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    problems = [_schema_problem(e) for e in errors]
    if not problems:
        problems = _cross_problems(document)
    if problems:
        raise PolicyError(source, problems)


def _names(values: Any) -> Any:
    """A set of names in canonical (sorted) order; other shapes are left for the schema."""
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        return values
    return sorted({str(v) for v in values})


def _document(
    *,
    roles: Mapping[str, Any],
    resources: Mapping[str, Any],
    evidence: Mapping[Purpose, Any],
    break_glass_roles: Any,
    name: str | None,
    disclose_withheld: bool = False,
    unusual_volume: UnusualVolume | None = None,
) -> dict[str, Any]:
    """The file-shaped mapping for these values, names sorted (the canonical form)."""
    purposes: dict[str, Any] = {str(p): {"evidence": _names(k)} for p, k in evidence.items()}
    if _names(break_glass_roles):
        purposes.setdefault("technical_problem", {})["break_glass_roles"] = _names(
            break_glass_roles
        )
    document: dict[str, Any] = {
        "version": 1,
        "roles": {role: _names(p) for role, p in roles.items()},
        "resources": {
            res: {k: v if k == "description" else _names(v) for k, v in rule.items()}
            if isinstance(rule, Mapping)
            else rule
            for res, rule in resources.items()
        },
    }
    if purposes:
        document["purposes"] = purposes
    if disclose_withheld:
        document["transparency"] = {"disclose_withheld": disclose_withheld}
    # Only what differs from the defaults: saying them or not gives the same version.
    review = {} if unusual_volume is None else _review_settings(unusual_volume)
    if review:
        document["review"] = review
    if name is not None:
        document["name"] = name
    return document


def _review_settings(unusual: UnusualVolume) -> dict[str, Any]:
    """The ``[review]`` table for these settings, defaults left out."""
    settings: dict[str, Any] = {}
    if unusual.factor != DEFAULT_UNUSUAL_VOLUME.factor:
        settings["unusual_factor"] = unusual.factor
    if unusual.minimum != DEFAULT_UNUSUAL_VOLUME.minimum:
        settings["unusual_minimum"] = unusual.minimum
    return settings


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """Roles -> purposes, resources -> categories and purposes, purposes -> evidence.

    Build one with ``Policy.build(...)`` (Python values), ``Policy.from_dict`` (a mapping
    shaped like the TOML file) or ``Policy.load`` (the file). Every route raises
    ``PolicyError`` listing every fault with its key path.
    """

    roles: Mapping[str, frozenset[Purpose]]
    resources: Mapping[str, ResourceRule]
    evidence: Mapping[Purpose, frozenset[EvidenceKind]]
    break_glass_roles: frozenset[str] = frozenset()
    disclose_withheld: bool = False
    """Whether transparency reports may say that entries are withheld (legal holds)."""
    unusual_volume: UnusualVolume = UnusualVolume()
    """When ``report`` calls an actor's day unusual."""
    name: str | None = None
    source: str = "<python>"
    version: str = field(init=False)

    def __post_init__(self) -> None:
        # Also for direct construction: the same checks as a file gets, then the fields in
        # their normal form (immutable, every purpose's evidence filled in), then the version.
        document = self.to_dict()
        _check(document, self.source)
        for name, value in _typed(document).items():
            object.__setattr__(self, name, value)
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        version = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
        object.__setattr__(self, "version", version)

    def to_dict(self) -> dict[str, Any]:
        """The canonical mapping form: what the schema checks and the version hashes."""
        return _document(
            roles=self.roles,
            resources={
                name: {
                    "data_categories": rule.data_categories,
                    "purposes": rule.purposes,
                    **({"description": rule.description} if rule.description else {}),
                }
                if isinstance(rule, ResourceRule)
                else rule
                for name, rule in dict(self.resources).items()
            },
            # Defaults are left out, so that saying them or not gives the same version.
            evidence={
                p: kinds
                for p, kinds in dict(self.evidence).items()
                if set(kinds) != set(ACCEPTED_EVIDENCE.get(p, ()))
            },
            break_glass_roles=self.break_glass_roles,
            name=self.name,
            disclose_withheld=self.disclose_withheld,
            unusual_volume=self.unusual_volume,
        )

    @classmethod
    def build(
        cls,
        *,
        roles: Mapping[str, Iterable[Purpose | str]],
        resources: Mapping[str, Mapping[str, Any]],
        evidence: Mapping[Purpose, Iterable[EvidenceKind | str]] | None = None,
        break_glass_roles: Iterable[str] = (),
        name: str | None = None,
        disclose_withheld: bool = False,
        unusual_volume: UnusualVolume | None = None,
    ) -> Policy:
        """A policy from Python values.

        ``resources`` maps each name to ``data_categories``, ``purposes`` and an optional
        ``description``, as in the file.
        """
        document = _document(
            roles=roles,
            resources=resources,
            evidence=evidence or {},
            break_glass_roles=break_glass_roles,
            name=name,
            disclose_withheld=disclose_withheld,
            unusual_volume=unusual_volume,
        )
        return cls.from_dict(document)

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], *, source: str = "<python>") -> Policy:
        """A policy from a mapping shaped like the TOML file."""
        _check(document, source)
        return cls(**_typed(document), source=source)

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read and check a policy TOML file (UTF-8, at most 1 MiB)."""
        path = Path(path)
        source = str(path)
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_POLICY_BYTES + 1)
        except OSError as e:
            problem = FieldProblem("(file)", f"cannot be read: {e.strerror}")
            raise PolicyError(source, [problem]) from e
        except ValueError as e:  # the operating system cannot even name it (a NUL byte)
            problem = FieldProblem("(file)", "cannot be read: the path contains a NUL character")
            raise PolicyError(source, [problem]) from e
        if len(data) > MAX_POLICY_BYTES:
            problem = FieldProblem(
                "(file)",
                f"is larger than {MAX_POLICY_BYTES:,} bytes",
                "a policy is a short text file; check that this is the right file",
            )
            raise PolicyError(source, [problem])
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            problem = FieldProblem(
                "(file)",
                f"is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})",
                "save it as UTF-8 TOML",
            )
            raise PolicyError(source, [problem]) from e
        try:
            return cls.from_dict(tomllib.loads(text), source=source)
        except tomllib.TOMLDecodeError as e:
            problem = FieldProblem("(syntax)", str(e), "fix the TOML syntax")
            raise PolicyError(source, [problem]) from e
        except RecursionError as e:
            # Parsing and checking recurse per level; a policy is never more than a few
            # levels deep, so a file this deep is not one (and must not crash the reader).
            problem = FieldProblem(
                "(syntax)",
                "arrays or tables are nested too deeply to read",
                "a policy is only a few levels deep; remove the extra nesting",
            )
            raise PolicyError(source, [problem]) from e

    def decide(
        self, request: AccessRequest, evidence: Evidence | None = None, *, now: datetime
    ) -> AccessDecision:
        """Allow or deny ``request``, given the evidence its context refers to. No I/O."""
        ctx = request.context
        where = f"reading {request.resource}"
        if ctx is None:
            return deny(self.version, ReasonCode.NO_CONTEXT, f"{where} with no access context set")
        purpose = ctx.known_purpose
        if purpose is None:
            given = "no purpose" if ctx.purpose is None else f"purpose {ctx.purpose!r}"
            return deny(
                self.version, ReasonCode.UNKNOWN_PURPOSE, f"{where}: {given} is not allowed"
            )
        if ctx.role is None or purpose not in self.roles.get(ctx.role, ()):
            role = "no role" if ctx.role is None else f"role {ctx.role!r}"
            return deny(
                self.version, ReasonCode.ROLE_NOT_ALLOWED, f"{role} may not use {purpose.value}"
            )
        rule = self.resources.get(request.resource)
        if rule is None:
            return deny(
                self.version,
                ReasonCode.RESOURCE_NOT_IN_POLICY,
                f"{request.resource} is not in the policy",
            )
        undeclared = request.data_categories - rule.data_categories
        if undeclared:
            return deny(
                self.version,
                ReasonCode.RESOURCE_NOT_IN_POLICY,
                f"{request.resource} is declared with categories {sorted(undeclared)} "
                f"the policy does not list for it",
            )
        if purpose not in rule.purposes:
            return deny(
                self.version,
                ReasonCode.PURPOSE_NOT_ALLOWED_FOR_RESOURCE,
                f"{request.resource} may not be read for {purpose.value}",
            )
        if request.invalid is not None:
            return deny(self.version, ReasonCode.INVALID_REQUEST, f"{where}: {request.invalid}")
        if request.customer_id is None:
            return deny(
                self.version,
                ReasonCode.CUSTOMER_UNRESOLVED,
                f"{where}: {request.customer_problem or 'no customer id'}",
            )
        categories = request.data_categories or rule.data_categories
        return check_evidence(self, purpose, request, evidence, categories=categories, now=now)
