"""The canonical encoding of a record straight from its stored row: the verifier's fast path.

``_rows.from_row`` followed by ``encoding.encode`` is the careful way from a row to the
bytes its leaf hash covers: every column parsed, an ``AccessEvent`` validated, then encoded.
Verify and export do that for every row of the log, and it is most of their time. A
``RowEncoder`` builds the same bytes from the row's values directly, field by field, and
answers None for any row it is not sure of, which the caller then takes the careful way.

It may only be stricter, never looser: it accepts a value only where ``from_row`` and the
event's validation would accept it, and then yields exactly the bytes ``encode`` would.
Where a field has no fast check (attribute maps, and any value the fast checks do not
recognise), the careful per-field functions themselves decide, so the two cannot drift. A
property test compares both on arbitrary events, and on arbitrary edits of their rows.

Columns whose values repeat (roles, purposes, resources, list columns) keep a small memo of
values already encoded, which is what makes most fields a dictionary lookup.
"""

from __future__ import annotations

import json
import operator
import re
import struct
from typing import TYPE_CHECKING, Any, Final

from accessaudit.record._clock import MAX_MICROS
from accessaudit.record._rows import column_name, from_column
from accessaudit.record._validate import normalise
from accessaudit.record.encoding import _BY_KIND, _HEADER, _I64, _NULL_BYTES, _U32, _scalar
from accessaudit.record.fields import EVENT_FIELDS, MAX_INT, MAX_LIST_ITEMS, RECORD_VERSION, Kind

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from accessaudit.record.fields import FieldSpec

    Encode = Callable[[Any], bytes]

#: Entries a column's memo holds before it starts afresh; values longer than
#: ``_MEMO_MAX_CHARS`` are never kept, so a memo stays well under a megabyte.
_MEMO_ENTRIES: Final = 1024
_MEMO_MAX_CHARS: Final = 256
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TAG_TEXT, _TAG_INT, _TAG_LIST, _TAG_UUID, _TAG_TIME = (bytes([t]) for t in (1, 2, 4, 6, 7))
_BOOLS: Final = {0: bytes([3, 0]), 1: bytes([3, 1])}
#: A JSON array of non-empty strings holding nothing that JSON escapes (quote, backslash,
#: control characters): its only spelling is the canonical one.
_PLAIN_LIST = re.compile(r'\[\]|\["[^"\\\x00-\x1f]+"(?:,"[^"\\\x00-\x1f]+")*\]')
_JSON_LIST = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class NotFast(Exception):  # a signal to take the careful way, not an error
    """The value is not one the fast path is sure of."""


def careful_field(spec: FieldSpec) -> Encode:
    """A column value to its field's encoding, the careful way.

    That is ``from_row``'s parse of the column, the event's own normalisation, then
    ``encode``'s field encoder.
    """
    column, kind, encoder = column_name(spec.name), spec.kind, _BY_KIND[spec.kind]

    def encode(value: object) -> bytes:
        try:
            parsed = from_column(kind, column, value)
        except Exception as e:  # whatever it is, from_row would not pass it
            raise NotFast from e
        normalised, problem = normalise(spec, parsed)
        if problem is not None:
            raise NotFast
        return _NULL_BYTES if normalised is None else encoder(normalised)

    return encode


class _Memo(dict[object, bytes]):
    """Encodings of values seen before; a miss is encoded by ``fresh`` and remembered.

    Only text columns get one: every key is a ``str`` (or None), and no value of another
    type compares equal to one, so a lookup can never return another type's encoding.
    """

    def __init__(self, fresh: Encode) -> None:
        super().__init__()
        self.fresh = fresh

    def __missing__(self, value: object) -> bytes:
        encoded = self.fresh(value)  # raises NotFast for anything it is not sure of
        if value is None or (type(value) is str and len(value) <= _MEMO_MAX_CHARS):
            if len(self) >= _MEMO_ENTRIES:
                self.clear()
            self[value] = encoded
        return encoded


def _text_bytes(value: str) -> bytes:
    raw = value.encode("utf-8")  # UnicodeEncodeError (a lone surrogate): not fast
    return _U32.pack(len(raw)) + raw


def _fast_text(spec: FieldSpec) -> Encode:
    """``check_text`` and the text encoder, for plain ``str`` values (and None)."""
    careful = careful_field(spec)
    limit = spec.max_chars
    choices = None if spec.choices is None else {c.value for c in spec.choices}

    def encode(value: object) -> bytes:
        if type(value) is not str or not (
            value in choices
            if choices is not None
            else (value and len(value) <= limit and "\x00" not in value)
        ):
            return careful(value)  # None, and every rejection, decided by the careful code
        try:
            return _TAG_TEXT + _text_bytes(value)
        except UnicodeEncodeError:
            raise NotFast from None

    return encode


