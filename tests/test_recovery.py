"""A chain halted by a forged or damaged newest record, and its recovery keeping the evidence.

The owner forges with raw SQL (triggers dropped where an edit needs it); the operator holds
the key. Appends then stop with an error naming the chain, the seq and the finding; verify
shows the finding; ``recover`` acknowledges it with a sealed record; appends go on; verify
still lists the finding, acknowledged, and passes. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
import typer
from typer.testing import CliRunner

from accessaudit import (
    AuditUnavailable,
    ConfigurationError,
    Gate,
    IntegrityError,
    MacKey,
    SqlStore,
    access_context,
    export_log,
    verify_export,
    verify_store,
)
from accessaudit.cli.app import app as accessaudit_app
from accessaudit.cli.recover import recover
from accessaudit.exceptions import ChainHalted
from accessaudit.record._chain import check_chain
from accessaudit.record._recovery_record import RecoveryClaim, recovery_event
from accessaudit.record._rows import to_row
from accessaudit.record.events import StoredEvent
from accessaudit.record.fields import EventType
from accessaudit.record.findings import Finding, FindingCode
from accessaudit.record.integrity import leaf_hash, link_hash
from accessaudit.review.recovery import recover_chain
from accessaudit.store._append import DamagedTail
from tests import tampering
from tests.gatekit import Desk, agent
from tests.strategies import make_event

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import Backend

runner = CliRunner()
recover_app = typer.Typer()
recover_app.command()(recover)  # the command as cli.py registers it


@pytest.fixture
def key_in_env(key: MacKey, monkeypatch: pytest.MonkeyPatch) -> MacKey:
    """The test's key is what the CLI finds ($ACCESSAUDIT_HMAC_KEY)."""
    monkeypatch.setenv("ACCESSAUDIT_HMAC_KEY", key.secret.hex())
    monkeypatch.delenv("ACCESSAUDIT_KEY_FILE", raising=False)
    return key


@pytest.fixture
def desk(gate: Gate) -> Desk:
    """Protected functions over the test's gate."""
    return Desk(gate)


def _grant(gate: Gate) -> str:
    expires = gate.setup.clock() + timedelta(days=2)
    grant = gate.registry.issue_grant(
        customer_id="acme",
        case_id="CASE-1",
        data_categories=["contact"],
        expires_at=expires,
        issued_by="agent-7",
    )
    return grant.grant_id


