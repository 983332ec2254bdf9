"""Checking one chain's rows: every leaf, link, MAC and position, every finding reported.

``check_chain`` is pure: it takes raw rows in (seq, event_id) order and returns findings, so
the same code checks a live store (``verify.verify_store``) and an exported copy
(``export.verify_export``). Runs of the same finding at consecutive positions (every MAC
after a recomputed edit, every row under the wrong key) are reported as one finding covering
``seq..last_seq``, so the report stays small whatever the damage.

A row that is alone at its seq is first tried on a fast path (``passes_fast``): its
canonical bytes built straight from the row (``_row_encoding``), its leaf, link and MAC
compared. Only a row that is well-formed and passes all three is settled there; anything
else goes through ``from_row`` and the checks below exactly as it always did, so the fast
path changes the speed, never a finding.

Damaged runs and recovery: the checker remembers the last row that produced no finding.
When a clean row follows rows that did, and it is a MAC-checked recovery record (see
``_recovery_record``) naming that last clean row and exactly the findings since, those
findings are marked acknowledged by it: still reported, no longer failing the chain.
"""

from __future__ import annotations

import dataclasses
import hmac
import itertools
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from accessaudit.record._recovery_record import acknowledgement, claim_of
from accessaudit.record._row_encoding import RowEncoder
from accessaudit.record._rows import MalformedRow, from_row, is_key_id
from accessaudit.record.findings import ChainSummary, ExpectedHead, Finding, FindingCode
from accessaudit.record.integrity import (
    GENESIS_HASH,
    check_seals,
    is_digest,
    leaf_digest,
    link_digest,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from accessaudit.record.events import StoredEvent
    from accessaudit.record.keys import MacKey

Row = Mapping[str, Any]
#: A row as ``check_chain`` takes it: a mapping, or a tuple in the order of ``columns``.
RawRow = Mapping[str, Any] | Sequence[Any]
_RUNS = {
    FindingCode.MALFORMED_ROW,
    FindingCode.MODIFIED_RECORD,
    FindingCode.BROKEN_LINK,
    FindingCode.BAD_MAC,
    FindingCode.UNKNOWN_KEY,
    FindingCode.DUPLICATE_SEQ,
    FindingCode.UNEXPECTED_RECORD,
}


def _parse(row: Row) -> StoredEvent | MalformedRow:
    try:
        return from_row(row)
    except MalformedRow as e:
        return e
    except Exception as e:  # noqa: BLE001 - any unreadable row is a finding, never a crash
        return MalformedRow(f"cannot be read: {type(e).__name__}: {e}")


def _seq_of(row: Row) -> object:
    return row.get("seq")


def _no_seq(_row: object) -> None:
    return None


class DamagedRun(NamedTuple):
    """Rows that produced findings, since the last row that produced none."""

    good_seq: int  # the last clean row (0: none, or where a continuation started)
    good_hash: str | None  # its chain hash
    first: int  # index of the run's first finding in ``ChainChecker.findings``


class ChainChecker:
    def __init__(
        self,
        chain_id: str,
        key: MacKey | None,
        heads: Iterable[ExpectedHead],
        after: tuple[int, str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> None:
        self.summary = ChainSummary(chain_id)
        self.key = key
        self.key_id = None if key is None else key.key_id
        self.sealer = None if key is None else key.link_sealer()
        self.columns = columns
        self.encoder = RowEncoder(chain_id, columns)
        self.previous_raw: tuple[str, bytes] | None = None  # previous, and it as bytes
        self.heads = {head.seq: head.chain_hash for head in heads}
        self.findings: list[Finding] = []
        self.added = 0  # findings added, counting those merged into a run
        self.damaged: DamagedRun | None = None  # the run of damaged rows at the end so far
        start_seq, start_hash = after or (0, GENESIS_HASH)
        self.expected = start_seq + 1
        self.last_seen = start_seq  # highest position present, readable or not
        self.previous: str | None = start_hash  # None: predecessor unknown (after a gap)

    def add(
        self,
        code: FindingCode,
        seq: int | None,
        detail: str,
        row: Row | None = None,
        last_seq: int | None = None,
    ) -> None:
        self.added += 1
        last = self.findings[-1] if self.findings else None
        if (
            code in _RUNS
            and last is not None
            and seq is not None
            and (last.code, last.detail) == (code, detail)
            and (last.last_seq or last.seq) == seq - 1
        ):
            self.findings[-1] = Finding(code, last.chain_id, last.seq, detail, None, seq)
            return
        event_id = None if row is None else row.get("event_id")
        shown = None if event_id is None else str(event_id)
        self.findings.append(Finding(code, self.summary.chain_id, seq, detail, shown, last_seq))

    def check_rows(self, rows: Iterable[RawRow], columns: Sequence[str] | None) -> None:
        """Check rows in (seq, event_id) order, going on from where the checker stands."""
        if columns != self.columns:
            self.columns = columns
            self.encoder = RowEncoder(self.summary.chain_id, columns)
        if columns is None:
            seq_of: Callable[[Any], object] = _seq_of
        elif "seq" in columns:
            seq_of = operator.itemgetter(list(columns).index("seq"))
        else:
            seq_of = _no_seq
        for seq, group in itertools.groupby(rows, key=seq_of):
            self.group(seq, group)

    def take_clean_run(self, last_seq: int, chain_hash: str, rows: int) -> None:
        """Count ``rows`` up to ``last_seq`` as checked elsewhere, and found without fault.

        Only after a clean row (``damaged`` is None): the run's first row could otherwise be
        a recovery record, which only this checker can honour.
        """
        self.summary.rows += rows
        self.expected, self.last_seen = last_seq + 1, last_seq
        self.previous, self.previous_raw = chain_hash, None
        self.summary.head_seq, self.summary.head_hash = last_seq, chain_hash

    def mapping(self, row: RawRow) -> Row:
        """A row as a mapping of column names, whichever form it came in."""
        if self.columns is None:
            return row  # type: ignore[return-value]  # check_chain: mappings without columns
        return dict(zip(self.columns, row, strict=True))

    def group(self, seq: object, raw_rows: Iterator[RawRow]) -> None:
        """Check all rows claiming one position; memory stays constant however many."""
        # Before anything changes: the previous row, in case this one starts a damaged run.
        added, good_seq, good_hash = self.added, self.last_seen, self.previous
        if isinstance(seq, bool) or not isinstance(seq, int):
            count, first = self._drain(map(self.mapping, raw_rows))
            detail = f"{count} row(s) hold seq {seq!r:.40}, not a number"
            self.add(FindingCode.MALFORMED_ROW, None, detail, first)
            self._damage(good_seq, good_hash, added)
            return
        if seq < self.expected:  # only seq < 1 can sort before what we expect
            count, first = self._drain(map(self.mapping, raw_rows))
            self.add(FindingCode.UNEXPECTED_RECORD, seq, f"{count} row(s) at seq below 1", first)
            self._damage(good_seq, good_hash, added)
            return
        if seq > self.expected:
            missing = f"records {self.expected}..{seq - 1} are missing ({seq - self.expected})"
            self.add(FindingCode.MISSING_RECORD, self.expected, missing, last_seq=seq - 1)
            self.previous = None
        self.last_seen = seq
        lone = next(raw_rows)
        rival = next(raw_rows, None)
        if rival is None and self.passes_fast(seq, lone):
            if self.added != added:
                self._damage(good_seq, good_hash, added)
            elif self.damaged is not None:
                self._end_damage(seq, self.mapping(lone))
            return
        more = (lone,) if rival is None else (lone, rival)
        rows = map(self.mapping, itertools.chain(more, raw_rows))
        member, parsed, extras, first_extra = self._pick_member(rows)
        if extras:
            detail = f"{extras} other row(s) also claim this seq"
            self.add(FindingCode.DUPLICATE_SEQ, seq, detail, first_extra)
        self._check(seq, member, parsed)
        self.expected = seq + 1
        if self.added != added:
            self._damage(good_seq, good_hash, added)
        elif self.damaged is not None:
            self._end_damage(seq, member)

    def _damage(self, good_seq: int, good_hash: str | None, added: int) -> None:
        """Note a row that produced findings: it starts a damaged run, or continues one."""
        if self.damaged is None:
            # The findings added for this row are at the end (a run merges only into a
            # finding at the position before, which a clean row cannot have).
            first = len(self.findings) - (self.added - added)
            self.damaged = DamagedRun(good_seq, good_hash, max(first, 0))

    def _end_damage(self, seq: int, row: Row) -> None:
        """A clean row after a damaged run: acknowledge the run if the row recovers it."""
        run, self.damaged = self.damaged, None
        if run is None or self.key is None:  # without the MAC, anyone could write a recovery
            return
        parsed = _parse(row)
        claim = None if isinstance(parsed, MalformedRow) else claim_of(parsed.event)
        acknowledged = self.findings[run.first :]
        holds = (
            claim is not None
            and claim.halted_seq == seq - 1
            and (claim.last_good_seq, claim.last_good_hash) == (run.good_seq, run.good_hash)
            and claim.acknowledged == acknowledgement(acknowledged)
        )
        if holds:
            note = f"; acknowledged by the recovery record at seq {seq}"
            self.findings[run.first :] = [
                dataclasses.replace(f, detail=f.detail + note, acknowledged_by=seq)
                for f in acknowledged
            ]

    def _drain(self, rows: Iterator[Row]) -> tuple[int, Row]:
        first = next(rows)
        count = 1 + sum(1 for _ in rows)
        self.summary.rows += count
        return count, first

    def _pick_member(
        self, rows: Iterator[Row]
    ) -> tuple[Row, StoredEvent | MalformedRow, int, Row | None]:
        """Of the rows sharing a seq, the one that best continues the chain.

        Returns it, its parse, how many others there were, and the first of those. A row
        whose MAC verifies beats one that merely links: a forger can recompute hashes but
        not MACs.
        """
        member = next(rows)
        parsed = _parse(member)
        self.summary.rows += 1
        score: tuple[bool, bool] | None = None  # computed only if there is a rival
        extras, first_extra = 0, None
        for rival in rows:
            self.summary.rows += 1
            extras += 1
            rival_parsed = _parse(rival)
            score = self._score(parsed) if score is None else score
            rival_score = self._score(rival_parsed)
            displaced = rival
            if rival_score > score:
                displaced = member
                member, parsed, score = rival, rival_parsed, rival_score
            first_extra = first_extra or displaced
        return member, parsed, extras, first_extra

    def _score(self, parsed: StoredEvent | MalformedRow) -> tuple[bool, bool]:
        if isinstance(parsed, MalformedRow):
            return False, False
        seals = check_seals(parsed, self.previous, self.key)
        return seals.mac is True, seals.link and seals.leaf

    def passes_fast(self, seq: int, row: RawRow) -> bool:
        """Check a row alone at its seq without parsing it; False if it needs ``_check``.

        True only when the row is well-formed (``RowEncoder``) and its leaf hash, link and
        MAC all hold, which is when ``_check`` would find nothing either; the state is then
        updated as ``_check`` would. Anything else returns False having changed nothing.
        """
        encoder = self.encoder
        encoded = encoder.encode(row, seq)
        if encoded is None:
            return False
        leaf = leaf_digest(encoded)
        chain_hash = row[encoder.chain_hash_at]
        if leaf.hex() != row[encoder.leaf_at]:
            return False
        previous = self.previous
        if previous is None:  # nothing to link to (after a gap): the MAC covers what is stored
            if not is_digest(chain_hash):
                return False
            link = bytes.fromhex(chain_hash)
        else:
            cached = self.previous_raw
            raw = cached[1] if cached and cached[0] is previous else bytes.fromhex(previous)
            link = link_digest(raw, leaf)
            if link.hex() != chain_hash:
                return False
        mac, key_id = row[encoder.mac_at], row[encoder.key_id_at]
        if self.sealer is None:
            if not (is_digest(mac) and is_key_id(key_id)):
                return False
        elif (
            key_id != self.key_id
            or not isinstance(mac, str)
            or not mac.isascii()
            or not hmac.compare_digest(self.sealer(link).hex(), mac)
        ):
            return False
        self.summary.rows += 1
        self.expected, self.last_seen = seq + 1, seq
        self.previous, self.previous_raw = chain_hash, (chain_hash, link)
        self.summary.head_seq, self.summary.head_hash = seq, chain_hash
        expected_hash = self.heads.get(seq)
        if expected_hash is not None and expected_hash != chain_hash:
            detail = "differs from the expected head"
            self.add(FindingCode.HEAD_MISMATCH, seq, detail, self.mapping(row))
        return True

    def _check(self, seq: int, row: Row, parsed: StoredEvent | MalformedRow) -> None:
        if isinstance(parsed, MalformedRow):
            self.add(FindingCode.MALFORMED_ROW, seq, str(parsed)[:300], row)
            chain_hash = row.get("chain_hash")
            self.previous = chain_hash if is_digest(chain_hash) else None
        else:
            self._check_seals(seq, row, parsed)
            self.previous = chain_hash = parsed.chain_hash
            self.summary.head_seq, self.summary.head_hash = seq, chain_hash
        expected_hash = self.heads.get(seq)
        if expected_hash is not None and expected_hash != row.get("chain_hash"):
            self.add(FindingCode.HEAD_MISMATCH, seq, "differs from the expected head", row)

    def _check_seals(self, seq: int, row: Row, parsed: StoredEvent) -> None:
        seals = check_seals(parsed, self.previous, self.key)
        if not seals.leaf:
            self.add(FindingCode.MODIFIED_RECORD, seq, "fields do not match the leaf hash", row)
        if not seals.link:
            self.add(FindingCode.BROKEN_LINK, seq, "chain hash does not follow seq - 1", row)
        if seals.key is False:
            detail = (
                f"sealed by key {parsed.mac_key_id}, not by the key given ({self.key_id}): "
                "a wrong key file, or the chain was resealed with another key"
            )
            self.add(FindingCode.UNKNOWN_KEY, seq, detail, row)
        elif seals.mac is False:
            self.add(FindingCode.BAD_MAC, seq, "MAC does not match the chain hash", row)

    def finish(self) -> None:
        if self.heads and max(self.heads) > self.last_seen:
            expected = max(self.heads)
            detail = f"chain ends at seq {self.last_seen}, expected at least {expected}"
            self.add(FindingCode.TRUNCATED, expected, detail)


def check_chain(
    chain_id: str,
    rows: Iterable[RawRow],
    key: MacKey | None,
    expected_heads: Iterable[ExpectedHead] = (),
    *,
    after: tuple[int, str] | None = None,
    columns: Sequence[str] | None = None,
) -> tuple[ChainSummary, list[Finding]]:
    """Check rows of one chain, given in (seq, event_id) order; MACs only if ``key`` is given.

    Rows are mappings, or with ``columns`` tuples of the values of those columns.
    ``after`` = (seq, chain hash) checks a continuation: the rows must start at ``seq + 1``
    and link from that hash (an incremental export continuing the last one).
    """
    checker = ChainChecker(chain_id, key, expected_heads, after, columns)
    checker.check_rows(rows, columns)
    checker.finish()
    return checker.summary, checker.findings


def tail_findings(
    chain_id: str, row: Mapping[str, Any], key: MacKey, previous: str | None
) -> list[Finding]:
    """What verify finds at a chain's newest row, given its predecessor's stored chain hash.

    For the error that halts appends: it names the same codes verify will report.
    """
    seq = row.get("seq")
    position = seq if isinstance(seq, int) and not isinstance(seq, bool) else 1
    checker = ChainChecker(chain_id, key, (), after=(position - 1, previous or GENESIS_HASH))
    if previous is None:
        checker.previous = None  # the predecessor's hash is unusable: link not checked
    checker.check_rows([row], None)
    return checker.findings
