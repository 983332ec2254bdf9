"""The store contract, run identically on SQLite and PostgreSQL."""

from __future__ import annotations

import enum
import os
import uuid
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings

from accessaudit import (
    AccessEvent,
    Decision,
    DuplicateEvent,
    EventType,
    InvalidEvent,
    MacKey,
    MacKeyError,
    SqlStore,
    StoreError,
    verify_store,
)
from accessaudit.record.integrity import GENESIS_HASH, leaf_hash, link_hash
from accessaudit.review.report import ReportFilter
from tests.strategies import events, make_event

if TYPE_CHECKING:
    from tests.conftest import Backend


def test_store_has_no_update_or_delete_method() -> None:
    """Append-only by construction: nothing on the store changes or removes a record."""
    verbs = ("update", "delete", "remove", "truncate", "drop", "replace", "edit", "clear")
    names = [n for n in dir(SqlStore) if not n.startswith("_")]
    assert not [n for n in names if any(v in n.lower() for v in verbs)]


def test_append_assigns_gapless_seqs_from_one(store: SqlStore) -> None:
    """Seqs start at 1 and continue across batches without gaps."""
    first = store.append([make_event() for _ in range(3)])
    second = store.append([make_event()])
    third = store.append([make_event() for _ in range(2)])
    assert [s.seq for s in first + second + third] == [1, 2, 3, 4, 5, 6]
    assert store.count() == 6


def test_each_record_links_to_its_predecessor(store: SqlStore, key: MacKey) -> None:
    """Leaf hash, chain hash and MAC are the documented functions of the record."""
    records = store.append([make_event() for _ in range(3)])
    previous = GENESIS_HASH
    for record in records:
        assert record.leaf_hash == leaf_hash("main", record.seq, record.event)
        assert record.chain_hash == link_hash(previous, record.leaf_hash)
        assert record.mac == key.seal(record.chain_hash)
        assert record.mac_key_id == key.key_id
        previous = record.chain_hash


def test_read_returns_what_was_appended(store: SqlStore) -> None:
    """Reading gives back equal events with the same seals, in seq order."""
    appended = store.append([make_event(record_count=i, attributes={"i": i}) for i in range(5)])
    assert list(store.read()) == appended


def test_read_streams_a_seq_range(store: SqlStore) -> None:
    """read(start, end) returns exactly that inclusive range."""
    store.append([make_event() for _ in range(10)])
    assert [r.seq for r in store.read(4, 7)] == [4, 5, 6, 7]
    assert [r.seq for r in store.read(9)] == [9, 10]
    assert list(store.read(11)) == []


def test_head_and_count_of_empty_and_filled_chain(store: SqlStore) -> None:
    """An empty chain has no head; afterwards the head is the last record."""
    assert store.head() is None
    assert store.count() == 0
    records = store.append([make_event() for _ in range(4)])
    head = store.head()
    assert head is not None
    assert (head.seq, head.chain_hash) == (4, records[-1].chain_hash)


def test_empty_batch_writes_nothing(store: SqlStore) -> None:
    """Appending nothing is a no-op."""
    assert store.append([]) == []
    assert store.count() == 0


def test_duplicate_event_id_rejects_the_whole_batch(store: SqlStore) -> None:
    """A batch with an id already in the log stores none of its events."""
    existing = store.append([make_event()])[0].event
    fresh = make_event()
    with pytest.raises(DuplicateEvent, match="already recorded"):
        store.append([fresh, existing])
    assert store.count() == 1
    assert store.append([fresh])[0].seq == 2  # the chain continues without a gap


def test_retrying_a_stored_batch_returns_it_without_storing_twice(store: SqlStore) -> None:
    """Appending the same batch again (a retry) returns the stored records, stores nothing."""
    batch = [make_event(), make_event()]
    first = store.append(batch)
    assert store.append(batch) == first
    assert store.count() == 2


def test_same_id_with_other_content_is_a_duplicate(store: SqlStore) -> None:
    """An id that is stored with different content is refused, not taken for a retry."""
    stored = store.append([make_event()])[0].event
    with pytest.raises(DuplicateEvent):
        store.append([make_event(event_id=stored.event_id, customer_id="globex")])
    assert store.count() == 1


def test_generator_batch_is_stored(store: SqlStore) -> None:
    """A batch given as a generator is read once and stored whole."""
    records = store.append(make_event() for _ in range(3))
    assert [r.seq for r in records] == [1, 2, 3]
    assert store.count() == 3


def test_single_event_instead_of_a_batch_is_explained(store: SqlStore) -> None:
    """Passing one event, not a list, says how to fix the call."""
    with pytest.raises(InvalidEvent, match=r"wrap a single event in a list"):
        store.append(make_event())  # type: ignore[arg-type]


def test_duplicate_id_within_a_batch_is_refused(store: SqlStore) -> None:
    """The same event twice in one batch is refused before the database is touched."""
    event = make_event()
    with pytest.raises(DuplicateEvent):
        store.append([event, event])
    assert store.count() == 0


