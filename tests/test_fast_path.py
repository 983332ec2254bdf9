"""The verifier's fast path agrees with the careful one: same bytes, same findings, never looser."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from unittest import mock

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from accessaudit import AccessEvent, MacKey
from accessaudit.record._row_encoding import RowEncoder, plain_text_list
from accessaudit.record._rows import MalformedRow, canonical_json, from_row, to_row
from accessaudit.record.encoding import encode
from accessaudit.record.findings import ExpectedHead
from accessaudit.record.integrity import GENESIS_HASH, is_digest, seal_batch
from accessaudit.review.verify import check_chain
from tests import tampering
from tests.strategies import events, make_event

if TYPE_CHECKING:
    import random

KEY = MacKey(b"\x07" * 32)
OTHER_KEY = MacKey(b"\x08" * 32)
COLUMNS = tampering.COLUMNS
# What the encoder reads. The seq comes from the checker, which has found it a number, and
# the digest columns are compared by the checker with what it computes (tested below).
ENCODED = [c for c in COLUMNS if c not in ("seq", "leaf_hash", "chain_hash", "mac", "mac_key_id")]
chains = st.sampled_from(["main", "c-1", "bücher"])


def _rows(chain: str, batch: list[AccessEvent], key: MacKey = KEY) -> list[dict[str, Any]]:
    return [to_row(s) for s in seal_batch(chain, 0, GENESIS_HASH, batch, key)]


def _as_tuples(rows: list[dict[str, Any]], order: list[str]) -> list[tuple[Any, ...]]:
    return [tuple(row.get(c) for c in order) for row in rows]


# Values an owner might write into any column: every type a driver can hand back, and text
# that is almost, but not quite, what the writer writes.
odd_values = st.one_of(
    st.sampled_from(
        [
            None,
            True,
            False,
            0,
            1,
            2,
            -1,
            1.0,
            0.5,
            2**63,
            2**64,
            -(2**63) - 1,
            b"x",
            "",
            "\x00",
            "x",
            "a" * 257,
            "A" * 2001,
            "\ud800",
            "[]",
            '[""]',
            '["a",1]',
            '["a", "b"]',
            '["\\u0065"]',
            '["a\\"b"]',
            '["a\\\\b"]',
            '["\\n"]',
            '["\x01"]',
            "[" * 60 + "]" * 60,
            "{}",
            "{ }",
            '{"a":1.5}',
            '{"a":1,"a":1}',
            '{"a":[1]}',
            '{"b":1,"a":2}',
            "null",
            "0190F3E2-7B3C-7A1D-9C2E-4F5A6B7C8D9E",
            "0190f3e27b3c7a1d9c2e4f5a6b7c8d9e",
            "{0190f3e2-7b3c-7a1d-9c2e-4f5a6b7c8d9e}",
            "access.allowed ",
            "Human",
            "ALLOWED",
            "00" * 32,
            "AB" * 32,
            "ab" * 16,
            "0123456789abcdef",
            "0123456789ABCDEF",
        ]
    ),
    st.integers(-(2**64), 2**64),
    st.text(max_size=12),
    st.lists(st.text(max_size=6), max_size=3).map(json.dumps),
    st.lists(st.text(max_size=6), max_size=3).map(canonical_json),
    st.dictionaries(st.text(max_size=4), st.integers() | st.text(max_size=4), max_size=3).map(
        lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    ),
)


@given(event=events(), chain=chains, seq=st.integers(1, 2**40), shuffle=st.randoms())
def test_fast_bytes_are_the_canonical_encoding(
    event: AccessEvent, chain: str, seq: int, shuffle: random.Random
) -> None:
    """For any event, the bytes built from its row equal ``encode``'s, from a mapping or a tuple."""
    (row,) = _rows(chain, [event])
    assert RowEncoder(chain).encode(row, seq) == encode(chain, seq, event)
    order = list(row)
    shuffle.shuffle(order)
    (values,) = _as_tuples([row], order)
    assert RowEncoder(chain, order).encode(values, seq) == encode(chain, seq, event)


def _near(value: object) -> list[object]:
    """Values one small step from ``value``: what a careless or sly edit makes of it."""
    if isinstance(value, str):
        return [
            value + "\x00",
            "\x00" + value,
            value.upper(),
            value.replace("-", ""),
            f" {value}",
            value[:-1],
            value * 300,
            value + "\ud800",
            value.replace('","', '", "'),
            value.replace("]", ",1]"),
            value.replace('"]', "x" * 256 + '"]'),
            "[" + ",".join(['"a"'] * 1001) + "]",
            value.replace('"', "'"),
            value.encode(),
        ]
    if isinstance(value, int):
        return [-1, -value - 1, value + 2**62, value + 2, float(value), value == 1, str(value)]
    return ["", 0, "null", "[]"]


