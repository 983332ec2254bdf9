"""``accessaudit doctor``: is this log set up to keep its promises? One line per check.

Durability (SQLite in WAL mode, with accessaudit's FULL syncs; PostgreSQL with fsync and
full-page writes), the append-only triggers present and (PostgreSQL) firing always, the
connecting role's rights, the HMAC key file's permissions, the schema version, and, given
the anchor directory and public key, how fresh each chain's newest checkpoint is. A
``finding`` comes with its fix; a ``note`` is advice that does not fail the run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from accessaudit.exceptions import MacKeyError
from accessaudit.record.keys import KEY_ENV, key_file_path, load_key
from accessaudit.review.checkpoints import check_anchors

if TYPE_CHECKING:
    from datetime import datetime, timedelta
    from pathlib import Path

    from accessaudit.record.notes import VerifierKey
    from accessaudit.store import HealthFacts, SqlStore

__all__ = ["Check", "diagnose"]

Level = Literal["ok", "finding", "note"]
_WRITER_RIGHTS: Final = "connect as the role `accessaudit init --writer-role NAME` creates"


@dataclass(frozen=True, slots=True)
class Check:
    """One thing checked: how it stands, and what to do about it."""

    level: Level
    topic: str
    detail: str
    fix: str = ""


def diagnose(
    store: SqlStore,
    *,
    key_file: Path | None,
    schema_version: int,
    anchors: tuple[Path, list[VerifierKey]] | None = None,
    now: datetime,
    max_age: timedelta,
) -> list[Check]:
    """Every check, in a stable order."""
    facts = store.health()
    checks = [_log(facts, schema_version)]
    if facts.schema_version is None:
        return checks
    checks += _durability(facts) + _triggers(facts) + _role(facts)
    checks.append(_key(key_file))
    checks += _checkpoints(store, anchors, now, max_age)
    return checks


def _log(facts: HealthFacts, current: int) -> Check:
    if facts.schema_version is None:
        return Check("finding", "log", "no log at this URL", "run `accessaudit init`")
    if facts.schema_version < current:
        return Check(
            "finding",
            "log",
            f"schema version {facts.schema_version}, older than this release's {current}",
            "run `accessaudit init` to upgrade it in place",
        )
    return Check("ok", "log", f"schema version {facts.schema_version}")


def _durability(facts: HealthFacts) -> list[Check]:
    settings = facts.settings
    if facts.dialect == "sqlite":
        mode = settings.get("journal_mode", "?")
        if mode != "wal":
            return [
                Check(
                    "finding",
                    "durability",
                    f"journal_mode is {mode}, not wal",
                    "run `accessaudit init` (it switches the file to WAL)",
                )
            ]
        return [Check("ok", "durability", "WAL; decisions commit with synchronous=FULL (fsynced)")]
    checks = []
    for name in ("fsync", "full_page_writes"):
        value = settings.get(name, "?")
        if value != "on":
            checks.append(
                Check(
                    "finding",
                    "durability",
                    f"{name} is {value}: a crash can lose or tear committed records",
                    f"set {name} = on in postgresql.conf and reload",
                )
            )
        else:
            checks.append(Check("ok", "durability", f"{name} = on"))
    default = settings.get("synchronous_commit", "?")
    checks.append(
        Check(
            "ok",
            "durability",
            f"synchronous_commit is {default} by default; accessaudit sets it on for every "
            "decision it commits",
        )
    )
    return checks


def _triggers(facts: HealthFacts) -> list[Check]:
    missing = [name for name in facts.expected_triggers if name not in facts.triggers]
    weak = [
        name for name, how in facts.triggers.items() if facts.dialect == "postgresql" and how != "A"
    ]
    if missing:
        return [
            Check(
                "finding",
                "append-only",
                f"trigger(s) missing: {', '.join(missing)}",
                "run `accessaudit init` to recreate them, and `accessaudit verify`",
            )
        ]
    if weak:
        return [
            Check(
                "finding",
                "append-only",
                f"trigger(s) not ENABLE ALWAYS (disabled, or skipped for replicas): "
                f"{', '.join(sorted(weak))}",
                "run `accessaudit init` (it enables them ALWAYS), and `accessaudit verify`",
            )
        ]
    how = "enabled ALWAYS" if facts.dialect == "postgresql" else "present"
    return [Check("ok", "append-only", f"{len(facts.triggers)} triggers {how}")]


def _role(facts: HealthFacts) -> list[Check]:
    if facts.dialect != "postgresql":
        return [
            Check(
                "note",
                "access",
                "SQLite: whoever can write the file can drop the triggers",
                "keep the file in a directory only the service user can write",
            )
        ]
    checks = []
    if facts.superuser:
        checks.append(
            Check(
                "finding",
                "access",
                f"connected as {facts.role}, a superuser: it can defeat every protection",
                _WRITER_RIGHTS,
            )
        )
    elif facts.owner:
        checks.append(
            Check(
                "finding",
                "access",
                f"{facts.role} owns the log's tables: it can disable the triggers or drop them",
                _WRITER_RIGHTS,
            )
        )
    if facts.privileges and not facts.superuser:  # a superuser's rights say nothing more
        checks.append(
            Check(
                "finding",
                "access",
                f"{facts.role} may {', '.join(facts.privileges)} the events table",
                _WRITER_RIGHTS + " (SELECT and INSERT only)",
            )
        )
    if not checks:
        checks.append(Check("ok", "access", f"{facts.role} may only SELECT and INSERT"))
    if not facts.ddl_guard:
        checks.append(
            Check(
                "note",
                "access",
                "no DDL guard: the tables' owner can still DROP or ALTER them",
                "as a superuser, run `accessaudit init --ddl-guard`",
            )
        )
    return checks


def _key(key_file: Path | None) -> Check:
    try:
        load_key(key_file)
    except MacKeyError as e:
        return Check("finding", "key", str(e), "fix the file named (mode 0600, 64 hex digits)")
    source = f"${KEY_ENV}" if key_file is None and _env_key() else f"file {key_file_path(key_file)}"
    return Check("ok", "key", f"HMAC key from {source}, readable by its owner only")


def _env_key() -> bool:
    return bool(os.environ.get(KEY_ENV))


def _checkpoints(
    store: SqlStore,
    anchors: tuple[Path, list[VerifierKey]] | None,
    now: datetime,
    max_age: timedelta,
) -> list[Check]:
    if anchors is None:
        return [
            Check(
                "note",
                "checkpoints",
                "not checked (no --anchor)",
                "give --anchor DIR --public-key KEY.pub, and run `accessaudit checkpoint` "
                "from a timer",
            )
        ]
    directory, keys = anchors
    findings = check_anchors(store, directory, keys, now=now, max_age=max_age)
    if not findings:
        hours = f"{max_age.total_seconds() / 3600:g}h"
        return [Check("ok", "checkpoints", f"every chain checkpointed within {hours}")]
    return [
        Check(
            "finding",
            "checkpoints",
            f"{f.code.value}: chain {f.chain_id}: {f.detail}",
            "run `accessaudit checkpoint`"
            if f.code.value in {"stale_checkpoint", "no_checkpoint"}
            else "run `accessaudit verify --anchor` and investigate",
        )
        for f in findings
    ]
