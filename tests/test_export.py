"""Parquet exports: round trip, incremental runs, interruptions, tampering, other readers."""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from accessaudit import (
    AccessEvent,
    EventType,
    FindingCode,
    MacKey,
    SqlStore,
    StoredEvent,
    load_key,
    verify_store,
)
from accessaudit._arrow import EXPORT_SCHEMA, schema_document, to_db_row
from accessaudit._export_files import ROW_GROUP
from accessaudit.cli import app
from accessaudit.exceptions import IntegrityError
from accessaudit.export import MANIFEST, ExportError, export_log, verify_export
from accessaudit.store._rows import from_row
from tests import tampering
from tests.strategies import events, make_event

if TYPE_CHECKING:
    from tests.conftest import Backend

ROOT = Path(__file__).parent.parent
SCHEMA_FILE = ROOT / "schemas" / "export.v1.schema.json"
runner = CliRunner()


def _fill(store: SqlStore, count: int) -> None:
    store.append([make_event(subject_ids=(f"u-{i}",)) for i in range(count)])


def _exported(out: Path) -> list[StoredEvent]:
    """Every record in the dataset, read with plain pyarrow and rebuilt."""
    table = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    rows = sorted(table.to_pylist(), key=lambda r: (r["chain_id"], r["seq"]))
    return [from_row(to_db_row(row)) for row in rows]


def _export(store: SqlStore, out: Path) -> Any:
    assert store.key is not None
    return export_log(store, out, store.key, actor="reviewer-1")


def test_schema_file_matches_the_code() -> None:
    """schemas/export.v1.schema.json lists exactly the columns and Arrow types written."""
    if os.environ.get("ACCESSAUDIT_REGENERATE_SCHEMAS") == "1":
        SCHEMA_FILE.write_text(json.dumps(schema_document(), indent=2) + "\n")
    assert json.loads(SCHEMA_FILE.read_text()) == schema_document()


def test_export_round_trips_every_record(store: SqlStore, tmp_path: Path) -> None:
    """What the dataset holds is exactly what the log holds, records and seals."""
    _fill(store, 120)
    result = _export(store, tmp_path / "out")
    live = list(store.read())
    # Recorded before the export ran, its own audit.export record goes out with the next.
    assert _exported(tmp_path / "out") == live[:-1]
    assert result.rows == 120
    assert live[-1].event.event_type is EventType.AUDIT_EXPORT
    assert live[-1].event.actor_id == "reviewer-1"
    file = pq.ParquetFile(tmp_path / "out" / result.files[0].path)
    assert file.schema_arrow == EXPORT_SCHEMA
    assert file.metadata.row_group(0).column(0).compression == "ZSTD"


def test_a_large_file_is_written_a_row_group_at_a_time(
    sqlite_backend: Backend, key: MacKey, tmp_path: Path
) -> None:
    """A day of 25,000 records: one file of three row groups, every record intact."""
    with SqlStore(sqlite_backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        for _ in range(5):
            _fill(store, 5000)
        result = _export(store, tmp_path / "out")
        assert [f.rows for f in result.files] == [25_000]
        file = pq.ParquetFile(tmp_path / "out" / result.files[0].path)
        groups = [file.metadata.row_group(i).num_rows for i in range(file.num_row_groups)]
        assert groups == [ROW_GROUP, ROW_GROUP, 25_000 - 2 * ROW_GROUP]
        assert _exported(tmp_path / "out") == list(store.read(1, 25_000))
        assert verify_export(tmp_path / "out", key).intact


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(events(), min_size=1, max_size=5, unique_by=lambda e: e.event_id))
def test_any_event_survives_the_export(
    tmp_path: Path, key: MacKey, batch: list[AccessEvent]
) -> None:
    """Property: store -> Parquet -> read gives the same events, byte for byte in the hash."""
    work = tmp_path / os.urandom(4).hex()
    work.mkdir()
    with SqlStore(f"sqlite:///{work}/a.db", key=key, must_exist=False) as store:
        store.create_schema()
        store.append(batch)
        _export(store, work / "out")
        assert _exported(work / "out")[: len(batch)] == list(store.read(1, len(batch)))
    assert verify_export(work / "out", key).intact


def test_incremental_runs_have_no_gaps_and_no_duplicates(store: SqlStore, tmp_path: Path) -> None:
    """Each run adds only what is new; the manifest's ranges tile the chain."""
    out = tmp_path / "out"
    _fill(store, 30)
    first = _export(store, out)
    _fill(store, 5)
    second = _export(store, out)
    assert min(f.first_seq for f in second.files) == max(f.last_seq for f in first.files) + 1
    manifest = json.loads((out / MANIFEST).read_text())
    ranges = sorted((f["first_seq"], f["last_seq"]) for f in manifest["files"])
    assert ranges[0][0] == 1
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges))
    assert [r.seq for r in _exported(out)] == list(range(1, ranges[-1][1] + 1))
    assert manifest["chains"]["main"]["last_seq"] == ranges[-1][1]
    assert verify_export(out, store.key).intact


