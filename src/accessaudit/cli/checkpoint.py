"""``accessaudit key new-signing-key`` and ``accessaudit checkpoint``: signed checkpoints.

Thin shells over ``accessaudit.record.notes`` (Ed25519 keys, signed notes) and
``accessaudit.review.checkpoints`` (making checkpoints, anchoring them).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from accessaudit.cli._common import command_group, reported_errors, show_line
from accessaudit.cli._options import LogOptions, shared_options
from accessaudit.exceptions import ConfigurationError
from accessaudit.record._clock import now_utc, parse_duration, to_iso
from accessaudit.record.notes import create_signing_key, load_signing_key
from accessaudit.review.checkpoints import make_checkpoints

__all__ = ["checkpoint", "key_app"]

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


@shared_options
def checkpoint(
    log: LogOptions,
    signing_key: SigningKeyOption,
    anchor: AnchorOption,
    every: EveryOption = None,
) -> None:
    """Sign a checkpoint of every chain into the anchor directory (consistent with the last)."""
    with reported_errors():
        pause = None if every is None else _duration(every, "--every")
        key = load_signing_key(signing_key)
        if not anchor.is_dir():
            msg = f"--anchor: {anchor} is not a directory; create it (outside the database)"
            raise ConfigurationError(msg)
    while True:
        with reported_errors(), log.open() as store:
            made = make_checkpoints(store, key, anchor, now=now_utc(), actor=log.actor)
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
