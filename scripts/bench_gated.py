"""accessaudit's gated reads for scripts/bench.py: SQLite, PostgreSQL, threads and processes.

Every call is an allowed, durable read: decide (service_delivery, no evidence to look up),
commit ``access.allowed``, run the body, commit ``access.completed``.
"""

from __future__ import annotations

import multiprocessing
import traceback
import uuid
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench_pg_baseline import baseline_worker, create_table
from bench_threads import (
    CUSTOMER,
    SERVICE,
    Rep,
    log_like_the_cli_to_devnull,
    read_contacts,
    run_rep,
    run_reps,
    shares,
    summarise,
)
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from accessaudit import Gate, MacKey, Policy, SqlStore, access_context

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier

    from bench_threads import Call, Worker

POLICY = Path(__file__).parent.parent / "examples" / "policy.toml"
#: Generous: the benchmark measures throughput, not the fail-closed path, and shares the
#: machine with other work.
TIMEOUT_S = 30.0
#: How long the parent waits for a child process's rep before giving up on it.
CHILD_WAIT_S = 600.0


def gated_store_and_gate(url: str, key: MacKey, chain_id: str = "main") -> tuple[SqlStore, Gate]:
    """A store at ``url`` and a gate on it with the example policy."""
    store = SqlStore(url, key=key, must_exist=False, timeout=TIMEOUT_S, chain_id=chain_id)
    return store, Gate(store, Policy.load(POLICY), service="bench")


def gated(
    url: str, key: MacKey, chain_id: str = "main"
) -> tuple[SqlStore, Callable[[str], list[dict[str, str]]]]:
    """A store at ``url`` and ``read_contacts`` protected by a gate with the example policy."""
    store, gate = gated_store_and_gate(url, key, chain_id)
    return store, gate.protect("crm.contacts")(read_contacts)


def gated_worker(read: Callable[[str], list[dict[str, str]]]) -> Worker:
    """Each thread's setup: a new thread has no access context, so it enters its own."""

    @contextmanager
    def worker() -> Iterator[Call]:
        with access_context(SERVICE):
            yield lambda: read(CUSTOMER)

    return worker


def leg_threads(url: str, key: MacKey, reps: int, threads: int, calls: int) -> dict[str, Any]:
    """Gated reads from ``threads`` threads of this process, on an empty log at ``url``."""
    store, read = gated(url, key)
    with store:
        store.create_schema()
        return summarise(run_reps(reps, threads, calls, gated_worker(read)))


@contextmanager
def pg_schema(base_url: str) -> Iterator[str]:
    """A URL selecting a fresh schema on the server (search_path, as tests/conftest.py does).

    The schema, with the table, its triggers and their functions, is dropped afterwards.
    """
    schema = f"aa_bench_{uuid.uuid4().hex[:12]}"
    server = make_url(base_url).set(drivername="postgresql+psycopg")
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        options = {"options": f"-csearch_path={schema}"}
        try:
            yield make_url(base_url).update_query_dict(options).render_as_string(False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    finally:
        admin.dispose()


def server_version(base_url: str) -> str:
    """The PostgreSQL server's version string, for the record of the run."""
    engine = create_engine(make_url(base_url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar_one())
    finally:
        engine.dispose()


# -- several processes ---------------------------------------------------------------------


@dataclass(frozen=True)
class ChildPlan:
    """What one child process runs (picklable: it crosses to a spawned interpreter)."""

    url: str
    key_hex: str
    threads: int
    calls: int
    reps: int
    chain_id: str
    baseline: bool = False  # baseline F instead of the gate


def _process_main(plan: ChildPlan, start: Barrier, results: Queue[tuple[Any, ...]]) -> None:
    """One child: its own store and gate; each rep starts with the other children's."""
    try:
        log_like_the_cli_to_devnull()
        store: AbstractContextManager[object]
        if plan.baseline:
            worker, store = baseline_worker(plan.url), nullcontext()
        else:
            store, read = gated(plan.url, MacKey(bytes.fromhex(plan.key_hex)), plan.chain_id)
            worker = gated_worker(read)
        with store:
            for rep in range(plan.reps):
                start.wait()
                done = run_rep(plan.threads, plan.calls, worker)
                results.put((rep, done.calls, done.seconds, done.latencies_us))
    except BaseException:
        start.abort()  # the other children must not wait for this one
        results.put(("error", traceback.format_exc()))
        raise


def leg_processes(
    url: str,
    key: MacKey,
    reps: int,
    calls: int,
    *,
    procs: int,
    threads: int,
    sharded: bool = False,
    baseline: bool = False,
) -> dict[str, Any]:
    """Gated reads from ``procs`` spawned processes x ``threads`` threads, on one empty log.

    All processes append to one chain, or with ``sharded`` each to a chain of its own (a
    shard per process, as the README recommends for many hosts). With ``baseline`` the
    same processes run baseline F instead. A rep's throughput is the sum of the processes'
    own rates; its latencies are all of theirs together.
    """
    if baseline:
        create_table(url)
    else:
        with SqlStore(url, key=key, must_exist=False) as store:
            store.create_schema()
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(procs, timeout=CHILD_WAIT_S)
    results: Queue[tuple[Any, ...]] = spawn.Queue()
    plans = [
        ChildPlan(
            url,
            key.secret.hex(),
            threads,
            share,
            reps,
            f"shard-{i}" if sharded else "main",
            baseline,
        )
        for i, share in enumerate(shares(calls, procs))
    ]
    children = [spawn.Process(target=_process_main, args=(p, start, results)) for p in plans]
    for child in children:
        child.start()
    try:
        per_rep: list[list[tuple[Any, ...]]] = [[] for _ in range(reps)]
        for _ in range(procs * reps):
            item = results.get(timeout=CHILD_WAIT_S)
            if item[0] == "error":
                raise RuntimeError(f"a benchmark process failed:\n{item[1]}")
            per_rep[item[0]].append(item)
    finally:
        for child in children:
            child.join(timeout=60)
            if child.is_alive():  # only after a failure: nothing is left to wait for
                child.terminate()
    return summarise([_combined(items) for items in per_rep])


def _combined(items: list[tuple[Any, ...]]) -> Rep:
    """One rep of all processes, as a ``Rep`` whose rate is the sum of theirs."""
    calls = sum(item[1] for item in items)
    rate = sum(item[1] / item[2] for item in items)
    latencies = [us for item in items for us in item[3]]
    return Rep(calls, calls / rate, latencies)
