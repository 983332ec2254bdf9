"""``accessaudit policy|grant|incident|legal``: checking policies and managing evidence.

Each command parses its options, calls one library function and prints the result; every
change it makes is an event in the audit chain, recorded as the person running it (``--by``,
default: the login name). Listing evidence reads the log, so each list is recorded too (an
``audit.report`` event) before it is shown.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from accessaudit.cli._common import command_group, reported_errors, show_line, time_option
from accessaudit.cli._options import FormatOption, LogOptions, OutputFormat, shared_options
from accessaudit.gate.evidence import Evidence, evidence_dict
from accessaudit.gate.policy import Policy
from accessaudit.gate.registry import EvidenceRegistry
from accessaudit.record._clock import now_utc
from accessaudit.review._terminal import terminal_safe
from accessaudit.review.report import ReportFilter, record_report

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = [
    "grant_app",
    "grant_issue",
    "grant_list",
    "grant_revoke",
    "incident_app",
    "incident_close",
    "incident_list",
    "incident_open",
    "legal_app",
    "legal_list",
    "legal_register",
    "policy_app",
    "policy_check",
]

policy_app = command_group("Check access policy files.")
grant_app = command_group("Support grants customers give for a case (support_request).")
incident_app = command_group("Incidents that justify technical_problem access.")
legal_app = command_group("Legal requests that justify legal_requirement access.")


NoteOption = Annotated[
    str | None, typer.Option("--note", help="Why (free text; stored in the log, so no data).")
]
CustomerFilter = Annotated[str | None, typer.Option("--customer", help="Only this customer.")]


@contextmanager
def _registry(log: LogOptions) -> Iterator[EvidenceRegistry]:
    with log.open() as store:
        yield EvidenceRegistry(store)


def _record_list(
    registry: EvidenceRegistry, log: LogOptions, kind: str, customer: str | None, rows: int
) -> None:
    """Record the listing as an ``audit.report`` (before it is shown: no record, no list)."""
    flt = ReportFilter(customer_id=customer)
    record_report(registry.store, log.actor, kind, flt, rows)


def _print(evidence: Sequence[Evidence], output: OutputFormat, columns: Sequence[str]) -> None:
    now = now_utc()
    rows = [evidence_dict(e, now) for e in evidence]
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("none")
        return
    shown = [["status", *columns]] + [
        [_cell(row["status"]), *(_cell(row[c]) for c in columns)] for row in rows
    ]
    widths = [max(len(r[i]) for r in shown) for i in range(len(shown[0]))]
    for line in shown:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def _cell(value: object) -> str:
    """A value as table text; ids and notes come from the log, so they are escaped."""
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(terminal_safe(str(v)) for v in value) or "-"
    return terminal_safe(str(value))


# -- policy -------------------------------------------------------------------------------


@policy_app.command("check")
@shared_options
def policy_check(
    file: Annotated[Path, typer.Argument(help="The policy TOML file.")],
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Validate a policy file; print its version, or every problem with its key path."""
    with reported_errors(as_json=output is OutputFormat.JSON):
        policy = Policy.load(file)
    if output is OutputFormat.JSON:
        typer.echo(json.dumps({"file": str(file), "valid": True, "version": policy.version}))
        return
    show_line(
        f"{file}: valid; version {policy.version}; {len(policy.roles)} role(s), "
        f"{len(policy.resources)} resource(s)"
    )


# -- grants -------------------------------------------------------------------------------


@grant_app.command("issue")
@shared_options
def grant_issue(
    log: LogOptions,
    customer: Annotated[str, typer.Option("--customer", help="The customer giving access.")],
    case: Annotated[str, typer.Option("--case", help="The support case it is for.")],
    category: Annotated[
        list[str],
        typer.Option(
            "--category",
            help="A data category it covers. Repeatable: --category contact --category billing.",
        ),
    ],
    expires: Annotated[
        str, typer.Option("--expires", help="When it ends: 12h, 7d, or an ISO time with zone.")
    ],
    max_records: Annotated[
        int | None,
        typer.Option("--max-records", min=1, max=2**63 - 1, help="At most this many records."),
    ] = None,
    note: NoteOption = None,
) -> None:
    """Record a grant the customer gave for a support case; print its id."""
    with reported_errors(), _registry(log) as registry:
        grant = registry.issue_grant(
            customer_id=customer,
            case_id=case,
            data_categories=category,
            expires_at=time_option(expires, "--expires"),
            max_records=max_records,
            issued_by=log.actor,
            note=note,
        )
    show_line(grant.grant_id)


