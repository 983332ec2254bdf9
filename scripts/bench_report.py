"""The screen report of scripts/bench.py: one table of every leg, the cost split, the targets."""

from __future__ import annotations

from typing import Any

#: Leg families of the call table: JSON key, label, the letter ratios name it by.
CALL_LEGS = (
    ("accessaudit_sqlite", "accessaudit gated, SQLite", None),
    ("a_orm", "A  SQLAlchemy ORM row, SQLite", "A"),
    ("b_logging", "B  logging JSON line, file", "B"),
    ("c_sqlite3", "C  sqlite3 INSERT+COMMIT, WAL FULL", "C"),
)
BASELINE_KEYS = {letter: key for key, _, letter in CALL_LEGS if letter}
POSTGRES_LEGS = (
    ("accessaudit_postgres", "accessaudit gated, PostgreSQL"),
    ("f_psycopg", "F  psycopg INSERT+COMMIT, PostgreSQL"),
    ("accessaudit_postgres_procs", "accessaudit gated, PG one chain"),
    ("accessaudit_postgres_shards", "accessaudit gated, PG chain/process"),
)
ASYNC_TASKS = 64
EXPORT_LEGS = (
    ("accessaudit", "export_log, accessaudit", None),
    ("naive", "D  sqlite3 rows -> ParquetWriter", "D"),
    ("adbc", "E  ADBC batches -> ParquetWriter", "E"),
)
MIB_TARGET = 256


def _ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def _rate(results: dict[str, Any], family: str, threads: int) -> float | None:
    leg = results["legs"].get(family, {}).get(str(threads))
    return None if leg is None else float(leg["calls_per_s"])


def _header(unit: str) -> str:
    return f"  {'leg':<44} {unit:>12} {'p50 µs':>10} {'p99 µs':>10} {'peak MiB':>9}  ratios"


def _row(label: str, rate: float, p50: float | None, p99: float | None, peak: float | None) -> str:
    def num(value: float | None, spec: str) -> str:
        return "" if value is None else format(value, spec)

    return (
        f"  {label:<44} {rate:>12,.0f} {num(p50, ',.1f'):>10} {num(p99, ',.1f'):>10} "
        f"{num(peak, ',.0f'):>9}"
    )


def _ratios(value: float, bases: dict[str, float | None]) -> str:
    return ", ".join(
        f"{value / base:.2f}x {letter}" for letter, base in bases.items() if base is not None
    )


def _bases(results: dict[str, Any], threads: int) -> dict[str, float | None]:
    return {letter: _rate(results, key, threads) for letter, key in BASELINE_KEYS.items()}


def call_table(results: dict[str, Any]) -> list[str]:
    """The per-call legs, by thread count; gated legs with ratios to A, B and C.

    PostgreSQL legs are compared with the baselines (SQLite, a file) at the same number of
    threads in all: what a team would otherwise have written.
    """
    lines = []
    for threads in results["config"]["threads"]:
        for family, label, _ in CALL_LEGS:
            leg = results["legs"].get(family, {}).get(str(threads))
            if leg is None:
                continue
            rate = leg["calls_per_s"]
            ratio = _ratios(rate, _bases(results, threads)) if family.startswith("access") else ""
            row = _row(f"{label}, {threads}t", rate, leg["p50_us"], leg["p99_us"], None)
            lines.append(f"{row}  {ratio}".rstrip())
    for family, label in POSTGRES_LEGS:
        for shape, leg in results["legs"].get(family, {}).items():
            procs, _, threads = shape.rpartition("x")
            total = int(threads) * int(procs or 1)
            where = f"{procs} procs x {threads}t" if procs else f"{threads}t"
            rate = leg["calls_per_s"]
            row = _row(f"{label}, {where}", rate, leg["p50_us"], leg["p99_us"], None)
            bases = _bases(results, total)
            f_leg = results["legs"].get("f_psycopg", {}).get(shape)
            if procs and f_leg and family != "f_psycopg":
                bases["F"] = f_leg["calls_per_s"]
            ratios = "" if family == "f_psycopg" else _ratios(rate, bases)
            lines.append(f"{row}  {ratios}".rstrip())
    for shape, leg in results["legs"].get("accessaudit_async", {}).items():
        row = _row(
            f"accessaudit gated async, SQLite, {shape} tasks",
            leg["calls_per_s"],
            leg["p50_us"],
            leg["p99_us"],
            None,
        )
        threads16 = _rate(results, "accessaudit_sqlite", 16)
        ratio = f"{leg['calls_per_s'] / threads16:.2f}x gated 16t" if threads16 else ""
        lines.append(f"{row}  {ratio}".rstrip())
        lines.append(
            f"    hand-offs to another thread per call {leg['handoffs_per_call']:.3f}; "
            f"worst event-loop lag {leg['worst_loop_lag_us']:,.0f} µs "
            f"(p99 {leg['p99_loop_lag_us']:,.0f} µs)"
        )
    return lines