def test_an_interrupted_run_is_repaired_by_the_next(
    store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after publishing some files but before the manifest: the next run redoes it."""
    out = tmp_path / "out"
    _fill(store, 10)
    _export(store, out)
    _fill(store, 10)
    calls = {"n": 0}
    real = Path.replace

    def crash_after_first(self: Path, target: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if killed between two renames
        return real(self, target)

    # Another day's records, so that there are at least two files to rename.
    store.append([make_event(occurred_at=make_event().occurred_at.replace(year=2030))])
    monkeypatch.setattr(Path, "replace", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        _export(store, out)
    monkeypatch.undo()
    result = _export(store, out)
    assert result.removed  # the half-published file of the interrupted run
    exported = [r.seq for r in _exported(out)]
    assert exported == sorted(set(exported)) == list(range(1, store.count() + 1))[: len(exported)]
    assert verify_export(out, store.key).intact


def test_a_killed_export_leaves_a_consistent_dataset(backend: Backend, tmp_path: Path) -> None:
    """SIGKILL at several moments of an export; after a clean rerun, nothing lost or doubled."""
    secret = os.urandom(32).hex()
    key = MacKey.from_hex(secret, "test")
    with SqlStore(backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        for day in range(6):
            when = make_event().occurred_at.replace(day=1 + day)
            store.append([make_event(occurred_at=when) for _ in range(400)])
    out = tmp_path / "out"
    env = {**os.environ, "ACCESSAUDIT_HMAC_KEY": secret}
    command = [str(Path(sys.executable).parent / "accessaudit"), "export", "--out", str(out)]
    for delay in (0.3, 0.8, 1.5):
        child = subprocess.Popen([*command, "--db", backend.url], env=env)
        time.sleep(delay)
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
        child.wait()
    done = subprocess.run([*command, "--db", backend.url], env=env, check=False, timeout=600)
    assert done.returncode == 0
    with SqlStore(backend.url, key=key) as store:
        total = store.count()
    seqs = [r.seq for r in _exported(out)]
    assert sorted(seqs) == sorted(set(seqs))
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(seqs) >= total - 1  # all but, at most, the last run's own audit.export record
    assert verify_export(out, key).intact
    assert not [p for p in out.iterdir() if p.name.startswith(".accessaudit-tmp-")]


def test_tampered_files_are_found(store: SqlStore, tmp_path: Path) -> None:
    """Edited bytes, a deleted file, a stray file, a rewritten file with a fixed manifest."""
    out = tmp_path / "out"
    for day in range(1, 5):
        when = make_event().occurred_at.replace(day=day)
        store.append([make_event(occurred_at=when) for _ in range(5)])
    result = _export(store, out)
    files = [out / f.path for f in result.files]
    assert verify_export(out, store.key).intact
    # 1. A stray file.
    (out / files[0].parent.name / "extra.parquet").write_bytes(b"x")
    # 2. A deleted file.
    files[1].unlink()
    # 3. A record rewritten by someone without the key, manifest hash fixed to match.
    table = pq.read_table(files[2])
    actors = table.column("actor_id").to_pylist()
    actors[0] = "someone-else"
    changed = table.set_column(
        table.schema.get_field_index("actor_id"), "actor_id", pa.array(actors)
    )
    pq.write_table(changed, files[2], compression="zstd")
    manifest = json.loads((out / MANIFEST).read_text())
    from accessaudit.export import _sha256

    for entry in manifest["files"]:
        if entry["path"] == result.files[2].path:
            entry["sha256"] = _sha256(files[2])
    (out / MANIFEST).write_text(json.dumps(manifest))
    # 4. Bytes flipped in another file.
    data = bytearray(files[3].read_bytes())
    data[len(data) // 2] ^= 0xFF
    files[3].write_bytes(bytes(data))
    codes = {f.code for f in verify_export(out, store.key).findings}
    assert {
        FindingCode.UNLISTED_FILE,
        FindingCode.MISSING_FILE,
        FindingCode.MISSING_RECORD,
        FindingCode.MODIFIED_RECORD,
        FindingCode.MODIFIED_FILE,
    } <= codes


def test_a_tampered_range_is_not_exported(
    backend: Backend, store: SqlStore, tmp_path: Path
) -> None:
    """An edited row in the new range: refused, nothing published, the manifest unchanged."""
    out = tmp_path / "out"
    _fill(store, 5)
    _export(store, out)
    before = (out / MANIFEST).read_text()
    _fill(store, 5)
    backend.drop_guards()
    tampering.set_column(backend, 9, "actor_id", "nobody")
    refused = r"refusing to export chain main seq 6\.\.11: modified_record at seq 9"
    with pytest.raises(IntegrityError, match=refused):
        _export(store, out)
    assert (out / MANIFEST).read_text() == before
    assert [r.seq for r in _exported(out)] == list(range(1, 6))
    assert not [p for p in out.iterdir() if p.name.startswith(".accessaudit-tmp-")]


def test_a_log_shorter_than_the_export_is_refused(
    backend: Backend, store: SqlStore, tmp_path: Path
) -> None:
    """Records deleted after an export (or a restored backup) are noticed at the next one."""
    _fill(store, 5)
    _export(store, tmp_path / "out")
    backend.drop_guards()
    tampering.delete_seq(backend, 6)
    tampering.delete_seq(backend, 5)
    with pytest.raises(IntegrityError, match="was already exported"):
        _export(store, tmp_path / "out")


def test_other_readers_open_the_dataset(store: SqlStore, tmp_path: Path) -> None:
    """DuckDB reads it as a Hive-partitioned dataset, without accessaudit."""
    day_3 = make_event().occurred_at.replace(day=3)
    for when in (day_3, day_3.replace(day=4)):
        store.append([make_event(occurred_at=when) for _ in range(4)])
    out = tmp_path / "out"
    _export(store, out)
    pattern = str(out / "**" / "*.parquet")
    relation = duckdb.sql(
        f"SELECT day, count(*) AS n, min(seq) AS first FROM read_parquet('{pattern}', "
        "hive_partitioning = true) GROUP BY day ORDER BY day"
    )
    assert relation is not None
    rows = relation.fetchall()
    assert [str(r[0]) for r in rows] == [f"{day_3.date()}", f"{day_3.date().replace(day=4)}"]
    assert sum(r[1] for r in rows) == 8  # the export's own record goes out with the next one


def test_the_directory_must_be_ours(store: SqlStore, tmp_path: Path) -> None:
    """Somebody else's files, a file as the directory, a foreign manifest: refused."""
    _fill(store, 2)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "report.pdf").write_bytes(b"%PDF")
    with pytest.raises(ExportError, match=r"did not write \(report\.pdf\)"):
        _export(store, busy)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="is not a directory"):
        _export(store, tmp_path / "file")
    other = tmp_path / "other"
    other.mkdir()
    (other / MANIFEST).write_text('{"format": "something-else"}')
    with pytest.raises(ExportError, match="not an accessaudit export manifest"):
        _export(store, other)
    assert store.count() == 2  # refused before the export was even recorded


