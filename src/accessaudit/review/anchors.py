"""The anchor directory: signed checkpoints kept outside the log, one new file each.

Files are written whole or not at all and never rewritten (``write_anchor``); reading them
(``read_anchors``) checks each against the trusted public keys and says why a file is not
trusted. An export keeps copies of the checkpoints that cover its records in
``_checkpoints/`` (``copy_checkpoints``), so it can be checked with the public key alone.

A chain's origin (a checkpoint's first line) is ``accessaudit/<chain id>/<event id of its
first record>``: a log rebuilt from scratch under the same chain id is another log.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import quote, unquote

from accessaudit.exceptions import ConfigurationError
from accessaudit.record._clock import to_iso
from accessaudit.record._files import write_new
from accessaudit.record.findings import Finding, FindingCode
from accessaudit.record.notes import Checkpoint, NoteError, open_note

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from accessaudit.record.notes import VerifierKey

__all__ = [
    "EXPORT_CHECKPOINTS",
    "Anchored",
    "by_chain",
    "chain_of",
    "copy_checkpoints",
    "origin_of",
    "read_anchors",
    "read_export_checkpoints",
    "write_anchor",
]

_SUFFIX: Final = ".note"
_PREFIX: Final = "accessaudit"


def origin_of(chain_id: str, first_event_id: str) -> str:
    """The log identity a chain's checkpoints state."""
    return f"{_PREFIX}/{quote(chain_id, safe='')}/{first_event_id}"


def chain_of(origin: str) -> str | None:
    """The chain id an origin names, or None if it is not one of ours."""
    parts = origin.split("/")
    return unquote(parts[1]) if len(parts) == 3 and parts[0] == _PREFIX else None


@dataclass(frozen=True, slots=True)
class Anchored:
    """One checkpoint file of the anchor directory, checked against the trusted keys."""

    path: Path
    checkpoint: Checkpoint | None
    problem: str | None = None


def read_anchors(directory: Path, keys: Sequence[VerifierKey]) -> list[Anchored]:
    """Every ``*.note`` file of ``directory``: its checkpoint, or why it is not trusted."""
    if not directory.is_dir():
        raise ConfigurationError(f"anchor directory {directory} does not exist")
    found = []
    for path in sorted(directory.glob(f"*{_SUFFIX}")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            found.append(Anchored(path, None, f"unreadable: {e}"))
            continue
        try:
            checkpoint, _ = open_note(text, keys)
        except NoteError as e:
            found.append(Anchored(path, None, str(e)))
            continue
        found.append(Anchored(path, checkpoint))
    return found


def write_anchor(directory: Path, checkpoint: Checkpoint, note: str) -> Path:
    """A new file for ``note``, complete or absent, fsynced with its directory."""
    tag = hashlib.sha256(checkpoint.origin.encode()).hexdigest()[:12]
    stamp = "" if checkpoint.time is None else to_iso(checkpoint.time).replace(":", "")
    path = directory / f"checkpoint-{tag}-{checkpoint.size:015d}-{stamp}{_SUFFIX}"
    try:
        written = write_new(path, note, 0o644)
    except OSError as e:
        raise ConfigurationError(f"cannot write the checkpoint to {directory}: {e}") from e
    if not written:  # never replaces an anchored checkpoint
        raise ConfigurationError(f"{path} exists already: another checkpointer is running?")
    return path


def by_chain(anchored: list[Anchored]) -> tuple[list[Finding], dict[str, list[Checkpoint]]]:
    """Trusted checkpoints by the chain they name; a finding for each file that is not one."""
    findings = []
    by_chain: dict[str, list[Checkpoint]] = {}
    for a in anchored:
        chain = None if a.checkpoint is None else chain_of(a.checkpoint.origin)
        if a.checkpoint is not None and chain is not None:
            by_chain.setdefault(chain, []).append(a.checkpoint)
            continue
        problem = (
            a.problem
            if a.checkpoint is None
            else f"origin {a.checkpoint.origin!r} is not an accessaudit chain"
        )
        findings.append(Finding(FindingCode.BAD_CHECKPOINT, "-", None, f"{a.path.name}: {problem}"))
    return findings, by_chain


# -- an export's copies ---------------------------------------------------------------------

#: Where an export keeps copies of the checkpoints its records are checked against.
EXPORT_CHECKPOINTS: Final = "_checkpoints"


def copy_checkpoints(
    anchor_dir: Path, keys: Sequence[VerifierKey], out: Path, heads: dict[str, int]
) -> list[Path]:
    """Copy into an export the newest trusted checkpoint of each chain it holds in full.

    ``heads``: chain -> the last seq exported. A checkpoint larger than that is not copied
    (the export does not hold all it covers yet). Copies are new files, never rewritten.
    """
    target = out / EXPORT_CHECKPOINTS
    target.mkdir(exist_ok=True)
    copied = []
    for anchored in read_anchors(anchor_dir, keys):
        checkpoint = anchored.checkpoint
        chain = None if checkpoint is None else chain_of(checkpoint.origin)
        if checkpoint is None or chain is None or checkpoint.size > heads.get(chain, 0):
            continue
        path = target / anchored.path.name
        if write_new(path, anchored.path.read_text(encoding="utf-8"), 0o644):
            copied.append(path)
    return copied


def read_export_checkpoints(
    out: Path, keys: Sequence[VerifierKey]
) -> tuple[list[Finding], dict[str, list[Checkpoint]]] | None:
    """An export's own checkpoints by chain, and a finding for each file that is not one.

    None if the export holds no ``_checkpoints/``. Read once, before the export's records,
    so that their tree heads are taken at these sizes as the records go by (see
    ``checkpoints.check_export``).
    """
    directory = out / EXPORT_CHECKPOINTS
    return by_chain(read_anchors(directory, keys)) if directory.is_dir() else None