@grant_app.command("revoke")
@shared_options
def grant_revoke(
    log: LogOptions,
    grant_id: Annotated[str, typer.Argument(help="The grant's id.")],
    note: NoteOption = None,
) -> None:
    """Withdraw a grant: support access under it is refused from now on."""
    with reported_errors(), _registry(log) as registry:
        grant = registry.revoke_grant(grant_id, revoked_by=log.actor, note=note)
    show_line(f"{grant.grant_id} revoked")


@grant_app.command("list")
@shared_options
def grant_list(
    log: LogOptions,
    customer: CustomerFilter = None,
    case: Annotated[
        str | None, typer.Option("--case", help="Only grants for this support case (ticket id).")
    ] = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Every grant with its status (live, expired, revoked, tampered). Recorded."""
    with (
        reported_errors(as_json=output is OutputFormat.JSON),
        _registry(log) as registry,
    ):
        grants = registry.grants(customer, case_id=case)
        _record_list(registry, log, "grant list", customer, len(grants))
    _print(
        grants,
        output,
        ["grant_id", "customer_id", "case_id", "data_categories", "expires_at", "max_records"],
    )


# -- incidents ----------------------------------------------------------------------------


@incident_app.command("open")
@shared_options
def incident_open(
    log: LogOptions,
    incident_id: Annotated[str, typer.Argument(help="The incident's id, e.g. INC-1042.")],
    customer: Annotated[
        list[str] | None,
        typer.Option(
            "--customer",
            help="An affected customer. Repeatable: --customer acme --customer globex.",
        ),
    ] = None,
    all_customers: Annotated[
        bool, typer.Option("--all-customers", help="Every customer is affected.")
    ] = False,
    note: NoteOption = None,
) -> None:
    """Record an open incident; engineers may then read affected customers' data."""
    with reported_errors(), _registry(log) as registry:
        incident = registry.open_incident(
            incident_id,
            customers=customer or (),
            all_customers=all_customers,
            opened_by=log.actor,
            note=note,
        )
    show_line(f"{incident.incident_id} open")


@incident_app.command("close")
@shared_options
def incident_close(
    log: LogOptions,
    incident_id: Annotated[str, typer.Argument(help="The incident's id.")],
    note: NoteOption = None,
) -> None:
    """Close an incident: technical_problem access under it is refused from now on."""
    with reported_errors(), _registry(log) as registry:
        incident = registry.close_incident(incident_id, closed_by=log.actor, note=note)
    show_line(f"{incident.incident_id} closed")


@incident_app.command("list")
@shared_options
def incident_list(
    log: LogOptions,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Every incident with its status (open, closed, tampered). Recorded."""
    with (
        reported_errors(as_json=output is OutputFormat.JSON),
        _registry(log) as registry,
    ):
        incidents = registry.incidents()
        _record_list(registry, log, "incident list", None, len(incidents))
    _print(incidents, output, ["incident_id", "customers", "all_customers", "opened_at"])


# -- legal requests -----------------------------------------------------------------------


@legal_app.command("register")
@shared_options
def legal_register(
    log: LogOptions,
    reference: Annotated[str, typer.Argument(help="The request's reference, e.g. SUB-2026-17.")],
    authority: Annotated[str, typer.Option("--authority", help="Who issued it.")],
    customer: Annotated[str, typer.Option("--customer", help="The customer it names.")],
    expires: Annotated[
        str, typer.Option("--expires", help="When it lapses: 30d, or an ISO time with zone.")
    ],
    no_notify_until: Annotated[
        str | None,
        typer.Option("--no-notify-until", help="Do not tell the customer before this time."),
    ] = None,
    note: NoteOption = None,
) -> None:
    """Record a legal request naming a customer; legal staff may then read that data."""
    with reported_errors(), _registry(log) as registry:
        request = registry.register_legal_request(
            reference,
            authority=authority,
            customer_id=customer,
            expires_at=time_option(expires, "--expires"),
            notify_after=None
            if no_notify_until is None
            else time_option(no_notify_until, "--no-notify-until"),
            registered_by=log.actor,
            note=note,
        )
    show_line(f"{request.reference} registered")


@legal_app.command("list")
@shared_options
def legal_list(
    log: LogOptions,
    customer: CustomerFilter = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Every legal request with its status (in_force, expired, tampered). Recorded."""
    with (
        reported_errors(as_json=output is OutputFormat.JSON),
        _registry(log) as registry,
    ):
        requests = registry.legal_requests(customer)
        _record_list(registry, log, "legal list", customer, len(requests))
    _print(
        requests, output, ["reference", "authority", "customer_id", "expires_at", "notify_after"]
    )
