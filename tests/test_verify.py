"""verify finds every tampering an owner can do with raw SQL, with the right code and seq."""

from __future__ import annotations

import os
import threading
import uuid
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accessaudit import ConfigurationError, FindingCode, MacKey, SqlStore, verify_store
from accessaudit.record.findings import ExpectedHead, VerifyReport
from accessaudit.review import verify as verify_module
from accessaudit.store._schema import events
from tests import tampering
from tests.strategies import make_event

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.conftest import Backend

M, L, D = FindingCode.MODIFIED_RECORD, FindingCode.BROKEN_LINK, FindingCode.DUPLICATE_SEQ


def _chain(store: SqlStore, size: int = 6) -> None:
    store.append([make_event(subject_ids=(f"acme-user-{i}",)) for i in range(size)])


def _found(report: VerifyReport) -> list[tuple[str, int | None]]:
    return [(f.code.value, f.seq) for f in report.findings]


@pytest.fixture
def tamperable(backend: Backend, store: SqlStore) -> SqlStore:
    """A six-record chain whose guards have been dropped by the owner."""
    _chain(store)
    backend.drop_guards()
    return store


def test_untouched_log_verifies_clean(store: SqlStore, key: MacKey) -> None:
    """An honest log has no findings and reports its head."""
    _chain(store)
    report = verify_store(store, key)
    assert report.intact
    assert report.findings == []
    (summary,) = report.chains
    head = store.head()
    assert head is not None
    assert (summary.rows, summary.head_seq, summary.head_hash) == (6, 6, head.chain_hash)


def test_edited_field_is_a_modified_record(
    backend: Backend, tamperable: SqlStore, key: MacKey
) -> None:
    """Changing one field (hashes untouched) is found at exactly that seq."""
    tampering.set_column(backend, 3, "purpose", "legal_requirement")
    assert _found(verify_store(tamperable, key)) == [("modified_record", 3)]


def test_recomputed_chain_without_key_fails_the_macs(
    backend: Backend, tamperable: SqlStore, key: MacKey
) -> None:
    """Hashes recomputed after an edit break every MAC from the edit on (and only the MACs)."""
    tampering.rewrite_without_key(backend, tamperable, 3, "agent-innocent")
    report = verify_store(tamperable, key)
    assert _found(report) == [("bad_mac", 3)]
    assert report.findings[0].last_seq == 6  # one finding for the run 3..6
    assert verify_store(tamperable, None).intact  # what --skip-mac cannot see


def test_deleted_middle_record_is_missing(
    backend: Backend, tamperable: SqlStore, key: MacKey
) -> None:
    """A removed middle record is reported once, as missing, not as a cascade."""
    tampering.delete_seq(backend, 3)
    assert _found(verify_store(tamperable, key)) == [("missing_record", 3)]


def test_deleted_run_of_records_is_one_finding(
    backend: Backend, tamperable: SqlStore, key: MacKey
) -> None:
    """Removing seq 2..4 is one missing_record finding naming the range."""
    for seq in (2, 3, 4):
        tampering.delete_seq(backend, seq)
    (finding,) = verify_store(tamperable, key).findings
    assert (finding.code, finding.seq) == (FindingCode.MISSING_RECORD, 2)
    assert "2..4" in finding.detail


def test_swapped_rows_are_found_at_both_positions(
    backend: Backend, tamperable: SqlStore, key: MacKey
) -> None:
    """Exchanging the positions of records 2 and 4 breaks both positions and the links."""
    tampering.set_column(backend, 2, "seq", 1000)
    tampering.set_column(backend, 4, "seq", 2)
    tampering.set_column(backend, 1000, "seq", 4)
    # Each moved row fails its leaf (it was sealed for the other seq) and its link; the rows
    # after each are not blamed, their predecessor being unknown.
    assert _found(verify_store(tamperable, key)) == [
        ("modified_record", 2),
        ("broken_link", 2),
        ("modified_record", 4),
        ("broken_link", 4),
    ]