def test_cli_export_and_verify_export(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commands: export, offline verify, exit codes; the files equal the store's records."""
    monkeypatch.chdir(tmp_path)
    for name in ("ACCESSAUDIT_HMAC_KEY", "ACCESSAUDIT_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ACCESSAUDIT_DB", backend.url)
    assert runner.invoke(app, ["demo", "--events", "50"]).exit_code == 0
    result = runner.invoke(app, ["export", "--out", "out", "--by", "auditor"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("exported 50 record(s), seq 1..50, to ")
    with SqlStore(backend.url) as store:
        live = list(store.read())
    assert _exported(Path("out")) == live[:50]  # every seq once, values equal the store's
    assert live[50].event.actor_id == "auditor"
    checked = runner.invoke(app, ["verify", "--export", "out"])
    assert (checked.exit_code, checked.stdout.splitlines()[-1]) == (0, "intact")
    shutil.rmtree(sorted(Path("out").glob("day=*"))[0])
    assert runner.invoke(app, ["verify", "--export", "out"]).exit_code == 1
    Path("junk").mkdir()
    Path("junk/x.txt").write_text("x")
    bad = runner.invoke(app, ["export", "--out", "junk"])
    assert bad.exit_code == 2
    assert bad.stderr.startswith("error: junk holds files an accessaudit export did not write")
    with SqlStore(backend.url) as store:
        assert verify_store(store, load_key()).intact


def test_a_manifest_that_does_not_match_the_directory_is_refused(
    store: SqlStore, tmp_path: Path
) -> None:
    """A listed file that is gone or changed stops the next export before anything is done."""
    out = tmp_path / "out"
    _fill(store, 3)
    result = _export(store, out)
    (out / result.files[0].path).unlink()
    count = store.count()
    with pytest.raises(ExportError, match=r"the manifest does not match .* is missing"):
        _export(store, out)
    assert store.count() == count  # not even the audit.export record


def test_progress_is_reported_while_streaming(store: SqlStore, tmp_path: Path) -> None:
    """The progress callback sees the row count grow, ending at the total."""
    _fill(store, 2500)
    seen: list[int] = []
    assert store.key is not None
    export_log(store, tmp_path / "out", store.key, actor="x", progress=seen.append)
    assert seen == [1000, 2000, 2500]


def test_files_without_a_manifest_are_never_deleted(store: SqlStore, tmp_path: Path) -> None:
    """A dataset whose manifest was removed is refused, and every file stays."""
    out = tmp_path / "out"
    _fill(store, 5)
    _export(store, out)
    (out / MANIFEST).unlink()
    before = sorted(p.name for p in out.rglob("*.parquet"))
    with pytest.raises(ExportError, match=r"holds export files but no _manifest\.json"):
        _export(store, out)
    assert sorted(p.name for p in out.rglob("*.parquet")) == before


def test_a_chain_gone_from_the_log_is_refused(tmp_path: Path, key: MacKey) -> None:
    """Exporting into a dataset from an empty (or another) database is not 'up to date'."""
    with SqlStore(f"sqlite:///{tmp_path}/a.db", key=key, must_exist=False) as store:
        store.create_schema()
        _fill(store, 3)
        _export(store, tmp_path / "out")
    with SqlStore(f"sqlite:///{tmp_path}/b.db", key=key, must_exist=False) as other:
        other.create_schema()
        with pytest.raises(IntegrityError, match=r"chain main is gone from the log"):
            _export(other, tmp_path / "out")


def test_an_edited_manifest_is_caught_with_the_key(store: SqlStore, tmp_path: Path) -> None:
    """A manifest edited to hide a dropped file fails its MAC; stray chains are reported.

    Dropping the last file and moving the manifest's head back is invisible without the key;
    a file under a chain the manifest does not list is reported, not skipped.
    """
    out = tmp_path / "out"
    for day in (1, 2):
        store.append([make_event(occurred_at=make_event().occurred_at.replace(day=day))])
    result = _export(store, out)
    manifest = json.loads((out / MANIFEST).read_text())
    dropped = manifest["files"].pop()
    (out / dropped["path"]).unlink()
    manifest["chains"]["main"] = {
        "last_seq": manifest["files"][-1]["last_seq"],
        "last_chain_hash": manifest["files"][-1]["end_chain_hash"],
    }
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert verify_export(out, None).intact  # without the key this edit cannot be seen
    codes = [f.code for f in verify_export(out, store.key).findings]
    assert codes == [FindingCode.BAD_MAC]
    manifest["chains"] = {}
    (out / MANIFEST).write_text(json.dumps(manifest))
    unlisted = verify_export(out, None).findings
    assert [f.code for f in unlisted] == [FindingCode.MODIFIED_FILE]
    assert "which the manifest's chains do not list" in unlisted[0].detail
    assert result.files


def test_corrupt_columns_are_findings_not_crashes(store: SqlStore, tmp_path: Path) -> None:
    """A file rewritten with a zone-less timestamp column is reported, and verify goes on."""
    out = tmp_path / "out"
    _fill(store, 3)
    result = _export(store, out)
    path = out / result.files[0].path
    table = pq.read_table(path)
    index = table.schema.get_field_index("occurred_at")
    naive = table.column("occurred_at").cast(pa.timestamp("us"))
    pq.write_table(table.set_column(index, "occurred_at", naive), path)
    report = verify_export(out, store.key)
    assert FindingCode.MODIFIED_FILE in {f.code for f in report.findings}
    assert not report.intact


def test_one_export_at_a_time(store: SqlStore, tmp_path: Path) -> None:
    """A second export into a directory being exported into is refused, not interleaved."""
    out = tmp_path / "out"
    _fill(store, 3)
    _export(store, out)
    with (out / ".accessaudit-lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ExportError, match=r"another export into .* is running"):
            _export(store, out)


def test_cli_refusal_of_a_damaged_range_is_exit_1(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records that fail their checks are findings: exit 1, like verify."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACCESSAUDIT_DB", backend.url)
    monkeypatch.delenv("ACCESSAUDIT_HMAC_KEY", raising=False)
    assert runner.invoke(app, ["demo", "--events", "20"]).exit_code == 0
    backend.drop_guards()
    tampering.set_column(backend, 5, "actor_id", "nobody")
    result = runner.invoke(app, ["export", "--out", "out"])
    assert result.exit_code == 1
    assert "refusing to export chain main" in result.stderr
