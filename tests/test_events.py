"""The record: validation, normalisation, canonical encoding (golden vectors: test_vectors)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accessaudit import AccessEvent, InvalidEvent
from accessaudit.record._validate import _ACCEPTED, ACCEPTED_MAX
from accessaudit.record.encoding import _ENCODED_TEXT, ENCODED_TEXT_MAX, decode, encode
from accessaudit.record.fields import EVENT_FIELDS, MAX_IDENTIFIER_CHARS, MAX_LIST_ITEMS
from tests.strategies import FIXED_EVENT, events, make_event
from tests.test_vectors import GOLDEN_EVENT


def _problems(**overrides: Any) -> list[str]:
    with pytest.raises(InvalidEvent) as caught:
        make_event(**overrides)
    return [p.field for p in caught.value.problems]


def test_dataclass_fields_follow_the_field_list() -> None:
    """The dataclass declares exactly EVENT_FIELDS, in canonical order."""
    assert list(AccessEvent.__dataclass_fields__) == [s.name for s in EVENT_FIELDS]


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"actor_id": 42}, "actor_id", "must be text, got int"),
        ({"actor_id": ""}, "actor_id", "must not be empty"),
        ({"actor_id": "a\x00b"}, "actor_id", "NUL"),
        ({"actor_id": "bad\udc80"}, "actor_id", "lone surrogate"),
        ({"actor_id": "x" * (MAX_IDENTIFIER_CHARS + 1)}, "actor_id", "over the limit of 256"),
        ({"justification": "y" * 2001}, "justification", "over the limit of 2000"),
        ({"event_type": "access.maybe"}, "event_type", "is not one of"),
        ({"actor_type": "robot"}, "actor_type", "is not one of human, service"),
        ({"record_count": -1}, "record_count", "between 0 and"),
        ({"record_count": True}, "record_count", "must be an integer, got bool"),
        ({"record_count": 1.5}, "record_count", "must be an integer, got float"),
        ({"customer_visible": 1}, "customer_visible", "true or false"),
        ({"occurred_at": datetime(2026, 1, 1)}, "occurred_at", "naive datetime"),
        ({"occurred_at": "yesterday"}, "occurred_at", "not an ISO 8601"),
        ({"occurred_at": datetime(1969, 12, 31, tzinfo=UTC)}, "occurred_at", "before 1970"),
        ({"event_id": "not-a-uuid"}, "event_id", "must be a UUID"),
        ({"data_categories": "contact"}, "data_categories", "must be a list of text, got str"),
        ({"data_categories": ["a", ""]}, "data_categories[1]", "must not be empty"),
        ({"field_names": ["x"] * (MAX_LIST_ITEMS + 1)}, "field_names", "over the limit"),
        ({"attributes": {"ratio": 0.5}}, "attributes['ratio']", "floats"),
        ({"attributes": {"nested": {"a": 1}}}, "attributes['nested']", "nested"),
        ({"attributes": []}, "attributes", "must be a mapping"),
    ],
)
def test_bad_field_is_rejected_with_a_specific_message(
    overrides: dict[str, Any], field: str, words: str
) -> None:
    """Each kind of bad value names the field and says what is wrong."""
    with pytest.raises(InvalidEvent) as caught:
        make_event(**overrides)
    (problem,) = caught.value.problems
    assert problem.field == field
    assert words in str(problem)
    assert isinstance(caught.value, ValueError)


def test_every_problem_is_reported_at_once() -> None:
    """Several faults in one event are all listed, not just the first."""
    assert _problems(actor_id="", record_count=-5, actor_type="robot") == [
        "actor_id",
        "actor_type",
        "record_count",
    ]


def test_from_dict_reports_missing_and_unknown_fields() -> None:
    """Untyped input names unknown keys and every missing required field."""
    with pytest.raises(InvalidEvent) as caught:
        AccessEvent.from_dict({"actor_idd": "x", "event_type": "access.allowed"})
    fields = [p.field for p in caught.value.problems]
    assert fields == ["actor_idd", "actor_id", "actor_type"]


def test_aware_times_are_normalised_to_utc_microseconds() -> None:
    """An aware datetime in any zone is stored as the same instant in UTC."""
    local = datetime(2026, 3, 1, 10, 0, 0, 999999, tzinfo=timezone(timedelta(hours=2)))
    event = make_event(occurred_at=local)
    assert event.occurred_at == datetime(2026, 3, 1, 8, 0, 0, 999999, tzinfo=UTC)
    assert event.occurred_at.tzinfo is UTC
    assert event.occurred_at_us == 1772352000999999


def test_defaults_give_a_time_ordered_uuid7_and_an_aware_now() -> None:
    """Omitted ids are UUIDv7 (time-ordered), and omitted times are aware UTC."""
    first, second = make_event(), make_event()
    assert first.event_id.version == 7
    assert first.event_id < second.event_id  # uuid7() is monotonic within a process
    assert first.occurred_at.tzinfo is UTC


def test_lists_are_frozen_and_attributes_read_only() -> None:
    """An event cannot be changed after creation, even through its containers."""
    event = make_event(field_names=["email"], attributes={"case": "c-1"})
    assert event.field_names == ("email",)
    with pytest.raises(TypeError):
        event.attributes["case"] = "c-2"  # type: ignore[index]
    with pytest.raises(AttributeError):
        event.actor_id = "someone-else"  # type: ignore[misc]


# -- canonical encoding -----------------------------------------------------------------


def test_encoding_layout_starts_with_magic_version_chain_and_seq() -> None:
    """The first bytes are the magic, the version and the tagged chain id and seq."""
    data = encode("main", 1, AccessEvent(**GOLDEN_EVENT))
    header = b"accessaudit/event\x00" + b"\x00\x01"  # magic, u16 version 1
    chain = b"\x01" + b"\x00\x00\x00\x04" + b"main"  # text tag, u32 length, UTF-8
    seq = b"\x02" + (1).to_bytes(8, "big")  # int tag, i64
    event_id = b"\x06" + GOLDEN_EVENT["event_id"].bytes  # uuid tag, 16 bytes
    assert data.startswith(header + chain + seq + event_id)


def test_adjacent_text_fields_cannot_trade_characters() -> None:
    """("ab", "c") and ("a", "bc") in neighbouring fields encode differently."""
    one = make_event(**FIXED_EVENT, role="ab", on_behalf_of="c")
    two = make_event(**FIXED_EVENT, role="a", on_behalf_of="bc")
    assert encode("main", 1, one) != encode("main", 1, two)


def test_none_and_empty_list_are_distinct_from_other_values() -> None:
    """A missing field, an empty list and a moved list item all encode differently."""
    base = make_event(**FIXED_EVENT, field_names=("a", "b"), subject_ids=())
    moved = make_event(**FIXED_EVENT, field_names=("a",), subject_ids=("b",))
    assert encode("main", 1, base) != encode("main", 1, moved)


def test_position_is_part_of_the_encoding() -> None:
    """The same event at another seq or in another chain encodes differently."""
    event = make_event(**FIXED_EVENT)
    assert encode("main", 1, event) != encode("main", 2, event)
    assert encode("main", 1, event) != encode("other", 1, event)


@given(
    events(),
    st.text(min_size=1, max_size=10).filter(lambda s: "\x00" not in s),
    st.integers(1, 2**62),
)
def test_decode_inverts_encode(event: AccessEvent, chain: str, seq: int) -> None:
    """Decoding the encoding gives back the same event and position, so it is injective."""
    try:
        chain.encode("utf-8")
    except UnicodeEncodeError:
        return
    assert decode(encode(chain, seq, event)) == (chain, seq, event)


@given(events(), events())
def test_different_events_never_encode_alike(first: AccessEvent, second: AccessEvent) -> None:
    """Two events encode the same only if they are the same event."""
    assert (encode("c", 1, first) == encode("c", 1, second)) == (first == second)


@given(events())
def test_dict_form_round_trips(event: AccessEvent) -> None:
    """to_dict then from_dict gives back an equal event (the JSON form loses nothing)."""
    assert AccessEvent.from_dict(event.to_dict()) == event


@pytest.mark.parametrize("cut", [1, 10, 30])
def test_truncated_encoding_is_rejected(cut: int) -> None:
    """A shortened encoding does not decode."""
    data = encode("main", 1, make_event(**FIXED_EVENT))
    with pytest.raises(ValueError, match="encoding ends early"):
        decode(data[:-cut])


def test_echoed_bad_values_are_cut_short() -> None:
    """An oversized bad value is quoted only in part, so errors cannot flood a log."""
    with pytest.raises(InvalidEvent) as caught:
        make_event(event_type="x" * 10_000)
    assert len(str(caught.value)) < 400
    assert "..." in str(caught.value)


def test_datetime_subclass_becomes_a_plain_utc_datetime() -> None:
    """A datetime subclass is stored as a plain UTC datetime of the same instant."""

    class Stamp(datetime):
        pass

    event = make_event(occurred_at=Stamp(2026, 5, 1, 12, 0, 0, 7, tzinfo=UTC))
    assert type(event.occurred_at) is datetime
    assert event.occurred_at == datetime(2026, 5, 1, 12, 0, 0, 7, tzinfo=UTC)


def test_text_accepted_before_is_not_a_pass_for_a_lookalike() -> None:
    """Text is remembered once accepted; a str subclass equal to it is still checked in full.

    (The validator remembers accepted text so that a service's repeated actor, resource and
    host are not checked on every record; only exact ``str`` values may use that memory.)
    """

    class Lookalike(str):
        __slots__ = ()

        def __eq__(self, other: object) -> bool:
            return True

        def __hash__(self) -> int:
            return hash("svc-remembered")

    make_event(actor_id="svc-remembered")  # now remembered
    with pytest.raises(InvalidEvent, match="NUL"):
        make_event(actor_id=Lookalike("svc\x00remembered"))


def test_text_accepted_under_a_longer_limit_is_checked_against_a_shorter_one() -> None:
    """The memory of accepted text is per length limit: 300 characters fit one field only."""
    text = "j" * (MAX_IDENTIFIER_CHARS + 44)
    assert make_event(justification=text).justification == text
    assert _problems(actor_id=text) == ["actor_id"]


def test_the_memory_of_accepted_text_stays_bounded() -> None:
    """Many distinct customer ids do not make the validator's memory grow without end."""
    for n in range(ACCEPTED_MAX + 10):
        make_event(customer_id=f"customer-{n}")
    assert all(len(known) <= ACCEPTED_MAX for known in _ACCEPTED.values())
    for n in range(ENCODED_TEXT_MAX + 10):
        encode("main", 1, make_event(customer_id=f"customer-{n}"))
    assert len(_ENCODED_TEXT) <= ENCODED_TEXT_MAX


