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
- a refused run (a damaged range, a foreign or damaged directory, a wrong key, another
  export running) leaves the directory exactly as it found it: the checks come first, its
  temporary files are deleted, a directory it had to create is removed, and the lock is
  taken on the directory itself, not on a file in it;
- memory stays bounded: rows are read in batches and written file by file.

``verify_export(out, key)`` re-checks a dataset without the database: file hashes against
the manifest, unlisted or missing files, and every record's leaf, link and MAC (with the
key) in seq order across files, by the same checker as ``verify``. A dataset whose manifest
is gone is a finding (``missing_manifest``), not an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final

import pyarrow.parquet as pq
from jsonschema import Draft202012Validator

from accessaudit.exceptions import ExportError, IntegrityError, MacKeyError
from accessaudit.record._chain import check_chain
from accessaudit.record._clock import now_utc, to_iso
from accessaudit.record.fields import EventType
from accessaudit.record.findings import ExpectedHead, Finding, FindingCode, VerifyReport
from accessaudit.record.integrity import GENESIS_HASH
from accessaudit.record.keys import FROM_STORE, KeyChoice, key_for
from accessaudit.record.merkle import TreeHeads
from accessaudit.review._arrow import EXPORT_FORMAT, to_db_row
from accessaudit.review._export_files import (
    TEMP_PREFIX,
    Pending,
    Writer,
    chain_token,
    discard,
    fsync_directory,
    lock_directory,
    remove_directories,
    sha256_of,
)
from accessaudit.review._reading import stored_rows
from accessaudit.review._self_audit import record_log_read
from accessaudit.review.anchors import (
    EXPORT_CHECKPOINTS,
    copy_checkpoints,
    read_export_checkpoints,
)
from accessaudit.review.checkpoints import check_export, leaf_bytes

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from pathlib import Path

    from accessaudit.record.keys import MacKey
    from accessaudit.record.notes import VerifierKey
    from accessaudit.store import AuditStore

__all__ = ["MANIFEST", "ExportError", "ExportResult", "ExportedFile", "export_log", "verify_export"]

MANIFEST: Final = "_manifest.json"  # "_": dataset readers skip it
#: The lock file of earlier versions, still found in datasets they wrote; not ours to delete.
_OLD_LOCK: Final = ".accessaudit-lock"
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


# -- the directory and its manifest ------------------------------------------------------------


_MANIFEST_SCHEMA: Final = {
    "type": "object",
    "required": ["format", "chains", "files"],
    "properties": {
        "format": {"const": EXPORT_FORMAT},
        "chains": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["last_seq", "last_chain_hash"],
                "properties": {
                    "last_seq": {"type": "integer", "minimum": 0},
                    "last_chain_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                },
            },
        },
        "files": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "path",
                    "chain_id",
                    "first_seq",
                    "last_seq",
                    "rows",
                    "sha256",
                    "end_chain_hash",
                    "bytes",
                ],
                "properties": {
                    "path": {"type": "string"},
                    "chain_id": {"type": "string"},
                    "first_seq": {"type": "integer", "minimum": 1},
                    "last_seq": {"type": "integer", "minimum": 1},
                    "rows": {"type": "integer", "minimum": 1},
                    "bytes": {"type": "integer", "minimum": 0},
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "end_chain_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                },
            },
        },
        "mac": {"type": "string"},
        "mac_key_id": {"type": "string"},
    },
}
_MANIFEST_VALIDATOR: Final = Draft202012Validator(_MANIFEST_SCHEMA)


def _read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest, or None if there is none; a manifest of the wrong shape is refused."""
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise IntegrityError(f"{path} cannot be read as an export manifest: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise ExportError(
            f"{path} is not an accessaudit export manifest ({EXPORT_FORMAT}); "
            "export into an empty directory or one an earlier export wrote"
        )
    error = next(iter(_MANIFEST_VALIDATOR.iter_errors(manifest)), None)
    if error is not None:
        where = "/".join(map(str, error.absolute_path)) or "(top level)"
        raise IntegrityError(f"{path} is damaged: {where}: {error.message}")
    return manifest


def _manifest_digest(manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k not in ("mac", "mac_key_id")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _manifest_problem(manifest: Mapping[str, Any], key: MacKey) -> str | None:
    """Why the manifest's MAC does not hold under ``key``, or None if it does."""
    if manifest.get("mac_key_id") != key.key_id:
        return f"the manifest is sealed by key {manifest.get('mac_key_id')}, not {key.key_id}"
    expected = key.seal_manifest(_manifest_digest(manifest))
    if not hmac.compare_digest(str(manifest.get("mac")), expected):
        return "the manifest's MAC does not match its content: it was edited"
    return None


