"""Signed checkpoints outside the database, and the log checked against them.

``make_checkpoints`` (the ``accessaudit checkpoint`` command, run from cron or a timer)
verifies the log, builds each chain's RFC 6962 tree over its leaf hashes, checks that it
is consistent with the newest checkpoint already anchored (a consistency proof from that
tree to this one), signs a new checkpoint, writes it to the anchor directory (a new file,
fsynced, never rewritten) and records a ``checkpoint`` record in the chain.

``check_anchors`` (``accessaudit verify --anchor DIR --public-key KEY.pub``) needs no HMAC
key and no ``--expect-head``: with the public key alone it finds newest records deleted
(``truncated``), a log restored to an earlier state or rewritten after a checkpoint
(``fork``), anchor files that are unsigned, forged or malformed (``bad_checkpoint``), a
newest checkpoint older than the limit (``stale_checkpoint``), and chains never
checkpointed (``no_checkpoint``).

The anchor directory itself (files written, read, trusted) is ``anchors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from accessaudit.exceptions import IntegrityError
from accessaudit.record._clock import to_iso
from accessaudit.record.events import AccessEvent
from accessaudit.record.fields import ActorType, EventType
from accessaudit.record.findings import ExpectedHead, Finding, FindingCode
from accessaudit.record.merkle import TreeHeads, verify_consistency
from accessaudit.record.notes import Checkpoint
from accessaudit.review.anchors import (
    EXPORT_CHECKPOINTS,
    by_chain,
    chain_of,
    origin_of,
    read_anchors,
    write_anchor,
)
from accessaudit.review.verify import verify_store
from accessaudit.store import SqlStore

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import datetime, timedelta
    from pathlib import Path

    from accessaudit.record.notes import SigningKey, VerifierKey

__all__ = [
    "DEFAULT_MAX_AGE_HOURS",
    "ChainTree",
    "MadeCheckpoint",
    "check_anchors",
    "check_export",
    "leaf_bytes",
    "make_checkpoints",
    "read_tree",
]

#: A newest checkpoint older than this is stale: a daily job, with an hour's slack.
DEFAULT_MAX_AGE_HOURS: Final = 25


@dataclass(frozen=True, slots=True)
class ChainTree:
    """A chain's tree as stored (its leaves read once, in seq order) and where it starts.

    ``heads`` holds the heads asked for (the tree's, at checkpoint sizes, a consistency
    proof), not the leaves: memory stays O(log n) however long the chain.
    """

    chain_id: str
    heads: TreeHeads
    first_event_id: str | None
    chain_hash: str | None

    @property
    def size(self) -> int:
        """Its number of leaves."""
        return self.heads.size

    @property
    def origin(self) -> str | None:
        """The chain's origin (None for an empty chain)."""
        return (
            None if self.first_event_id is None else origin_of(self.chain_id, self.first_event_id)
        )


def read_tree(
    store: SqlStore,
    chain_id: str,
    *,
    sizes: Iterable[int] = (),
    upto: int | None = None,
    prove_from: int | None = None,
) -> ChainTree:
    """A chain's leaf hashes, in seq order (one per position: the first), read once.

    ``sizes``: the checkpoint sizes to take the tree's head at. ``upto``: the last seq to
    read (the records of a checkpoint being made). ``prove_from``: with ``upto``, the size
    of an earlier checkpoint to prove this tree consistent with.
    """
    prove = None if prove_from is None or upto is None else (min(prove_from, upto), upto)
    heads = TreeHeads(sizes, prove=prove)
    first: str | None = None
    chain_hash: str | None = None
    last_seq = 0
    for batch in store.row_batches(chain_id, end_seq=upto):
        index = {name: i for i, name in enumerate(batch.columns)}
        seq_at, leaf_at, id_at, hash_at = (
            index["seq"],
            index["leaf_hash"],
            index["event_id"],
            index["chain_hash"],
        )
        for row in batch.rows:
            if row[seq_at] == last_seq:
                continue  # a duplicate position: verify reports it; the tree takes the first
            last_seq = row[seq_at]
            if first is None:
                first = str(row[id_at])
            heads.add(leaf_bytes(row[leaf_at]))
            chain_hash = row[hash_at]
    return ChainTree(chain_id, heads, first, chain_hash)


def leaf_bytes(value: object) -> bytes:
    """A stored leaf hash as bytes; garbage gives a value no root comparison accepts."""
    try:
        return bytes.fromhex(str(value))
    except ValueError:
        return b""


# -- making checkpoints -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MadeCheckpoint:
    """A checkpoint signed, anchored and recorded."""

    checkpoint: Checkpoint
    path: Path
    previous_size: int | None
    record_seq: int