def test_duplicate_seq_is_found(backend: Backend, tamperable: SqlStore, key: MacKey) -> None:
    """A linking copy at a taken seq is the one blamed; the sealed original still verifies."""
    backend.sql("DROP INDEX accessaudit_events_chain_seq")
    row = tampering.forged_copy(tamperable, 3, 3)
    tampering.insert_row(backend, row)
    report = verify_store(tamperable, key)
    assert _found(report) == [("duplicate_seq", 3)]
    assert report.findings[0].event_id == row["event_id"]


def test_forged_record_at_the_tail_fails_its_mac(
    backend: Backend, tamperable: SqlStore, key: MacKey
) -> None:
    """An appended forgery with correct hashes but no key is caught by its MAC."""
    tampering.insert_row(backend, tampering.forged_copy(tamperable, 2, 7))
    assert _found(verify_store(tamperable, key)) == [("bad_mac", 7)]


def test_row_below_seq_one_is_unexpected(
    backend: Backend, tamperable: SqlStore, key: MacKey
) -> None:
    """A row at seq 0 cannot belong to the chain."""
    tampering.insert_row(backend, tampering.forged_copy(tamperable, 2, 0))
    assert _found(verify_store(tamperable, key)) == [("unexpected_record", 0)]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("customer_visible", 7),
        ("record_version", 2),
        ("data_categories", "not json"),
        ("attributes", "[1, 2]"),
        ("event_type", "access.maybe"),
        ("chain_hash", "zz"),
        ("event_id", "not-a-uuid"),
        ("actor_id", ""),
        ("occurred_at_us", 2**62),
        ("occurred_at_us", -1),
        ("field_names", "[" * 50_000 + "]" * 50_000),
        ("field_names", '["email", "phone"]'),
        ("field_names", '["\\u0065mail","phone"]'),
        ("attributes", '{"a":1,"a":1}'),
        ("attributes", "{ }"),
    ],
)
def test_impossible_values_are_malformed_rows(
    backend: Backend, tamperable: SqlStore, key: MacKey, column: str, value: object
) -> None:
    """A row the writer could never have produced is malformed; the rows around it are checked."""
    tampering.set_column(backend, 4, column, value)
    # Only that row: seq 5 is not blamed for linking to it, its predecessor being unknown.
    assert _found(verify_store(tamperable, key)) == [("malformed_row", 4)]


def test_several_tamperings_are_all_reported(
    backend: Backend, tamperable: SqlStore, key: MacKey
) -> None:
    """Edit, deletion and forgery together: each is found, none hides another."""
    tampering.set_column(backend, 2, "customer_id", "globex")
    tampering.delete_seq(backend, 4)
    tampering.insert_row(backend, tampering.forged_copy(tamperable, 1, 7))
    assert _found(verify_store(tamperable, key)) == [
        ("modified_record", 2),
        ("missing_record", 4),
        ("bad_mac", 7),
    ]


def test_record_moved_to_another_chain(backend: Backend, tamperable: SqlStore, key: MacKey) -> None:
    """Moving a record to another chain leaves a gap in its own and a bad record in the other."""
    tampering.set_column(backend, 3, "chain_id", "elsewhere")
    report = verify_store(tamperable, key)
    assert [(f.chain_id, f.code.value, f.seq) for f in report.findings] == [
        ("elsewhere", "missing_record", 1),  # "elsewhere" starts at seq 3: 1..2 are missing
        ("elsewhere", "modified_record", 3),  # sealed for chain "main"
        ("main", "missing_record", 3),
    ]


def test_other_key_is_reported_as_unknown(tamperable: SqlStore) -> None:
    """Verifying with a different key says which key sealed the rows, at every seq."""
    other = MacKey(os.urandom(32))
    report = verify_store(tamperable, other)
    assert _found(report) == [("unknown_key", 1)]
    (finding,) = report.findings
    assert finding.last_seq == 6
    assert finding.where == "1..6"
    assert f"sealed by key {tamperable.key.key_id if tamperable.key else ''}" in finding.detail
    assert other.key_id in finding.detail


