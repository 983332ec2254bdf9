"""``accessaudit doctor``: a thin shell over ``accessaudit.review.doctor.diagnose``."""

from __future__ import annotations

from datetime import timedelta

import typer

from accessaudit.cli._common import EXIT_FINDINGS, reported_errors, show_line
from accessaudit.cli._options import LogOptions, shared_options
from accessaudit.cli.checkpoint import (
    AnchorDirOption,
    MaxAgeOption,
    PublicKeyOption,
    anchor_check,
)
from accessaudit.record._clock import now_utc
from accessaudit.review.checkpoints import DEFAULT_MAX_AGE_HOURS
from accessaudit.review.doctor import diagnose
from accessaudit.store import SCHEMA_VERSION

__all__ = ["doctor"]


@shared_options
def doctor(
    log: LogOptions,
    anchor: AnchorDirOption = None,
    public_key: PublicKeyOption = None,
    max_checkpoint_age: MaxAgeOption = f"{DEFAULT_MAX_AGE_HOURS}h",
) -> None:
    """Check durability, triggers, the role's rights, the key and checkpoints. Exit 1 if any."""
    with reported_errors():
        anchors = anchor_check(anchor, public_key, max_checkpoint_age)
        with log.open_unsealed() as store:
            checks = diagnose(
                store,
                key_file=log.key_file,
                schema_version=SCHEMA_VERSION,
                anchors=None if anchors is None else (anchors.directory, anchors.keys),
                now=now_utc(),
                max_age=anchors.max_age if anchors else _default_age(),
            )
    for check in checks:
        label = {"finding": "fix", "note": "advice"}.get(check.level)
        fix = f"; {label}: {check.fix}" if check.fix and label else ""
        show_line(f"{check.level:<8} {check.topic}: {check.detail}{fix}")
    if any(check.level == "finding" for check in checks):
        raise typer.Exit(EXIT_FINDINGS)


def _default_age() -> timedelta:
    return timedelta(hours=DEFAULT_MAX_AGE_HOURS)
