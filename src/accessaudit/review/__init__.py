"""Review of the log: verify, reports, the customer transparency report, export, tail, recovery.

Built on the record, the store and the gate's evidence; every read of the log it makes is
itself recorded.
"""

__all__: list[str] = []
