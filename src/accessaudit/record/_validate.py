"""Type checks and normalisation for record fields, driven by ``EVENT_FIELDS``.

Every check answers with a ``FieldProblem`` naming the field, what is wrong and how to fix
it, so an event with several faults is rejected with all of them listed.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from accessaudit.exceptions import FieldProblem, InvalidEvent
from accessaudit.record._clock import EPOCH, from_micros, to_micros
from accessaudit.record.fields import (
    EVENT_FIELDS,
    FIELDS_BY_NAME,
    MAX_ATTRIBUTES,
    MAX_IDENTIFIER_CHARS,
    MAX_INT,
    MAX_LIST_ITEMS,
    FieldSpec,
    Kind,
)

if TYPE_CHECKING:
    from collections.abc import Callable

Outcome = tuple[Any, FieldProblem | None]


def _shown(value: object) -> str:
    """A value for an error message: its repr, cut short so bad input cannot flood the log."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _type_name(value: object) -> str:
    return type(value).__name__


def check_text(name: str, value: object, max_chars: int) -> FieldProblem | None:
    """Why ``value`` is not acceptable text for ``name``, or None if it is."""
    if not isinstance(value, str):
        return FieldProblem(name, f"must be text, got {_type_name(value)}")
    if not value:
        return FieldProblem(name, "must not be empty", "omit the field (None) instead")
    if "\x00" in value:
        return FieldProblem(name, "contains a NUL character", "remove NUL bytes from the text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return FieldProblem(
            name, "is not valid Unicode (lone surrogate)", "decode input bytes as UTF-8 first"
        )
    if len(value) > max_chars:
        return FieldProblem(
            name, f"is {len(value)} characters, over the limit of {max_chars}", "shorten it"
        )
    return None


def _text(spec: FieldSpec, value: object) -> Outcome:
    if value is None:
        return None, (FieldProblem(spec.name, "is required") if spec.required else None)
    if spec.choices is not None:
        if type(value) is spec.choices:
            return value, None
        if isinstance(value, str):
            try:
                return spec.choices(value), None
            except ValueError:
                allowed = ", ".join(c.value for c in spec.choices)
                return None, FieldProblem(spec.name, f"{_shown(value)} is not one of {allowed}")
    if type(value) is str and value in _ACCEPTED[spec.max_chars]:
        return value, None
    # A subclass is checked as the plain text it holds, which is what is stored: its own
    # __len__ or __contains__ could say anything.
    text = exact_text(value) if isinstance(value, str) else value
    problem = check_text(spec.name, text, spec.max_chars)
    if problem is not None:
        return None, problem
    _remember(spec.max_chars, text)  # type: ignore[arg-type]
    return text, None


# Plain text already accepted, per limit. The gate states the same actor, purpose, resource,
# function and host on every record of a service: checking each again on every record cost
# more than encoding and hashing it. Only exact ``str`` values are looked up (a subclass
# could compare equal to text it does not hold), only checked plain text is remembered,
# and only identifiers: free text (a justification) seldom repeats and may be personal.
# The sets are bounded: customer ids and request ids are many, so a full set starts over
# rather than grow without end.
_ACCEPTED: defaultdict[int, set[str]] = defaultdict(set)
ACCEPTED_MAX: Final = 4096


def _remember(max_chars: int, text: str) -> None:
    if max_chars > MAX_IDENTIFIER_CHARS:
        return
    known = _ACCEPTED[max_chars]
    if len(known) >= ACCEPTED_MAX:
        known.clear()
    known.add(text)


def exact_text(value: str) -> str:
    """A ``str`` subclass (e.g. a ``(str, Enum)`` member) as the plain string it holds.

    The record keeps plain strings only: the database stores a subclass's underlying text,
    while its ``__str__`` may say something else (``Role.SUPPORT``), and the hash must be of
    what is stored.
    """
    return value if type(value) is str else str.__str__(value)


def _int(spec: FieldSpec, value: object) -> Outcome:
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, int):
        return None, FieldProblem(spec.name, f"must be an integer, got {_type_name(value)}")
    if not 0 <= value <= MAX_INT:
        return None, FieldProblem(spec.name, f"must be between 0 and {MAX_INT}, got {value}")
    return int(value), None  # a plain int, also for IntEnum members


def _bool(spec: FieldSpec, value: object) -> Outcome:
    if not isinstance(value, bool):
        return None, FieldProblem(spec.name, f"must be true or false, got {_type_name(value)}")
    return value, None


def _uuid(spec: FieldSpec, value: object) -> Outcome:
    if isinstance(value, uuid.UUID):
        return uuid.UUID(int=value.int), None
    if isinstance(value, str):
        try:
            return uuid.UUID(value), None
        except ValueError:
            pass
    return None, FieldProblem(
        spec.name, f"must be a UUID, got {_type_name(value)}", "omit it to get a new UUIDv7"
    )


