"""``verify --export``: each way of damaging a dataset, one test each, exact codes and seqs.

The dataset: 20 records over four days, so four files of five (seq 1..5, 6..10, 11..15,
16..20). Each test damages it one way, as someone without the key could, and checks the
complete list of findings, with and without the key where that differs.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from accessaudit import FindingCode, MacKey, SqlStore
from accessaudit.cli.app import app
from accessaudit.record._rows import from_row
from accessaudit.record.integrity import leaf_hash, link_hash
from accessaudit.review._arrow import EXPORT_SCHEMA, to_db_row
from accessaudit.review._export_files import TEMP_PREFIX, sha256_of
from accessaudit.review.export import MANIFEST, ExportError, export_log, verify_export
from tests.strategies import make_event

if TYPE_CHECKING:
    from pathlib import Path

    from accessaudit.record.findings import VerifyReport
    from tests.conftest import Backend

F = FindingCode
runner = CliRunner()


def _found(report: VerifyReport) -> list[tuple[FindingCode, int | None, int | None]]:
    return [(f.code, f.seq, f.last_seq) for f in report.findings]


@pytest.fixture
def out(sqlite_backend: Backend, key: MacKey, tmp_path: Path) -> Path:
    """An exported dataset of four files; the log behind it is not needed any more."""
    with SqlStore(sqlite_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        for day in (1, 2, 3, 4):
            when = datetime(2026, 3, day, 12, tzinfo=UTC)
            store.append([make_event(occurred_at=when) for _ in range(5)])
        export_log(store, tmp_path / "out", key, actor="reviewer-1")
    return tmp_path / "out"


def _files(out: Path) -> list[Path]:
    """The dataset's files in seq order."""
    manifest = json.loads((out / MANIFEST).read_text())
    return [out / f["path"] for f in sorted(manifest["files"], key=lambda f: f["first_seq"])]


def _rows(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    return rows


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=EXPORT_SCHEMA), path, compression="zstd")


def _fix_manifest(
    out: Path, *, last_chain_hash: str | None = None, last_seq: int | None = None
) -> None:
    """Make the manifest match the files' bytes again (and the head), without the key."""
    manifest = json.loads((out / MANIFEST).read_text())
    for entry in manifest["files"]:
        path = out / entry["path"]
        rows = _rows(path)
        entry.update(
            sha256=sha256_of(path),
            bytes=path.stat().st_size,
            rows=len(rows),
            end_chain_hash=rows[-1]["chain_hash"],
        )
        if last_seq is not None:
            entry["last_seq"] = rows[-1]["seq"]
    if last_chain_hash is not None:
        manifest["chains"]["main"]["last_chain_hash"] = last_chain_hash
    if last_seq is not None:
        manifest["chains"]["main"]["last_seq"] = last_seq
    (out / MANIFEST).write_text(json.dumps(manifest))


def _edit_record_8(out: Path, *, rehash: bool) -> list[dict[str, Any]]:
    """Change seq 8's actor (file 2, row 3); with ``rehash`` also recompute its leaf hash."""
    path = _files(out)[1]
    rows = _rows(path)
    row = rows[2]
    assert row["seq"] == 8
    row["actor_id"] = "someone-else"
    if rehash:
        stored = from_row(to_db_row(row))
        row["leaf_hash"] = leaf_hash(stored.chain_id, stored.seq, stored.event)
    _write(path, rows)
    return rows


def test_an_untouched_dataset_verifies(out: Path, key: MacKey) -> None:
    """No findings with the key or without it; every record is counted."""
    for mac_key in (key, None):
        report = verify_export(out, mac_key)
        assert report.findings == []
        assert [(c.chain_id, c.rows, c.head_seq) for c in report.chains] == [("main", 20, 20)]


def test_a_stray_file_is_unlisted(out: Path, key: MacKey) -> None:
    """A file in a day directory that the manifest does not list."""
    stray = _files(out)[0].parent / "extra.parquet"
    stray.write_bytes(b"x")
    report = verify_export(out, key)
    assert _found(report) == [(F.UNLISTED_FILE, None, None)]
    assert report.findings[0].detail == f"{stray.parent.name}/extra.parquet is not in the manifest"


def test_a_temporary_file_is_unlisted_and_said_to_be_an_interrupted_run(
    out: Path, key: MacKey
) -> None:
    """A killed export's temporary file: unlisted, and the detail says what it is."""
    (out / f"{TEMP_PREFIX}0123.parquet").write_bytes(b"half a file")
    report = verify_export(out, key)
    assert _found(report) == [(F.UNLISTED_FILE, None, None)]
    assert "an interrupted export; the next export removes it" in report.findings[0].detail


