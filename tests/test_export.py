"""Parquet exports: round trip, incremental runs, interruptions, tampering, other readers."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
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
from accessaudit.cli.app import app
from accessaudit.record._rows import from_row
from accessaudit.review._arrow import EXPORT_SCHEMA, schema_document, to_db_row
from accessaudit.review._export_files import ROW_GROUP, TEMP_PREFIX
from accessaudit.review.export import MANIFEST, export_log, verify_export
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


def test_an_empty_log_exports_to_an_empty_dataset(store: SqlStore, tmp_path: Path) -> None:
    """Nothing to export: the directory gets a sealed manifest of nothing, which verifies."""
    out = tmp_path / "out"
    for _ in range(2):  # the first run writes the manifest, the second finds nothing new
        result = _export(store, out)
        assert (result.files, result.removed) == ([], [])
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST]
    manifest = json.loads((out / MANIFEST).read_text())
    assert (manifest["chains"], manifest["files"]) == ({}, [])
    assert verify_export(out, store.key).intact
    assert store.count() == 0  # nothing was read, so no audit.export record


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


def _day(day: int) -> datetime:
    return datetime(2026, 3, day, 12, tzinfo=UTC)


def _kill_mid_run(stage: str, files: int, out: Path, url: str, secret: str) -> None:
    """Run ``accessaudit export`` until ``files`` files are through ``stage``; SIGKILL it there."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_exporter", stage, str(files), str(out), url],
        cwd=ROOT,
        env={**os.environ, "ACCESSAUDIT_HMAC_KEY": secret},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        lines = iter(child.stdout.readline, "")  # its own log lines may come first
        assert "stopped\n" in lines, "the export ended without reaching the stop"
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL  # killed at the stop, not finished


def _temporary(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(TEMP_PREFIX))


def _data_files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.glob("day=*/*.parquet"))


@pytest.mark.parametrize(
    ("stage", "first_export"),
    [("writing", False), ("publishing", False), ("publishing", True)],
)
def test_an_export_killed_mid_run_is_completed_by_the_next(
    backend: Backend, tmp_path: Path, stage: str, first_export: bool
) -> None:
    """SIGKILLed after 2 of its files: the old manifest holds, the rerun has no gap or double.

    The child stops itself after the second file is written (or renamed into place) and only
    then is killed, so the kill is known to land mid-run. The dataset the manifest describes
    still verifies (the killed run's files show only as unlisted); the next run removes them
    and exports the whole range again.
    """
    secret = os.urandom(32).hex()
    key = MacKey.from_hex(secret, "test")
    out = tmp_path / "out"
    with SqlStore(backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        for day in (1, 2):
            store.append([make_event(occurred_at=_day(day)) for _ in range(50)])
        if not first_export:
            _export(store, out)  # seq 1..100; its audit.export record is seq 101, today
        for day in (3, 4, 5, 6):
            store.append([make_event(occurred_at=_day(day)) for _ in range(50)])
    # The run to kill has a file per day: 1..6 (first export), or today's and 3..6.
    files = 6 if first_export else 5
    before = (out / MANIFEST).read_bytes() if not first_export else None
    listed = _data_files(out) if not first_export else []
    _kill_mid_run(stage, 2, out, backend.url, secret)

    published = [f for f in _data_files(out) if f not in listed]
    if stage == "writing":
        assert (len(_temporary(out)), published) == (2, [])
    else:
        assert (len(_temporary(out)), len(published)) == (files - 2, 2)
    if first_export:
        # Written just before the first rename: an empty manifest, so the files are unlisted.
        assert json.loads((out / MANIFEST).read_text())["files"] == []
    else:
        assert (out / MANIFEST).read_bytes() == before
    report = verify_export(out, key)
    leftovers = sorted([*_temporary(out), *published])
    unlisted = [(FindingCode.UNLISTED_FILE, None)] * len(leftovers)
    assert [(f.code, f.seq) for f in report.findings] == unlisted
    assert sorted(f.detail.split(" ")[0] for f in report.findings) == leftovers
    assert [(c.rows, c.head_seq) for c in report.chains] == ([] if first_export else [(100, 100)])

    with SqlStore(backend.url, key=key) as store:
        result = _export(store, out)
        live = list(store.read())
    assert sorted(result.removed) == leftovers
    assert _exported(out) == live[:-1]  # every seq once; only this run's own record is not out
    assert _temporary(out) == []
    assert verify_export(out, key).intact


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


def test_progress_is_reported_while_streaming(store: SqlStore, tmp_path: Path) -> None:
    """The progress callback sees the row count grow, ending at the total."""
    _fill(store, 2500)
    seen: list[int] = []
    assert store.key is not None
    export_log(store, tmp_path / "out", store.key, actor="x", progress=seen.append)
    assert seen == [1000, 2000, 2500]


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
