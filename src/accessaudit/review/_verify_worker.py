"""The second process of a parallel verify: ``python -m accessaudit.review._verify_worker``.

Reads its task as JSON on stdin (database URL, chain, key, seq span, expected heads),
prints ``_reading.clean_run``'s answer as JSON on stdout. See ``verify._check_in_two``.
"""

from __future__ import annotations

import json
import sys

from accessaudit.record.keys import MacKey
from accessaudit.review._reading import clean_run
from accessaudit.store import SqlStore


def main() -> None:
    """Run the task on stdin."""
    task = json.load(sys.stdin)
    key = None if task["key"] is None else MacKey(bytes.fromhex(task["key"]))
    heads = {int(seq): str(chain_hash) for seq, chain_hash in task["heads"]}
    span = (int(task["span"][0]), int(task["span"][1]))
    with SqlStore(task["url"], chain_id=task["chain_id"], timeout=task["timeout"]) as store:
        run = clean_run(store, task["chain_id"], key, span, heads)
    json.dump(run, sys.stdout)


if __name__ == "__main__":
    main()