def test_non_event_in_batch_is_refused_with_its_index(store: SqlStore) -> None:
    """Something other than an AccessEvent is named by position; nothing is stored."""
    with pytest.raises(InvalidEvent, match=r"events\[1\]: must be an AccessEvent, got dict"):
        store.append([make_event(), {"actor_id": "x"}])  # type: ignore[list-item]
    assert store.count() == 0


def test_appending_without_key_is_refused(backend: Backend, store: SqlStore) -> None:
    """A store opened without the key can read but not append."""
    with SqlStore(backend.url) as reader:
        with pytest.raises(MacKeyError, match="needs the HMAC key"):
            reader.append([make_event()])
        assert reader.count() == 0


def test_chains_are_independent(backend: Backend, store: SqlStore, key: MacKey) -> None:
    """Each chain has its own gapless seq and verifies on its own."""
    store.append([make_event(), make_event()])
    with SqlStore(backend.url, key=key, chain_id="eu-1") as other:
        assert [r.seq for r in other.append([make_event()])] == [1]
        assert store.chains() == ["eu-1", "main"]
        assert other.count() == 1
    assert store.count() == 2
    assert verify_store(store, key).intact


def test_injection_looking_text_is_stored_verbatim(store: SqlStore) -> None:
    """Values are bound parameters: SQL-looking text is data, and comes back unchanged."""
    nasty = "x'); DROP TABLE accessaudit_events; --"
    record = store.append([make_event(actor_id=nasty, justification="' OR 1=1 --")])[0]
    assert next(store.read()).event == record.event
    assert store.count() == 1


def test_schema_creation_is_idempotent(store: SqlStore) -> None:
    """Creating the schema again creates nothing and keeps the records."""
    store.append([make_event()])
    assert store.create_schema() == []
    assert store.count() == 1


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=events())
def test_any_event_round_trips_through_the_store(store: SqlStore, event: AccessEvent) -> None:
    """Whatever valid event goes in comes back out equal, with a valid seal."""
    event = AccessEvent(**{**_fields(event), "event_id": uuid.uuid4()})
    record = store.append([event])[0]
    (back,) = store.read(record.seq, record.seq)
    assert back == record
    assert back.event == event


def _fields(event: AccessEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in AccessEvent.__dataclass_fields__}


class _Role(str, enum.Enum):  # noqa: UP042 - deliberately not StrEnum: str() differs
    """An application's own string enum, whose str() is 'Role.SUPPORT', not its value."""

    SUPPORT = "support_agent"


def test_string_subclasses_are_stored_as_their_text(store: SqlStore, key: MacKey) -> None:
    """A (str, Enum) member in a text field is stored and hashed as its value."""
    role = _Role.SUPPORT
    (record,) = store.append([make_event(role=role, field_names=[role], attributes={"r": role})])
    assert type(record.event.role) is str
    assert record.event.role == "support_agent"
    assert next(store.read()).event == record.event
    assert verify_store(store, key).intact


def test_tail_sealed_by_another_key_is_not_extended(backend: Backend, store: SqlStore) -> None:
    """A tail relabelled with another key id (or written with another key) blocks appends."""
    store.append([make_event()])
    with (
        SqlStore(backend.url, key=MacKey(os.urandom(32))) as other,
        pytest.raises(StoreError, match="sealed by key"),
    ):
        other.append([make_event()])
    assert store.count() == 1


def test_report_questions_count_the_decisions_of_every_chain(
    backend: Backend, store: SqlStore
) -> None:
    """The store's report queries count access decisions, on every chain of the log.

    Records that are not decisions (completions) are not counted; another chain's (a shard
    of the same log) are.
    """
    when = datetime(2026, 3, 4, 23, 59, tzinfo=UTC)
    denied = {"event_type": EventType.ACCESS_DENIED, "decision": Decision.DENIED}
    store.append(
        [
            make_event(occurred_at=when),
            make_event(occurred_at=when, customer_visible=False),
            make_event(
                occurred_at=when, customer_id="globex", reason_code="missing_evidence", **denied
            ),
            make_event(
                occurred_at=when, event_type=EventType.ACCESS_COMPLETED, customer_id="hooli"
            ),
        ]
    )
    with SqlStore(backend.url, key=store.key, chain_id="eu-1") as other:
        other.append([make_event(occurred_at=when, customer_id="initech")])
    everything = ReportFilter()
    assert store.decision_counts(everything, by=("customer_id",)) == [
        {"customer_id": "acme", "accesses": 2, "allowed": 2, "denied": 0},
        {"customer_id": "globex", "accesses": 1, "allowed": 0, "denied": 1},
        {"customer_id": "initech", "accesses": 1, "allowed": 1, "denied": 0},
    ]
    day = (when.date() - date(1970, 1, 1)).days
    assert store.decision_counts(everything, by=("day_number",)) == [
        {"day_number": day, "accesses": 4, "allowed": 3, "denied": 1}
    ]
    assert store.denial_counts(everything) == [
        {"reason_code": "missing_evidence", "purpose": "support_request", "denied": 1}
    ]
    (visible,) = store.visible_decisions(ReportFilter(customer_id="acme"))
    assert (visible.decision, visible.data_categories) == ("allowed", '["contact"]')
    assert store.customer_known("hooli")
    assert store.customer_known("initech")
    assert not store.customer_known("umbrella")