def _time(spec: FieldSpec, value: object) -> Outcome:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None, FieldProblem(spec.name, f"{_shown(value)} is not an ISO 8601 timestamp")
    if not isinstance(value, datetime):
        return None, FieldProblem(spec.name, f"must be a datetime, got {_type_name(value)}")
    if value.tzinfo is None or value.utcoffset() is None:
        return None, FieldProblem(
            spec.name, "is a naive datetime", "attach a timezone, e.g. datetime.now(UTC)"
        )
    try:
        moment = value.astimezone(UTC)
    except OverflowError:
        return None, FieldProblem(spec.name, "is outside the years 1..9999 once in UTC")
    if moment < EPOCH:
        return None, FieldProblem(spec.name, "is before 1970-01-01T00:00:00Z")
    # A plain datetime at the stored precision, also for subclasses (pandas.Timestamp).
    return from_micros(to_micros(moment)), None


def _text_list(spec: FieldSpec, value: object) -> Outcome:
    if not isinstance(value, list | tuple):
        return None, FieldProblem(spec.name, f"must be a list of text, got {_type_name(value)}")
    if len(value) > MAX_LIST_ITEMS:
        return None, FieldProblem(
            spec.name, f"has {len(value)} items, over the limit of {MAX_LIST_ITEMS}"
        )
    known = _ACCEPTED[spec.max_chars]
    items = []
    for index, item in enumerate(value):
        if type(item) is str and item in known:
            items.append(item)
            continue
        text = exact_text(item) if isinstance(item, str) else item
        problem = check_text(f"{spec.name}[{index}]", text, spec.max_chars)
        if problem is not None:
            return None, problem
        _remember(spec.max_chars, text)
        items.append(text)
    return tuple(items), None


def _attributes(spec: FieldSpec, value: object) -> Outcome:
    if not isinstance(value, Mapping):
        return None, FieldProblem(spec.name, f"must be a mapping, got {_type_name(value)}")
    if len(value) > MAX_ATTRIBUTES:
        return None, FieldProblem(
            spec.name, f"has {len(value)} keys, over the limit of {MAX_ATTRIBUTES}"
        )
    clean: dict[str, Any] = {}
    for key in sorted(value, key=str):
        where = f"{spec.name}[{_shown(key)}]"
        # Text is checked as the plain text that is stored (see ``_text``).
        plain_key = exact_text(key) if isinstance(key, str) else key
        problem = check_text(f"{spec.name} key {_shown(key)}", plain_key, 128)
        item = value[key]
        if isinstance(item, str):
            item = exact_text(item)
        if problem is None and isinstance(item, str):
            problem = check_text(where, item, spec.max_chars)
        elif problem is None and isinstance(item, int) and not isinstance(item, bool):
            if not -MAX_INT - 1 <= item <= MAX_INT:
                problem = FieldProblem(where, "is outside the 64-bit integer range")
        elif problem is None and item is not None and not isinstance(item, bool):
            problem = FieldProblem(
                where,
                f"must be text, an integer, a boolean or null, got {_type_name(item)}",
                "floats and nested values are not allowed; encode them as text",
            )
        if problem is not None:
            return None, problem
        clean[plain_key] = item
    return MappingProxyType(clean), None


_NORMALISERS = {
    Kind.TEXT: _text,
    Kind.INT: _int,
    Kind.BOOL: _bool,
    Kind.UUID: _uuid,
    Kind.TIME: _time,
    Kind.TEXT_LIST: _text_list,
    Kind.ATTRIBUTES: _attributes,
}


#: Each field of the record with its normaliser, in canonical order. Resolved once: looking
#: a ``Kind`` up costs a call into ``Enum.__hash__``, and this runs for every field of every
#: record the gate builds.
FIELD_NORMALISERS: Final = tuple((spec, _NORMALISERS[spec.kind]) for spec in EVENT_FIELDS)


def normalise(spec: FieldSpec, value: object) -> Outcome:
    """The field's normalised value, or the problem that stops it being accepted."""
    return _NORMALISERS[spec.kind](spec, value)


def json_form(spec: FieldSpec) -> Callable[[Any], Any] | None:
    """How a normalised, non-null value of ``spec`` becomes JSON; None if it already is."""
    if spec.kind is Kind.UUID:
        return str
    if spec.kind is Kind.TIME:
        return _iso_time
    if spec.kind is Kind.TEXT_LIST:
        return list
    if spec.kind is Kind.ATTRIBUTES:
        return dict
    if spec.choices is not None:
        return str
    return None


def _iso_time(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_json_value(spec: FieldSpec, value: Any) -> Any:
    """The JSON form of a normalised field value (see the JSON Schema)."""
    convert = json_form(spec)
    return value if value is None or convert is None else convert(value)


def check_keys(data: Mapping[str, Any]) -> None:
    """Reject unknown keys and missing required fields of untyped input, all at once."""
    problems = [
        FieldProblem(str(key), "is not a field of the record", "check the spelling")
        for key in data
        if key not in FIELDS_BY_NAME
    ]
    problems += [
        FieldProblem(spec.name, "is required")
        for spec in EVENT_FIELDS
        if spec.required and data.get(spec.name) is None
    ]
    if problems:
        raise InvalidEvent(problems)