def test_a_deleted_file_is_missing_with_its_records(out: Path, key: MacKey) -> None:
    """The second file gone: missing_file, and its five records missing as one run."""
    _files(out)[1].unlink()
    assert _found(verify_export(out, key)) == [
        (F.MISSING_FILE, 6, None),
        (F.MISSING_RECORD, 6, 10),
    ]


def test_a_deleted_last_file_truncates_the_chain(out: Path, key: MacKey) -> None:
    """The last file gone: missing_file, and the chain ends before the manifest's head."""
    _files(out)[3].unlink()
    assert _found(verify_export(out, key)) == [(F.MISSING_FILE, 16, None), (F.TRUNCATED, 20, None)]


def test_rewritten_bytes_with_the_same_records_are_a_modified_file(out: Path, key: MacKey) -> None:
    """Same rows, other bytes (another compression): only the file's sha256 tells."""
    path = _files(out)[1]
    pq.write_table(pq.read_table(path), path, compression="snappy")
    report = verify_export(out, key)
    assert _found(report) == [(F.MODIFIED_FILE, 6, None)]
    assert report.findings[0].detail.endswith("does not match its sha256 in the manifest")


def test_a_truncated_file_is_modified_and_its_records_missing(out: Path, key: MacKey) -> None:
    """Half a file: its hash differs, it cannot be read, its records are missing."""
    path = _files(out)[1]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    report = verify_export(out, key)
    assert _found(report) == [
        (F.MODIFIED_FILE, 6, None),
        (F.MODIFIED_FILE, 6, None),
        (F.MISSING_RECORD, 6, 10),
    ]
    assert "cannot be read" in report.findings[1].detail


def test_an_edited_record_with_its_file_hash_fixed_is_a_modified_record(
    out: Path, key: MacKey
) -> None:
    """Seq 8 edited and the manifest's sha256 made to match: the record's leaf hash tells."""
    _edit_record_8(out, rehash=False)
    _fix_manifest(out)
    assert _found(verify_export(out, None)) == [(F.MODIFIED_RECORD, 8, None)]
    # With the key the edited manifest fails its own MAC too.
    assert _found(verify_export(out, key)) == [
        (F.BAD_MAC, None, None),
        (F.MODIFIED_RECORD, 8, None),
    ]


def test_a_record_rehashed_without_the_key_breaks_its_link(out: Path, key: MacKey) -> None:
    """Seq 8 edited with its leaf hash recomputed: its chain hash no longer follows."""
    _edit_record_8(out, rehash=True)
    _fix_manifest(out)
    assert _found(verify_export(out, None)) == [(F.BROKEN_LINK, 8, None)]
    assert _found(verify_export(out, key)) == [(F.BAD_MAC, None, None), (F.BROKEN_LINK, 8, None)]


def test_a_chain_recomputed_without_the_key_fails_every_mac_from_the_edit(
    out: Path, key: MacKey
) -> None:
    """Leaf and chain hashes recomputed from seq 8 to the end: only the MACs (and key) tell."""
    files = _files(out)
    rows = _edit_record_8(out, rehash=True)
    previous = rows[1]["chain_hash"]  # seq 7, untouched
    for path in files[1:]:
        rows = _rows(path) if path != files[1] else rows
        for row in rows:
            if row["seq"] >= 8:
                row["chain_hash"] = previous = link_hash(previous, row["leaf_hash"])
        _write(path, rows)
    _fix_manifest(out, last_chain_hash=previous)
    assert verify_export(out, None).intact  # what --skip-mac cannot see
    assert _found(verify_export(out, key)) == [(F.BAD_MAC, None, None), (F.BAD_MAC, 8, 20)]


def test_a_file_with_fewer_rows_than_listed_is_modified(out: Path, key: MacKey) -> None:
    """The second file rewritten without its last record, hash fixed: count and range differ."""
    path = _files(out)[1]
    _write(path, _rows(path)[:-1])
    manifest = json.loads((out / MANIFEST).read_text())
    entry = next(f for f in manifest["files"] if f["first_seq"] == 6)
    entry.update(sha256=sha256_of(path), bytes=path.stat().st_size)
    (out / MANIFEST).write_text(json.dumps(manifest))
    report = verify_export(out, None)
    assert _found(report) == [(F.MODIFIED_FILE, 6, None), (F.MISSING_RECORD, 10, 10)]
    assert "holds 4 row(s) for seq 6..9" in report.findings[0].detail


