"""Verification of a store: each chain checked by ``_chain.check_chain``, every finding reported.

``verify_store`` streams each chain of a store through the checker with bounded memory. A
long chain's second half can be checked in a second process at the same time (see
"checking a long chain in two processes" below); the report is the same either way.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from accessaudit.exceptions import ConfigurationError
from accessaudit.record._chain import ChainChecker, check_chain
from accessaudit.record.findings import ExpectedHead, Finding, FindingCode, VerifyReport
from accessaudit.record.integrity import is_digest
from accessaudit.record.keys import FROM_STORE, KeyChoice, key_for
from accessaudit.review._reading import stored_rows
from accessaudit.store import SqlStore

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from accessaudit.record.findings import ChainSummary
    from accessaudit.record.keys import MacKey
    from accessaudit.store import AuditStore

__all__ = ["PARALLEL_MIN_ROWS", "check_chain", "stored_rows", "verify_store"]


def verify_store(
    store: AuditStore,
    key: KeyChoice = FROM_STORE,
    *,
    chain_id: str | None = None,
    expected_heads: Iterable[ExpectedHead] = (),
    workers: int | None = None,
) -> VerifyReport:
    """Verify one chain, or every chain of ``store``, MACs checked with the store's key.

    ``key=None`` skips the MAC checks (hashes and links only); a key given here checks with
    that key instead of the store's. A store without a key and no ``key=None`` is a
    ``MacKeyError``: an unchecked MAC must be asked for, never the silent default.

    ``expected_heads`` are heads recorded earlier outside the database; a chain that no
    longer reaches one (or reaches it with another hash) is reported, as is a named chain
    that has vanished altogether. Asking for a chain that is neither in the log nor among
    the expected heads is a ``ConfigurationError``, not a clean report.

    ``workers=2`` checks the second half of a long chain (``PARALLEL_MIN_ROWS`` or more, on
    a ``SqlStore``) in a second process at the same time; ``1`` never does; None (the
    default) does when the machine has a second core. The report is the same either way.
    """
    key = key_for(store.key, key, "verifying the MACs")
    heads = list(expected_heads)
    present = store.chains()
    if chain_id is not None:
        strays = sorted({h.chain_id for h in heads} - {chain_id})
        if strays:
            raise ConfigurationError(
                f"expected heads name chain(s) {', '.join(strays)} but only chain "
                f"{chain_id!r} is being verified; drop --chain or those heads"
            )
        if chain_id not in present and not heads:
            listed = ", ".join(present) or "none"
            raise ConfigurationError(f"no chain {chain_id!r} in the log (chains: {listed})")
    report = VerifyReport(mac_checked=key is not None)
    chains = [chain_id] if chain_id else sorted(set(present) | {h.chain_id for h in heads})
    for chain in chains:
        own_heads = [h for h in heads if h.chain_id == chain]
        split = _split_point(store, chain, workers)
        if split is None:
            with stored_rows(store, chain) as (columns, rows):
                summary, findings = check_chain(chain, rows, key, own_heads, columns=columns)
        else:
            assert isinstance(store, SqlStore)  # noqa: S101 - _split_point made sure
            summary, findings = _check_in_two(store, chain, key, own_heads, split)
        report.chains.append(summary)
        report.findings.extend(findings)
    if chain_id is None:
        # Counted directly, not as "all rows minus rows checked": writers may append while
        # verify runs, and their rows are not strays.
        stray_rows = store.count_unchained()
        if stray_rows:
            report.findings.append(
                Finding(
                    FindingCode.UNEXPECTED_RECORD,
                    "",
                    None,
                    f"{stray_rows} row(s) belong to no chain that can be read "
                    "(their chain_id is not text)",
                )
            )
    return report


# -- checking a long chain in two processes ---------------------------------------------------
#
# The main process checks seq 1..m as usual while a worker process checks m+1..H (H the head
# when verify started) with the fast path alone, starting from the chain hash stored at m,
# and stops at the first row that is not a lone, well-formed row passing every check. It
# reports how far it got: its clean run. The main process then takes that run as checked
# only if the chain hash it arrived at, at m, is the one the worker started from (the
# boundary link), and checks everything after the run itself. A run the main process
# cannot take is checked again, serially: damage costs time, never a finding. The worker
# finds nothing: it only vouches for rows the serial check would have passed in silence.

#: Chains shorter than this are checked in one process: a worker costs a fresh interpreter.
PARALLEL_MIN_ROWS: Final = 200_000


def _split_point(store: AuditStore, chain_id: str, workers: int | None) -> tuple[int, int] | None:
    """(m, H) to check seq m+1..H in a worker, or None to check the chain serially."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if workers == 1 or (workers is None and (cores or 1) < 2):
        return None
    if not isinstance(store, SqlStore):
        return None
    head = store.head(chain_id)
    if head is None or head.seq < PARALLEL_MIN_ROWS:
        return None
    # Ranges are cut by seq, so every seq must be an integer for the halves to cover all.
    if store.count_odd_seqs(chain_id):
        return None
    return head.seq // 2, head.seq