def make_checkpoints(
    store: SqlStore,
    signing_key: SigningKey,
    anchor_dir: Path,
    *,
    now: datetime,
    actor: str = "accessaudit-checkpointer",
    earlier_keys: Sequence[VerifierKey] = (),
) -> list[MadeCheckpoint]:
    """Checkpoint every chain of ``store`` (opened with its HMAC key); see the module.

    Refuses (``IntegrityError``, nothing signed) a log whose records fail verification, an
    anchor directory holding a file that neither the signing key nor one of
    ``earlier_keys`` (the public keys of signing keys it replaced) verifies, and a chain
    that is shorter than its newest checkpoint or not consistent with it.
    """
    # The anchors first, then the heads: a checkpoint another checkpointer signs meanwhile
    # is not taken for this run's newest (it could cover more than the heads below).
    anchored = read_anchors(anchor_dir, [signing_key.verifier, *earlier_keys])
    untrusted = [a for a in anchored if a.checkpoint is None]
    if untrusted:
        raise IntegrityError(
            f"{untrusted[0].path} in the anchor directory is not a checkpoint this key (or "
            f"an earlier one given) signed ({untrusted[0].problem}); investigate before "
            "signing more"
        )
    # Then the heads, before verifying: a checkpoint covers a chain up to the head seen
    # here, which the verification must reach unchanged. Records appended meanwhile wait
    # for the next checkpoint.
    heads = {chain_id: store.head(chain_id) for chain_id in store.chains()}
    expected = [ExpectedHead(c, h.seq, h.chain_hash) for c, h in heads.items() if h is not None]
    report = verify_store(store, expected_heads=expected)
    if not report.intact:
        codes = sorted({f.code.value for f in report.findings})
        raise IntegrityError(
            f"the log fails verification ({', '.join(codes)}); a checkpoint would sign the "
            "damage: run `accessaudit verify` and investigate first"
        )
    made = []
    for chain_id, head in heads.items():
        previous = _newest(
            cp
            for cp in (a.checkpoint for a in anchored)
            if cp is not None and chain_of(cp.origin) == chain_id
        )
        if head is None:
            continue
        tree = read_tree(
            store,
            chain_id,
            upto=head.seq,
            prove_from=None if previous is None else previous.size,
        )
        origin = tree.origin
        if origin is None:
            continue
        if (tree.size, tree.chain_hash) != (head.seq, head.chain_hash):
            raise IntegrityError(
                f"chain {chain_id} changed while it was being checkpointed (its records up "
                f"to seq {head.seq} are not those verified); run `accessaudit verify` and "
                "investigate: records once written never change"
            )
        _check_growth(tree, previous)
        checkpoint = Checkpoint(origin, tree.size, tree.heads.root(), now, tree.chain_hash)
        path = write_anchor(anchor_dir, checkpoint, signing_key.sign(checkpoint.body))
        seq = _record(
            store,
            chain_id=chain_id,
            checkpoint=checkpoint,
            signing_key=signing_key,
            actor=actor,
            now=now,
        )
        made.append(MadeCheckpoint(checkpoint, path, previous.size if previous else None, seq))
    return made


def _newest(checkpoints: Iterable[Checkpoint]) -> Checkpoint | None:
    ordered = sorted(checkpoints, key=lambda cp: (cp.size, cp.time is not None, cp.time or 0))
    return ordered[-1] if ordered else None


def _check_growth(tree: ChainTree, previous: Checkpoint | None) -> None:
    """The chain must extend its newest checkpoint: same origin, no fewer leaves, consistent."""
    if previous is None:
        return
    where = f"chain {tree.chain_id}"
    if previous.origin != tree.origin:
        raise IntegrityError(
            f"{where} is another log than its checkpoints say ({previous.origin}): fork"
        )
    size = tree.size
    if size < previous.size:
        raise IntegrityError(
            f"{where} has {size} records, fewer than the {previous.size} of its newest "
            "checkpoint: truncated"
        )
    proof = tree.heads.proof()
    if proof is None or not verify_consistency(
        previous.size, size, previous.root, tree.heads.root(), proof
    ):
        raise IntegrityError(
            f"{where} is not consistent with its newest checkpoint (size {previous.size}): "
            "records it covered were changed: fork"
        )


def _record(
    store: SqlStore,
    *,
    chain_id: str,
    checkpoint: Checkpoint,
    signing_key: SigningKey,
    actor: str,
    now: datetime,
) -> int:
    """The ``checkpoint`` record in the chain itself (covered by the next checkpoint)."""
    event = AccessEvent(
        event_type=EventType.CHECKPOINT,
        occurred_at=now,
        actor_id=actor,
        actor_type=ActorType.SERVICE,
        customer_visible=False,
        attributes={
            "tree_size": checkpoint.size,
            "root": checkpoint.root.hex(),
            "key": signing_key.verifier.text[:256],
        },
    )
    if chain_id == store.chain_id:
        (stored,) = store.append([event])
        return stored.seq
    with SqlStore(store.url, key=store.key, chain_id=chain_id, timeout=store.timeout) as other:
        (stored,) = other.append([event])
        return stored.seq