@settings(max_examples=150)
@given(event=events(), data=st.data())
def test_fast_path_accepts_only_what_from_row_accepts(
    event: AccessEvent, data: st.DataObject
) -> None:
    """An edited row that the fast path encodes is one ``from_row`` reads, to the same bytes."""
    for honest in _rows("main", [event, make_event()]):  # the second has items in every list
        for column in ENCODED:
            value = data.draw(st.sampled_from(_near(honest[column])) | odd_values)
            row = dict(honest, **{column: value})
            fast = RowEncoder("main").encode(row, 1)
            if fast is None:
                continue
            try:
                stored = from_row(row)
            except MalformedRow:  # pragma: no cover - the failure this test exists to catch
                raise AssertionError(f"fast path accepted {column}={value!r}") from None
            assert fast == encode(stored.chain_id, 1, stored.event)


@given(items=st.lists(st.text(max_size=8), max_size=4), text=st.text(max_size=16))
def test_plain_text_lists_read_as_json_does(items: list[str], text: str) -> None:
    """Whatever ``plain_text_list`` reads, JSON reads the same, and it is the canonical text."""
    for candidate in (canonical_json(items), text, f'["{text}"]'):
        plain = plain_text_list(candidate)
        if plain is not None:
            assert json.loads(candidate) == plain
            assert canonical_json(plain) == candidate
    if all(i and not any(c in i for c in '"\\') and min(i) >= " " for i in items):
        assert plain_text_list(canonical_json(items)) == items


def _tamper(rows: list[dict[str, Any]], data: st.DataObject) -> list[dict[str, Any]]:
    """Up to three edits an owner could make: a column changed, a row dropped or copied."""
    rows = [dict(r) for r in rows]
    for _ in range(data.draw(st.integers(0, 3))):
        where = data.draw(st.integers(0, len(rows) - 1))
        what = data.draw(st.sampled_from(["set", "set", "delete", "copy", "reseal"]))
        if what == "set":
            rows[where][data.draw(st.sampled_from(COLUMNS))] = data.draw(odd_values)
        elif what == "delete" and len(rows) > 1:
            del rows[where]
        elif what == "copy":
            rows.insert(where, dict(rows[where], event_id=str(data.draw(st.uuids()))))
        elif what == "reseal" and is_digest(rows[where]["chain_hash"]):
            # A forger without the key: right hashes, wrong MACs (a chain hash an earlier
            # edit made unreadable cannot be sealed, and needs no reseal to be caught).
            rows[where]["mac"] = OTHER_KEY.seal(rows[where]["chain_hash"])
    rows.sort(key=lambda r: (str(r.get("seq")), str(r.get("event_id"))))
    rows.sort(key=lambda r: r["seq"] if type(r.get("seq")) is int else -(2**70))
    return rows


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    key=st.sampled_from([KEY, OTHER_KEY, None]),
    after=st.booleans(),
    heads=st.lists(st.integers(1, 7), max_size=2),
)
def test_findings_are_those_of_the_careful_path(
    data: st.DataObject, key: MacKey | None, after: bool, heads: list[int]
) -> None:
    """Any tampering of a chain gives the same summary and findings with the fast path on or off."""
    batch = [make_event(subject_ids=(f"s-{i}",), record_count=i) for i in range(6)]
    honest = _rows("main", batch)
    rows = _tamper(honest, data)
    # A seq past 64 bits crashes the careful path too (encode cannot pack it); no database
    # column or Parquet file can hold one, so it is left out here.
    assume(all(not isinstance(r.get("seq"), int) or r["seq"] < 2**63 for r in rows))
    start = (1, honest[0]["chain_hash"]) if after else None
    if after:
        rows = [r for r in rows if r.get("seq") != 1]
    expected = [
        ExpectedHead("main", s, honest[min(s, 6) - 1]["chain_hash"] if s % 2 else "ab" * 32)
        for s in heads
    ]
    order = list(COLUMNS)
    data.draw(st.randoms()).shuffle(order)

    def run(fast: bool, tuples: bool) -> object:
        form: list[Any] = _as_tuples(rows, order) if tuples else rows
        columns = order if tuples else None
        if fast:
            return check_chain("main", form, key, expected, after=start, columns=columns)
        with mock.patch.object(RowEncoder, "encode", return_value=None):
            return check_chain("main", form, key, expected, after=start, columns=columns)

    careful = run(fast=False, tuples=False)
    assert run(fast=True, tuples=False) == careful
    assert run(fast=True, tuples=True) == careful
    assert run(fast=False, tuples=True) == careful


@given(secret=st.binary(min_size=32, max_size=200), chain_hash=st.binary(min_size=32, max_size=32))
def test_link_sealer_is_seal(secret: bytes, chain_hash: bytes) -> None:
    """The prepared HMAC gives exactly ``seal``'s MAC, for short and long keys."""
    key = MacKey(secret)
    assert key.link_sealer()(chain_hash).hex() == key.seal(chain_hash.hex())