def _check_in_two(
    store: SqlStore,
    chain_id: str,
    key: MacKey | None,
    heads: list[ExpectedHead],
    split: tuple[int, int],
) -> tuple[ChainSummary, list[Finding]]:
    middle = split[0]
    task = {
        "url": store.secret_url(),
        "timeout": store.timeout,
        "chain_id": chain_id,
        "key": None if key is None else key.secret.hex(),
        "span": split,
        "heads": [[h.seq, h.chain_hash] for h in heads],
    }
    started = time.monotonic()
    with _Worker(task) as worker:
        checker = ChainChecker(chain_id, key, heads, columns=None)
        with stored_rows(store, chain_id, end_seq=middle) as (columns, rows):
            checker.check_rows(rows, columns)
        # The worker has as much to do; one much slower is stuck, and its half is redone.
        run = worker.result(wait=max(60.0, 3 * (time.monotonic() - started)))
    resume = middle
    if run is not None:
        start_hash, last, last_hash, count = run
        boundary_holds = (
            checker.expected == middle + 1
            and checker.previous == start_hash
            and checker.damaged is None  # else the run's first row may be a recovery record
        )
        if count and boundary_holds:
            checker.take_clean_run(last, last_hash, count)
            resume = last
    with stored_rows(store, chain_id, start_seq=resume + 1) as (columns, rows):
        checker.check_rows(rows, columns)
    checker.finish()
    return checker.summary, checker.findings


class _Worker:
    """``python -m accessaudit.review._verify_worker``, given its task on stdin.

    On stdin, so the key and the database password stay off the command line; its clean
    run comes back as JSON on stdout. A child process rather than ``multiprocessing``:
    spawning would re-run the caller's main module, which a library cannot assume is
    guarded. Any failure of the worker (no Python to start, a crash, a timeout) gives no
    run, and the main process checks the whole chain itself.
    """

    def __init__(self, task: Mapping[str, Any]) -> None:
        here = str(Path(__file__).resolve().parent.parent)  # this very accessaudit
        path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
        self.process: subprocess.Popen[bytes] | None = None
        task_out, task_in = os.pipe()  # our own pipe: communicate() would want to write stdin
        try:
            self.process = subprocess.Popen(  # our own module, no shell
                [sys.executable, "-m", "accessaudit.review._verify_worker"],
                stdin=task_out,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": path},
            )
        except (OSError, ValueError, subprocess.SubprocessError):
            os.close(task_in)
            return
        finally:
            os.close(task_out)
        with contextlib.suppress(OSError), os.fdopen(task_in, "wb") as pipe:
            pipe.write(json.dumps(task).encode())

    def __enter__(self) -> _Worker:
        return self

    def result(self, wait: float) -> tuple[str, int, str, int] | None:
        """The worker's clean run, or None if it has none to give within ``wait`` seconds."""
        if self.process is None:
            return None
        try:
            out, _ = self.process.communicate(timeout=wait)
            start_hash, last, last_hash, count = json.loads(out)
        except (subprocess.TimeoutExpired, ValueError, TypeError):
            return None
        if self.process.returncode != 0 or not all(map(is_digest, (start_hash, last_hash))):
            return None
        if type(last) is not int or type(count) is not int:
            return None
        return start_hash, last, last_hash, count

    def __exit__(self, *_exc: object) -> None:
        if self.process is not None:
            with self.process:  # closes its pipes and waits for it
                if self.process.poll() is None:
                    self.process.kill()
