"""Signed checkpoints: keys, anchors, and truncation, rollback and forks found by public key.

Every scenario runs on SQLite and PostgreSQL, with the public key alone on the checking side.
"""

from __future__ import annotations

import os
import shutil
import stat
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from accessaudit import (
    ConfigurationError,
    Gate,
    IntegrityError,
    MacKey,
    Policy,
    SqlStore,
    access_context,
)
from accessaudit.cli.app import app
from accessaudit.record._clock import now_utc
from accessaudit.record.findings import FindingCode
from accessaudit.record.notes import (
    NoteError,
    create_signing_key,
    load_signing_key,
    load_verifier_keys,
    open_note,
)
from accessaudit.review import checkpoints
from accessaudit.review.anchors import read_anchors
from accessaudit.review.checkpoints import check_anchors, make_checkpoints
from accessaudit.review.export import ExportError, export_log, verify_export
from accessaudit.review.verify import verify_store
from tests.gatekit import EXAMPLE_POLICY, Desk, service
from tests.test_export_verify import _files, _fix_manifest, _write

if TYPE_CHECKING:
    from pathlib import Path

    from accessaudit.record.notes import SigningKey
    from tests.conftest import Backend

DAY = timedelta(days=1)


def _reads(gate: Gate, n: int) -> None:
    desk = Desk(gate)
    with access_context(service()):
        for _ in range(n):
            desk.invoices("acme")


@pytest.fixture
def signing_key(tmp_path: Path) -> SigningKey:
    """A new checkpoint key in the test's directory."""
    return create_signing_key(tmp_path / "checkpoint.key")


@pytest.fixture
def anchors(tmp_path: Path) -> Path:
    """An empty anchor directory."""
    directory = tmp_path / "anchors"
    directory.mkdir()
    return directory


def _codes(store: SqlStore, anchors: Path, key: SigningKey, **kw: object) -> list[str]:
    now = kw.pop("now", now_utc())
    found = check_anchors(store, anchors, [key.verifier], now=now, max_age=DAY)  # type: ignore[arg-type]
    return sorted(f.code.value for f in found)


def test_a_signing_key_is_private_and_its_public_key_loads(tmp_path: Path) -> None:
    """0600 key, .pub beside it, both load back; never written over an existing key."""
    path = tmp_path / "k"
    key = create_signing_key(path, "audit-2026")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_signing_key(path).verifier.text == key.verifier.text
    (public,) = load_verifier_keys([tmp_path / "k.pub"])
    assert public.text == key.verifier.text
    with pytest.raises(ConfigurationError, match="refusing to overwrite"):
        create_signing_key(path)
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match="readable by other users"):
        load_signing_key(path)


def test_a_checkpoint_is_a_signed_note_only_its_key_opens(
    store: SqlStore, gate: Gate, signing_key: SigningKey, anchors: Path, tmp_path: Path
) -> None:
    """C2SP note: origin, size, base64 root, extensions; another key does not open it."""
    _reads(gate, 3)
    (made,) = make_checkpoints(store, signing_key, anchors, now=now_utc())
    text = made.path.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("accessaudit/main/")
    assert lines[1] == "6"  # three reads, two records each
    assert lines[3].startswith("time ")
    assert lines[4].startswith("chain ")
    assert lines[-1].startswith(f"\u2014 {signing_key.name} ")
    checkpoint, by = open_note(text, [signing_key.verifier])
    assert (checkpoint.size, by.name) == (6, signing_key.name)
    stranger = create_signing_key(tmp_path / "other.key")
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        open_note(text, [stranger.verifier])
    assert [r.event.event_type.value for r in store.read()][-1] == "checkpoint"


def test_an_intact_log_checks_clean_and_growth_is_consistent(
    store: SqlStore, gate: Gate, signing_key: SigningKey, anchors: Path
) -> None:
    """Two checkpoints, the log grown between them: no findings."""
    _reads(gate, 2)
    make_checkpoints(store, signing_key, anchors, now=now_utc())
    _reads(gate, 2)
    (second,) = make_checkpoints(store, signing_key, anchors, now=now_utc())
    assert second.previous_size == 4  # two reads, two records each
    assert second.checkpoint.size == 9  # and the first checkpoint's own record
    assert _codes(store, anchors, signing_key) == []