def _survey(out: Path, listed: set[str]) -> tuple[list[Path], list[Path], list[str]]:
    """Temporary files, unlisted data files, and anything an export would not have written."""
    temporary, unlisted, foreign = [], [], []
    for entry in sorted(out.iterdir()):
        name = entry.name
        if name in (MANIFEST, _OLD_LOCK) or (name == EXPORT_CHECKPOINTS and entry.is_dir()):
            continue
        if name.startswith(TEMP_PREFIX) and entry.is_file():
            temporary.append(entry)
        elif _DAY_DIR.fullmatch(name) and entry.is_dir():
            for file in sorted(entry.iterdir()):
                relative = f"{name}/{file.name}"
                if relative in listed:
                    continue
                if _FILE_NAME.fullmatch(file.name) and file.is_file():
                    unlisted.append(file)
                else:
                    foreign.append(relative)
        else:
            foreign.append(name)
    return temporary, unlisted, foreign


def _prepare(out: Path, key: MacKey) -> tuple[dict[str, Any] | None, list[Path]]:
    """Check the directory and its manifest; find what an interrupted run left behind.

    Returns the manifest (None before the first export) and the leftovers to delete once
    the run is sure to publish. Changes nothing: a refusal must leave the directory as it was.
    """
    manifest = _read_manifest(out)
    listed = set() if manifest is None else {f["path"] for f in manifest["files"]}
    temporary, unlisted, foreign = _survey(out, listed)
    if manifest is None:
        if unlisted:
            raise ExportError(
                f"{out} holds export files but no {MANIFEST}: an interrupted first export, or "
                "a removed manifest. Nothing was deleted; if the first export was interrupted, "
                "remove the day=* directories and run it again"
            )
    else:
        problem = _manifest_problem(manifest, key)
        if problem is not None:
            raise IntegrityError(f"{out}/{MANIFEST}: {problem}; run `accessaudit verify --export`")
        for entry in manifest["files"]:
            path = out / entry["path"]
            if not path.is_file() or path.stat().st_size != entry["bytes"]:
                what = "is missing" if not path.is_file() else "has changed size"
                raise ExportError(
                    f"the manifest does not match {out}: {entry['path']} {what}; check the "
                    "dataset with `accessaudit verify --export` before exporting more into it"
                )
    # An unlisted data file is an interrupted run's only if it starts after what the
    # manifest says was exported; one inside the exported range is somebody else's.
    chains = {} if manifest is None else manifest["chains"]
    exported = {chain_token(c): v["last_seq"] for c, v in chains.items()}
    for file in unlisted:
        match = _FILE_NAME.fullmatch(file.name)
        assert match is not None  # noqa: S101 - _survey matched it
        if int(match["first"]) <= exported.get(match["chain"], 0):
            foreign.append(str(file.relative_to(out)))
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ExportError(
            f"{out} holds files an accessaudit export did not write ({shown}); "
            "use an empty directory or the one earlier exports went to"
        )
    return manifest, [*temporary, *unlisted]


