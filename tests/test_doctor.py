"""accessaudit doctor: each check found wrong on a real database, with its fix; exit 0 or 1."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from accessaudit import SqlStore
from accessaudit.cli.app import app
from accessaudit.record._clock import now_utc
from accessaudit.record.keys import create_key_file
from accessaudit.record.notes import create_signing_key
from accessaudit.review.checkpoints import make_checkpoints
from accessaudit.review.doctor import diagnose
from accessaudit.store import SCHEMA_VERSION

if TYPE_CHECKING:
    from pathlib import Path

    from accessaudit import MacKey
    from tests.conftest import Backend

DAY = timedelta(days=1)


def _levels(store: SqlStore, key_file: Path, **kw: object) -> dict[str, list[str]]:
    checks = diagnose(
        store,
        key_file=key_file,
        schema_version=SCHEMA_VERSION,
        now=kw.pop("now", now_utc()),  # type: ignore[arg-type]
        max_age=DAY,
        **kw,  # type: ignore[arg-type]
    )
    found: dict[str, list[str]] = {}
    for check in checks:
        found.setdefault(check.level, []).append(check.topic)
    return found


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """A key file as init writes it."""
    path = tmp_path / "audit.key"
    create_key_file(path)
    return path


def test_a_new_sqlite_log_is_healthy_and_a_missing_trigger_is_not(
    sqlite_backend: Backend, key: MacKey, key_file: Path, tmp_path: Path
) -> None:
    """WAL, triggers, key: ok; a dropped trigger, a rollback journal: findings with fixes."""
    with SqlStore(sqlite_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        assert "finding" not in _levels(store, key_file)
        sqlite_backend.sql("DROP TRIGGER accessaudit_events_no_delete")
        assert _levels(store, key_file)["finding"] == ["append-only"]
    sqlite_backend.owner.dispose()  # leaving WAL needs the file to itself
    with sqlite3.connect(tmp_path / "audit.db") as raw:
        raw.execute("PRAGMA journal_mode = DELETE")
    with SqlStore(sqlite_backend.url, key=key) as store:
        assert _levels(store, key_file)["finding"] == ["durability", "append-only"]


def test_a_loose_key_file_and_a_missing_log_are_findings(
    sqlite_backend: Backend, key: MacKey, key_file: Path
) -> None:
    """A key readable by others; no log at all (nothing else is checked then)."""
    with SqlStore(sqlite_backend.url, key=key, must_exist=False) as store:
        assert _levels(store, key_file) == {"finding": ["log"]}
        store.create_schema()
        key_file.chmod(0o644)
        assert _levels(store, key_file)["finding"] == ["key"]


@pytest.mark.postgres
def test_postgres_roles_are_judged_by_their_rights(
    pg_backend: Backend, key: MacKey, key_file: Path
) -> None:
    """A superuser connection is a finding; the writer role (SELECT, INSERT) is not."""
    role = f"aa_doc_{uuid.uuid4().hex[:8]}"
    url = make_url(pg_backend.url)
    as_writer = url.update_query_dict(
        {"options": f"{url.query['options']} -crole={role}"}
    ).render_as_string(False)
    try:
        with SqlStore(pg_backend.url, key=key, must_exist=False) as store:
            store.create_schema()
            store.grant_writer_role(role)
            levels = _levels(store, key_file)
            assert levels["finding"] == ["access"]
            assert "access" in levels["note"]  # no DDL guard installed
        with SqlStore(as_writer, key=key) as store:
            assert "finding" not in _levels(store, key_file)
    finally:
        if pg_backend.sql("SELECT 1 FROM pg_roles WHERE rolname = :r", r=role):
            pg_backend.sql(f"DROP OWNED BY {role}")
            pg_backend.sql(f"DROP ROLE {role}")


def test_checkpoints_fresh_then_stale(store: SqlStore, key_file: Path, tmp_path: Path) -> None:
    """Given the anchors: fresh is ok; two days later the same checkpoint is a finding."""
    from accessaudit import Gate, Policy, access_context
    from tests.gatekit import EXAMPLE_POLICY, Desk, service

    signing = create_signing_key(tmp_path / "cp.key")
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    with access_context(service()):
        Desk(Gate(store, Policy.load(EXAMPLE_POLICY))).invoices("acme")
    make_checkpoints(store, signing, anchors, now=now_utc())
    given = (anchors, [signing.verifier])
    assert "checkpoints" in _levels(store, key_file, anchors=given)["ok"]
    later = _levels(store, key_file, anchors=given, now=now_utc() + 2 * DAY)
    assert "checkpoints" in later["finding"]


def test_the_cli_prints_one_line_per_check_and_exits_1_on_findings(
    sqlite_backend: Backend, key: MacKey, key_file: Path
) -> None:
    """Exit 0 with notes only; exit 1, naming the fix, once something is wrong."""
    runner = CliRunner()
    args = ["doctor", "--db", sqlite_backend.url, "--key-file", str(key_file)]
    with SqlStore(sqlite_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
    healthy = runner.invoke(app, args)
    assert healthy.exit_code == 0, healthy.output
    assert healthy.stdout.splitlines()[0].startswith("ok       log: schema version")
    sqlite_backend.sql("DROP TRIGGER accessaudit_events_no_update")
    sick = runner.invoke(app, args)
    assert sick.exit_code == 1
    (line,) = [ln for ln in sick.stdout.splitlines() if ln.startswith("finding")]
    assert "accessaudit_events_no_update" in line
    assert "fix: run `accessaudit init`" in line
