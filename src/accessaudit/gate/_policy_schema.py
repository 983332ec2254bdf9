"""The policy file's JSON Schema (version 1), as the code uses it.

``schemas/policy.v1.schema.json`` is this dictionary written out; a test keeps the two equal.
It lives in the package because the library validates every policy with it at load time.
"""

from __future__ import annotations

from typing import Any, Final

from accessaudit.gate.purposes import ACCEPTED_EVIDENCE, Purpose

NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$"
"""Role, resource and category names: letters, digits and ``_ . : / -``, no spaces."""

_NAME: Final = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": NAME_PATTERN}
_PURPOSE: Final = {"enum": [p.value for p in Purpose]}


def _names(item: dict[str, Any], *, min_items: int = 1) -> dict[str, Any]:
    return {"type": "array", "items": item, "minItems": min_items, "uniqueItems": True}


def _purpose_rule(purpose: Purpose) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "type": "object",
        "description": f"{purpose.value}: {purpose.description}.",
        "additionalProperties": False,
        "properties": {
            "evidence": {
                **_names({"enum": [k.value for k in ACCEPTED_EVIDENCE[purpose]]}),
                "description": "Evidence kinds this purpose accepts (default: all listed).",
            },
        },
    }
    if purpose is Purpose.TECHNICAL_PROBLEM:
        rule["properties"]["break_glass_roles"] = {
            **_names(_NAME, min_items=0),
            "description": "Roles that may read without an open incident, flagged as "
            "break-glass and only with a justification.",
        }
    return rule


POLICY_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://accessaudit.dev/schemas/policy.v1.schema.json",
    "title": "accessaudit policy, version 1",
    "description": "Who may read which customer data for which purpose, on what evidence.",
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "roles", "resources"],
    "properties": {
        "version": {"const": 1, "description": "Policy file format version."},
        "name": {"type": "string", "minLength": 1, "maxLength": 128},
        "roles": {
            "type": "object",
            "description": "Role -> the purposes it may use.",
            "minProperties": 1,
            "propertyNames": _NAME,
            "additionalProperties": _names(_PURPOSE),
        },
        "purposes": {
            "type": "object",
            "description": "Per purpose: which evidence it accepts.",
            "additionalProperties": False,
            "properties": {p.value: _purpose_rule(p) for p in Purpose},
        },
        "transparency": {
            "type": "object",
            "description": "What customer transparency reports may say.",
            "additionalProperties": False,
            "properties": {
                "disclose_withheld": {
                    "type": "boolean",
                    "description": "Whether a transparency report may say that some entries "
                    "are withheld under a legal notification hold (default false: some laws "
                    "forbid saying even that).",
                }
            },
        },
        "review": {
            "type": "object",
            "description": "How `accessaudit report` judges what stands out.",
            "additionalProperties": False,
            "properties": {
                "unusual_factor": {
                    "type": "number",
                    "minimum": 1,
                    "maximum": 1000,
                    "description": "An actor's day is unusual at this many times a usual day "
                    "(their own median day, or their role's for a new actor). Default 3.",
                },
                "unusual_minimum": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 1_000_000_000,
                    "description": "... and at least this many accesses. Default 20.",
                },
            },
        },
        "resources": {
            "type": "object",
            "description": "Resource name -> its data categories and allowed purposes.",
            "minProperties": 1,
            "propertyNames": _NAME,
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["data_categories", "purposes"],
                "properties": {
                    "description": {"type": "string", "maxLength": 500},
                    "data_categories": _names(_NAME),
                    "purposes": _names(_PURPOSE),
                },
            },
        },
    },
}
