"""The Parquet export's columns: Arrow types derived from the record's field list.

One row of the export is one stored record. Columns carry analyst-friendly Arrow types
(timestamps, lists, booleans); ``attributes`` stays the canonical JSON text the log stores,
because its values are of mixed types. ``to_arrow_row`` and ``to_db_row`` convert between a
database row (``store._rows`` form) and an export row, so the verifier can check an export
with exactly the code that checks the database.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa

from accessaudit._clock import to_micros
from accessaudit.fields import EVENT_FIELDS, Kind
from accessaudit.store._rows import canonical_json
from accessaudit.store._schema import column_name

if TYPE_CHECKING:
    from collections.abc import Mapping

EXPORT_FORMAT: Final = "accessaudit.export.v1"

_ARROW_TYPES: Final[dict[Kind, pa.DataType]] = {
    Kind.UUID: pa.string(),
    Kind.TIME: pa.timestamp("us", tz="UTC"),
    Kind.TEXT: pa.string(),
    Kind.INT: pa.int64(),
    Kind.BOOL: pa.bool_(),
    Kind.TEXT_LIST: pa.list_(pa.string()),
    Kind.ATTRIBUTES: pa.string(),
}
_REQUIRED: Final = {Kind.UUID, Kind.TIME, Kind.BOOL, Kind.TEXT_LIST, Kind.ATTRIBUTES}

EXPORT_SCHEMA: Final = pa.schema(
    [
        pa.field("chain_id", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("record_version", pa.int16(), nullable=False),
        *(
            pa.field(
                spec.name,
                _ARROW_TYPES[spec.kind],
                nullable=not (spec.required or spec.kind in _REQUIRED),
            )
            for spec in EVENT_FIELDS
        ),
        pa.field("leaf_hash", pa.string(), nullable=False),
        pa.field("chain_hash", pa.string(), nullable=False),
        pa.field("mac", pa.string(), nullable=False),
        pa.field("mac_key_id", pa.string(), nullable=False),
    ]
)


def schema_document() -> dict[str, Any]:
    """The export's columns as a language-neutral document (``schemas/export.v1.schema.json``)."""
    return {
        "format": EXPORT_FORMAT,
        "description": "accessaudit Parquet export: one row per stored record, zstd, "
        "Hive-partitioned by the UTC day of occurred_at (directory day=YYYY-MM-DD).",
        "partitioning": {"style": "hive", "columns": [{"name": "day", "type": "string"}]},
        "columns": [
            {"name": f.name, "arrow_type": str(f.type), "nullable": f.nullable}
            for f in EXPORT_SCHEMA
        ],
    }


def to_arrow_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """An export row from a database row that ``store._rows.from_row`` accepted."""
    out: dict[str, Any] = {name: row[name] for name in ("chain_id", "seq", "record_version")}
    for spec in EVENT_FIELDS:
        value = row[column_name(spec.name)]
        if value is not None and spec.kind is Kind.TEXT_LIST:
            value = json.loads(value)
        elif value is not None and spec.kind is Kind.BOOL:
            value = bool(value)
        elif value is not None and spec.kind is Kind.TIME:
            value = int(value)  # microseconds; the column type makes it a timestamp
        out[spec.name] = value
    for name in ("leaf_hash", "chain_hash", "mac", "mac_key_id"):
        out[name] = row[name]
    return out


def to_db_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The database form of an export row, for the same strict checks as the live log.

    Values of unexpected types are passed on unchanged, so that the checker reports them
    as malformed rather than this conversion failing.
    """
    out: dict[str, Any] = {name: row.get(name) for name in ("chain_id", "seq", "record_version")}
    for spec in EVENT_FIELDS:
        value = row.get(spec.name)
        if isinstance(value, list) and spec.kind is Kind.TEXT_LIST:
            value = canonical_json(value)  # exactly as the store writes it
        elif isinstance(value, bool) and spec.kind is Kind.BOOL:
            value = int(value)
        elif spec.kind is Kind.TIME and isinstance(value, datetime):
            value = to_micros(value)
        out[column_name(spec.name)] = value
    for name in ("leaf_hash", "chain_hash", "mac", "mac_key_id"):
        out[name] = row.get(name)
    return out
