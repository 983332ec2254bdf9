"""What verification reports: finding codes, findings, per-chain summaries, expected heads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from accessaudit.exceptions import ConfigurationError
from accessaudit.record._validate import check_text
from accessaudit.record.integrity import GENESIS_HASH, is_digest

__all__ = ["ChainSummary", "ExpectedHead", "Finding", "FindingCode", "VerifyReport"]


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
    MISSING_FILE = "missing_file"  # an export file listed in the manifest is gone
    MODIFIED_FILE = "modified_file"  # an export file's bytes differ from its manifest sha256
    UNLISTED_FILE = "unlisted_file"  # a file in the export directory the manifest lacks
    MISSING_MANIFEST = "missing_manifest"  # an export directory's _manifest.json is gone
    FORK = "fork"  # records a signed checkpoint covered differ from it (rewritten, restored)
    BAD_CHECKPOINT = "bad_checkpoint"  # an anchored checkpoint unsigned, forged or malformed
    STALE_CHECKPOINT = "stale_checkpoint"  # the newest checkpoint is older than the limit
    NO_CHECKPOINT = "no_checkpoint"  # a chain no anchored checkpoint covers


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem, at one position (or the run ``seq..last_seq``) of one chain.

    ``acknowledged_by`` is the seq of the recovery record that acknowledges it (see
    ``accessaudit.review.recovery``): still reported, no longer making the log fail verification.
    """

    code: FindingCode
    chain_id: str
    seq: int | None
    detail: str
    event_id: str | None = None
    last_seq: int | None = None  # set when the finding covers a run of positions
    acknowledged_by: int | None = None

    @property
    def where(self) -> str:
        """The position as text: ``7``, ``7..12`` or ``-`` when there is none."""
        if self.seq is None:
            return "-"
        return f"{self.seq}..{self.last_seq}" if self.last_seq is not None else str(self.seq)


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
        valid = (
            check_text("chain", chain_id, 64) is None
            and seq.isascii()
            and seq.isdigit()
            and int(seq) >= 1
            and is_digest(chain_hash.lower())
        )
        if not valid:
            raise ConfigurationError(
                f"{text[:100]!r} is not CHAIN:SEQ:HASH (a chain id, a seq number from 1 and "
                "a 64-hex-digit chain hash, as `accessaudit verify` prints them)"
            )
        return cls(chain_id, int(seq), chain_hash.lower())


@dataclass(slots=True)
class ChainSummary:
    """What was checked of one chain."""

    chain_id: str
    rows: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH


@dataclass(slots=True)
class VerifyReport:
    """The outcome of verifying a store: intact when every finding (if any) is acknowledged."""

    chains: list[ChainSummary] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    mac_checked: bool = True

    @property
    def intact(self) -> bool:
        """True when every check passed, or failed only where a recovery record says so."""
        return all(f.acknowledged_by is not None for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``accessaudit verify --format json``)."""
        return {
            "intact": self.intact,
            "mac_checked": self.mac_checked,
            "chains": [asdict(c) for c in self.chains],
            "findings": [asdict(f) for f in self.findings],
        }
