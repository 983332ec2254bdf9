"""A refused export leaves its directory exactly as it was, byte for byte, or absent.

Each case sets up a reason to refuse, snapshots the directory tree (every name and every
file's bytes), runs the export, and compares: not a lock file, not a manifest, not an
emptied temporary file, not a created directory may be left behind, and an interrupted
run's leftovers are not deleted by a run that then refuses.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import pytest

from accessaudit import IntegrityError, MacKey, SqlStore
from accessaudit.review._export_files import TEMP_PREFIX
from accessaudit.review.export import MANIFEST, ExportError, export_log
from tests import tampering
from tests.strategies import make_event

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.conftest import Backend

Snapshot = dict[str, bytes | None]


def _snapshot(root: Path) -> Snapshot | None:
    """Every path under ``root`` (itself included) with its bytes; None for a directory."""
    if not root.exists():
        return None
    tree: Snapshot = {".": None if root.is_dir() else root.read_bytes()}
    for path in sorted(root.rglob("*")):
        tree[str(path.relative_to(root))] = None if path.is_dir() else path.read_bytes()
    return tree


@dataclass
class Case:
    """Where the export goes, and what it must raise."""

    backend: Backend
    store: SqlStore
    area: Path  # snapshotted: ``out`` and any parents the export might create
    out: Path
    key: MacKey


def _fill(case: Case, count: int) -> None:
    case.store.append([make_event(subject_ids=(f"u-{i}",)) for i in range(count)])


def _exported(case: Case) -> None:
    _fill(case, 5)
    export_log(case.store, case.out, case.key, actor="reviewer-1")


def _tampered_range(case: Case) -> None:
    _exported(case)
    _fill(case, 5)
    case.backend.drop_guards()
    tampering.set_column(case.backend, 9, "actor_id", "nobody")


def _tampered_first_range(case: Case) -> None:
    case.out = case.area / "new" / "nested" / "out"  # none of them exists yet
    _fill(case, 5)
    case.backend.drop_guards()
    tampering.set_column(case.backend, 3, "actor_id", "nobody")


def _interrupted_then_tampered(case: Case) -> None:
    _tampered_range(case)
    # What a killed run leaves: a temporary file and a data file the manifest does not list.
    (case.out / f"{TEMP_PREFIX}0123.parquet").write_bytes(b"half a file")
    day = next(case.out.glob("day=*"))
    (day / "main-000000000007-000000000007.parquet").write_bytes(b"an unlisted file")


def _other_key(case: Case) -> None:
    _exported(case)
    _fill(case, 1)
    case.key = MacKey(os.urandom(32))


def _edited_manifest(case: Case) -> None:
    _exported(case)
    _fill(case, 1)
    manifest = json.loads((case.out / MANIFEST).read_text())
    manifest["chains"]["main"]["last_seq"] = 4
    (case.out / MANIFEST).write_text(json.dumps(manifest))


def _foreign_file(case: Case) -> None:
    case.out.mkdir()
    (case.out / "report.pdf").write_bytes(b"%PDF")
    _fill(case, 2)


def _a_file_not_a_directory(case: Case) -> None:
    case.out.write_text("x")
    _fill(case, 2)


def _foreign_manifest(case: Case) -> None:
    case.out.mkdir()
    (case.out / MANIFEST).write_text('{"format": "something-else"}')
    _fill(case, 2)


def _manifest_not_json(case: Case) -> None:
    _exported(case)
    (case.out / MANIFEST).write_text("{not json")
    _fill(case, 1)


def _manifest_of_the_wrong_shape(case: Case) -> None:
    _exported(case)
    manifest = json.loads((case.out / MANIFEST).read_text())
    manifest["files"][0]["rows"] = "five"
    (case.out / MANIFEST).write_text(json.dumps(manifest))
    _fill(case, 1)


def _data_file_inside_the_exported_range(case: Case) -> None:
    _exported(case)
    day = next(case.out.glob("day=*"))
    (day / "main-000000000002-000000000003.parquet").write_bytes(b"not ours")
    _fill(case, 1)


def _parent_is_a_file(case: Case) -> None:
    (case.area / "file").write_text("x")
    case.out = case.area / "file" / "out"
    _fill(case, 1)


def _listed_file_missing(case: Case) -> None:
    _exported(case)
    next(case.out.glob("day=*/*.parquet")).unlink()
    _fill(case, 1)


def _manifest_removed(case: Case) -> None:
    _exported(case)
    (case.out / MANIFEST).unlink()
    _fill(case, 1)


def _log_shorter(case: Case) -> None:
    _exported(case)
    case.backend.drop_guards()
    tampering.delete_seq(case.backend, 6)
    tampering.delete_seq(case.backend, 5)


def _chain_gone(case: Case) -> None:
    _exported(case)
    case.backend.drop_guards()
    case.backend.sql("DELETE FROM accessaudit_events")


CASES: dict[str, tuple[Callable[[Case], None], type[Exception], str, bool]] = {
    # name: (set-up, error, message, whether the audit.export record was appended first)
    "damaged range": (
        _tampered_range,
        IntegrityError,
        r"refusing to export chain main seq 6\.\.11: modified_record at seq 9",
        True,
    ),
    "damaged first range, new directories": (
        _tampered_first_range,
        IntegrityError,
        r"refusing to export chain main seq 1\.\.5: modified_record at seq 3",
        True,
    ),
    "damaged range, leftovers of a killed run": (
        _interrupted_then_tampered,
        IntegrityError,
        r"refusing to export chain main seq 6\.\.11: modified_record at seq 9",
        True,
    ),
    "another key": (_other_key, IntegrityError, r"_manifest\.json: the manifest is sealed", False),
    "edited manifest": (_edited_manifest, IntegrityError, r"MAC does not match", False),
    "somebody else's file": (_foreign_file, ExportError, r"did not write \(report\.pdf\)", False),
    "a file, not a directory": (_a_file_not_a_directory, ExportError, "is not a directory", False),
    "foreign manifest": (_foreign_manifest, ExportError, "not an accessaudit export", False),
    "manifest not JSON": (_manifest_not_json, IntegrityError, "cannot be read as an export", False),
    "manifest of the wrong shape": (
        _manifest_of_the_wrong_shape,
        IntegrityError,
        r"is damaged: files/0/rows: 'five' is not of type 'integer'",
        False,
    ),
    "a data file inside the exported range": (
        _data_file_inside_the_exported_range,
        ExportError,
        r"did not write \(day=.*/main-000000000002-000000000003\.parquet\)",
        False,
    ),
    "the parent is a file": (_parent_is_a_file, ExportError, "cannot create, open or lock", False),
    "listed file missing": (_listed_file_missing, ExportError, r"does not match .* missing", False),
    "manifest removed": (_manifest_removed, ExportError, r"export files but no _manifest", False),
    "log shorter than the export": (_log_shorter, IntegrityError, "was already exported", False),
    "chain gone from the log": (_chain_gone, IntegrityError, "chain main is gone", False),
}


@pytest.mark.parametrize("name", CASES)
def test_a_refused_export_leaves_the_directory_as_it_was(
    backend: Backend, store: SqlStore, key: MacKey, tmp_path: Path, name: str
) -> None:
    """Refused for its reason, with nothing in the directory added, changed or removed."""
    setup, error, message, recorded = CASES[name]
    case = Case(backend, store, tmp_path / "area", tmp_path / "area" / "out", key)
    case.area.mkdir()
    setup(case)
    before, count = _snapshot(case.area), store.count()
    with pytest.raises(error, match=message):
        export_log(store, case.out, case.key, actor="reviewer-2")
    assert _snapshot(case.area) == before
    # The read is recorded before the records are checked; a refused directory is not.
    assert store.count() == count + recorded


@pytest.fixture
def exported(store: SqlStore, key: MacKey, tmp_path: Path) -> Path:
    """A dataset with records not yet exported waiting in the store."""
    out = tmp_path / "out"
    store.append([make_event() for _ in range(3)])
    export_log(store, out, key, actor="reviewer-1")
    store.append([make_event()])
    return out


def test_an_export_already_running_is_refused_and_untouched(
    store: SqlStore, key: MacKey, exported: Path
) -> None:
    """The lock is on the directory itself: taking it writes nothing; a second run is refused."""
    before = _snapshot(exported)
    fd = os.open(exported, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ExportError, match=r"another export into .* is running"):
            export_log(store, exported, key, actor="reviewer-2")
    finally:
        os.close(fd)
    assert _snapshot(exported) == before
    assert export_log(store, exported, key, actor="reviewer-2").rows == 2  # free again


def test_a_successful_export_leaves_no_lock_file(
    store: SqlStore, key: MacKey, exported: Path
) -> None:
    """After two runs the directory holds the manifest and day directories, nothing else."""
    export_log(store, exported, key, actor="reviewer-2")
    assert sorted(p.name for p in exported.iterdir() if not p.name.startswith("day=")) == [MANIFEST]


def test_a_directory_replaced_while_being_locked_is_refused(
    store: SqlStore, key: MacKey, exported: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Locked, but the path now names another directory (a refused run removed ours): refused."""
    real_flock = fcntl.flock

    def flock_then_replace(fd: int, operation: int) -> None:
        real_flock(fd, operation)
        exported.rename(exported.with_name("moved"))
        exported.mkdir()

    monkeypatch.setattr(fcntl, "flock", flock_then_replace)
    with pytest.raises(ExportError, match=r"another export into .* is running"):
        export_log(store, exported, key, actor="reviewer-2")
    assert list(exported.iterdir()) == []


def test_a_failure_while_writing_leaves_the_directory_as_it_was(
    store: SqlStore, key: MacKey, exported: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while a file is written: the error goes up, the half-written file goes."""
    before = _snapshot(exported)

    def disk_full(self: object, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export_log(store, exported, key, actor="reviewer-2")
    assert _snapshot(exported) == before