def _remove_leftovers(out: Path, leftovers: list[Path]) -> list[str]:
    """Delete an interrupted run's files (their range is exported again); their names."""
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    return [str(p.relative_to(out)) for p in leftovers]


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One export at a time into a directory (two would delete each other's files).

    The lock is taken on the directory itself (``lock_directory``), not on a lock file in
    it, and a directory this run had to create is removed again if the run fails: a refused
    export leaves nothing behind.
    """
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")
    created: list[Path] = []
    try:
        try:
            fd = lock_directory(out, created)
        except BlockingIOError as e:
            raise ExportError(f"another export into {out} is running; try again later") from e
        except OSError as e:
            raise ExportError(f"cannot create, open or lock {out}: {e.strerror}") from e
        try:
            yield
        finally:
            os.close(fd)
    except BaseException:
        remove_directories(created)
        raise


def _write_manifest(out: Path, manifest: dict[str, Any], key: MacKey) -> None:
    manifest["updated_at"] = to_iso(now_utc())
    manifest["mac_key_id"] = key.key_id
    manifest["mac"] = key.seal_manifest(_manifest_digest(manifest))
    temp = out / f"{TEMP_PREFIX}{MANIFEST}"
    with temp.open("w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    temp.replace(out / MANIFEST)
    fsync_directory(out)


# -- writing -----------------------------------------------------------------------------------


def _record_export(store: AuditStore, actor: str, ranges: dict[str, tuple[int, int]]) -> None:
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


def _new_ranges(store: AuditStore, done: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """Per chain, the seq range not exported yet; refuses a log shorter than its export."""
    ranges: dict[str, tuple[int, int]] = {}
    for chain in sorted(set(store.chains()) | set(done)):
        head = store.head(chain)
        last = done.get(chain, {}).get("last_seq", 0)
        if (head.seq if head else 0) < last:
            now_ends = f"ends at seq {head.seq}" if head else "is gone from the log"
            raise IntegrityError(
                f"chain {chain} {now_ends} but seq {last} was already exported: records "
                "were deleted, the database was rolled back, or this is another database"
            )
        if head is not None and head.seq > last:
            ranges[chain] = (last + 1, head.seq)
    return ranges


@dataclass
class _Counter:
    """Rows read so far, reported every 1,000 rows to an optional callback."""

    callback: Callable[[int], None] | None
    rows: int = 0

    def step(self) -> None:
        self.rows += 1
        if self.callback is not None and self.rows % 1000 == 0:
            self.callback(self.rows)


def _write_range(
    store: AuditStore,
    out: Path,
    key: MacKey,
    chain: str,
    *,
    span: tuple[int, int, str],
    counter: _Counter,
) -> list[Pending]:
    """Write one chain's new records as temporary files, checking them as they stream."""
    first, last, previous = span
    pending: list[Pending] = []
    writer: Writer | None = None
    try:
        with stored_rows(store, chain, start_seq=first, end_seq=last) as (columns, rows):
            writer = Writer(out, chain, columns, pending)

            def feed(writer: Writer = writer) -> Iterator[Sequence[Any]]:
                for row in rows:
                    writer.add(row)
                    counter.step()
                    yield row

            after = (first - 1, previous)
            _, findings = check_chain(chain, feed(), key, after=after, columns=columns)
            writer.flush()
    except BaseException:
        if writer is not None:
            writer.abandon()
        discard(pending)
        raise
    # Damage a sealed recovery record acknowledges (see ``recovery``) is exported as it is,
    # and shows again as acknowledged when the dataset is verified.
    open_findings = [f for f in findings if f.acknowledged_by is None]
    if open_findings or writer.broken:
        discard(pending)
        worst = open_findings[0] if open_findings else None
        what = f"{worst.code.value} at seq {worst.where}" if worst else "a malformed row"
        raise IntegrityError(
            f"refusing to export chain {chain} seq {first}..{last}: {what} "
            f"({len(open_findings)} finding(s)); run `accessaudit verify` and investigate"
        )
    return pending


def _publish(out: Path, pending: list[Pending]) -> list[ExportedFile]:
    """Rename every checked file into place (each rename and directory fsynced)."""
    published = []
    for item in pending:
        target = out / item.final
        target.parent.mkdir(exist_ok=True)
        item.temp.replace(target)
        fsync_directory(target.parent)
        published.append(
            ExportedFile(
                item.final,
                item.chain_id,
                item.first_seq,
                item.last_seq,
                item.rows,
                sha256_of(target),
                item.end_chain_hash,
                target.stat().st_size,
            )
        )
    return published


def export_log(
    store: AuditStore,
    out: Path,
    key: KeyChoice = FROM_STORE,
    *,
    actor: str,
    progress: Callable[[int], None] | None = None,
    anchors: tuple[Path, Sequence[VerifierKey]] | None = None,
) -> ExportResult:
    """Export every record not yet in ``out``; see the module docstring for the guarantees.

    Every record is checked, and the manifest sealed, with the store's key (given once, to
    the store); ``MacKeyError`` if it has none.

    Raises ``ExportError`` for an unusable directory or manifest, and ``IntegrityError``
    when the log or the dataset fails its checks (nothing of the range is published; run
    ``accessaudit verify``); either way the directory is left exactly as it was.
    ``progress`` is called with the number of rows read so far. ``anchors`` (the anchor
    directory and its trusted public keys): the newest checkpoint of each chain the
    dataset then holds in full is copied into it (``_checkpoints/``), so that
    ``verify_export`` can prove it complete with the public key alone.
    """
    mac_key = key_for(store.key, key, "exporting")
    if mac_key is None:
        raise MacKeyError("exporting needs the HMAC key: every record is checked with it")
    if anchors is not None and not anchors[0].is_dir():
        # Checked first: the checkpoints are copied after the export, which must not
        # succeed only to fail on a mistyped --anchor.
        raise ExportError(f"anchor directory {anchors[0]} does not exist")
    with _exclusive(out):
        manifest, leftovers = _prepare(out, mac_key)
        done: dict[str, Any] = {} if manifest is None else manifest["chains"]
        ranges = _new_ranges(store, done)
        if ranges:
            _record_export(store, actor, ranges)  # fail closed: no record of it, no export
        pending: list[Pending] = []
        try:
            counter = _Counter(progress)
            for chain, (first, last) in ranges.items():
                previous = done.get(chain, {}).get("last_chain_hash", GENESIS_HASH)
                span = (first, last, previous)
                pending += _write_range(store, out, mac_key, chain, span=span, counter=counter)
            if progress is not None and ranges:
                progress(counter.rows)
            # Every check has passed: only from here on does the directory change.
            result = ExportResult(out, removed=_remove_leftovers(out, leftovers))
            if manifest is None:
                # Written before any data file, so that a first run killed half-way leaves
                # files a manifest does not list (and the next run may remove), never files
                # without one.
                manifest = {"format": EXPORT_FORMAT, "chains": {}, "files": []}
                _write_manifest(out, manifest, mac_key)
            result.files = _publish(out, pending)
        finally:
            discard(pending)  # renamed ones are gone already; the rest must not linger
        if result.files:
            for file in result.files:
                manifest["files"].append(asdict(file))
                manifest["chains"][file.chain_id] = {
                    "last_seq": file.last_seq,
                    "last_chain_hash": file.end_chain_hash,
                }
            _write_manifest(out, manifest, mac_key)
        if anchors is not None and manifest is not None:
            heads = {chain: int(head["last_seq"]) for chain, head in manifest["chains"].items()}
            copy_checkpoints(anchors[0], anchors[1], out, heads)
    return result


# -- verifying ----------------------------------------------------------------------------------


def _file_rows(path: Path) -> Iterator[dict[str, Any]]:
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=5000):
        for row in batch.to_pylist():
            yield to_db_row(row)