@given(st.text(min_size=1, max_size=40))
def test_remembered_text_encodes_as_it_does_afresh(text: str) -> None:
    """Identifiers encoded from memory give the bytes they give when encoded anew."""
    try:
        event = make_event(resource=text, actor_id=text)
    except InvalidEvent:
        return  # not a valid resource name: nothing to encode
    remembered = encode("main", 1, event)  # with whatever earlier examples left in memory
    _ENCODED_TEXT.clear()
    assert encode("main", 1, event) == remembered
    assert decode(remembered)[2] == event


class _Sneaky(str):
    """Text that lies about itself: no NUL in it, and five characters long."""

    __slots__ = ()

    def __contains__(self, _part: object) -> bool:
        return False

    def __len__(self) -> int:
        return 5


def test_a_subclass_is_checked_as_the_text_it_holds() -> None:
    """A str subclass lying about its length or content is refused, and so is its text later.

    The record stores the plain text a subclass holds, so that is what is checked; the
    memory of accepted text never learns text that was not.
    """
    hidden = "x" * (MAX_IDENTIFIER_CHARS + 44) + "\x00"
    for field in ("actor_id", "data_categories", "attributes"):
        value: object = _Sneaky(hidden)
        if field == "data_categories":
            value = [value]
        elif field == "attributes":
            value = {"note": value}
        with pytest.raises(InvalidEvent):
            make_event(**{field: value})
    with pytest.raises(InvalidEvent, match="NUL"):
        make_event(actor_id=hidden)


def test_free_text_is_not_kept_in_memory() -> None:
    """A justification (free text, maybe personal) is neither remembered nor its encoding."""
    text = "customer asked by phone about invoice 42"
    encode("main", 1, make_event(justification=text))
    assert all(text not in known for known in _ACCEPTED.values())
    assert text not in _ENCODED_TEXT