def test_tail_truncation_is_caught_by_an_expected_head(
    backend: Backend, tamperable: SqlStore, key: MacKey
) -> None:
    """Deleted newest records leave a valid chain; a head kept outside the database exposes it."""
    head = tamperable.head()
    assert head is not None
    tampering.delete_seq(backend, 6)
    tampering.delete_seq(backend, 5)
    assert verify_store(tamperable, key).intact  # undetectable from the database alone
    expected = ExpectedHead("main", head.seq, head.chain_hash)
    report = verify_store(tamperable, key, expected_heads=[expected])
    assert _found(report) == [("truncated", 6)]


def test_rewritten_history_is_caught_by_an_expected_head(
    backend: Backend, tamperable: SqlStore, key: MacKey
) -> None:
    """A chain recomputed up to a known head no longer matches that head's hash."""
    head = tamperable.head()
    assert head is not None
    tampering.rewrite_without_key(backend, tamperable, 2, "agent-innocent")
    report = verify_store(
        tamperable, None, expected_heads=[ExpectedHead("main", 6, head.chain_hash)]
    )
    assert _found(report) == [("head_mismatch", 6)]


def test_vanished_chain_is_truncated(store: SqlStore, key: MacKey) -> None:
    """A chain named by an expected head but absent from the store is reported."""
    report = verify_store(store, key, expected_heads=[ExpectedHead("gone", 3, "ab" * 32)])
    assert _found(report) == [("truncated", 3)]


@pytest.mark.parametrize("text", ["main:3", "main:x:" + "a" * 64, ":3:" + "a" * 64, "m:1:abc"])
def test_bad_expected_head_text_is_refused(text: str) -> None:
    """A malformed CHAIN:SEQ:HASH is a usage error naming the format."""
    with pytest.raises(ConfigurationError, match="CHAIN:SEQ:HASH"):
        ExpectedHead.parse(text)


def _different(column: str, current: object, variant: int) -> object:
    """A value for ``column`` unlike ``current``; ``variant`` picks among several."""
    if isinstance(current, int):
        return current + 1 + variant
    if current is None and events.c[column].type.python_type is int:
        return variant
    if column == "chain_id":  # unique per example, so moved rows never collide
        return f"{current}-moved"
    if column == "event_id":  # the primary key: must stay unique
        return str(uuid.uuid4())
    choices = {
        "data_categories": ['["x"]', "[]", '["contact","x"]'],
        "field_names": ['["x"]', "[]", '["email"]'],
        "subject_ids": ['["x"]', "[]", '["acme-user-3","x"]'],
        "attributes": ['{"k":1}', "{}", '{"k":"v"}'],
        "leaf_hash": ["0" * 64, "f" * 64],
        "chain_hash": ["0" * 64, "f" * 64],
        "mac": ["0" * 64, "f" * 64],
        "mac_key_id": ["0" * 16, "f" * 16],
    }.get(column, ["x", "human", "access.denied", "service", "main2", "agent-8"])
    options = [c for c in choices if c != current]
    return options[variant % len(options)]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_single_field_change_fails_verification(
    backend: Backend, store: SqlStore, key: MacKey, data: st.DataObject
) -> None:
    """Whichever column of whichever row changes, to whatever value, verify is not intact."""
    chain = f"c{uuid.uuid4().hex}"
    with SqlStore(backend.url, key=key, chain_id=chain) as writer:
        writer.append([make_event(record_count=i, role=None) for i in range(4)])
        rows = [dict(r) for r in writer.rows()]
    backend.drop_guards()
    backend.sql("DROP INDEX IF EXISTS accessaudit_events_chain_seq")  # so seq can be moved
    seq = data.draw(st.integers(1, 4))
    column = data.draw(st.sampled_from(tampering.COLUMNS))
    value = _different(column, rows[seq - 1][column], data.draw(st.integers(0, 5)))
    tampering.set_column(backend, seq, column, value, chain=chain)
    # The whole log as far as this example goes: its chain and where a moved row lands.
    present = store.chains()
    reports = [
        verify_store(store, key, chain_id=c) for c in (chain, f"{chain}-moved") if c in present
    ]
    assert not all(r.intact for r in reports)


