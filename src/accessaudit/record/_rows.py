"""A record's row form: its column names, and conversion to and from ``StoredEvent``.

The row is the record as the log keeps it, in portable values (text, integers, compact JSON
text): the SQL store writes and reads it (``store._schema`` builds its table from
``column_name``), and the verifier and the Parquet export check and convert it. It belongs
with the record, not with any one store, so that all of them share one definition.

Conversion is strict in both directions. Reading is strict on purpose: a row that an owner
edited into a shape the writer could never have produced (text in an integer column, ``2`` in
a boolean, broken JSON) is reported by the verifier as a malformed row instead of being
silently coerced into something that hashes.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import TYPE_CHECKING, Any

from accessaudit.exceptions import InvalidEvent
from accessaudit.record._clock import MAX_MICROS, from_micros, to_micros
from accessaudit.record.events import AccessEvent, StoredEvent
from accessaudit.record.fields import EVENT_FIELDS, RECORD_VERSION, Kind
from accessaudit.record.integrity import is_digest

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "ROW_COLUMNS",
    "MalformedRow",
    "canonical_json",
    "column_name",
    "from_column",
    "from_row",
    "is_key_id",
    "row_values",
    "to_row",
]

_KEY_ID = re.compile(r"[0-9a-f]{16}")


def column_name(field_name: str) -> str:
    """The column holding a record field (timestamps are stored as integer microseconds)."""
    return "occurred_at_us" if field_name == "occurred_at" else field_name


_COLUMNS = tuple((spec.name, spec.kind, column_name(spec.name)) for spec in EVENT_FIELDS)


class MalformedRow(ValueError):
    """A stored row cannot be read back as a record; the message says which column and why."""


# Built once: json.dumps with any non-default option builds a new encoder on every call.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_SORTED_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def canonical_json(value: object, *, sort_keys: bool = False) -> str:
    """The one JSON text form the log stores lists and attribute maps in."""
    return (_SORTED_JSON if sort_keys else _JSON).encode(value)


def to_row(stored: StoredEvent) -> dict[str, Any]:
    """The column values for one stored event."""
    return dict(zip(ROW_COLUMNS, row_values(stored), strict=True))


def row_values(stored: StoredEvent) -> tuple[Any, ...]:
    """``to_row``'s values as a tuple in ``ROW_COLUMNS`` order: what an INSERT sends."""
    event = stored.event
    return (
        stored.chain_id,
        stored.seq,
        stored.record_version,
        stored.leaf_hash,
        stored.chain_hash,
        stored.mac,
        stored.mac_key_id,
        *[
            value if convert is None or value is None else convert(value)
            for value, convert in zip(
                [getattr(event, name) for name in _FIELD_NAMES], _FIELD_CONVERTERS, strict=True
            )
        ],
    )


_CONVERTERS: dict[Kind, Callable[[Any], object] | None] = {
    Kind.UUID: str,
    Kind.TIME: to_micros,
    Kind.BOOL: int,
    Kind.TEXT_LIST: lambda items: _JSON.encode(list(items)) if items else "[]",
    Kind.ATTRIBUTES: lambda mapping: _SORTED_JSON.encode(dict(mapping)) if mapping else "{}",
    Kind.INT: None,
    Kind.TEXT: None,
}
#: Every column of a row, in the order of ``to_row`` and ``row_values``.
ROW_COLUMNS = (
    "chain_id",
    "seq",
    "record_version",
    "leaf_hash",
    "chain_hash",
    "mac",
    "mac_key_id",
    *(column_name(spec.name) for spec in EVENT_FIELDS),
)
# Enum members go in as plain text: some drivers would otherwise write the member's name.
_TO_COLUMN = tuple(
    (spec.name, column_name(spec.name), str if spec.choices else _CONVERTERS[spec.kind])
    for spec in EVENT_FIELDS
)

_FIELD_NAMES = tuple(name for name, _, _ in _TO_COLUMN)
_FIELD_CONVERTERS = tuple(convert for _, _, convert in _TO_COLUMN)