# -- checking a log against its anchors -------------------------------------------------------


def check_anchors(
    store: SqlStore,
    anchor_dir: Path,
    keys: Sequence[VerifierKey],
    *,
    now: datetime,
    max_age: timedelta,
) -> list[Finding]:
    """What the anchored checkpoints say is wrong with the log (see the module)."""
    findings, covering = by_chain(read_anchors(anchor_dir, keys))
    present = set(store.chains())
    for chain in sorted(present - set(covering)):
        findings.append(
            Finding(FindingCode.NO_CHECKPOINT, chain, None, "no anchored checkpoint covers it")
        )
    for chain, checkpoints in sorted(covering.items()):
        sizes = [cp.size for cp in checkpoints]
        tree = (
            read_tree(store, chain, sizes=sizes)
            if chain in present
            else ChainTree(chain, TreeHeads(sizes), None, None)
        )
        findings += _against_tree(tree, checkpoints, now, max_age)
    return findings


def _covered(
    chain: str, heads: TreeHeads, checkpoints: list[Checkpoint], holder: str
) -> list[Finding]:
    """Whether the leaves hold all each checkpoint covers (truncated), exactly (fork).

    ``heads`` were taken at every checkpoint's size. ``holder`` names what holds the
    leaves in the finding's text: "the log" or "the export".
    """
    findings = []
    newest = _newest(checkpoints)
    if newest is not None and heads.size < newest.size:
        findings.append(
            Finding(
                FindingCode.TRUNCATED,
                chain,
                heads.size + 1,
                f"{holder} has {heads.size} records; the checkpoint of "
                f"{_when(newest)} covers {newest.size}",
                last_seq=newest.size,
            )
        )
    for checkpoint in sorted(checkpoints, key=lambda cp: cp.size):
        if checkpoint.size <= heads.size and heads.at(checkpoint.size) != checkpoint.root:
            findings.append(
                Finding(
                    FindingCode.FORK,
                    chain,
                    None,
                    f"the first {checkpoint.size} records of {holder} differ from those the "
                    f"checkpoint of {_when(checkpoint)} signed: rewritten or restored after it",
                )
            )
            break
    return findings


def _against_tree(
    tree: ChainTree, checkpoints: list[Checkpoint], now: datetime, max_age: timedelta
) -> list[Finding]:
    chain = tree.chain_id
    newest = _newest(checkpoints)
    assert newest is not None  # noqa: S101 - at least one checkpoint per chain here
    replaced = next(
        (cp for cp in checkpoints if tree.origin is not None and cp.origin != tree.origin), None
    )
    findings = _covered(chain, tree.heads, checkpoints, "the log")
    if replaced is not None:  # a log replaced whole: said once, not as its roots differing
        findings = [f for f in findings if f.code is not FindingCode.FORK]
        findings.append(
            Finding(
                FindingCode.FORK,
                chain,
                1,
                f"the chain starts with another record than the checkpoint of "
                f"{_when(replaced)} states: the log was replaced",
            )
        )
    if newest.time is None or now - newest.time > max_age:
        findings.append(
            Finding(
                FindingCode.STALE_CHECKPOINT,
                chain,
                None,
                f"the newest checkpoint is of {_when(newest)}, older than {max_age}; "
                "is the checkpoint job running?",
            )
        )
    return findings


def _when(checkpoint: Checkpoint) -> str:
    return "unknown time" if checkpoint.time is None else to_iso(checkpoint.time)


# -- exports bound to checkpoints -------------------------------------------------------------


def check_export(
    found: tuple[list[Finding], dict[str, list[Checkpoint]]] | None,
    heads: dict[str, TreeHeads],
) -> list[Finding]:
    """What an export's own checkpoints say of the records it holds.

    ``found``: what ``anchors.read_export_checkpoints`` read (None: no checkpoints).
    ``heads``: by chain, the tree of the exported records, with heads taken at those
    checkpoints' sizes. With the public key alone: every exported chain must be covered by
    a checkpoint it holds, and its first ``size`` records must hash to that checkpoint's
    root, which proves them unchanged and complete (none dropped, none added) up to the
    checkpoint.
    """
    if found is None:
        return [
            Finding(
                FindingCode.NO_CHECKPOINT,
                "-",
                None,
                f"the export holds no {EXPORT_CHECKPOINTS}/ (export it with --anchor)",
            )
        ]
    findings, covering = list(found[0]), found[1]
    for chain in sorted(set(heads) | set(covering)):
        if chain not in covering:
            findings.append(
                Finding(FindingCode.NO_CHECKPOINT, chain, None, "no checkpoint in the export")
            )
            continue
        # A chain the checkpoints cover but the export lost holds no records at all.
        own = heads.get(chain) or TreeHeads()
        findings += _covered(chain, own, covering[chain], "the export")
    return findings