def dump_table(results: dict[str, Any]) -> list[str]:
    """Export legs (two log sizes) and verify, rows/s and peak RSS."""
    lines = []
    export = results.get("export")
    if export is not None:
        bases = {L: export[key]["large"]["rows_per_s"] for key, _, L in EXPORT_LEGS if L}
        for size, events in (("large", export["events"]), ("small", export["small_events"])):
            for key, label, _ in EXPORT_LEGS:
                leg = export[key][size]
                ratio = _ratios(leg["rows_per_s"], bases) if key == "accessaudit" else ""
                if size == "small":  # memory that does not grow with the log: about 1.00x
                    growth = export[key]["large"]["peak_mib"] / leg["peak_mib"]
                    ratio = f"full-size peak {growth:.2f}x this"
                row = _row(
                    f"{label}, {events:,} rows", leg["rows_per_s"], None, None, leg["peak_mib"]
                )
                lines.append(f"{row}  {ratio}".rstrip())
    verify = results.get("verify")
    if verify is not None:
        label = f"verify_store, {verify['events']:,} rows"
        lines.append(_row(label, verify["rows_per_s"], None, None, verify["peak_mib"]))
    return lines


def micro_table(micro: dict[str, Any]) -> list[str]:
    """µs per op of each step, and how they add up to one gated call."""
    steps = micro["steps"]

    def line(label: str, step: str, count: object = "") -> str:
        f = steps[step]
        return f"  {label:<22} {f['wall_us']:>11,.1f} {f['cpu_us']:>10,.1f} {count!s:>11}".rstrip()

    lines = [f"  {'step':<22} {'wall µs/op':>11} {'CPU µs/op':>10} {'x per call':>11}"]
    lines += [line(step, step, count) for step, count in micro["per_gated_call"].items()]
    lines.append(line("other (gate, function)", "other", 1))
    lines.append(line("= gated call, whole", "gated_call"))
    lines.append(line("(durable append, whole)", "append"))
    lines.append(line("(lazy append, whole)", "append_lazy"))
    return lines


# -- targets --------------------------------------------------------------------------------


def _target(
    name: str, measured: float | None, goal: float, unit: str, *, most: bool = False
) -> dict[str, Any]:
    met = None if measured is None else (measured <= goal if most else measured >= goal)
    return {
        "target": name,
        "measured": measured,
        "goal": goal,
        "unit": unit,
        "at_most": most,
        "met": met,
    }