def _cli(application: typer.Typer, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(application, list(args))
    return result.exit_code, result.stdout, result.stderr


def _forge_tail(backend: Backend, store: SqlStore) -> dict[str, object]:
    """Insert a forged record after the newest one: right hashes, a guessed MAC."""
    head = store.head()
    assert head is not None
    row = tampering.forged_copy(store, 2, head.seq + 1)
    tampering.insert_row(backend, row)
    return row


def test_readme_recovery_procedure_end_to_end(
    backend: Backend, store: SqlStore, key_in_env: MacKey, gate: Gate, desk: Desk
) -> None:
    """The README's procedure, step by step, through the gate and the CLI."""
    grant = _grant(gate)  # issued before the break: still honoured after the recovery
    with access_context(agent(grant)):
        desk.contacts("acme", ["c-1"])
    forged = _forge_tail(backend, store)
    seq = int(str(forged["seq"]))

    # 1. Gated reads fail closed, naming the chain, the seq and the finding.
    with access_context(agent(grant)), pytest.raises(AuditUnavailable) as caught:
        desk.contacts("acme", ["c-2"])
    halted = caught.value.__cause__
    assert isinstance(halted, ChainHalted)
    assert (halted.chain_id, halted.seq, halted.code) == ("main", seq, "bad_mac")
    assert (
        f"refusing to append: chain 'main' seq {seq}: MAC does not match the chain hash "
        "(bad_mac); appends to this chain are halted; run `accessaudit verify` and see the "
        'README, "Recovering from a forged or corrupted newest record"'
    ) in str(caught.value)
    assert desk.ran == ["contacts"]  # the second body never ran
    assert store.count() == seq

    # 2. verify shows the finding with its code and seq.
    code, out, err = _cli(accessaudit_app, "verify", "--db", backend.url)
    assert code == 1
    assert err == f"warning: this verify could not be recorded in the log: {halted}\n"
    line = f"{'bad_mac':<18} chain main seq {seq} event {forged['event_id']}: MAC does not match"
    assert f"{line} the chain hash\n" in out

    # 3. The operator recovers, naming the seq.
    code, out, err = _cli(
        recover_app,
        *("--db", backend.url, "--seq", str(seq), "--by", "alice"),
        *("--reason", "INC-7: row forged by hand; investigated"),
    )
    assert (code, err) == (0, "")
    record = next(store.read(seq + 1, seq + 1))
    good = next(store.read(seq - 1, seq - 1))
    assert out == (
        f"chain main: recovery recorded as seq {seq + 1} by alice\n"
        f"  acknowledged: bad_mac at seq {seq}\n"
        f"  last sound record: seq {seq - 1}, chain hash {good.chain_hash}\n"
        f"appends continue after seq {seq + 1}; the acknowledged records stay in the log "
        "and `accessaudit verify` still lists them\n"
        f"head main:{seq + 1}:{record.chain_hash}\n"
    )
    event = record.event
    assert (event.event_type, event.action, event.actor_id) == (
        EventType.AUDIT_STARTED,
        "recover",
        "alice",
    )
    assert event.justification == "INC-7: row forged by hand; investigated"
    assert dict(event.attributes) == {
        "recovery_format": 1,
        "last_good_seq": seq - 1,
        "last_good_hash": good.chain_hash,
        "halted_seq": seq,
        "acknowledged": f"bad_mac@{seq}",
    }
    assert event.customer_visible is False

    # 4. Gated reads work again, under the grant issued before the break.
    with access_context(agent(grant)):
        assert len(desk.contacts("acme", ["c-2"])) == 1
    assert desk.ran == ["contacts", "contacts"]
    assert store.count() == seq + 3

    # 5. verify lists the forged row, acknowledged, and passes.
    report = verify_store(store, key_in_env)
    assert report.intact
    note = f"; acknowledged by the recovery record at seq {seq + 1}"
    assert report.findings == [
        Finding(
            FindingCode.BAD_MAC,
            "main",
            seq,
            f"MAC does not match the chain hash{note}",
            str(forged["event_id"]),
            acknowledged_by=seq + 1,
        )
    ]
    code, out, err = _cli(accessaudit_app, "verify", "--db", backend.url)
    assert (code, err) == (0, "")  # (verify may record itself: appends work)
    assert f"{line} the chain hash{note}\n" in out
    assert out.splitlines()[-1] == "intact, with 1 acknowledged finding(s) (see above)"
    assert backend.sql(  # the evidence is still there, untouched
        "SELECT mac FROM accessaudit_events WHERE seq = :seq", seq=seq
    ) == [(forged["mac"],)]


def test_newest_record_edited_in_place_is_recovered(
    backend: Backend, store: SqlStore, key: MacKey
) -> None:
    """The genuine newest record rewritten (hashes recomputed): halted, then recovered."""
    store.append([make_event() for _ in range(3)])
    backend.drop_guards()
    tampering.rewrite_without_key(backend, store, 3, "someone-else")
    with pytest.raises(ChainHalted, match=r"chain 'main' seq 3: .*\(bad_mac\)") as caught:
        store.append([make_event()])
    assert caught.value.code == "bad_mac"
    done = recover_chain(store, halted_seq=3, actor="alice", reason="INC-8")
    assert (done.last_good_seq, done.record.seq) == (2, 4)
    assert [(f.code, f.seq) for f in done.acknowledged] == [(FindingCode.BAD_MAC, 3)]
    assert [r.seq for r in store.append([make_event()])] == [5]
    report = verify_store(store, key)
    assert report.intact
    assert [(f.code, f.seq, f.acknowledged_by) for f in report.findings] == [
        (FindingCode.BAD_MAC, 3, 4)
    ]
    assert next(store.read(3, 3)).event.actor_id == "someone-else"  # kept as found


def test_a_recovered_chain_exports_and_the_export_verifies(
    backend: Backend, store: SqlStore, key: MacKey, tmp_path: Path
) -> None:
    """Export carries the acknowledged damage as it is; the offline check still passes."""
    store.append([make_event() for _ in range(3)])
    _forge_tail(backend, store)
    with pytest.raises(
        IntegrityError, match=r"seq 4: .*\(bad_mac\); appends to this chain are halted"
    ):
        export_log(store, tmp_path / "before", key, actor="auditor")
    recover_chain(store, halted_seq=4, actor="alice", reason="INC-7")
    result = export_log(store, tmp_path / "after", key, actor="auditor")
    assert result.rows == store.count() - 1  # all but the export's own audit.export record
    report = verify_export(tmp_path / "after", key)
    assert report.intact
    assert [(f.code, f.seq, f.acknowledged_by) for f in report.findings] == [
        (FindingCode.BAD_MAC, 4, 5)
    ]


def test_several_forged_rows_are_acknowledged_together(
    backend: Backend, store: SqlStore, key: MacKey
) -> None:
    """Forged rows at 3 and 4: one run, named as verify names it, acknowledged as a whole."""
    store.append([make_event(), make_event()])
    _forge_tail(backend, store)
    _forge_tail(backend, store)
    done = recover_chain(store, halted_seq=4, actor="alice", reason="INC-9")
    assert done.record.event.attributes["acknowledged"] == "bad_mac@3..4"
    assert verify_store(store, key).intact


def test_tail_sealed_under_another_key_id_names_unknown_key(
    backend: Backend, store: SqlStore, key: MacKey
) -> None:
    """A forged tail relabelled with a made-up key id halts as unknown_key and is recoverable."""
    store.append([make_event(), make_event()])
    row = tampering.forged_copy(store, 2, 3)
    row["mac_key_id"] = "0123456789abcdef"
    tampering.insert_row(backend, row)
    with pytest.raises(ChainHalted, match=r"sealed by key 0123456789abcdef.*\(unknown_key\)"):
        store.append([make_event()])
    recover_chain(store, halted_seq=3, actor="alice", reason="INC-10")
    assert [r.seq for r in store.append([make_event()])] == [5]
    assert verify_store(store, key).intact


def _refused(store: SqlStore, seq: int, words: str) -> None:
    before = store.count()
    with pytest.raises(ConfigurationError, match=words):
        recover_chain(store, halted_seq=seq, actor="alice", reason="r")
    assert store.count() == before  # nothing recorded


def test_recovery_never_hides_deleted_records(
    backend: Backend, store: SqlStore, key: MacKey
) -> None:
    """Records deleted before a forged tail: refused, and verify still fails on the gap."""
    store.append([make_event() for _ in range(10)])
    backend.drop_guards()
    for seq in range(3, 10):
        tampering.delete_seq(backend, seq)
    tampering.set_column(backend, 10, "mac", "0" * 64)
    _refused(store, 10, r"more than forged or edited records \(missing_record\)")
    report = verify_store(store, key)
    assert not report.intact
    assert [(f.code, f.seq, f.acknowledged_by) for f in report.findings] == [
        (FindingCode.MISSING_RECORD, 3, None),
        (FindingCode.BAD_MAC, 10, None),
    ]


def test_recovery_refuses_what_it_cannot_acknowledge(
    backend: Backend, store: SqlStore, key: MacKey
) -> None:
    """No records, a sound tail, the wrong seq, or the wrong key: refused, nothing recorded."""
    _refused(store, 1, "has no records")
    store.append([make_event(), make_event()])
    _refused(store, 2, r"needs no recovery: its newest record \(seq 2\) passes every check")
    _forge_tail(backend, store)
    _refused(store, 2, "ends at seq 3, not 2")
    with SqlStore(backend.url, key=MacKey(os.urandom(32))) as wrong_key:
        _refused(wrong_key, 3, "is it the key this log was written with")
    recover_chain(store, halted_seq=3, actor="alice", reason="r")
    _refused(store, 4, "needs no recovery")  # done once is enough


def test_recovery_refuses_a_chain_that_changed_meanwhile(backend: Backend, store: SqlStore) -> None:
    """The tail checked is no longer the tail when the record is written: nothing stored."""
    store.append([make_event(), make_event()])
    forged = _forge_tail(backend, store)
    anchor = next(store.read(2, 2)).chain_hash
    claim = RecoveryClaim(2, anchor, 3, "bad_mac@3")
    _forge_tail(backend, store)  # another forgery lands after the check
    with pytest.raises(ConfigurationError, match="changed while it was being recovered"):
        store.append_recovery(
            recovery_event(claim, actor="alice", reason="r"),
            after=DamagedTail("main", 3, str(forged["chain_hash"]), anchor),
        )
    assert store.count() == 4


def _forged_recovery(backend: Backend, store: SqlStore, claim: RecoveryClaim) -> None:
    """A recovery record written by someone without the key: hashes right, MAC guessed."""
    head = store.head()
    assert head is not None
    assert store.key is not None
    event = recovery_event(claim, actor="mallory", reason="nothing to see")
    leaf = leaf_hash("main", head.seq + 1, event)
    fake = StoredEvent(
        event=event,
        chain_id="main",
        seq=head.seq + 1,
        leaf_hash=leaf,
        chain_hash=link_hash(head.chain_hash, leaf),
        mac=secrets.token_hex(32),
        mac_key_id=store.key.key_id,
    )
    tampering.insert_row(backend, to_row(fake))


def test_forged_recovery_record_acknowledges_nothing(
    backend: Backend, store: SqlStore, key: MacKey
) -> None:
    """Without the key a recovery record cannot be made: it is one more forged row."""
    store.append([make_event(), make_event()])
    _forge_tail(backend, store)
    anchor = next(store.read(2, 2)).chain_hash
    _forged_recovery(backend, store, RecoveryClaim(2, anchor, 3, "bad_mac@3"))
    report = verify_store(store, key)
    assert not report.intact
    assert [(f.code, f.where, f.acknowledged_by) for f in report.findings] == [
        (FindingCode.BAD_MAC, "3..4", None)
    ]
    with pytest.raises(ChainHalted, match="seq 4"):
        store.append([make_event()])


@pytest.mark.parametrize("change", ["edit", "delete"])
def test_acknowledged_rows_changed_later_are_findings_again(
    backend: Backend, store: SqlStore, key: MacKey, change: str
) -> None:
    """The forged row edited or removed after the recovery: no longer what was acknowledged."""
    store.append([make_event(), make_event()])
    _forge_tail(backend, store)
    recover_chain(store, halted_seq=3, actor="alice", reason="r")
    backend.drop_guards()
    if change == "edit":
        tampering.set_column(backend, 3, "actor_id", "covered-up")
    else:
        tampering.delete_seq(backend, 3)
    report = verify_store(store, key)
    assert not report.intact
    assert report.findings
    assert all(f.acknowledged_by is None for f in report.findings)


def test_without_the_key_no_finding_is_acknowledged(
    backend: Backend, store: SqlStore, key: MacKey
) -> None:
    """--skip-mac cannot tell a real recovery record from a forged one, so honours none."""
    store.append([make_event(), make_event(), make_event()])
    backend.drop_guards()
    tampering.set_column(backend, 3, "actor_id", "someone-else")  # modified_record, no MAC needed
    recover_chain(store, halted_seq=3, actor="alice", reason="r")
    assert verify_store(store, key).intact
    report = verify_store(store, None)
    assert [(f.code, f.seq, f.acknowledged_by) for f in report.findings] == [
        (FindingCode.MODIFIED_RECORD, 3, None)
    ]


def test_continued_check_from_the_last_sound_record_acknowledges(
    backend: Backend, store: SqlStore, key: MacKey
) -> None:
    """A check that starts after the last sound record (an incremental export) agrees."""
    store.append([make_event(), make_event()])
    _forge_tail(backend, store)
    recover_chain(store, halted_seq=3, actor="alice", reason="r")
    store.append([make_event()])
    anchor = next(store.read(2, 2)).chain_hash
    rows = list(store.rows(start_seq=3))
    _, findings = check_chain("main", rows, key, after=(2, anchor))
    assert [(f.code, f.seq, f.acknowledged_by) for f in findings] == [(FindingCode.BAD_MAC, 3, 4)]


def test_two_process_verify_honours_a_recovery_at_its_split(
    backend: Backend, store: SqlStore, key: MacKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Damage ending at the split point, recovery just after it: same report as serial."""
    monkeypatch.setattr("accessaudit.review.verify.PARALLEL_MIN_ROWS", 2)  # even a short chain
    store.append([make_event() for _ in range(4)])
    _forge_tail(backend, store)  # seq 5
    recover_chain(store, halted_seq=5, actor="alice", reason="r")  # seq 6
    store.append([make_event() for _ in range(4)])  # head 10: the worker takes 6..10
    serial = verify_store(store, key, workers=1)
    assert serial.intact
    assert verify_store(store, key, workers=2) == serial