class _FileCheck:
    """Streams one file's rows into the chain check, and compares them with its entry."""

    def __init__(self, out: Path, entry: Mapping[str, Any], report: VerifyReport) -> None:
        self.out, self.entry, self.report = out, entry, report

    def finding(self, code: FindingCode, detail: str) -> None:
        entry = self.entry
        where = f"{entry['path']} (seq {entry['first_seq']}..{entry['last_seq']})"
        self.report.findings.append(
            Finding(code, entry["chain_id"], entry["first_seq"], f"{where} {detail}")
        )

    def rows(self) -> Iterator[dict[str, Any]]:
        path = self.out / self.entry["path"]
        if not path.is_file():
            self.finding(FindingCode.MISSING_FILE, "is missing")
            return
        if sha256_of(path) != self.entry["sha256"]:
            self.finding(FindingCode.MODIFIED_FILE, "does not match its sha256 in the manifest")
        count, first, last, last_hash = 0, None, None, None
        try:
            for row in _file_rows(path):
                count += 1
                first = row.get("seq") if count == 1 else first
                last, last_hash = row.get("seq"), row.get("chain_hash")
                yield row
        except Exception as e:  # noqa: BLE001 - any failure to read is a damaged file
            text = str(e).strip()
            first_line = text.splitlines()[0][:200] if text else type(e).__name__
            self.finding(FindingCode.MODIFIED_FILE, f"cannot be read: {first_line}")
            return
        entry = self.entry
        listed = (entry["rows"], entry["first_seq"], entry["last_seq"], entry["end_chain_hash"])
        if (count, first, last, last_hash) != listed:
            self.finding(
                FindingCode.MODIFIED_FILE,
                f"holds {count} row(s) for seq {first}..{last}, not the rows, seq range or end "
                "chain hash the manifest lists",
            )


