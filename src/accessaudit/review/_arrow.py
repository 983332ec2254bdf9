"""The Parquet export's columns: Arrow types derived from the record's field list.

One row of the export is one stored record. Columns carry analyst-friendly Arrow types
(timestamps, lists, booleans); ``attributes`` stays the canonical JSON text the log stores,
because its values are of mixed types. ``to_arrow_table`` and ``to_db_row`` convert between
database rows (``_rows`` form) and an export row, so the verifier can check an export
with exactly the code that checks the database.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa

from accessaudit.record._clock import to_micros
from accessaudit.record._row_encoding import plain_text_list
from accessaudit.record._rows import canonical_json, column_name
from accessaudit.record.fields import EVENT_FIELDS, Kind

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

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


def to_arrow_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> pa.Table:
    """Export rows from database rows that ``_rows.from_row`` accepted.

    ``rows`` are tuples of the values of ``columns``; they are converted column by column.
    """
    by_name = dict(zip(columns, zip(*rows, strict=True), strict=True))
    arrays = []
    for spec in _EXPORTED:
        values: Sequence[Any] = by_name[spec[1]]
        kind = spec[2]
        if kind is Kind.TEXT_LIST:
            values = _text_lists(values)
        elif kind is Kind.BOOL:  # stored as 0 and 1, which Arrow will not take as booleans
            values = [None if v is None else bool(v) for v in values]
        # Timestamps stay integer microseconds: the column type makes them timestamps.
        arrays.append(pa.array(values, type=EXPORT_SCHEMA.field(spec[0]).type))
    return pa.Table.from_arrays(arrays, schema=EXPORT_SCHEMA)


#: Each export column: its name, the database column it comes from, and its field's kind.
_EXPORTED: Final[tuple[tuple[str, str, Kind | None], ...]] = (
    ("chain_id", "chain_id", None),
    ("seq", "seq", None),
    ("record_version", "record_version", None),
    *((spec.name, column_name(spec.name), spec.kind) for spec in EVENT_FIELDS),
    *((name, name, None) for name in ("leaf_hash", "chain_hash", "mac", "mac_key_id")),
)


def _text_lists(texts: Sequence[str | None]) -> list[list[str] | None]:
    """Stored JSON text lists as lists, each distinct text parsed once."""
    parsed: dict[str, list[str]] = {}
    lists: list[list[str] | None] = []
    for text in texts:
        if text is None:
            lists.append(None)
            continue
        items = parsed.get(text)
        if items is None:
            items = plain_text_list(text)
            items = parsed[text] = json.loads(text) if items is None else items
        lists.append(items)
    return lists


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
