"""Shards: gates writing chains of their own in one log, evidence and review across all of them."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pyarrow.dataset as ds
import pytest

from accessaudit import (
    AccessDenied,
    AuditUnavailable,
    Gate,
    MacKey,
    Policy,
    ReasonCode,
    SqlStore,
    StoreUnavailable,
    access_context,
    export_log,
    verify_store,
)
from accessaudit.review.report import ReportFilter, access_report
from accessaudit.review.tail import follow, latest
from accessaudit.store._append import EVIDENCE_LOCK_SQL
from tests.gatekit import EXAMPLE_POLICY, Desk, FakeClock, agent, grant, service

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.conftest import Backend


@pytest.fixture
def shard_a(backend: Backend, key: MacKey, clock: FakeClock) -> Iterator[Gate]:
    """A gate writing chain host-a (the schema created through it)."""
    with SqlStore(backend.url, key=key, chain_id="host-a", must_exist=False) as store:
        store.create_schema()
        yield Gate(store, Policy.load(EXAMPLE_POLICY), clock=clock)


@pytest.fixture
def shard_b(backend: Backend, key: MacKey, clock: FakeClock, shard_a: Gate) -> Iterator[Gate]:
    """A second gate on the same log, writing chain host-b."""
    with SqlStore(backend.url, key=key, chain_id="host-b") as store:
        yield Gate(store, Policy.load(EXAMPLE_POLICY), clock=clock)


def test_a_grant_issued_on_one_chain_is_honoured_and_revoked_on_another(
    shard_a: Gate, shard_b: Gate
) -> None:
    """A grant issued on one chain lets another chain's reads through; its revocation stops them.

    Issued through host-a, it lets host-b's support read; revoked through host-b, it stops
    host-a's.
    """
    grant_id = grant(shard_a)
    desk_a, desk_b = Desk(shard_a), Desk(shard_b)
    with access_context(agent(grant_id)):
        assert desk_b.contacts("acme", ["acme-user-1"])
    shard_b.registry.revoke_grant(grant_id, revoked_by="lead-1")
    with access_context(agent(grant_id)), pytest.raises(AccessDenied) as denied:
        desk_a.contacts("acme", ["acme-user-1"])
    assert denied.value.decision.reason is ReasonCode.EVIDENCE_REVOKED
    assert desk_a.ran == []
    assert desk_b.ran == ["contacts"]
    assert [r.event.event_type.value for r in shard_b.setup.store.read()] == [
        "access.allowed",
        "access.completed",
        "grant.revoked",
    ]


def test_a_capped_grant_is_spent_by_reads_on_every_chain(shard_a: Gate, shard_b: Gate) -> None:
    """A grant for three records: two read through host-a leave one for host-b."""
    grant_id = grant(shard_a, max_records=3)
    with access_context(agent(grant_id)):
        Desk(shard_a).contacts("acme", ["acme-user-1", "acme-user-2"])
        with pytest.raises(AccessDenied) as denied:
            Desk(shard_b).contacts("acme", ["acme-user-3", "acme-user-4"])
        assert denied.value.decision.reason is ReasonCode.EVIDENCE_SCOPE_EXCEEDED
        assert Desk(shard_b).contacts("acme", ["acme-user-3"])
    (spent,) = [g for g in shard_b.registry.grants() if g.grant_id == grant_id]
    assert spent.records_used == 3


def test_verify_export_report_and_tail_cover_every_chain(
    shard_a: Gate, shard_b: Gate, key: MacKey, tmp_path: Path
) -> None:
    """Verify, export, report and tail all see reads written on two chains.

    Verify checks both, the export holds both, the report counts both, and tail shows and
    follows both.
    """
    store_a, store_b = shard_a.setup.store, shard_b.setup.store
    with access_context(service()):
        Desk(shard_a).invoices("acme")
        Desk(shard_b).invoices("globex")
        Desk(shard_b).invoices("globex")
    report = verify_store(store_a, key)
    assert report.intact
    assert {c.chain_id: c.rows for c in report.chains} == {"host-a": 2, "host-b": 4}

    export_log(store_a, tmp_path / "out", actor="auditor")
    exported = ds.dataset(tmp_path / "out", format="parquet").to_table()
    assert set(exported.column("chain_id").to_pylist()) >= {"host-a", "host-b"}

    now = shard_a.setup.clock()
    sections = access_report(
        store_a, ReportFilter(), now=now, expiring_within=timedelta(days=1)
    ).sections
    by_customer = {r["customer_id"]: r["accesses"] for r in sections["by_customer"]}
    assert by_customer == {"acme": 1, "globex": 2}

    shown = latest(store_a, 100)
    assert {r.chain_id for r in shown} >= {"host-a", "host-b"}
    heads = {"host-a": store_a.count("host-a"), "host-b": store_b.count("host-b")}
    with access_context(service()):
        Desk(shard_b).invoices("globex")
    arrived = []
    for record in follow(store_a, heads, interval=0.01):
        arrived.append(record)
        if len(arrived) == 2:
            break
    assert [(r.chain_id, r.event.event_type.value) for r in arrived] == [
        ("host-b", "access.allowed"),
        ("host-b", "access.completed"),
    ]


@pytest.mark.postgres
def test_accesses_and_withdrawals_under_one_grant_meet_at_one_lock_on_every_chain(
    pg_backend: Backend, key: MacKey, clock: FakeClock
) -> None:
    """On PostgreSQL each chain has its own lock, so evidence has one too.

    While another transaction holds a grant's lock (as its revocation, in flight on another
    chain, would), a read under that grant and the grant's revocation both wait for it:
    they fail closed when the wait outlasts their timeout, and go through once it is free.
    """
    with SqlStore(pg_backend.url, key=key, chain_id="host-a", must_exist=False) as store_a:
        store_a.create_schema()
        gate_a = Gate(store_a, Policy.load(EXAMPLE_POLICY), clock=clock, timeout=0.5)
        grant_id = grant(gate_a)
        holder = pg_backend.owner.connect()
        holder.begin()
        holder.exec_driver_sql(EVIDENCE_LOCK_SQL.replace("?", "%(ref)s"), {"ref": grant_id})
        try:
            desk = Desk(gate_a)
            with access_context(agent(grant_id)), pytest.raises(AuditUnavailable):
                desk.contacts("acme", ["acme-user-1"])
            assert desk.ran == []
            with SqlStore(pg_backend.url, key=key, chain_id="host-b", timeout=0.5) as store_b:
                registry_b = Gate(store_b, Policy.load(EXAMPLE_POLICY), clock=clock).registry
                with pytest.raises(StoreUnavailable):
                    registry_b.revoke_grant(grant_id, revoked_by="lead-1")
        finally:
            holder.rollback()
            holder.close()
        with access_context(agent(grant_id)):
            assert desk.contacts("acme", ["acme-user-1"])
