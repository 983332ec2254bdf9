"""Reading a chain's rows from a store for the chain checker (``record._chain``).

The checker works on rows, wherever they come from (the database, an export's Parquet
files); these are the readers that take them from a store: the whole chain or a range, and
the clean run a parallel verify's second process reports.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
from typing import TYPE_CHECKING, Any

from accessaudit.record._chain import ChainChecker
from accessaudit.record.integrity import is_digest

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from accessaudit.record.keys import MacKey
    from accessaudit.store import AuditStore

__all__ = ["clean_run", "stored_rows"]


@contextlib.contextmanager
def stored_rows(
    store: AuditStore,
    chain_id: str,
    *,
    start_seq: int | None = None,
    end_seq: int | None = None,
) -> Iterator[tuple[tuple[str, ...], Iterator[Sequence[Any]]]]:
    """A chain's rows from ``store`` as tuples, with their column names, for ``check_chain``.

    The names are known only once the query has run; the read is closed on leaving.
    """
    batches = store.row_batches(chain_id, start_seq=start_seq, end_seq=end_seq)
    try:
        first = next(batches, None)
        if first is None:
            yield (), iter(())
            return
        rows = itertools.chain.from_iterable(b.rows for b in itertools.chain((first,), batches))
        yield first.columns, rows
    finally:
        batches.close()


def clean_run(
    store: AuditStore,
    chain_id: str,
    key: MacKey | None,
    span: tuple[int, int],
    heads: Mapping[int, str],
) -> tuple[str | None, int, str | None, int]:
    """The run of rows after ``span[0]`` (up to ``span[1]``) that pass every check.

    What the worker of a parallel verify computes. Returns the chain hash stored at
    ``span[0]`` that it started from, the run's last seq and chain hash, and its length
    (0, with ``span[0]``, if there is no such run). Rows in it produce no finding, so none
    are collected: the run stops before the first row that would.
    """
    middle, end = span
    nothing = None, middle, None, 0
    with stored_rows(store, chain_id, start_seq=middle, end_seq=end) as (columns, rows):
        if "seq" not in columns or "chain_hash" not in columns:
            return nothing
        hash_at = columns.index("chain_hash")
        groups = itertools.groupby(rows, key=operator.itemgetter(columns.index("seq")))
        seq, group = next(groups, (None, iter(())))
        start = next(group, None)
        if seq != middle or start is None or next(group, None) is not None:
            return nothing
        start_hash = start[hash_at]
        if not is_digest(start_hash):
            return nothing
        checker = ChainChecker(chain_id, key, (), (middle, start_hash), columns)
        for seq, group in groups:
            lone = next(group)
            if (
                seq != checker.expected
                or next(group, None) is not None
                or heads.get(seq, lone[hash_at]) != lone[hash_at]
                or not checker.passes_fast(seq, lone)
            ):
                break
        return start_hash, checker.expected - 1, checker.previous, checker.summary.rows
