"""A writer killed by the crash tests: prints each event id once its append has returned.

Run as ``python -m tests.crash_writer URL KEY_HEX``. Output lines are flushed one by one, so
the parent knows exactly which events were acknowledged before the SIGKILL.
"""

from __future__ import annotations

import sys

import structlog

from accessaudit import MacKey, SqlStore
from tests.strategies import make_event


def main() -> None:
    """Append batches of 1-3 events forever, acknowledging each after its commit."""
    url, key_hex = sys.argv[1], sys.argv[2]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    with SqlStore(url, key=MacKey(bytes.fromhex(key_hex)), timeout=30) as store:
        print("ready", flush=True)
        i = 0
        while True:
            batch = [make_event(request_id=f"r{i}") for _ in range(1 + i % 3)]
            store.append(batch)
            sys.stdout.write("".join(f"{e.event_id}\n" for e in batch))
            sys.stdout.flush()
            i += 1


if __name__ == "__main__":
    main()