def _int(column: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedRow(f"{column} holds {type(value).__name__}, expected an integer")
    return value


def from_column(kind: Kind, column: str, value: object) -> object:
    """A column's stored value as the record field of ``kind`` holds it, or ``MalformedRow``."""
    if value is None:
        return None
    if kind is Kind.UUID:
        if not isinstance(value, str) or str(_parse_uuid(column, value)) != value:
            raise MalformedRow(f"{column} is not a canonical UUID")
        return value
    if kind is Kind.TIME:
        micros = _int(column, value)
        if not 0 <= micros <= MAX_MICROS:
            raise MalformedRow(f"{column} holds {micros}, outside 1970..9999")
        return from_micros(micros)
    if kind in (Kind.INT, Kind.BOOL):
        number = _int(column, value)
        if kind is Kind.BOOL and number not in (0, 1):
            raise MalformedRow(f"{column} holds {number}, expected 0 or 1")
        return bool(number) if kind is Kind.BOOL else number
    if not isinstance(value, str):
        raise MalformedRow(f"{column} holds {type(value).__name__}, expected text")
    if kind is Kind.TEXT_LIST:
        items = _loads(column, value, sort_keys=False)
        if not isinstance(items, list):
            raise MalformedRow(f"{column} is not a JSON array")
        return items
    if kind is Kind.ATTRIBUTES:
        mapping = _loads(column, value, sort_keys=True)
        if not isinstance(mapping, dict) or any(isinstance(v, float) for v in mapping.values()):
            raise MalformedRow(f"{column} is not a JSON object of text, integers and booleans")
        return mapping
    return value


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    mapping = dict(pairs)
    if len(mapping) != len(pairs):
        raise ValueError("duplicate key")
    return mapping


def _parse_uuid(column: str, value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as e:
        raise MalformedRow(f"{column} is not a UUID") from e


def _loads(column: str, text: str, *, sort_keys: bool) -> object:
    """Parse JSON exactly as the writer wrote it, and nothing else.

    Other spellings of the same value (spaces, escapes, duplicate keys, -0) would let SQL
    readers see something verify did not check.
    """
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as e:
        raise MalformedRow(f"{column} is not valid JSON (or repeats a key)") from e
    if canonical_json(value, sort_keys=sort_keys) != text:
        raise MalformedRow(f"{column} is not in the writer's canonical JSON form")
    return value


def _digest(column: str, value: object) -> str:
    if not is_digest(value):
        raise MalformedRow(f"{column} is not a 64-digit lower-case hex digest")
    return str(value)


def is_key_id(value: object) -> bool:
    """Whether ``value`` is a key id as stored: 16 lower-case hex digits."""
    return isinstance(value, str) and _KEY_ID.fullmatch(value) is not None


def _key_id(value: object) -> str:
    if not isinstance(value, str) or not is_key_id(value):
        raise MalformedRow("mac_key_id is not a 16-digit lower-case hex key id")
    return value


def from_row(row: Mapping[str, Any]) -> StoredEvent:
    """Rebuild a stored event from its row; raise ``MalformedRow`` if it cannot be one."""
    missing = [c for c in ROW_COLUMNS if c not in row]
    if missing:
        raise MalformedRow(f"the row has no column {', '.join(missing)}")
    version = _int("record_version", row["record_version"])
    if version != RECORD_VERSION:
        raise MalformedRow(f"record_version {version} is not supported (expected {RECORD_VERSION})")
    chain_id = row["chain_id"]
    if not isinstance(chain_id, str):
        raise MalformedRow("chain_id is not text")
    values = {name: from_column(kind, column, row[column]) for name, kind, column in _COLUMNS}
    try:
        event = AccessEvent(**values)  # type: ignore[arg-type]  # checked by AccessEvent itself
    except InvalidEvent as e:
        raise MalformedRow(str(e)) from e
    return StoredEvent(
        event=event,
        chain_id=chain_id,
        seq=_int("seq", row["seq"]),
        leaf_hash=_digest("leaf_hash", row["leaf_hash"]),
        chain_hash=_digest("chain_hash", row["chain_hash"]),
        mac=_digest("mac", row["mac"]),
        mac_key_id=_key_id(row["mac_key_id"]),
        record_version=version,
    )
