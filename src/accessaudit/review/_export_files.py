"""The export's files: rows streamed into temporary Parquet files, a row group at a time.

A file is one day of one chain (at most ``ROWS_PER_FILE`` rows), written under a temporary
name; ``export`` renames it into place only after the whole run has passed its checks. Also
the directory's own handling: creating it (and undoing that), locking it, fsyncing it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from accessaudit.record._clock import EPOCH
from accessaudit.review._arrow import to_arrow_table

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

ROWS_PER_FILE: Final = 50_000
#: Rows converted and written at a time: what an export holds in memory.
ROW_GROUP: Final = 10_000
TEMP_PREFIX: Final = ".accessaudit-tmp-"
_DAY_US: Final = 86_400_000_000


def chain_token(chain_id: str) -> str:
    """The chain id as it appears in file names (a digest if it is not filename-safe)."""
    if re.fullmatch(r"[A-Za-z0-9_.]+", chain_id):
        return chain_id
    return "c" + hashlib.sha256(chain_id.encode()).hexdigest()[:16]


@dataclass
class Pending:
    """A file written under a temporary name, waiting for the range to pass its checks."""

    temp: Path
    final: str
    chain_id: str
    first_seq: int
    last_seq: int
    rows: int
    end_chain_hash: str


@dataclass
class _OpenFile:
    """The file being written: a temporary name, its writer, what it holds so far."""

    temp: Path
    writer: pq.ParquetWriter
    day: str
    first_seq: int
    last_seq: int = 0
    rows: int = 0
    end_chain_hash: str = ""


class Writer:
    """Collects checked rows into day runs and streams each run into a temporary file.

    Rows are converted and written a row group at a time, so memory holds one row group
    (``ROW_GROUP`` rows), not one file, whatever the file's size.
    """

    def __init__(
        self, out: Path, chain_id: str, columns: Sequence[str], pending: list[Pending]
    ) -> None:
        self.out, self.chain_id, self.columns = out, chain_id, tuple(columns)
        self.pending = pending  # the caller's: it discards them if anything goes wrong
        self.rows: list[Sequence[Any]] = []  # the next row group, as read
        self.file: _OpenFile | None = None
        self.day: int | None = None  # days since 1970-01-01, UTC
        self.broken = False
        self.micros_at = self.columns.index("occurred_at_us") if "occurred_at_us" in columns else -1

    def add(self, row: Sequence[Any]) -> None:
        # The checker parses and checks every row strictly; a row it rejects stops the
        # export, so here a row that will not even convert is only noted.
        micros = row[self.micros_at] if self.micros_at >= 0 else None
        if type(micros) is not int:
            self.broken = True
            return
        day = micros // _DAY_US
        held = len(self.rows) + (self.file.rows if self.file else 0)
        if held and (day != self.day or held >= ROWS_PER_FILE):
            self.flush()
        self.day = day
        self.rows.append(row)
        if len(self.rows) >= ROW_GROUP:
            self._write_group()

    def _write_group(self) -> None:
        rows, self.rows = self.rows, []
        if not rows or self.broken:
            return
        try:
            table = to_arrow_table(self.columns, rows)
            if self.file is None:
                self.file = self._open(table)
            self.file.writer.write_table(table, row_group_size=ROW_GROUP)
        except (KeyError, TypeError, ValueError, OverflowError, pa.ArrowException):
            self.broken = True
            return
        self.file.rows += len(rows)
        self.file.last_seq = table["seq"][-1].as_py()
        self.file.end_chain_hash = table["chain_hash"][-1].as_py()

    def _open(self, table: pa.Table) -> _OpenFile:
        temp = self.out / f"{TEMP_PREFIX}{uuid.uuid4().hex}.parquet"
        # Pinned options: the same range exports to the same bytes.
        writer = pq.ParquetWriter(
            temp,
            table.schema,
            compression="zstd",
            write_statistics=True,
            use_dictionary=True,
        )
        day = (EPOCH + timedelta(days=self.day or 0)).strftime("%Y-%m-%d")
        return _OpenFile(temp, writer, day, table["seq"][0].as_py())

    def flush(self) -> None:
        """Finish the file being written (if any) and hand it to ``pending``."""
        self._write_group()
        file = self.file
        if file is None:
            return
        if self.broken:
            self.abandon()
            return
        file.writer.close()  # on failure (a full disk, say) abandon() still finds the file
        with file.temp.open("rb") as handle:
            os.fsync(handle.fileno())
        self.file = None
        name = f"{chain_token(self.chain_id)}-{file.first_seq:012d}-{file.last_seq:012d}.parquet"
        self.pending.append(
            Pending(
                file.temp,
                f"day={file.day}/{name}",
                self.chain_id,
                file.first_seq,
                file.last_seq,
                file.rows,
                file.end_chain_hash,
            )
        )

    def abandon(self) -> None:
        """Close and delete the file being written (the run failed)."""
        file, self.file = self.file, None
        if file is not None:
            with contextlib.suppress(Exception):  # the run's own error is what matters
                file.writer.close()
            file.temp.unlink(missing_ok=True)


def discard(pending: list[Pending]) -> None:
    for item in pending:
        item.temp.unlink(missing_ok=True)


def sha256_of(path: Path) -> str:
    """The file's SHA-256, read a MiB at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_directory(path: Path) -> None:
    """Make the renames and creations in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_directory(out: Path, created: list[Path]) -> int:
    """Create ``out`` if needed and take an exclusive flock on it; the open descriptor.

    Directories it creates are appended to ``created`` (outermost first) as they are made, so
    the caller can remove them whatever fails. The lock is on the directory, not on a file in
    it, so taking it writes nothing. Raises ``BlockingIOError`` if another process holds it
    (or held it and removed the directory meanwhile), and ``OSError`` if the directory cannot
    be made, opened or locked: a file system that cannot flock a directory (NFS may not) gets
    an error, never an unlocked export.
    """
    missing = []
    path = out
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by someone else
            directory.mkdir()
            created.append(directory)
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not os.path.samestat(os.fstat(fd), out.stat()):  # a refused run removed it
            raise BlockingIOError(f"{out} was replaced while it was being locked")
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_directories(created: list[Path]) -> None:
    """Remove directories ``lock_directory`` created, innermost first, if they are empty."""
    for directory in reversed(created):
        with contextlib.suppress(OSError):  # not empty: someone else's files are in it now
            directory.rmdir()
