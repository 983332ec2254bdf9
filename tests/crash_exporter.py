"""An ``accessaudit export`` that stops half-way, for the parent test to SIGKILL it there.

Run as ``python -m tests.crash_exporter STAGE N OUT URL`` with the key in
``$ACCESSAUDIT_HMAC_KEY``. It runs the CLI's export, and as soon as the N-th file of the run
is complete in the STAGE named (``writing``: written and fsynced under its temporary name;
``publishing``: renamed into its day directory) it prints ``stopped`` and sleeps, so the kill
is known to land mid-run: after N files, before the rest and before the manifest.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from accessaudit import cli
from accessaudit.review import _export_files, export

if TYPE_CHECKING:
    from pathlib import Path

STAGES = ("writing", "publishing")


def _stop() -> None:
    print("stopped", flush=True)
    time.sleep(600)  # the parent kills it long before
    raise SystemExit(3)  # never reached in the tests: better a failure than a finished run


def main() -> None:
    """Patch in the stop, then run ``accessaudit export --out OUT --db URL``."""
    stage, count, out, url = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    assert stage in STAGES
    done = [0]
    if stage == "writing":
        flush = _export_files.Writer.flush

        def flush_then_stop(self: _export_files.Writer) -> None:
            before = len(self.pending)
            flush(self)
            done[0] += len(self.pending) - before
            if done[0] == count:
                _stop()

        _export_files.Writer.flush = flush_then_stop  # type: ignore[method-assign]
    else:
        # export.py calls fsync_directory by the name it imported: patch that name.
        fsync = _export_files.fsync_directory

        def fsync_then_stop(path: Path) -> None:
            fsync(path)
            done[0] += path.name.startswith("day=")  # after a rename into a day directory
            if done[0] == count:
                _stop()

        export.fsync_directory = fsync_then_stop  # type: ignore[attr-defined]
    sys.argv = ["accessaudit", "export", "--out", out, "--db", url]
    cli.main()


if __name__ == "__main__":
    main()
