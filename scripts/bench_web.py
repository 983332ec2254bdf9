"""The web leg of scripts/bench.py: one endpoint, gated and ungated, in the same run.

The gated app is ``examples/fastapi_app.py`` as it ships: ``AccessContextMiddleware``, the
``accessaudit.sqlalchemy`` integration on its engine, and a ``@gate.protect`` function, on
SQLite. The ungated twin is the same FastAPI endpoint and the same ORM query on its own
engine, with none of them; "gate only" adds back the ``@gate.protect`` function (the access
context set in the endpoint), so the middleware's and the integration's share shows.
All three are called as ASGI apps directly (no HTTP client or server in the way), one
request after another, taking turns rep by rep so that the machine's state is the same for
each. The ratios are time per request over the ungated app's.
"""

from __future__ import annotations

import asyncio
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench_gated import gated_store_and_gate
from bench_threads import SERVICE, Rep, summarise
from fastapi import FastAPI
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from accessaudit import access_context, create_key_file

# examples/ is part of the repository, not of the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from examples.fastapi_app import Base, Contact, create_app

if TYPE_CHECKING:
    from accessaudit import Gate, MacKey

PATH = "/app/customers/acme/contacts"
#: The three apps: the example as it ships, a gated function alone, nothing.
WEB_LEGS = ("gated", "gate only", "ungated")
CONTACTS_PER_CUSTOMER = 10


def _plain(url: str, gate: Gate | None = None) -> FastAPI:
    """The same endpoint and query with no middleware and no integration; gated if asked.

    Gated, the endpoint sets the access context itself and calls a ``@gate.protect``
    function: what a team pays without the middleware and the ORM integration.
    """
    sessions = sessionmaker(create_engine(url))
    app = FastAPI()

    def contacts_of(session: Session, customer_id: str) -> list[dict[str, Any]]:
        query = select(Contact).where(Contact.customer_id == customer_id)
        return [{"id": c.id, "name": c.name, "email": c.email} for c in session.scalars(query)]

    read = contacts_of if gate is None else gate.protect("crm.contacts")(contacts_of)

    @app.get("/app/customers/{customer_id}/contacts")
    def app_contacts(customer_id: str) -> list[dict[str, Any]]:
        scope = nullcontext() if gate is None else access_context(SERVICE)
        with scope, sessions() as session:
            return read(session, customer_id)

    return app


def _seed(url: str) -> None:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        for n in range(2 * CONTACTS_PER_CUSTOMER):
            customer = "acme" if n % 2 else "globex"
            session.add(Contact(customer_id=customer, name=f"n{n}", email=f"e{n}@example.com"))
        session.commit()
    engine.dispose()


async def _request(app: FastAPI) -> int:
    """One GET through the ASGI interface; the response status."""
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", b"Bearer app-token")],
        "client": ("127.0.0.1", 50000),
        "server": ("bench", 80),
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    return status


async def _reps(
    apps: dict[str, FastAPI], reps: int, calls: int
) -> dict[str, tuple[list[Rep], float]]:
    found: dict[str, tuple[list[Rep], float]] = {name: ([], 0.0) for name in apps}
    for _ in range(reps):
        for name, app in apps.items():
            latencies, cpu = [], time.process_time()
            started = time.perf_counter()
            for _ in range(calls):
                begin = time.perf_counter()
                status = await _request(app)
                latencies.append((time.perf_counter() - begin) * 1e6)
                if status != 200:
                    msg = f"{name} answered {status}"
                    raise RuntimeError(msg)
            seconds = time.perf_counter() - started
            done, cpu_total = found[name]
            done.append(Rep(calls, seconds, latencies))
            found[name] = (done, cpu_total + time.process_time() - cpu)
    return found


def leg_web(work: Path, key: MacKey, reps: int, calls: int) -> dict[str, Any]:
    """Requests per second, latency and CPU per request of both apps, and their ratio."""
    key_file = work / "web.key"
    create_key_file(key_file)
    databases = {name: f"sqlite:///{work / f'web-{name}.db'}" for name in WEB_LEGS}
    for url in databases.values():
        _seed(url)
    gated = create_app(f"sqlite:///{work / 'web-audit.db'}", databases["gated"], key_file)
    store, gate = gated_store_and_gate(f"sqlite:///{work / 'web-audit-gate-only.db'}", key)
    store.create_schema()
    apps = {
        "gated": gated,
        "gate only": _plain(databases["gate only"], gate),
        "ungated": _plain(databases["ungated"]),
    }
    found = asyncio.run(_reps(apps, reps, calls))
    result: dict[str, Any] = {}
    for name, (done, cpu) in found.items():
        result[name] = {**summarise(done), "cpu_us_per_request": cpu / (reps * calls) * 1e6}
    result["time_ratio"] = result["ungated"]["calls_per_s"] / result["gated"]["calls_per_s"]
    result["cpu_ratio"] = (
        result["gated"]["cpu_us_per_request"] / result["ungated"]["cpu_us_per_request"]
    )
    result["gate_only_ratio"] = (
        result["ungated"]["calls_per_s"] / result["gate only"]["calls_per_s"]
    )
    gated.state.gate.setup.store.close()
    store.close()
    return result
