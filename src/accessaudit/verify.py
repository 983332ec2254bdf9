"""Verification of a chain: every leaf, link, MAC and position, every finding reported.

``check_chain`` is pure: it takes raw rows in (seq, event_id) order and returns findings, so
the same code checks a live store and, later, an exported copy. ``verify_store`` streams each
chain of a store through it with bounded memory.
"""

from __future__ import annotations

import hmac
import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from accessaudit.events import StoredEvent
from accessaudit.exceptions import ConfigurationError
from accessaudit.integrity import GENESIS_HASH, leaf_hash, link_hash
from accessaudit.store._rows import MalformedRow, from_row

if TYPE_CHECKING:
    from accessaudit.keys import MacKey
    from accessaudit.store import AuditStore

Row = Mapping[str, Any]
_HEX64 = re.compile(r"[0-9a-f]{64}")


class FindingCode(StrEnum):
    """Stable codes for what verification can find. Documented in the README."""

    MALFORMED_ROW = "malformed_row"  # a row the writer could not have produced
    MODIFIED_RECORD = "modified_record"  # fields do not match the row's leaf hash
    BROKEN_LINK = "broken_link"  # chain hash does not follow from the predecessor
    BAD_MAC = "bad_mac"  # chain hash not sealed by the key (recomputed without it?)
    UNKNOWN_KEY = "unknown_key"  # sealed by a key other than the one given
    MISSING_RECORD = "missing_record"  # a gap in seq: records were removed
    DUPLICATE_SEQ = "duplicate_seq"  # more than one row claims a position
    UNEXPECTED_RECORD = "unexpected_record"  # a row at a position that cannot exist
    TRUNCATED = "truncated"  # the chain ends before a head the verifier was told about
    HEAD_MISMATCH = "head_mismatch"  # the record at a known head has another chain hash