def test_a_corrupt_column_is_a_finding_not_a_crash(out: Path, key: MacKey) -> None:
    """A file rewritten with a zone-less timestamp column cannot be read back: reported."""
    path = _files(out)[1]
    table = pq.read_table(path)
    index = table.schema.get_field_index("occurred_at")
    naive = table.column("occurred_at").cast(pa.timestamp("us"))
    pq.write_table(table.set_column(index, "occurred_at", naive), path)
    report = verify_export(out, key)
    assert _found(report) == [
        (F.MODIFIED_FILE, 6, None),
        (F.MODIFIED_FILE, 6, None),
        (F.MISSING_RECORD, 6, 10),
    ]
    assert "cannot be read" in report.findings[1].detail


def test_a_manifest_edited_to_hide_a_dropped_file_fails_its_mac(out: Path, key: MacKey) -> None:
    """The last file dropped and the head moved back: invisible without the key, bad_mac with."""
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["files"].sort(key=lambda f: f["first_seq"])
    dropped = manifest["files"].pop()
    (out / dropped["path"]).unlink()
    shutil.rmtree((out / dropped["path"]).parent)
    last = manifest["files"][-1]
    manifest["chains"]["main"] = {
        "last_seq": last["last_seq"],
        "last_chain_hash": last["end_chain_hash"],
    }
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert verify_export(out, None).intact
    report = verify_export(out, key)
    assert _found(report) == [(F.BAD_MAC, None, None)]
    assert "the manifest's MAC does not match its content" in report.findings[0].detail


def test_a_file_of_a_chain_the_manifest_does_not_list_is_reported(out: Path) -> None:
    """Files under a chain missing from the manifest's chains are reported, not skipped."""
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["chains"] = {}
    (out / MANIFEST).write_text(json.dumps(manifest))
    report = verify_export(out, None)
    assert _found(report) == [(F.MODIFIED_FILE, None, None)] * 4
    assert "which the manifest's chains do not list" in report.findings[0].detail


def test_another_key_is_named(out: Path) -> None:
    """Checked with another key: the manifest's seal and every record name the key used."""
    other = MacKey(os.urandom(32))
    report = verify_export(out, other)
    assert _found(report) == [(F.BAD_MAC, None, None), (F.UNKNOWN_KEY, 1, 20)]
    assert "the manifest is sealed by key" in report.findings[0].detail


def test_a_deleted_manifest_is_a_finding(out: Path, key: MacKey) -> None:
    """No manifest but export files: missing_manifest (not a usage error)."""
    (out / MANIFEST).unlink()
    for mac_key in (key, None):
        report = verify_export(out, mac_key)
        assert _found(report) == [(F.MISSING_MANIFEST, None, None)]
        assert "under 4 day=* directories cannot be checked" in report.findings[0].detail


def test_a_directory_that_is_no_export_is_a_usage_error(tmp_path: Path) -> None:
    """An empty or absent directory is not an export: an error, not a finding."""
    with pytest.raises(ExportError, match=r"no _manifest\.json and no day=\* directories"):
        verify_export(tmp_path, None)
    with pytest.raises(ExportError, match="does not exist"):
        verify_export(tmp_path / "nowhere", None)


def test_cli_verify_export_exit_codes(
    out: Path, key: MacKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Intact: 0. A deleted manifest: 1, with its code. Not an export directory: 2."""
    monkeypatch.setenv("ACCESSAUDIT_HMAC_KEY", key.secret.hex())
    intact = runner.invoke(app, ["verify", "--export", str(out)])
    assert (intact.exit_code, intact.stdout.splitlines()[-1]) == (0, "intact")
    (out / MANIFEST).unlink()
    gone = runner.invoke(app, ["verify", "--export", str(out)])
    assert gone.exit_code == 1
    assert gone.stdout.splitlines()[-2].startswith("missing_manifest ")
    assert gone.stdout.splitlines()[-1] == "NOT INTACT: 1 finding(s)"
    assert gone.stderr == ""
    json_report = runner.invoke(app, ["verify", "--export", str(out), "--format", "json"])
    assert json_report.exit_code == 1
    codes = [f["code"] for f in json.loads(json_report.stdout)["findings"]]
    assert codes == ["missing_manifest"]
    empty = out.parent / "empty"
    empty.mkdir()
    usage = runner.invoke(app, ["verify", "--export", str(empty)])
    assert usage.exit_code == 2
    assert usage.stderr.startswith(f"error: {empty} has no _manifest.json")
