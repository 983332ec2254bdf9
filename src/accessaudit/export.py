"""Parquet exports of the log: incremental, atomic, streaming, and checkable offline.

``export_log(store, out)`` writes what is new since the last export into ``out``:

- one file per run of records from the same UTC day, ``day=YYYY-MM-DD/<chain>-<first
  seq>-<last seq>.parquet`` (zstd; at most ``ROWS_PER_FILE`` rows), columns fixed by
  ``schemas/export.v1.schema.json``;
- the records are checked as they stream (leaf hashes, links from the previous export's
  last hash, MACs): a damaged range is refused and nothing of it is published;
- files are written under temporary names and renamed into place only when the whole
  range has been written and checked; ``_manifest.json`` (per file: sha256, rows, seq
  range, the chain hash at its end) is replaced last. A run killed half-way leaves the
  previous manifest in force; the next run removes the orphans and exports the range again,
  so the dataset has neither gaps nor duplicates;
- memory stays bounded: rows are read in batches and written file by file.

``verify_export(out, key)`` re-checks a dataset without the database: file hashes against
the manifest, unlisted or missing files, and every record's leaf, link and MAC (with the
key) in seq order across files, by the same checker as ``verify``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from accessaudit._arrow import EXPORT_FORMAT, EXPORT_SCHEMA, to_arrow_row, to_db_row
from accessaudit._clock import from_micros, now_utc, to_iso
from accessaudit._self_audit import record_log_read
from accessaudit.exceptions import ConfigurationError, IntegrityError
from accessaudit.fields import EventType
from accessaudit.findings import ExpectedHead, Finding, FindingCode, VerifyReport
from accessaudit.integrity import GENESIS_HASH
from accessaudit.verify import check_chain

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

    from accessaudit.keys import MacKey
    from accessaudit.store import SqlStore

MANIFEST: Final = "_manifest.json"  # "_": dataset readers skip it
ROWS_PER_FILE: Final = 50_000
_TEMP_PREFIX: Final = ".accessaudit-tmp-"
_FILE_NAME = re.compile(r"(?P<chain>[A-Za-z0-9_.-]+)-(?P<first>\d{12})-(?P<last>\d{12})\.parquet")
_DAY_DIR = re.compile(r"day=\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True, slots=True)
class ExportedFile:
    """One Parquet file of the dataset, as the manifest lists it."""

    path: str
    chain_id: str
    first_seq: int
    last_seq: int
    rows: int
    sha256: str
    end_chain_hash: str
    bytes: int


@dataclass
class ExportResult:
    """What one export run did."""

    out: Path
    files: list[ExportedFile] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    """Files of an interrupted earlier run, not in the manifest, deleted before writing."""

    @property
    def rows(self) -> int:
        """Records written by this run."""
        return sum(f.rows for f in self.files)


class ExportError(ConfigurationError):
    """The export cannot be written as asked: an unusable directory or manifest."""


# -- the directory and its manifest ------------------------------------------------------------


def _chain_token(chain_id: str) -> str:
    """The chain id as it appears in file names (a digest if it is not filename-safe)."""
    if re.fullmatch(r"[A-Za-z0-9_.]+", chain_id):
        return chain_id
    return "c" + hashlib.sha256(chain_id.encode()).hexdigest()[:16]


def _read_manifest(out: Path) -> dict[str, Any]:
    path = out / MANIFEST
    if not path.exists():
        return {"format": EXPORT_FORMAT, "chains": {}, "files": []}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExportError(f"{path} cannot be read as an export manifest: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise ExportError(
            f"{path} is not an accessaudit export manifest ({EXPORT_FORMAT}); "
            "export into an empty directory or one an earlier export wrote"
        )
    return manifest


def _survey(out: Path, listed: set[str]) -> tuple[list[Path], list[str]]:
    """Leftovers of interrupted runs to delete, and files that are not ours at all."""
    leftovers, foreign = [], []
    for entry in sorted(out.iterdir()):
        name = entry.name
        if name == MANIFEST:
            continue
        if name.startswith(_TEMP_PREFIX) and entry.is_file():
            leftovers.append(entry)
        elif _DAY_DIR.fullmatch(name) and entry.is_dir():
            for file in sorted(entry.iterdir()):
                relative = f"{name}/{file.name}"
                if relative in listed:
                    continue
                if _FILE_NAME.fullmatch(file.name) and file.is_file():
                    leftovers.append(file)
                else:
                    foreign.append(relative)
        else:
            foreign.append(name)
    return leftovers, foreign


def _prepare(out: Path) -> tuple[dict[str, Any], list[str]]:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f"{_TEMP_PREFIX}probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ExportError(f"cannot write to {out}: {e.strerror}") from e
    manifest = _read_manifest(out)
    for entry in manifest["files"]:
        path = out / entry["path"]
        if not path.is_file() or path.stat().st_size != entry.get("bytes"):
            what = "is missing" if not path.is_file() else "has changed size"
            raise ExportError(
                f"the manifest does not match {out}: {entry['path']} {what}; check the "
                "dataset with `accessaudit verify --export` before exporting more into it"
            )
    leftovers, foreign = _survey(out, {f["path"] for f in manifest["files"]})
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ExportError(
            f"{out} holds files an accessaudit export did not write ({shown}); "
            "use an empty directory or the one earlier exports went to"
        )
    for leftover in leftovers:  # an interrupted run's files: that range is exported again
        leftover.unlink()
    return manifest, [str(p.relative_to(out)) for p in leftovers]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    manifest["updated_at"] = to_iso(now_utc())
    temp = out / f"{_TEMP_PREFIX}{MANIFEST}"
    with temp.open("w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    temp.replace(out / MANIFEST)
    _fsync_dir(out)


# -- writing -----------------------------------------------------------------------------------


@dataclass
class _Pending:
    """A file written under a temporary name, waiting for the range to pass its checks."""

    temp: Path
    final: str
    chain_id: str
    first_seq: int
    last_seq: int
    rows: int
    end_chain_hash: str


class _Writer:
    """Collects checked rows into day runs and writes each run as a temporary file."""

    def __init__(self, out: Path, chain_id: str) -> None:
        self.out, self.chain_id = out, chain_id
        self.pending: list[_Pending] = []
        # Column lists, not row dicts: a file's worth of rows costs far less memory.
        self.columns: dict[str, list[Any]] = {name: [] for name in EXPORT_SCHEMA.names}
        self.count = 0
        self.day: str | None = None
        self.broken = False

    def add(self, row: Mapping[str, Any]) -> None:
        # The checker parses and checks every row strictly; a row it rejects stops the
        # export, so here a row that will not even convert is only noted.
        try:
            day = from_micros(int(row["occurred_at_us"])).strftime("%Y-%m-%d")
            converted = to_arrow_row(row)
        except (KeyError, TypeError, ValueError, OverflowError):
            self.broken = True
            return
        if self.count and (day != self.day or self.count >= ROWS_PER_FILE):
            self.flush()
        self.day = day
        for name, values in self.columns.items():
            values.append(converted[name])
        self.count += 1

    def flush(self) -> None:
        if not self.count:
            return
        seqs, hashes = self.columns["seq"], self.columns["chain_hash"]
        first, last = seqs[0], seqs[-1]
        name = f"{_chain_token(self.chain_id)}-{first:012d}-{last:012d}.parquet"
        temp = self.out / f"{_TEMP_PREFIX}{uuid.uuid4().hex}.parquet"
        table = pa.Table.from_pydict(self.columns, schema=EXPORT_SCHEMA)
        # Pinned options: the same range exports to the same bytes.
        pq.write_table(
            table,
            temp,
            compression="zstd",
            row_group_size=10_000,
            write_statistics=True,
            use_dictionary=True,
        )
        with temp.open("rb") as handle:
            os.fsync(handle.fileno())
        self.pending.append(
            _Pending(
                temp, f"day={self.day}/{name}", self.chain_id, first, last, self.count, hashes[-1]
            )
        )
        self.columns = {name: [] for name in EXPORT_SCHEMA.names}
        self.count = 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _record_export(store: SqlStore, actor: str, ranges: dict[str, tuple[int, int]]) -> None:
    """The ``audit.export`` event: reading the log is itself recorded, before it happens."""
    first = min((r[0] for r in ranges.values()), default=0)
    last = max((r[1] for r in ranges.values()), default=0)
    record_log_read(
        store,
        EventType.AUDIT_EXPORT,
        actor=actor,
        record_count=sum(b - a + 1 for a, b in ranges.values()),
        attributes={"chains": len(ranges), "from_seq": first, "to_seq": last},
    )


def export_log(
    store: SqlStore,
    out: Path,
    key: MacKey,
    *,
    actor: str,
    progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """Export every record not yet in ``out``; see the module docstring for the guarantees.

    Raises ``ExportError`` for an unusable directory or manifest, and ``IntegrityError``
    when a record in the range fails its checks (nothing of that range is published; run
    ``accessaudit verify``). ``progress`` is called with the number of rows read so far.
    """
    manifest, removed = _prepare(out)
    result = ExportResult(out, removed=removed)
    done: dict[str, Any] = manifest["chains"]
    ranges: dict[str, tuple[int, int]] = {}
    for chain in store.chains():
        head = store.head(chain)
        last = done.get(chain, {}).get("last_seq", 0)
        if head is None or head.seq <= last:
            if head is not None and head.seq < last:
                raise IntegrityError(
                    f"chain {chain} ends at seq {head.seq} but seq {last} was already "
                    "exported: records were deleted or the database rolled back"
                )
            continue
        ranges[chain] = (last + 1, head.seq)
    if not ranges:
        return result
    _record_export(store, actor, ranges)  # fail closed: no record of the export, no export
    pending: list[_Pending] = []
    read = 0
    try:
        for chain, (first, last) in ranges.items():
            previous = done.get(chain, {}).get("last_chain_hash", GENESIS_HASH)
            writer = _Writer(out, chain)

            def feed(
                chain: str = chain, first: int = first, last: int = last, writer: _Writer = writer
            ) -> Iterator[Mapping[str, Any]]:
                nonlocal read
                for row in store.rows(chain, start_seq=first, end_seq=last):
                    writer.add(row)
                    read += 1
                    if progress is not None and read % 1000 == 0:
                        progress(read)
                    yield row

            _, findings = check_chain(chain, feed(), key, after=(first - 1, previous))
            writer.flush()
            pending.extend(writer.pending)
            if findings or writer.broken:
                worst = findings[0] if findings else None
                what = f"{worst.code.value} at seq {worst.where}" if worst else "a malformed row"
                raise IntegrityError(
                    f"refusing to export chain {chain} seq {first}..{last}: {what} "
                    f"({len(findings)} finding(s)); run `accessaudit verify` and investigate"
                )
        if progress is not None:
            progress(read)
        for item in pending:
            target = out / item.final
            target.parent.mkdir(exist_ok=True)
            item.temp.replace(target)
            _fsync_dir(target.parent)
            result.files.append(
                ExportedFile(
                    item.final,
                    item.chain_id,
                    item.first_seq,
                    item.last_seq,
                    item.rows,
                    _sha256(target),
                    item.end_chain_hash,
                    target.stat().st_size,
                )
            )
    finally:
        for item in pending:
            with contextlib.suppress(FileNotFoundError):
                item.temp.unlink()
    for file in result.files:
        manifest["files"].append(_as_dict(file))
        done[file.chain_id] = {"last_seq": file.last_seq, "last_chain_hash": file.end_chain_hash}
    _write_manifest(out, manifest)
    return result


def _as_dict(file: ExportedFile) -> dict[str, Any]:
    return {name: getattr(file, name) for name in ExportedFile.__slots__}


# -- verifying ----------------------------------------------------------------------------------


def _file_rows(path: Path) -> Iterator[dict[str, Any]]:
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=5000):
        for row in batch.to_pylist():
            yield to_db_row(row)


def verify_export(out: Path, key: MacKey | None) -> VerifyReport:
    """Check an exported dataset offline, against its manifest and its own chain links."""
    manifest = _read_manifest(out)
    if not (out / MANIFEST).exists():
        raise ExportError(f"{out} has no {MANIFEST}: it is not an export directory")
    report = VerifyReport(mac_checked=key is not None)
    files: list[dict[str, Any]] = manifest["files"]
    leftovers, foreign = _survey(out, {f["path"] for f in files})
    for name in sorted([*foreign, *(str(p.relative_to(out)) for p in leftovers)]):
        report.findings.append(
            Finding(FindingCode.UNLISTED_FILE, "", None, f"{name} is not in the manifest")
        )
    for chain, head in sorted(manifest["chains"].items()):
        own = sorted((f for f in files if f["chain_id"] == chain), key=lambda f: f["first_seq"])
        present = []
        for entry in own:
            path = out / entry["path"]
            if not path.is_file():
                detail = f"{entry['path']} (seq {entry['first_seq']}..{entry['last_seq']})"
                report.findings.append(
                    Finding(
                        FindingCode.MISSING_FILE, chain, entry["first_seq"], f"{detail} is missing"
                    )
                )
            elif _sha256(path) != entry["sha256"]:
                report.findings.append(
                    Finding(
                        FindingCode.MODIFIED_FILE,
                        chain,
                        entry["first_seq"],
                        f"{entry['path']} does not match its sha256 in the manifest",
                    )
                )
                present.append(path)
            else:
                present.append(path)

        def rows(paths: list[Path] = present, chain: str = chain) -> Iterator[dict[str, Any]]:
            for path in paths:
                try:
                    yield from _file_rows(path)
                except (pa.ArrowException, OSError) as e:
                    # The records it held are reported missing by the chain check.
                    first_line = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
                    report.findings.append(
                        Finding(
                            FindingCode.MODIFIED_FILE,
                            chain,
                            None,
                            f"{path.relative_to(out)} cannot be read as Parquet: {first_line}",
                        )
                    )

        expected = [ExpectedHead(chain, int(head["last_seq"]), str(head["last_chain_hash"]))]
        summary, findings = check_chain(chain, rows(), key, expected)
        report.chains.append(summary)
        report.findings.extend(findings)
    return report
