"""``accessaudit recover``: let a chain halted by a forged or damaged newest record go on.

A thin shell over ``accessaudit.recovery.recover_chain``: it records, as the person running
it, a recovery record that acknowledges the damaged records (which stay in the log) and
prints what it acknowledged and the chain's new head.
"""

from __future__ import annotations

from typing import Annotated

import typer

from accessaudit._cli_common import (
    reported_errors,
    show_line,
)
from accessaudit._cli_options import (
    ByOption,
    DbOption,
    KeyFileOption,
    LogEventsOption,
    TimeoutOption,
    login_name,
)
from accessaudit.keys import load_key
from accessaudit.recovery import recover_chain
from accessaudit.store import DEFAULT_CHAIN, DEFAULT_URL, SqlStore


def recover(  # noqa: PLR0917 - a Typer command takes its options as parameters
    seq: Annotated[
        int,
        typer.Option(
            "--seq",
            min=1,
            help="The newest record's seq, as the append error and `accessaudit verify` name it.",
        ),
    ],
    reason: Annotated[
        str,
        typer.Option(
            "--reason", help="Why, for the record: what was found, and what was done about it."
        ),
    ],
    chain: Annotated[str, typer.Option("--chain", help="The halted chain.")] = DEFAULT_CHAIN,
    db: DbOption = DEFAULT_URL,
    key_file: KeyFileOption = None,
    by: ByOption = None,
    timeout: TimeoutOption = 5.0,
    log_events: LogEventsOption = False,
) -> None:
    """Acknowledge a chain's damaged newest records (kept as evidence) so appends go on."""
    with reported_errors():
        key = load_key(key_file)
        with SqlStore(db, key=key, chain_id=chain, timeout=timeout) as store:
            done = recover_chain(store, halted_seq=seq, actor=by or login_name(), reason=reason)
    record = done.record
    show_line(f"chain {chain}: recovery recorded as seq {record.seq} by {record.event.actor_id}")
    for finding in done.acknowledged:
        show_line(f"  acknowledged: {finding.code.value} at seq {finding.where}")
    show_line(f"  last sound record: seq {done.last_good_seq}, chain hash {done.last_good_hash}")
    show_line(
        f"appends continue after seq {record.seq}; the acknowledged records stay in the log "
        "and `accessaudit verify` still lists them"
    )
    if done.other_findings:
        show_line(
            f"note: {len(done.other_findings)} earlier finding(s) in this chain are not "
            "acknowledged; run `accessaudit verify`"
        )
    show_line(f"head {chain}:{record.seq}:{record.chain_hash}")
