"""Canonical, versioned, length-prefixed binary encoding of a record (the hash pre-image).

Layout (all integers big-endian)::

    MAGIC  u16 RECORD_VERSION
    TEXT chain_id  INT seq
    one tagged value per field of EVENT_FIELDS, in that order

    tagged value = u8 tag + payload
      0x00 null      (no payload)
      0x01 text      u32 byte length + UTF-8
      0x02 int       i64
      0x03 bool      u8 0 or 1
      0x04 text list u32 count + count x (u32 byte length + UTF-8)
      0x05 map       u32 count + count x (u32 key length + UTF-8 key + tagged scalar), keys sorted
      0x06 uuid      16 bytes
      0x07 time      i64 microseconds since 1970-01-01T00:00:00Z

Every value carries its own type and length, so the encoding is self-delimiting and two
different records can never share one (``decode`` inverts ``encode`` exactly; a property
test checks it). The encoding is built from typed values, never from what a database hands
back, and it is frozen per version: golden vectors in the tests pin it.
"""

from __future__ import annotations

import struct
import uuid
from typing import TYPE_CHECKING, Any, Final

from accessaudit.record._clock import from_micros, to_micros
from accessaudit.record.events import AccessEvent
from accessaudit.record.fields import EVENT_FIELDS, MAX_IDENTIFIER_CHARS, RECORD_VERSION, Kind

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from datetime import datetime

__all__ = ["MAGIC", "decode", "encode"]

MAGIC: Final = b"accessaudit/event\x00"
_NULL, _TEXT, _INT, _BOOL, _LIST, _MAP, _UUID, _TIME = range(8)
_NULL_BYTES = bytes([_NULL])
# The tags as bytes, built once (encode runs for every record written and verified).
_TEXT_TAG, _INT_TAG, _LIST_TAG, _MAP_TAG = (
    bytes([_TEXT]),
    bytes([_INT]),
    bytes([_LIST]),
    bytes([_MAP]),
)
_UUID_TAG, _TIME_TAG = bytes([_UUID]), bytes([_TIME])
_BOOLS = {False: bytes([_BOOL, 0]), True: bytes([_BOOL, 1])}
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")


def _text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return _U32.pack(len(raw)) + raw


def _scalar(value: object) -> bytes:
    if value is None:
        return _NULL_BYTES
    if isinstance(value, bool):
        return _BOOLS[value]
    if isinstance(value, int):
        return _INT_TAG + _I64.pack(value)
    if isinstance(value, str):
        return _TEXT_TAG + _text(value)
    raise TypeError(f"cannot encode {type(value).__name__}")  # validation prevents this


def _uuid(value: uuid.UUID) -> bytes:
    return _UUID_TAG + value.bytes


def _time(value: datetime) -> bytes:
    return _TIME_TAG + _I64.pack(to_micros(value))


def _text_list(value: tuple[str, ...]) -> bytes:
    return _LIST_TAG + _U32.pack(len(value)) + b"".join([_text(v) for v in value])


def _attributes(value: Mapping[str, object]) -> bytes:
    items = sorted(value.items())
    body = b"".join([_text(k) + _scalar(v) for k, v in items])
    return _MAP_TAG + _U32.pack(len(items)) + body


def _plain_text(value: str) -> bytes:
    return _TEXT_TAG + _text(str(value))  # str(): enum members encode as their value


def _remembered_text(value: str) -> bytes:
    """``_plain_text`` of an identifier field, from memory when it was encoded lately."""
    if type(value) is not str:
        return _plain_text(value)
    encoded = _ENCODED_TEXT.get(value)
    if encoded is None:
        if len(_ENCODED_TEXT) >= ENCODED_TEXT_MAX:
            _ENCODED_TEXT.clear()
        encoded = _ENCODED_TEXT[value] = _TEXT_TAG + _text(value)
    return encoded


# The tagged encoding of identifiers seen lately: most of a service's records state the
# same actor, purpose, resource, host and policy version. Free-text fields are not kept
# (they seldom repeat and may be personal). Bounded like the validator's memory of
# accepted text, and for the same reason.
_ENCODED_TEXT: dict[str, bytes] = {}
ENCODED_TEXT_MAX: Final = 4096


_BY_KIND: dict[Kind, Callable[[Any], bytes]] = {
    Kind.UUID: _uuid,
    Kind.TIME: _time,
    Kind.TEXT: _plain_text,
    Kind.INT: _scalar,
    Kind.BOOL: _scalar,
    Kind.TEXT_LIST: _text_list,
    Kind.ATTRIBUTES: _attributes,
}
# Resolved once: the encoder of each field, in canonical order.
_FIELD_ENCODERS = tuple(
    (
        spec.name,
        _remembered_text
        if spec.kind is Kind.TEXT and spec.max_chars <= MAX_IDENTIFIER_CHARS
        else _BY_KIND[spec.kind],
    )
    for spec in EVENT_FIELDS
)
_HEADER = MAGIC + struct.pack(">H", RECORD_VERSION)


def encode(chain_id: str, seq: int, event: AccessEvent) -> bytes:
    """The canonical bytes of ``event`` at position ``seq`` of chain ``chain_id``."""
    parts = [_HEADER, _scalar(chain_id), _scalar(seq)]
    for name, encoder in _FIELD_ENCODERS:
        value = getattr(event, name)
        parts.append(_NULL_BYTES if value is None else encoder(value))
    return b"".join(parts)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise ValueError("encoding ends early")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def text(self) -> str:
        (size,) = _U32.unpack(self.take(4))
        return self.take(size).decode("utf-8")

    def tagged(self) -> Any:
        tag = self.take(1)[0]
        if tag == _NULL:
            return None
        if tag == _TEXT:
            return self.text()
        if tag == _INT:
            return _I64.unpack(self.take(8))[0]
        if tag == _BOOL:
            return self.take(1) == b"\x01"
        if tag == _LIST:
            (count,) = _U32.unpack(self.take(4))
            return tuple(self.text() for _ in range(count))
        if tag == _MAP:
            (count,) = _U32.unpack(self.take(4))
            return {self.text(): self.tagged() for _ in range(count)}
        if tag == _UUID:
            return uuid.UUID(bytes=self.take(16))
        if tag == _TIME:
            return from_micros(_I64.unpack(self.take(8))[0])
        raise ValueError(f"unknown tag {tag}")


def decode(data: bytes) -> tuple[str, int, AccessEvent]:
    """Invert ``encode``: (chain_id, seq, event). Raises ValueError on malformed input."""
    reader = _Reader(data)
    if reader.take(len(MAGIC)) != MAGIC:
        raise ValueError("not an accessaudit record encoding")
    (version,) = struct.unpack(">H", reader.take(2))
    if version != RECORD_VERSION:
        raise ValueError(f"unsupported record version {version}")
    chain_id, seq = reader.tagged(), reader.tagged()
    values = {spec.name: reader.tagged() for spec in EVENT_FIELDS}
    if reader.pos != len(data):
        raise ValueError("trailing bytes after the record")
    return chain_id, seq, AccessEvent(**values)