def test_a_checkpoint_covers_only_what_its_verification_saw(
    store: SqlStore,
    gate: Gate,
    signing_key: SigningKey,
    anchors: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read gated while the checkpointer verifies waits for the next checkpoint."""
    _reads(gate, 2)

    def verify_while_a_read_lands(store: SqlStore, **options: Any) -> object:
        _reads(gate, 1)  # another writer, between the heads taken and the verification
        return verify_store(store, **options)

    monkeypatch.setattr(checkpoints, "verify_store", verify_while_a_read_lands)
    (made,) = make_checkpoints(store, signing_key, anchors, now=now_utc())
    assert made.checkpoint.size == 4  # the two reads before it, not the third
    assert made.record_seq == 7  # its own record follows the third read's two
    monkeypatch.setattr(checkpoints, "verify_store", verify_store)
    (second,) = make_checkpoints(store, signing_key, anchors, now=now_utc())
    assert (second.previous_size, second.checkpoint.size) == (4, 7)
    assert _codes(store, anchors, signing_key) == []


def test_a_checkpoint_signed_meanwhile_by_another_checkpointer_is_no_truncation(
    store: SqlStore,
    gate: Gate,
    signing_key: SigningKey,
    anchors: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two checkpointers at once: the slower one signs its own heads, consistent, no error."""
    _reads(gate, 2)
    make_checkpoints(store, signing_key, anchors, now=now_utc())  # size 4, its record is 5
    other_ran: list[int] = []

    def verify_while_another_signs(store: SqlStore, **options: Any) -> object:
        if not other_ran:
            other_ran.append(1)
            _reads(gate, 1)
            (other,) = make_checkpoints(store, signing_key, anchors, now=now_utc())
            assert other.checkpoint.size == 7  # more than the heads this run took (5)
        return verify_store(store, **options)

    monkeypatch.setattr(checkpoints, "verify_store", verify_while_another_signs)
    (made,) = make_checkpoints(store, signing_key, anchors, now=now_utc())
    assert (made.previous_size, made.checkpoint.size) == (4, 5)
    assert _codes(store, anchors, signing_key) == []


def test_a_chain_changed_after_its_verification_is_not_signed(  # noqa: PLR0917 - fixtures
    backend: Backend,
    store: SqlStore,
    gate: Gate,
    signing_key: SigningKey,
    anchors: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A record removed between the verification and the tree read: refused, nothing signed."""
    _reads(gate, 2)

    def verify_then_delete(store: SqlStore, **options: Any) -> object:
        report = verify_store(store, **options)
        backend.drop_guards()
        backend.sql("DELETE FROM accessaudit_events WHERE seq = 4")
        return report

    monkeypatch.setattr(checkpoints, "verify_store", verify_then_delete)
    with pytest.raises(IntegrityError, match="changed while it was being checkpointed"):
        make_checkpoints(store, signing_key, anchors, now=now_utc())
    assert read_anchors(anchors, [signing_key.verifier]) == []


def test_deleted_newest_records_are_truncated(
    backend: Backend, store: SqlStore, gate: Gate, signing_key: SigningKey, anchors: Path
) -> None:
    """The newest records removed by the database owner: truncated, and no new checkpoint."""
    _reads(gate, 3)
    make_checkpoints(store, signing_key, anchors, now=now_utc())
    backend.drop_guards()
    backend.sql("DELETE FROM accessaudit_events WHERE seq > 4")
    assert _codes(store, anchors, signing_key) == ["truncated"]
    with pytest.raises(IntegrityError, match="truncated"):
        make_checkpoints(store, signing_key, anchors, now=now_utc())


def test_a_record_rewritten_after_a_checkpoint_is_a_fork(
    backend: Backend, store: SqlStore, gate: Gate, signing_key: SigningKey, anchors: Path
) -> None:
    """Hashes recomputed by someone without the signing key do not match the checkpoint."""
    _reads(gate, 3)
    make_checkpoints(store, signing_key, anchors, now=now_utc())
    backend.drop_guards()
    backend.sql("UPDATE accessaudit_events SET leaf_hash = :h WHERE seq = 2", h="ab" * 32)
    assert _codes(store, anchors, signing_key) == ["fork"]


@pytest.mark.parametrize("edit", ["size", "signature", "unsigned"])
def test_edited_or_forged_checkpoints_are_bad(
    store: SqlStore, gate: Gate, signing_key: SigningKey, anchors: Path, edit: str
) -> None:
    """A changed size, a changed signature, a note without one: bad_checkpoint."""
    _reads(gate, 2)
    (made,) = make_checkpoints(store, signing_key, anchors, now=now_utc())
    text = made.path.read_text()
    lines = text.split("\n")
    if edit == "size":
        lines[1] = "3"
    elif edit == "signature":
        name, blob = lines[-2].rsplit(" ", 1)
        lines[-2] = f"{name} {blob[:-8]}AAAAAAA="
    else:
        lines = [*lines[: lines.index("")], "", ""]
    made.path.write_text("\n".join(lines))
    assert "bad_checkpoint" in _codes(store, anchors, signing_key)
    with pytest.raises(IntegrityError, match="not a checkpoint this key"):
        make_checkpoints(store, signing_key, anchors, now=now_utc())


def test_a_stale_checkpoint_and_an_unchecked_chain_are_findings(
    store: SqlStore,
    gate: Gate,
    signing_key: SigningKey,
    anchors: Path,
) -> None:
    """Older than the limit: stale_checkpoint; no checkpoint at all: no_checkpoint."""
    assert _codes(store, anchors, signing_key) == []  # an empty log has no chains
    _reads(gate, 1)
    assert _codes(store, anchors, signing_key) == ["no_checkpoint"]
    make_checkpoints(store, signing_key, anchors, now=now_utc())
    later = now_utc() + 2 * DAY
    assert _codes(store, anchors, signing_key, now=later) == ["stale_checkpoint"]


def test_a_log_restored_from_an_older_copy_is_caught(
    sqlite_backend: Backend, signing_key: SigningKey, anchors: Path, tmp_path: Path
) -> None:
    """An older copy of the file put back: truncated; then grown past the checkpoint: fork."""
    db = tmp_path / "audit.db"
    audit = SqlStore(sqlite_backend.url, key=MacKey(os.urandom(32)), must_exist=False)
    audit.create_schema()
    gate = Gate(audit, Policy.load(EXAMPLE_POLICY))
    _reads(gate, 2)
    make_checkpoints(audit, signing_key, anchors, now=now_utc())
    audit.close()
    shutil.copy(db, tmp_path / "backup.db")
    _reads(gate, 2)
    make_checkpoints(audit, signing_key, anchors, now=now_utc())
    audit.close()
    (tmp_path / "backup.db").replace(db)
    assert _codes(audit, anchors, signing_key) == ["truncated"]
    _reads(gate, 4)  # the restored log grows past the newest checkpoint, differently
    assert _codes(audit, anchors, signing_key) == ["fork"]
    # Its records verify with the HMAC key, so only the consistency proof can refuse it.
    with pytest.raises(IntegrityError, match="not consistent with its newest checkpoint"):
        make_checkpoints(audit, signing_key, anchors, now=now_utc())
    audit.close()


def test_the_cli_checks_with_the_public_key_alone(  # noqa: PLR0917 - pytest fixtures
    backend: Backend,
    store: SqlStore,
    gate: Gate,
    tmp_path: Path,
    anchors: Path,
    monkeypatch: pytest.MonkeyPatch,
    in_tmp: Path,
) -> None:
    """new-signing-key, checkpoint, verify --anchor --public-key --skip-mac: exit 0, then 1.

    Run in an empty directory (``in_tmp``): a key file left in the working directory, as
    the demo leaves one, must not be picked up instead of the key given.
    """
    runner = CliRunner()
    monkeypatch.setenv("ACCESSAUDIT_HMAC_KEY", store.key.secret.hex())  # type: ignore[union-attr]
    _reads(gate, 2)
    key = tmp_path / "cp.key"
    made = runner.invoke(app, ["key", "new-signing-key", str(key)])
    assert made.exit_code == 0, made.output
    cp = runner.invoke(
        app,
        ["checkpoint", "--db", backend.url, "--signing-key", str(key), "--anchor", str(anchors)],
    )
    assert cp.exit_code == 0, cp.output
    assert "checkpoint of 4 records" in cp.stdout
    monkeypatch.delenv("ACCESSAUDIT_HMAC_KEY")
    check = [
        "verify",
        "--db",
        backend.url,
        "--skip-mac",
        "--anchor",
        str(anchors),
        "--public-key",
        f"{key}.pub",
    ]
    clean = runner.invoke(app, check)
    assert clean.exit_code == 0, clean.output
    backend.drop_guards()
    backend.sql("DELETE FROM accessaudit_events WHERE seq > 2")
    caught = runner.invoke(app, check)
    assert caught.exit_code == 1
    assert "truncated" in caught.stdout
    lone = runner.invoke(app, ["verify", "--db", backend.url, "--anchor", str(anchors)])
    assert lone.exit_code == 2
    assert "--public-key" in lone.stderr
    assert [
        a.checkpoint is not None
        for a in read_anchors(anchors, load_verifier_keys([tmp_path / "cp.key.pub"]))
    ] == [True]
    assert FindingCode.TRUNCATED.value == "truncated"


def test_a_rotated_signing_key_continues_the_checkpoints(
    store: SqlStore, gate: Gate, signing_key: SigningKey, anchors: Path, tmp_path: Path
) -> None:
    """A new key signs on from the old key's checkpoints when given its public key.

    A verifier trusting both keys finds nothing; one trusting only the new key flags the old.
    """
    _reads(gate, 2)
    make_checkpoints(store, signing_key, anchors, now=now_utc())
    new = create_signing_key(tmp_path / "new.key")
    with pytest.raises(IntegrityError, match="not a checkpoint this key"):
        make_checkpoints(store, new, anchors, now=now_utc())
    _reads(gate, 1)
    (made,) = make_checkpoints(
        store, new, anchors, now=now_utc(), earlier_keys=[signing_key.verifier]
    )
    assert made.previous_size == 4
    both = [new.verifier, signing_key.verifier]
    assert check_anchors(store, anchors, both, now=now_utc(), max_age=DAY) == []
    only_new = check_anchors(store, anchors, [new.verifier], now=now_utc(), max_age=DAY)
    assert [f.code.value for f in only_new] == ["bad_checkpoint"]


# -- exports bound to checkpoints -------------------------------------------------------------


def _export_with_checkpoint(
    store: SqlStore, gate: Gate, signing_key: SigningKey, anchors: Path, out: Path
) -> None:
    _reads(gate, 3)
    make_checkpoints(store, signing_key, anchors, now=now_utc())
    export_log(store, out, actor="reviewer", anchors=(anchors, [signing_key.verifier]))


def test_an_export_with_its_checkpoint_verifies_with_the_public_key_alone(
    store: SqlStore, gate: Gate, signing_key: SigningKey, anchors: Path, tmp_path: Path
) -> None:
    """No HMAC key: the records hash to the signed root, so they are whole and complete."""
    out = tmp_path / "export"
    _export_with_checkpoint(store, gate, signing_key, anchors, out)
    assert [p.name for p in (out / "_checkpoints").iterdir()]
    report = verify_export(out, None, [signing_key.verifier])
    assert report.intact, report.findings


def test_an_export_trimmed_and_its_manifest_rewritten_is_caught_by_the_checkpoint(
    store: SqlStore, signing_key: SigningKey, anchors: Path, tmp_path: Path
) -> None:
    """A trimmed file with a rewritten manifest: the signed checkpoint catches it.

    Without the HMAC key, hashes and links alone let it pass.
    """
    out = tmp_path / "export"
    _reads(Gate(store, Policy.load(EXAMPLE_POLICY)), 3)  # today: one file for everything
    make_checkpoints(store, signing_key, anchors, now=now_utc())
    export_log(store, out, actor="reviewer", anchors=(anchors, [signing_key.verifier]))
    (path,) = _files(out)
    rows = pq.read_table(path).to_pylist()
    _write(path, rows[:3])  # the newest covered records dropped
    _fix_manifest(out, last_chain_hash=rows[2]["chain_hash"], last_seq=3)
    assert verify_export(out, None).intact  # hashes and links alone cannot tell
    codes = {f.code.value for f in verify_export(out, None, [signing_key.verifier]).findings}
    assert codes == {"truncated"}
    (out / "_checkpoints").rename(tmp_path / "elsewhere")
    codes = {f.code.value for f in verify_export(out, None, [signing_key.verifier]).findings}
    assert codes == {"no_checkpoint"}


def test_the_cli_exports_with_checkpoints_and_verifies_without_the_hmac_key(  # noqa: PLR0917
    backend: Backend,
    store: SqlStore,
    gate: Gate,
    signing_key: SigningKey,
    anchors: Path,
    in_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Export with --anchor, then verify --export --public-key with no HMAC key at all."""
    runner = CliRunner()
    public = in_tmp / "checkpoint.key.pub"
    public.write_text(signing_key.verifier.text + "\n")
    _reads(gate, 2)
    make_checkpoints(store, signing_key, anchors, now=now_utc())
    monkeypatch.setenv("ACCESSAUDIT_HMAC_KEY", store.key.secret.hex())  # type: ignore[union-attr]
    exported = runner.invoke(
        app,
        [
            "export",
            "--db",
            backend.url,
            "--out",
            "ds",
            "--anchor",
            str(anchors),
            "--public-key",
            str(public),
        ],
    )
    assert exported.exit_code == 0, exported.output
    monkeypatch.delenv("ACCESSAUDIT_HMAC_KEY")
    checked = runner.invoke(app, ["verify", "--export", "ds", "--public-key", str(public)])
    assert checked.exit_code == 0, checked.output
    assert checked.stdout.splitlines()[-1] == "intact"


def test_an_export_with_a_missing_anchor_directory_exports_nothing(
    store: SqlStore, gate: Gate, signing_key: SigningKey, tmp_path: Path
) -> None:
    """A mistyped --anchor is refused before anything is written."""
    _reads(gate, 1)
    out = tmp_path / "export"
    with pytest.raises(ExportError, match="does not exist"):
        export_log(store, out, actor="r", anchors=(tmp_path / "nope", [signing_key.verifier]))
    assert not out.exists()
