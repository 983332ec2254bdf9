"""Verification of a chain: every leaf, link, MAC and position, every finding reported.

``check_chain`` is pure: it takes raw rows in (seq, event_id) order and returns findings, so
the same code checks a live store and, later, an exported copy. ``verify_store`` streams each
chain of a store through it with bounded memory. Runs of the same finding at consecutive
positions (every MAC after a recomputed edit, every row under the wrong key) are reported as
one finding covering ``seq..last_seq``, so the report stays small whatever the damage.
"""

from __future__ import annotations

import hmac
import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from accessaudit.exceptions import ConfigurationError
from accessaudit.findings import (
    ChainSummary,
    ExpectedHead,
    Finding,
    FindingCode,
    VerifyReport,
)
from accessaudit.integrity import GENESIS_HASH, is_digest, leaf_hash, link_hash
from accessaudit.store._rows import MalformedRow, from_row

if TYPE_CHECKING:
    from accessaudit.events import StoredEvent
    from accessaudit.keys import MacKey
    from accessaudit.store import AuditStore

Row = Mapping[str, Any]
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


class _ChainChecker:
    def __init__(
        self,
        chain_id: str,
        key: MacKey | None,
        heads: Iterable[ExpectedHead],
        after: tuple[int, str] | None = None,
    ) -> None:
        self.summary = ChainSummary(chain_id)
        self.key = key
        self.heads = {head.seq: head.chain_hash for head in heads}
        self.findings: list[Finding] = []
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

    def group(self, seq: object, rows: Iterator[Row]) -> None:
        """Check all rows claiming one position; memory stays constant however many."""
        if isinstance(seq, bool) or not isinstance(seq, int):
            count, first = self._drain(rows)
            detail = f"{count} row(s) hold seq {seq!r:.40}, not a number"
            self.add(FindingCode.MALFORMED_ROW, None, detail, first)
            return
        if seq < self.expected:  # only seq < 1 can sort before what we expect
            count, first = self._drain(rows)
            self.add(FindingCode.UNEXPECTED_RECORD, seq, f"{count} row(s) at seq below 1", first)
            return
        if seq > self.expected:
            missing = f"records {self.expected}..{seq - 1} are missing ({seq - self.expected})"
            self.add(FindingCode.MISSING_RECORD, self.expected, missing, last_seq=seq - 1)
            self.previous = None
        self.last_seen = seq
        member, parsed, extras, first_extra = self._pick_member(rows)
        if extras:
            detail = f"{extras} other row(s) also claim this seq"
            self.add(FindingCode.DUPLICATE_SEQ, seq, detail, first_extra)
        self._check(seq, member, parsed)
        self.expected = seq + 1

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
        mac_ok = self.key is not None and (
            parsed.mac_key_id == self.key.key_id
            and hmac.compare_digest(self.key.seal(parsed.chain_hash), parsed.mac)
        )
        return mac_ok, self._links(parsed) and self._leaf_ok(parsed)

    def _leaf_ok(self, stored: StoredEvent) -> bool:
        return leaf_hash(stored.chain_id, stored.seq, stored.event) == stored.leaf_hash

    def _links(self, stored: StoredEvent) -> bool:
        return (
            self.previous is None or link_hash(self.previous, stored.leaf_hash) == stored.chain_hash
        )

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
        if not self._leaf_ok(parsed):
            self.add(FindingCode.MODIFIED_RECORD, seq, "fields do not match the leaf hash", row)
        if not self._links(parsed):
            self.add(FindingCode.BROKEN_LINK, seq, "chain hash does not follow seq - 1", row)
        if self.key is None:
            return
        if parsed.mac_key_id != self.key.key_id:
            detail = (
                f"sealed by key {parsed.mac_key_id}, not by the key given ({self.key.key_id}): "
                "a wrong key file, or the chain was resealed with another key"
            )
            self.add(FindingCode.UNKNOWN_KEY, seq, detail, row)
        elif not hmac.compare_digest(self.key.seal(parsed.chain_hash), parsed.mac):
            self.add(FindingCode.BAD_MAC, seq, "MAC does not match the chain hash", row)

    def finish(self) -> None:
        if self.heads and max(self.heads) > self.last_seen:
            expected = max(self.heads)
            detail = f"chain ends at seq {self.last_seen}, expected at least {expected}"
            self.add(FindingCode.TRUNCATED, expected, detail)


def check_chain(
    chain_id: str,
    rows: Iterable[Row],
    key: MacKey | None,
    expected_heads: Iterable[ExpectedHead] = (),
    *,
    after: tuple[int, str] | None = None,
) -> tuple[ChainSummary, list[Finding]]:
    """Check rows of one chain, given in (seq, event_id) order; MACs only if ``key`` is given.

    ``after`` = (seq, chain hash) checks a continuation: the rows must start at ``seq + 1``
    and link from that hash (an incremental export continuing the last one).
    """
    checker = _ChainChecker(chain_id, key, expected_heads, after)
    for seq, group in itertools.groupby(rows, key=_seq_of):
        checker.group(seq, group)
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
    that has vanished altogether. Asking for a chain that is neither in the log nor among
    the expected heads is a ``ConfigurationError``, not a clean report.
    """
    heads = list(expected_heads)
    present = store.chains()
    if chain_id is not None:
        strays = sorted({h.chain_id for h in heads} - {chain_id})
        if strays:
            raise ConfigurationError(
                f"expected heads name chain(s) {', '.join(strays)} but only chain "
                f"{chain_id!r} is being verified; drop --chain or those heads"
            )
        if chain_id not in present and not heads:
            listed = ", ".join(present) or "none"
            raise ConfigurationError(f"no chain {chain_id!r} in the log (chains: {listed})")
    report = VerifyReport(mac_checked=key is not None)
    chains = [chain_id] if chain_id else sorted(set(present) | {h.chain_id for h in heads})
    for chain in chains:
        own_heads = [h for h in heads if h.chain_id == chain]
        summary, findings = check_chain(chain, store.rows(chain), key, own_heads)
        report.chains.append(summary)
        report.findings.extend(findings)
    if chain_id is None:
        # Counted directly, not as "all rows minus rows checked": writers may append while
        # verify runs, and their rows are not strays.
        stray_rows = store.count_unchained()
        if stray_rows:
            report.findings.append(
                Finding(
                    FindingCode.UNEXPECTED_RECORD,
                    "",
                    None,
                    f"{stray_rows} row(s) belong to no chain that can be read "
                    "(their chain_id is not text)",
                )
            )
    return report
