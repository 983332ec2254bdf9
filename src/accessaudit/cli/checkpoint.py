"""``accessaudit key new-signing-key`` and ``accessaudit checkpoint``: signed checkpoints.

Thin shells over ``accessaudit.record.notes`` (Ed25519 keys, signed notes) and
``accessaudit.review.checkpoints`` (making checkpoints, anchoring them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from accessaudit.cli._common import command_group, reported_errors, show_line
from accessaudit.cli._options import LogOptions, shared_options
from accessaudit.exceptions import ConfigurationError
from accessaudit.record._clock import now_utc, parse_duration, to_iso
from accessaudit.record.findings import Finding
from accessaudit.record.notes import (
    VerifierKey,
    create_signing_key,
    load_signing_key,
    load_verifier_keys,
)
from accessaudit.review.checkpoints import check_anchors, make_checkpoints
from accessaudit.store import SqlStore

__all__ = [
    "AnchorCheck",
    "AnchorDirOption",
    "MaxAgeOption",
    "PublicKeyOption",
    "anchor_check",
    "checkpoint",
    "key_app",
]

key_app = command_group("Keys: the checkpoint signing key (Ed25519).")

SigningKeyOption = Annotated[
    Path,
    typer.Option(
        "--signing-key",
        help="The Ed25519 key from `accessaudit key new-signing-key` (only the "
        "checkpointer needs it).",
    ),
]
AnchorOption = Annotated[
    Path,
    typer.Option(
        "--anchor",
        metavar="DIR",
        help="Where checkpoints are kept, outside the database (another volume or host).",
    ),
]
EveryOption = Annotated[
    str | None,
    typer.Option(
        "--every",
        metavar="DURATION",
        help="Keep running: a checkpoint every DURATION (e.g. 15m, 1h), even when idle.",
    ),
]


AnchorDirOption = Annotated[
    Path | None,
    typer.Option(
        "--anchor",
        metavar="DIR",
        help="Also check the log against the signed checkpoints in DIR (needs "
        "--public-key): finds truncation, rollback and rewrites without --expect-head.",
    ),
]
PublicKeyOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--public-key",
        metavar="PATH.pub",
        help="A trusted checkpoint public key; any of them may have signed (key rotation). "
        "Repeatable: --public-key new.pub --public-key old.pub.",
    ),
]
MaxAgeOption = Annotated[
    str,
    typer.Option(
        "--max-checkpoint-age",
        metavar="DURATION",
        help="A newest checkpoint older than this is a finding (stale_checkpoint).",
    ),
]


@dataclass(frozen=True, slots=True)
class AnchorCheck:
    """What ``--anchor`` asks for: the directory, the trusted keys, the age limit."""

    directory: Path
    keys: list[VerifierKey]
    max_age: timedelta

    def findings(self, store: SqlStore) -> list[Finding]:
        """What the anchored checkpoints say is wrong with ``store``'s log."""
        return check_anchors(store, self.directory, self.keys, now=now_utc(), max_age=self.max_age)


def anchor_check(
    anchor: Path | None, public_keys: list[Path] | None, max_age: str
) -> AnchorCheck | None:
    """What --anchor, --public-key and --max-checkpoint-age ask for, checked (exit 2)."""
    if anchor is None:
        if public_keys:
            raise ConfigurationError("--public-key checks checkpoints: give --anchor DIR too")
        return None
    if not public_keys:
        raise ConfigurationError("--anchor needs the trusted key: --public-key PATH.pub")
    try:
        limit = parse_duration(max_age)
    except ValueError as e:
        raise ConfigurationError(f"--max-checkpoint-age: {e}") from e
    return AnchorCheck(anchor, load_verifier_keys(public_keys), limit)


@key_app.command("new-signing-key")
@shared_options
def new_signing_key(
    path: Annotated[Path, typer.Argument(help="Where to write the private key (0600).")],
    name: Annotated[
        str, typer.Option("--name", help="The key's name in signatures (no blanks or '+').")
    ] = "accessaudit",
) -> None:
    """Write a new Ed25519 signing key at PATH and its public key at PATH.pub."""
    with reported_errors():
        key = create_signing_key(path, name)
    show_line(f"signing key {path}: created (mode 0600); keep it away from the database")
    show_line(f"public key {path}.pub: {key.verifier.text}")
    show_line("give reviewers the public key; verify with --anchor DIR --public-key PATH.pub")


EarlierKeyOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--earlier-key",
        metavar="OLD.pub",
        help="After rotating the signing key: the public key of one it replaced, whose "
        "checkpoints are in the anchor directory. Repeatable: --earlier-key a.pub "
        "--earlier-key b.pub.",
    ),
]


@shared_options
def checkpoint(
    log: LogOptions,
    signing_key: SigningKeyOption,
    anchor: AnchorOption,
    every: EveryOption = None,
    earlier_key: EarlierKeyOption = None,
) -> None:
    """Sign a checkpoint of every chain into the anchor directory (consistent with the last)."""
    with reported_errors():
        pause = None if every is None else _duration(every, "--every")
        key = load_signing_key(signing_key)
        earlier = load_verifier_keys(earlier_key) if earlier_key else []
        if not anchor.is_dir():
            msg = f"--anchor: {anchor} is not a directory; create it (outside the database)"
            raise ConfigurationError(msg)
    while True:
        with reported_errors(), log.open() as store:
            made = make_checkpoints(
                store, key, anchor, now=now_utc(), actor=log.actor, earlier_keys=earlier
            )
        for item in made:
            cp = item.checkpoint
            grew = "" if item.previous_size is None else f" (from {item.previous_size})"
            show_line(
                f"chain {cp.origin}: checkpoint of {cp.size} records{grew}, root "
                f"{cp.root.hex()}, at {to_iso(cp.time) if cp.time else '-'}: {item.path.name}; "
                f"recorded as seq {item.record_seq}"
            )
        if pause is None:
            return
        time.sleep(pause)


def _duration(text: str, option: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except ValueError as e:
        raise ConfigurationError(f"{option}: {e}") from e
