"""accessaudit tail: the newest records, and new ones as they are committed."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from accessaudit import EventType, MacKey, SqlStore
from accessaudit.cli.app import app
from accessaudit.review.tail import follow, latest, one_line
from tests.strategies import make_event

if TYPE_CHECKING:
    from tests.conftest import Backend

runner = CliRunner()


def test_latest_and_one_line(store: SqlStore) -> None:
    """The last n records, oldest first; a line carries position, type, who, why, whose."""
    store.append([make_event(customer_id=f"c-{i}") for i in range(5)])
    last = latest(store, 2)
    assert [r.seq for r in last] == [4, 5]
    line = one_line(last[-1])
    assert line.split()[:3] == [
        "5",
        last[-1].event.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "access.allowed",
    ]
    assert "agent-7 (support_agent)" in line
    assert "c-4" in line
    assert latest(store, 10) == list(store.read())


def test_follow_yields_records_as_they_arrive(store: SqlStore) -> None:
    """follow() picks up records appended by another writer, in order, once each."""
    store.append([make_event()])
    seen: list[int] = []

    def writer() -> None:
        for _ in range(3):
            store.append([make_event()])

    thread = threading.Thread(target=writer)
    thread.start()
    for stored in follow(store, 1, interval=0.05, keep_going=lambda: len(seen) < 3):
        seen.append(stored.seq)
    thread.join()
    assert seen == [2, 3, 4]


def test_cli_tail_prints_and_records_the_read(backend: Backend, key: MacKey) -> None:
    """-n lines in text or JSON; the read itself is recorded as audit.report."""
    with SqlStore(backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        store.append([make_event() for _ in range(4)])
    env = {"ACCESSAUDIT_HMAC_KEY": key.secret.hex()}
    result = runner.invoke(app, ["tail", "-n", "3", "--db", backend.url], env=env)
    assert result.exit_code == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["2", "3", "4"]
    result = runner.invoke(
        app, ["tail", "-n", "1", "--format", "json", "--db", backend.url], env=env
    )
    (line,) = result.stdout.splitlines()
    assert json.loads(line)["event_type"] == "audit.report"  # the first tail's own record
    with SqlStore(backend.url) as store:
        types = [r.event.event_type for r in store.read()]
    assert types[-2:] == [EventType.AUDIT_REPORT, EventType.AUDIT_REPORT]


def test_cli_tail_follow_in_a_real_process(tmp_path: Path, key: MacKey) -> None:
    """--follow prints records written after it started, until it is stopped."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with SqlStore(url, key=key, must_exist=False) as store:
        store.create_schema()
        store.append([make_event()])
    env = {**os.environ, "ACCESSAUDIT_HMAC_KEY": key.secret.hex()}
    command = [str(Path(sys.executable).parent / "accessaudit"), "tail", "--follow"]
    child = subprocess.Popen(
        [*command, "-n", "1", "--interval", "0.1", "--db", url],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    stdout = child.stdout
    assert stdout is not None
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for text in stdout:
            lines.put(text)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()

    def line() -> str:
        # A generous guard so a broken --follow fails the test instead of hanging it.
        return lines.get(timeout=60)

    try:
        first = line()
        assert first.split()[0] == "1"
        with SqlStore(url, key=key) as store:
            store.append([make_event(customer_id="late-arrival")])
        own = line()  # the tail's own audit.report, committed after seq 1
        assert own.split()[:3][0::2] == ["2", "audit.report"]
        second = line()
        assert second.split()[0] == "3"
        assert "late-arrival" in second
    finally:
        child.terminate()
        child.wait(timeout=10)
        reader.join(timeout=10)
        stdout.close()


@pytest.mark.parametrize("bad", [["-n", "0"], ["--interval", "0"]])
def test_cli_tail_bad_options(bad: list[str]) -> None:
    """Nonsense counts and intervals are usage errors."""
    assert runner.invoke(app, ["tail", *bad]).exit_code == 2


def test_one_line_escapes_what_could_forge_a_line(store: SqlStore) -> None:
    """Newlines, escape sequences and bidi overrides in a record are shown escaped."""
    forged = "agent-7\n       9  2026-01-01T00:00:00.000000Z  access.denied"
    store.append(
        [make_event(actor_id=forged, customer_id="\x1b[2J\x1b[Hacme", resource="\u202ecrm\x9b")]
    )
    (record,) = latest(store, 1)
    line = one_line(record)
    assert line.isprintable()
    assert r"agent-7\n       9  2026" in line
    assert r"\x1b[2J\x1b[Hacme" in line
    assert r"\u202ecrm\x9b" in line


def test_cli_tail_prints_one_line_per_record_whatever_they_hold(
    backend: Backend, key: MacKey
) -> None:
    """However hostile the stored text, tail prints exactly one line per record."""
    with SqlStore(backend.url, key=key, must_exist=False) as store:
        store.create_schema()
        store.append([make_event(actor_id=f"a\r\n\x1b]0;title\x07{i}\u2028") for i in range(3)])
    env = {"ACCESSAUDIT_HMAC_KEY": key.secret.hex()}
    result = runner.invoke(app, ["tail", "--db", backend.url], env=env)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2", "3"]
    assert all(line.isprintable() for line in lines)
