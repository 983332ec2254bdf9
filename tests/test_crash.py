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

ROUNDS = int(os.environ.get("ACCESSAUDIT_CRASH_ROUNDS", "8"))
ROOT = Path(__file__).parent.parent


def _run_and_kill(url: str, key: MacKey, rng: random.Random) -> list[str]:
    """Start a writer, let it work for a random moment, SIGKILL it; return its acked ids."""
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_writer", url, key.secret.hex()],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    assert writer.stdout.readline() == "ready\n"
    time.sleep(rng.uniform(0.0, 0.4))
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
        acked += _run_and_kill(backend.url, key, rng)
        rows = [dict(r) for r in store.rows()]
        stored = Counter(r["event_id"] for r in rows)
        assert all(stored[event_id] == 1 for event_id in acked)
        assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
        report = verify_store(store, key)
        assert report.intact, report.findings
    assert acked  # the writers did get work done
    resumed = store.append([make_event()])
    assert resumed[0].seq == store.count()  # and writing resumes where the chain ends
