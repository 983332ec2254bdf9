"""The gate: who reads and why (context, purposes, policy), on what evidence, and the decorator.

Built on the record and the store: every decision is a record committed before the protected
code runs.
"""

from accessaudit.gate._gate import ArgumentGetter, Gate, Guard

__all__ = ["ArgumentGetter", "Gate", "Guard"]