@dataclass(frozen=True, slots=True)
class ExpectedHead:
    """A head seen earlier and kept outside the database (e.g. a past verify's output).

    The chain must still reach ``seq`` with the same chain hash there: this catches deleting
    the newest records and rolling the database back to an older copy, which leave a chain
    that is shorter but internally valid.
    """

    chain_id: str
    seq: int
    chain_hash: str

    @classmethod
    def parse(cls, text: str) -> ExpectedHead:
        """Parse ``CHAIN:SEQ:HASH``, as printed by ``accessaudit verify``."""
        chain_id, seq, chain_hash = ([*text.rsplit(":", 2), "", ""])[:3]
        if not (
            chain_id and seq.isascii() and seq.isdigit() and _HEX64.fullmatch(chain_hash.lower())
        ):
            raise ConfigurationError(
                f"{text!r} is not CHAIN:SEQ:HASH (a chain id, a seq number and a "
                "64-hex-digit chain hash, as `accessaudit verify` prints them)"
            )
        return cls(chain_id, int(seq), chain_hash.lower())


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem found, at one position of one chain."""

    code: FindingCode
    chain_id: str
    seq: int | None
    detail: str
    event_id: str | None = None


@dataclass(slots=True)
class ChainSummary:
    """What was checked of one chain."""

    chain_id: str
    rows: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH


@dataclass(slots=True)
class VerifyReport:
    """The outcome of verifying a store: intact only if there are no findings at all."""

    chains: list[ChainSummary] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    mac_checked: bool = True

    @property
    def intact(self) -> bool:
        """True when every check passed."""
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``accessaudit verify --format json``)."""
        return {
            "intact": self.intact,
            "mac_checked": self.mac_checked,
            "chains": [asdict(c) for c in self.chains],
            "findings": [asdict(f) for f in self.findings],
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


class _ChainChecker:
    def __init__(self, chain_id: str, key: MacKey | None, expected: ExpectedHead | None) -> None:
        self.summary = ChainSummary(chain_id)
        self.key = key
        self.expected_head = expected
        self.findings: list[Finding] = []
        self.expected = 1
        self.previous: str | None = GENESIS_HASH  # None: predecessor unknown (after a gap)

    def add(self, code: FindingCode, seq: int | None, detail: str, row: Row | None) -> None:
        event_id = None if row is None else row.get("event_id")
        self.findings.append(
            Finding(
                code,
                self.summary.chain_id,
                seq,
                detail,
                None if event_id is None else str(event_id),
            )
        )

    def group(self, seq: object, rows: list[Row]) -> None:
        self.summary.rows += len(rows)
        if isinstance(seq, bool) or not isinstance(seq, int):
            for row in rows:
                self.add(FindingCode.MALFORMED_ROW, None, f"seq holds {seq!r}, not a number", row)
            return
        if seq < self.expected:  # only seq < 1 can sort before what we expect
            for row in rows:
                self.add(FindingCode.UNEXPECTED_RECORD, seq, "seq is below 1", row)
            return
        if seq > self.expected:
            self.add(
                FindingCode.MISSING_RECORD,
                self.expected,
                f"records {self.expected}..{seq - 1} are missing ({seq - self.expected})",
                None,
            )
            self.previous = None
        member, parsed = self._pick_member(rows)
        for row in rows:
            if row is not member:
                self.add(FindingCode.DUPLICATE_SEQ, seq, "another row also claims this seq", row)
        self._check(seq, member, parsed)
        self.expected = seq + 1

    def _pick_member(self, rows: list[Row]) -> tuple[Row, StoredEvent | MalformedRow]:
        """Of rows sharing a seq, the one that continues the chain (else the first)."""
        candidates: list[tuple[Row, StoredEvent | MalformedRow]] = []
        for row in rows:
            if len(rows) == 1:  # the common case: nothing to choose between
                break
            candidates.append((row, _parse(row)))
        for row, parsed in candidates:
            if isinstance(parsed, StoredEvent) and self._links(parsed) and self._leaf_ok(parsed):
                return row, parsed
        return candidates[0] if candidates else (rows[0], _parse(rows[0]))

    def _leaf_ok(self, stored: StoredEvent) -> bool:
        return leaf_hash(stored.chain_id, stored.seq, stored.event) == stored.leaf_hash

    def _links(self, stored: StoredEvent) -> bool:
        return (
            self.previous is None or link_hash(self.previous, stored.leaf_hash) == stored.chain_hash
        )

    def _check(self, seq: int, row: Row, parsed: StoredEvent | MalformedRow) -> None:
        if isinstance(parsed, MalformedRow):
            self.add(FindingCode.MALFORMED_ROW, seq, str(parsed), row)
            chain_hash = row.get("chain_hash")
            valid = isinstance(chain_hash, str) and _HEX64.fullmatch(chain_hash)
            self.previous = chain_hash if valid else None
            return
        if not self._leaf_ok(parsed):
            self.add(FindingCode.MODIFIED_RECORD, seq, "fields do not match the leaf hash", row)
        if not self._links(parsed):
            self.add(FindingCode.BROKEN_LINK, seq, "chain hash does not follow seq - 1", row)
        if self.key is not None:
            if parsed.mac_key_id != self.key.key_id:
                self.add(FindingCode.UNKNOWN_KEY, seq, f"sealed by key {parsed.mac_key_id}", row)
            elif not hmac.compare_digest(self.key.seal(parsed.chain_hash), parsed.mac):
                self.add(FindingCode.BAD_MAC, seq, "MAC does not match the chain hash", row)
        self.previous = parsed.chain_hash
        self.summary.head_seq, self.summary.head_hash = seq, parsed.chain_hash
        anchor = self.expected_head
        if anchor is not None and anchor.seq == seq and anchor.chain_hash != parsed.chain_hash:
            self.add(FindingCode.HEAD_MISMATCH, seq, "differs from the expected head", row)

    def finish(self) -> None:
        anchor = self.expected_head
        if anchor is not None and self.summary.head_seq < anchor.seq:
            self.add(
                FindingCode.TRUNCATED,
                anchor.seq,
                f"chain ends at seq {self.summary.head_seq}, expected at least {anchor.seq}",
                None,
            )


def check_chain(
    chain_id: str,
    rows: Iterable[Row],
    key: MacKey | None,
    expected_head: ExpectedHead | None = None,
) -> tuple[ChainSummary, list[Finding]]:
    """Check rows of one chain, given in (seq, event_id) order; MACs only if ``key`` is given."""
    checker = _ChainChecker(chain_id, key, expected_head)
    for seq, group in itertools.groupby(rows, key=_seq_of):
        checker.group(seq, list(group))
    checker.finish()
    return checker.summary, checker.findings


def verify_store(
    store: AuditStore,
    key: MacKey | None,
    *,
    chain_id: str | None = None,
    expected_heads: Iterable[ExpectedHead] = (),
) -> VerifyReport:
    """Verify one chain, or every chain of ``store``; ``key=None`` skips the MAC checks.

    ``expected_heads`` are heads recorded earlier outside the database; a chain that no
    longer reaches one (or reaches it with another hash) is reported, as is a named chain
    that has vanished altogether.
    """
    report = VerifyReport(mac_checked=key is not None)
    anchors = {head.chain_id: head for head in expected_heads}
    chains = [chain_id] if chain_id else sorted(set(store.chains()) | set(anchors))
    for chain in chains:
        summary, findings = check_chain(chain, store.rows(chain), key, anchors.get(chain))
        report.chains.append(summary)
        report.findings.extend(findings)
    return report
