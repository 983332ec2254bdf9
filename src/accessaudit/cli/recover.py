"""``accessaudit recover``: let a chain halted by a forged or damaged newest record go on.

A thin shell over ``accessaudit.recover_chain``: it records, as the person running
it, a recovery record that acknowledges the damaged records (which stay in the log) and
prints what it acknowledged and the chain's new head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from accessaudit.cli._common import reported_errors, show_line
from accessaudit.cli._options import LogOptions, shared_options
from accessaudit.review.recovery import recover_chain
from accessaudit.store import DEFAULT_CHAIN

if TYPE_CHECKING:
    from accessaudit.review.recovery import Recovery

__all__ = ["recover"]

SeqOption = Annotated[
    int,
    typer.Option(
        "--seq",
        min=1,
        help="The newest record's seq, as the append error and `accessaudit verify` name it.",
    ),
]
ReasonOption = Annotated[
    str,
    typer.Option(
        "--reason", help="Why, for the record: what was found, and what was done about it."
    ),
]
ChainOption = Annotated[str, typer.Option("--chain", help="The halted chain.")]


@shared_options
def recover(
    log: LogOptions, seq: SeqOption, reason: ReasonOption, chain: ChainOption = DEFAULT_CHAIN
) -> None:
    """Acknowledge a chain's damaged newest records (kept as evidence) so appends go on."""
    with reported_errors(), log.open(chain_id=chain) as store:
        done = recover_chain(store, halted_seq=seq, actor=log.actor, reason=reason)
    _print_recovery(chain, done)


def _print_recovery(chain: str, done: Recovery) -> None:
    """What the recovery acknowledged, and the chain's new head."""
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