def _scan(results: dict[str, Any], tool: str, figure: str) -> float | None:
    """A figure of the export leg of ``tool`` on the full-size log, if it ran."""
    export = results.get("export")
    return None if export is None else float(export[tool]["large"][figure])


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each speed target with its measured value (None: that leg was not run)."""
    gated = {t: _rate(results, "accessaudit_sqlite", t) for t in (1, 16)}
    base = {(L, t): _rate(results, key, t) for L, key in BASELINE_KEYS.items() for t in (1, 16)}
    legs, config = results["legs"], results["config"]
    shape = f"{config['procs']}x{config['proc_threads']}"
    procs = f"{config['procs']} procs x {config['proc_threads']} threads"
    pg = legs.get("accessaudit_postgres_procs", {}).get(shape)
    shards = legs.get("accessaudit_postgres_shards", {}).get(shape)
    f_leg = legs.get("f_psycopg", {}).get(shape)
    f_rate = f_leg["calls_per_s"] if f_leg else None
    asynchronous = legs.get("accessaudit_async", {}).get(str(ASYNC_TASKS))
    micro = results.get("micro")
    export = _scan(results, "accessaudit", "rows_per_s")
    verify = results.get("verify")
    return [
        _target(
            "1 thread: CPU per gated call <= 300 µs (cost split)",
            micro["steps"]["gated_call"]["cpu_us"] if micro else None,
            300,
            "µs",
            most=True,
        ),
        _target("1 thread >= 0.5x C", _ratio(gated[1], base["C", 1]), 0.5, "x"),
        _target("1 thread >= 2x A", _ratio(gated[1], base["A", 1]), 2, "x"),
        _target("16 threads >= 1.5x C", _ratio(gated[16], base["C", 16]), 1.5, "x"),
        _target("16 threads >= 4x A", _ratio(gated[16], base["A", 16]), 4, "x"),
        _target(
            f"PostgreSQL {procs}, one chain >= 0.5x F",
            _ratio(pg["calls_per_s"] if pg else None, f_rate),
            0.5,
            "x",
        ),
        _target(
            f"PostgreSQL {procs}, a chain per process >= 1.0x F",
            _ratio(shards["calls_per_s"] if shards else None, f_rate),
            1.0,
            "x",
        ),
        _target(
            f"asyncio {ASYNC_TASKS} tasks >= 0.8x the 16-thread figure",
            _ratio(asynchronous["calls_per_s"] if asynchronous else None, gated[16]),
            0.8,
            "x",
        ),
        _target(
            "asyncio: hand-offs to another thread per call <= 1",
            asynchronous["handoffs_per_call"] if asynchronous else None,
            1,
            "per call",
            most=True,
        ),
        _target(
            f"PostgreSQL {procs} >= 20,000 reads/s",
            pg["calls_per_s"] if pg else None,
            20_000,
            "/s",
        ),
        _target(
            "export >= 2.5x D", _ratio(export, _scan(results, "naive", "rows_per_s")), 2.5, "x"
        ),
        _target("export >= 0.8x E", _ratio(export, _scan(results, "adbc", "rows_per_s")), 0.8, "x"),
        _target(
            f"export peak RSS <= {MIB_TARGET} MiB (target at 5,000,000 rows)",
            _scan(results, "accessaudit", "peak_mib"),
            MIB_TARGET,
            "MiB",
            most=True,
        ),
        _target(
            "verify >= 200,000 rows/s", verify["rows_per_s"] if verify else None, 200_000, "/s"
        ),
    ]


def target_lines(checked: list[dict[str, Any]]) -> list[str]:
    """One line per target: met / NOT MET / not run, with the measured value."""
    lines = []
    for t in checked:
        if t["met"] is None:
            verdict, value = "not run", ""
        else:
            verdict = "met" if t["met"] else "NOT MET"
            ratio = t["unit"] == "x"
            amount = format(t["measured"], ".2f" if ratio or t["measured"] < 10 else ",.0f")
            value = f"measured {amount}{'x' if ratio else ' ' + t['unit']}"
        lines.append(f"  {verdict:<8} {t['target']:<62} {value}".rstrip())
    return lines


def render(results: dict[str, Any]) -> str:
    """The whole report."""
    m, config = results["machine"], results["config"]
    out = [
        f"accessaudit bench, {m['date']}: {m['cpus']} CPUs, {m['platform']}, Python {m['python']}, "
        f"SQLite {m['sqlite']}" + (f", PostgreSQL {m['postgres']}" if m.get("postgres") else ""),
        f"{config['reps']} reps per leg ({config['calls']:,} calls each), "
        f"{config['scan_reps']} per scan; the median rep is shown",
        f"load average at start {m['loadavg_start']}, at end {m['loadavg_end']}",
    ]
    if max(m["loadavg_start"][0], m["loadavg_end"][0]) > 0.5 * (m["cpus"] or 1):
        out.append("  the machine was busy: figures are lower and noisier than on an idle one")
    calls = call_table(results)
    if calls:
        out += [
            "",
            "per call (gated: decide, a durable decision record, the outcome record committed"
            " (synced with the next decision); baselines: 1 durable record, no decision)",
        ]
        out += [_header("calls/s"), *calls]
    web = results.get("web")
    if web is not None:
        out += [
            "",
            "per request, examples/fastapi_app.py called as an ASGI app (gated: middleware, "
            "ORM integration, gate; ungated: the same endpoint and query, none of them)",
            _header("requests/s"),
        ]
        for name in ("gated", "gate only", "ungated"):
            leg = web[name]
            row = _row(name, leg["calls_per_s"], leg["p50_us"], leg["p99_us"], None)
            out.append(f"{row}  {leg['cpu_us_per_request']:,.0f} µs CPU/request")
        out.append(
            f"    gated costs {web['time_ratio']:.2f}x the ungated time per request "
            f"({web['cpu_ratio']:.2f}x its CPU); the gated function alone "
            f"{web['gate_only_ratio']:.2f}x"
        )
    dump = dump_table(results)
    if dump:
        out += ["", "log scans, each in a fresh process", _header("rows/s"), *dump]
    if "micro" in results:
        out += [
            "",
            "cost split of one gated call, 1 thread, SQLite (µs per op: median over reps)",
        ]
        out += micro_table(results["micro"])
    out += ["", "targets", *target_lines(results["targets"])]
    return "\n".join(out)
