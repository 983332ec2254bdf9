"""Writers killed with SIGKILL at random moments lose no acknowledged record."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from accessaudit import MacKey, SqlStore, verify_store
from tests.strategies import make_event

if TYPE_CHECKING:
    from tests.conftest import Backend

# Rounds of each kill test; set ACCESSAUDIT_CRASH_ROUNDS for a longer run (e.g. 500).
GATED_ROUNDS = int(os.environ.get("ACCESSAUDIT_CRASH_ROUNDS", "50"))
ROUNDS = min(8, GATED_ROUNDS) if "ACCESSAUDIT_CRASH_ROUNDS" not in os.environ else GATED_ROUNDS
ROOT = Path(__file__).parent.parent


def _run_and_kill(module: str, *args: str, rng: random.Random, longest: float) -> list[str]:
    """Start ``python -m module args``, let it work up to ``longest`` s, SIGKILL it; its acks."""
    writer = subprocess.Popen(
        [sys.executable, "-m", module, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, longest))
    finally:
        writer.send_signal(signal.SIGKILL)
        output, _ = writer.communicate()
    # A line is an acknowledgement only if it was written whole.
    return [line for line in output.split("\n")[:-1] if line]


@pytest.mark.slow
def test_killed_writers_lose_no_acknowledged_record(
    backend: Backend, store: SqlStore, key: MacKey
) -> None:
    """After each kill every acked event is there once, seq is contiguous, verify is clean."""
    rng = random.Random(20261129)
    acked: list[str] = []
    for _ in range(ROUNDS):
        acked += _run_and_kill(
            "tests.crash_writer", backend.url, key.secret.hex(), rng=rng, longest=0.4
        )
        rows = [dict(r) for r in store.rows()]
        stored = Counter(r["event_id"] for r in rows)
        assert all(stored[event_id] == 1 for event_id in acked)
        assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
        report = verify_store(store, key)
        assert report.intact, report.findings
    assert acked  # the writers did get work done
    resumed = store.append([make_event()])
    assert resumed[0].seq == store.count()  # and writing resumes where the chain ends


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["threads", "async"])
def test_killed_gated_application_loses_no_acknowledged_access(
    backend: Backend, store: SqlStore, key: MacKey, mode: str
) -> None:
    """Killed mid-flight, again and again: every read that ran has its committed record once.

    A body runs only after its ``access.allowed`` is committed (and fsynced), and a call
    returns only after its ``access.completed`` is committed: by default without waiting
    for the fsync (the gate's lazily synced outcomes), which a SIGKILL must not lose either.
    So every "allowed" ack must have its record, every "done" ack its completion, each
    exactly once (threads, and tasks of one event loop whose appends are handed to a
    worker thread together); the chain stays contiguous and verifies, and the next
    process carries on from where the killed one stopped.
    """
    rng = random.Random(2026_11_29)
    ran: list[str] = []
    done: list[str] = []
    rounds = GATED_ROUNDS if mode == "threads" else max(1, GATED_ROUNDS // 2)
    for round_ in range(rounds):
        # Four threads, or eight tasks.
        args = (
            (backend.url, key.secret.hex(), "4")
            if mode == "threads"
            else (backend.url, key.secret.hex(), "8", "async")
        )
        for line in _run_and_kill("tests.crash_gate_writer", *args, rng=rng, longest=0.3):
            kind, request_id = line.split(" ")
            (ran if kind == "allowed" else done).append(request_id)
        # Counted in SQL each round (cheap); the full verify every tenth round and at the end.
        recorded = Counter(
            (str(event_type), str(request_id))
            for event_type, request_id in backend.sql(
                "SELECT event_type, request_id FROM accessaudit_events"
            )
        )
        assert all(recorded["access.allowed", r] == 1 for r in ran)
        assert all(recorded["access.completed", r] == 1 for r in done)
        assert max(recorded.values(), default=1) == 1  # no access recorded twice
        ((rows, first, last),) = backend.sql(
            "SELECT count(*), min(seq), max(seq) FROM accessaudit_events"
        )
        # With seq unique, this is 1..rows without a gap (or an empty log after an early kill).
        assert (first, last) == ((1, rows) if rows else (None, None))
        if round_ % 10 == 9 or round_ == rounds - 1:
            report = verify_store(store, key)
            assert report.intact, report.findings
    assert ran
    assert done  # the kills did not all land before the first read finished