def _fast_text_list(spec: FieldSpec) -> Encode:
    """A JSON array of plain text items, exactly as the writer writes one; else careful."""
    careful = careful_field(spec)
    limit = spec.max_chars

    def encode(value: object) -> bytes:
        if type(value) is not str or value[:1] != "[":
            return careful(value)
        items = plain_text_list(value)
        if items is not None:
            if len(items) > MAX_LIST_ITEMS or any(len(i) > limit for i in items):
                return careful(value)
            return _list_bytes(items)
        try:
            items = json.loads(value)
        except (ValueError, RecursionError):
            raise NotFast from None
        if (
            type(items) is not list
            or len(items) > MAX_LIST_ITEMS
            or not all(type(i) is str and i and len(i) <= limit and "\x00" not in i for i in items)
            or _JSON_LIST(items) != value  # not the writer's canonical spelling
        ):
            return careful(value)
        return _list_bytes(items)

    return encode


def _list_bytes(items: list[str]) -> bytes:
    """The canonical encoding of a checked text list (NotFast for a lone surrogate)."""
    try:
        body = b"".join(map(_text_bytes, items))
    except UnicodeEncodeError:
        raise NotFast from None
    return _TAG_LIST + _U32.pack(len(items)) + body


def plain_text_list(text: str) -> list[str] | None:
    """The items of a JSON array of plain text (nothing in it that JSON escapes), else None.

    Such an array has one spelling, the canonical one, and its items are exactly the text
    between the quotes: no JSON parser needed.
    """
    if _PLAIN_LIST.fullmatch(text) is None:
        return None
    return text[2:-2].split('","') if len(text) > 2 else []


def _uuid(value: object) -> bytes:
    if type(value) is not str or _UUID.fullmatch(value) is None:
        raise NotFast  # also None: event_id is always present
    return _TAG_UUID + bytes.fromhex(value.replace("-", ""))


def _time(value: object) -> bytes:
    if type(value) is not int or not 0 <= value <= MAX_MICROS:
        raise NotFast
    return _TAG_TIME + _I64.pack(value)


def _int(value: object) -> bytes:
    if value is None:
        return _NULL_BYTES
    if type(value) is not int or not 0 <= value <= MAX_INT:
        raise NotFast
    return _TAG_INT + _I64.pack(value)


def _bool(value: object) -> bytes:
    encoded = _BOOLS.get(value) if type(value) is int else None  # type(): never True or 1.0
    if encoded is None:
        raise NotFast
    return encoded


def field_encoder(spec: FieldSpec) -> Encode:
    """The fast encoder of one field's column value; raises ``NotFast`` when unsure."""
    kind = spec.kind
    if kind is Kind.UUID:
        return _uuid
    if kind is Kind.TIME:
        return _time
    if kind is Kind.INT:
        return _int
    if kind is Kind.BOOL:
        return _bool
    if kind is Kind.TEXT:
        return _Memo(_fast_text(spec)).__getitem__
    if kind is Kind.TEXT_LIST:
        return _Memo(_fast_text_list(spec)).__getitem__
    return _Memo(careful_field(spec)).__getitem__  # attribute maps: rare, and repetitive


class RowEncoder:
    """Canonical encodings of one chain's rows, read by column name or by position.

    ``columns`` gives the order of tuple rows; without it rows are mappings. The encoder
    also checks what ``from_row`` checks beside the fields (record version, chain id), so
    a row it encodes is one ``from_row`` would accept, up to the digest columns, which the
    caller compares with values it computes.
    """

    def __init__(self, chain_id: str, columns: Sequence[str] | None = None) -> None:
        self.chain_id = chain_id
        self.header = _HEADER + _scalar(chain_id)
        names = ["chain_id", "record_version"] + [column_name(s.name) for s in EVENT_FIELDS]
        names += ["leaf_hash", "chain_hash", "mac", "mac_key_id"]
        self.usable = columns is None or set(names) <= set(columns)
        where: dict[str, Any] = (
            dict(zip(names, names, strict=True))
            if columns is None
            else {c: i for i, c in enumerate(columns)}
        )
        if not self.usable:
            where = dict.fromkeys(names, -1)
        self.chain_at, self.version_at = where["chain_id"], where["record_version"]
        self.leaf_at, self.chain_hash_at = where["leaf_hash"], where["chain_hash"]
        self.mac_at, self.key_id_at = where["mac"], where["mac_key_id"]
        self.field_values = operator.itemgetter(*(where[column_name(s.name)] for s in EVENT_FIELDS))
        self.field_encoders = [field_encoder(s) for s in EVENT_FIELDS]

    def encode(self, row: Sequence[Any] | Mapping[str, Any], seq: int) -> bytes | None:
        """The bytes ``encode`` gives for this row at ``seq``, or None: take the careful way."""
        if not self.usable:
            return None
        try:
            chain_id, version = row[self.chain_at], row[self.version_at]
            if chain_id != self.chain_id or type(chain_id) is not str:
                return None
            if type(version) is not int or version != RECORD_VERSION:
                return None
            values = self.field_values(row)
            fields = b"".join(map(operator.call, self.field_encoders, values))
            return self.header + _TAG_INT + _I64.pack(seq) + fields
        except (NotFast, LookupError, OverflowError, ValueError, TypeError, struct.error):
            return None