def verify_export(
    out: Path, key: MacKey | None, public_keys: Sequence[VerifierKey] | None = None
) -> VerifyReport:
    """Check an exported dataset offline, against its manifest and its own chain links.

    With ``key`` the manifest's own MAC is checked too, so a manifest edited to hide
    dropped or changed files is found; without it, only hashes and links are. With
    ``public_keys`` the records are also checked against the signed checkpoints the export
    holds: unchanged and complete up to each (see ``checkpoints.check_export``).
    """
    if not out.is_dir():
        raise ExportError(f"{out} {'is not a directory' if out.exists() else 'does not exist'}")
    manifest = _read_manifest(out)
    report = VerifyReport(mac_checked=key is not None)
    findings = report.findings
    if manifest is None:
        days = [p for p in out.iterdir() if _DAY_DIR.fullmatch(p.name) and p.is_dir()]
        if not days:
            msg = f"{out} has no {MANIFEST} and no day=* directories: it is not an export"
            raise ExportError(msg)
        detail = (
            f"{MANIFEST} is missing: the files under {len(days)} day=* "
            f"director{'y' if len(days) == 1 else 'ies'} cannot be checked (an export writes "
            "it before its first data file: it was removed or lost)"
        )
        findings.append(Finding(FindingCode.MISSING_MANIFEST, "", None, detail))
        return report
    if key is not None:
        problem = _manifest_problem(manifest, key)
        if problem is not None:
            findings.append(Finding(FindingCode.BAD_MAC, "", None, f"{MANIFEST}: {problem}"))
    files: list[dict[str, Any]] = manifest["files"]
    temporary, unlisted, foreign = _survey(out, {f["path"] for f in files})
    interrupted = {str(p.relative_to(out)) for p in temporary}
    for name in sorted([*foreign, *interrupted, *(str(p.relative_to(out)) for p in unlisted)]):
        detail = f"{name} is not in the manifest"
        if name in interrupted:
            detail += " (a temporary file of an interrupted export; the next export removes it)"
        findings.append(Finding(FindingCode.UNLISTED_FILE, "", None, detail))
    chains = manifest["chains"]
    for entry in files:
        if entry["chain_id"] not in chains:
            detail = (
                f"{entry['path']} belongs to chain {entry['chain_id']!r}, "
                "which the manifest's chains do not list"
            )
            findings.append(Finding(FindingCode.MODIFIED_FILE, entry["chain_id"], None, detail))
    # The export's checkpoints first (read and checked once): each chain's tree heads are
    # taken at their sizes as its records go by, so the records are read once, never held.
    found = read_export_checkpoints(out, public_keys) if public_keys else None
    covering = {} if found is None else found[1]
    trees: dict[str, TreeHeads] = {}
    for chain, head in sorted(chains.items()):
        own = sorted((f for f in files if f["chain_id"] == chain), key=lambda f: f["first_seq"])
        checks = [_FileCheck(out, entry, report) for entry in own]
        tree = None
        if public_keys:
            tree = trees[chain] = TreeHeads(cp.size for cp in covering.get(chain, ()))

        def rows(
            checks: list[_FileCheck] = checks, tree: TreeHeads | None = tree
        ) -> Iterator[dict[str, Any]]:
            for check in checks:
                for row in check.rows():
                    if tree is not None:
                        tree.add(leaf_bytes(row.get("leaf_hash")))
                    yield row

        expected = [ExpectedHead(chain, head["last_seq"], head["last_chain_hash"])]
        summary, chain_findings = check_chain(chain, rows(), key, expected)
        report.chains.append(summary)
        findings.extend(chain_findings)
    if public_keys:
        findings.extend(check_export(found, trees))
    return report
