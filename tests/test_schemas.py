"""schemas/access_event.v1.schema.json and the code describe the same record.

The expected schema is derived here from EVENT_FIELDS; the file in schemas/ must equal it.
After a deliberate change, regenerate with ACCESSAUDIT_REGENERATE_SCHEMAS=1 and review the
diff: a changed field inside version 1 breaks every existing log.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given

from accessaudit import AccessEvent, InvalidEvent
from accessaudit.record.fields import (
    EVENT_FIELDS,
    MAX_ATTRIBUTES,
    MAX_INT,
    MAX_LIST_ITEMS,
    RECORD_VERSION,
    FieldSpec,
    Kind,
)
from tests.strategies import events, make_event

SCHEMA_FILE = Path(__file__).parent.parent / "schemas" / "access_event.v1.schema.json"
_NO_NUL = "^[^\\u0000]*$"
_HEX = "^[0-9a-f]{%d}$"


def _nullable(schema: dict[str, Any], spec: FieldSpec) -> dict[str, Any]:
    if spec.required or spec.kind in (Kind.UUID, Kind.TIME, Kind.BOOL):
        return schema
    if spec.kind in (Kind.TEXT_LIST, Kind.ATTRIBUTES):
        return schema
    return {"anyOf": [schema, {"type": "null"}]}


def _field_schema(spec: FieldSpec) -> dict[str, Any]:
    text: dict[str, Any] = {
        "type": "string",
        "minLength": 1,
        "maxLength": spec.max_chars,
        "pattern": _NO_NUL,
    }
    by_kind: dict[Kind, dict[str, Any]] = {
        Kind.UUID: {
            "type": "string",
            "format": "uuid",
            "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        },
        Kind.TIME: {
            "type": "string",
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z$",
        },
        Kind.TEXT: {"type": "string", "enum": [c.value for c in spec.choices]}
        if spec.choices
        else text,
        Kind.INT: {"type": "integer", "minimum": 0, "maximum": MAX_INT},
        Kind.BOOL: {"type": "boolean"},
        Kind.TEXT_LIST: {"type": "array", "maxItems": MAX_LIST_ITEMS, "items": text},
        Kind.ATTRIBUTES: {
            "type": "object",
            "maxProperties": MAX_ATTRIBUTES,
            "propertyNames": {"minLength": 1, "maxLength": 128, "pattern": _NO_NUL},
            "additionalProperties": {
                "anyOf": [
                    {**text, "maxLength": spec.max_chars},
                    {"type": "integer"},
                    {"type": "boolean"},
                    {"type": "null"},
                ]
            },
        },
    }
    return {"description": spec.description, **_nullable(by_kind[spec.kind], spec)}


def expected_schema() -> dict[str, Any]:
    """The JSON Schema that EVENT_FIELDS implies."""
    integrity = {
        "chain_id": {"type": "string", "minLength": 1, "maxLength": 64},
        "seq": {"type": "integer", "minimum": 1},
        "record_version": {"const": RECORD_VERSION},
        "leaf_hash": {"type": "string", "pattern": _HEX % 64},
        "chain_hash": {"type": "string", "pattern": _HEX % 64},
        "mac": {"type": "string", "pattern": _HEX % 64},
        "mac_key_id": {"type": "string", "pattern": _HEX % 16},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://accessaudit.dev/schemas/access_event.v1.schema.json",
        "title": f"accessaudit access event, record version {RECORD_VERSION}",
        "description": "One audit record as AccessEvent.to_dict() gives it. Text limits are in "
        "characters. Records read from the log also carry the integrity fields in "
        "$defs/stored_record.",
        "type": "object",
        "additionalProperties": False,
        "required": [s.name for s in EVENT_FIELDS if s.required],
        "properties": {s.name: _field_schema(s) for s in EVENT_FIELDS},
        "$defs": {
            "stored_record": {
                "description": "Position and seals assigned by the store.",
                "type": "object",
                "required": list(integrity),
                "properties": integrity,
            }
        },
    }


def _load() -> dict[str, Any]:
    if os.environ.get("ACCESSAUDIT_REGENERATE_SCHEMAS") == "1":
        SCHEMA_FILE.write_text(json.dumps(expected_schema(), indent=2, ensure_ascii=False) + "\n")
    return json.loads(SCHEMA_FILE.read_text())  # type: ignore[no-any-return]


def test_schema_file_matches_the_code() -> None:
    """The committed schema is exactly what the field list implies."""
    assert _load() == expected_schema()


def test_schema_is_valid_draft_2020_12() -> None:
    """The schema itself is a valid JSON Schema."""
    jsonschema.Draft202012Validator.check_schema(_load())


@given(events())
def test_every_valid_event_satisfies_the_schema(event: AccessEvent) -> None:
    """What the code accepts, the schema accepts."""
    jsonschema.validate(event.to_dict(), _load())


@pytest.mark.parametrize(
    "change",
    [
        {"actor_id": ""},
        {"actor_id": "a\x00b"},
        {"actor_id": "x" * 257},
        {"event_type": "access.maybe"},
        {"record_count": -1},
        {"record_count": 1.5},
        {"customer_visible": "yes"},
        {"occurred_at": "2026-01-01T00:00:00"},
        {"data_categories": "contact"},
        {"attributes": {"ratio": 0.5}},
        {"unknown_field": "x"},
    ],
)
def test_code_and_schema_reject_the_same_bad_input(change: dict[str, Any]) -> None:
    """Input the code refuses is refused by the schema too."""
    data = {**make_event().to_dict(), **change}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, _load())
    with pytest.raises(InvalidEvent):
        AccessEvent.from_dict(data)