def test_dropped_column_makes_every_row_malformed(
    backend: Backend, tamperable: SqlStore, key: MacKey
) -> None:
    """A column the owner dropped is reported on every row; verify does not crash."""
    backend.sql("ALTER TABLE accessaudit_events DROP COLUMN trace_id")
    (finding,) = verify_store(tamperable, key).findings
    assert (finding.code, finding.where) == (FindingCode.MALFORMED_ROW, "1..6")
    assert "no column trace_id" in finding.detail


def test_chain_id_that_is_not_text_is_reported(sqlite_backend: Backend, key: MacKey) -> None:
    """A row whose chain_id was turned into a BLOB leaves a gap and is counted as stray."""
    with SqlStore(sqlite_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        _chain(store)
        sqlite_backend.drop_guards()
        sqlite_backend.sql(
            "UPDATE accessaudit_events SET chain_id = CAST('main' AS BLOB) WHERE seq = 3"
        )
        report = verify_store(store, key)
    assert _found(report) == [("missing_record", 3), ("unexpected_record", None)]
    assert "1 row(s) belong to no chain" in report.findings[1].detail


def test_malformed_row_at_an_expected_head_is_not_called_truncated(
    backend: Backend, tamperable: SqlStore, key: MacKey
) -> None:
    """The head row exists but is damaged: malformed, not truncated."""
    head = tamperable.head()
    assert head is not None
    tampering.set_column(backend, 6, "customer_visible", 9)
    report = verify_store(
        tamperable, key, expected_heads=[ExpectedHead("main", 6, head.chain_hash)]
    )
    assert _found(report) == [("malformed_row", 6)]


def test_several_expected_heads_for_one_chain_are_all_checked(
    backend: Backend, tamperable: SqlStore, key: MacKey
) -> None:
    """Heads kept at different times are each checked against the chain."""
    third = next(tamperable.read(3, 3))
    heads = [ExpectedHead("main", 3, third.chain_hash), ExpectedHead("main", 9, "ab" * 32)]
    assert _found(verify_store(tamperable, key, expected_heads=heads)) == [("truncated", 9)]


def test_unknown_chain_is_a_usage_error(store: SqlStore, key: MacKey) -> None:
    """Asking to verify a chain the log does not have is an error, not 'intact'."""
    _chain(store)
    with pytest.raises(ConfigurationError, match=r"no chain 'nosuch' in the log \(chains: main\)"):
        verify_store(store, key, chain_id="nosuch")
    head = ExpectedHead("other", 1, "ab" * 32)
    with pytest.raises(ConfigurationError, match="only chain 'main' is being verified"):
        verify_store(store, key, chain_id="main", expected_heads=[head])


def test_many_rows_at_one_seq_are_one_finding(
    backend: Backend, tamperable: SqlStore, key: MacKey
) -> None:
    """Every row moved to seq 1 gives one duplicate finding with the count, not one per row."""
    backend.sql("DROP INDEX accessaudit_events_chain_seq")
    backend.sql("UPDATE accessaudit_events SET seq = 1")
    (finding,) = verify_store(tamperable, key).findings
    assert (finding.code, finding.seq) == (FindingCode.DUPLICATE_SEQ, 1)
    assert finding.detail == "5 other row(s) also claim this seq"


def test_negated_seqs_are_one_run(backend: Backend, tamperable: SqlStore, key: MacKey) -> None:
    """Rows moved below seq 1 are reported as one run of unexpected records."""
    backend.sql("UPDATE accessaudit_events SET seq = -seq")
    (finding,) = verify_store(tamperable, key).findings
    assert (finding.code, finding.where) == (FindingCode.UNEXPECTED_RECORD, "-6..-1")


def test_verify_while_writers_append_is_clean(store: SqlStore, key: MacKey) -> None:
    """Appends during verification are not mistaken for tampering."""
    _chain(store)
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            store.append([make_event() for _ in range(5)])

    writer = threading.Thread(target=write)
    writer.start()
    try:
        reports = [verify_store(store, key) for _ in range(5)]
    finally:
        stop.set()
        writer.join()
    assert all(r.intact for r in reports), [r.findings for r in reports]
    assert verify_store(store, key).intact


def _drop_seq_index(backend: Backend, _store: SqlStore) -> None:
    backend.sql("DROP INDEX accessaudit_events_chain_seq")


PARALLEL_CASES: dict[str, list[Callable[[Backend, SqlStore], object]]] = {
    "untouched": [],
    "edit in the worker's half": [lambda b, s: tampering.set_column(b, 5, "purpose", "x")],
    "edit at the boundary": [lambda b, s: tampering.set_column(b, 4, "purpose", "x")],
    "boundary row deleted": [lambda b, s: tampering.delete_seq(b, 4)],
    "row deleted in the worker's half": [lambda b, s: tampering.delete_seq(b, 6)],
    "recomputed without the key": [lambda b, s: tampering.rewrite_without_key(b, s, 3, "x")],
    "duplicate in the worker's half": [
        _drop_seq_index,
        lambda b, s: tampering.insert_row(b, tampering.forged_copy(s, 3, 6)),
    ],
    "forged tail": [lambda b, s: tampering.insert_row(b, tampering.forged_copy(s, 2, 9))],
}


@pytest.mark.parametrize("case", PARALLEL_CASES)
def test_parallel_verify_reports_what_the_serial_one_does(
    backend: Backend, store: SqlStore, key: MacKey, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """Checking the second half of a chain in a worker process changes nothing in the report."""
    _chain(store, 8)
    honest = {row["seq"]: row["chain_hash"] for row in store.rows()}
    heads = [ExpectedHead("main", 6, str(honest[6])), ExpectedHead("main", 7, "ab" * 32)]
    backend.drop_guards()
    for tamper in PARALLEL_CASES[case]:
        tamper(backend, store)
    monkeypatch.setattr(verify_module, "PARALLEL_MIN_ROWS", 1)
    for mac_key in (key, None):
        serial = verify_store(store, mac_key, expected_heads=heads, workers=1)
        assert verify_store(store, mac_key, expected_heads=heads, workers=2) == serial


def test_parallel_verify_without_a_worker_checks_everything_itself(
    store: SqlStore, key: MacKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the worker process cannot even start, verify checks the whole chain alone."""
    _chain(store, 8)
    monkeypatch.setattr(verify_module, "PARALLEL_MIN_ROWS", 1)
    monkeypatch.setattr("sys.executable", "/nonexistent/python")
    report = verify_store(store, key, workers=2)
    assert report == verify_store(store, key, workers=1)
    assert report.chains[0].rows == 8


def test_parallel_verify_ignores_a_run_that_does_not_join_its_half(
    store: SqlStore, key: MacKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's clean run counts only if it starts from the hash the main check ends on."""
    _chain(store, 8)
    monkeypatch.setattr(verify_module, "PARALLEL_MIN_ROWS", 1)
    monkeypatch.setattr("sys.executable", "/nonexistent/python")
    lie = ("ab" * 32, 8, "cd" * 32, 4)  # "seq 5..8 are clean", from a hash not at seq 4
    monkeypatch.setattr(verify_module._Worker, "result", lambda _self, wait: lie)
    report = verify_store(store, key, workers=2)
    assert report == verify_store(store, key, workers=1)
    assert report.chains[0].head_hash != "cd" * 32
