"""The record: its fields, canonical encoding, hashes and MAC, the HMAC key, its log events.

The bottom layer: it imports nothing else of accessaudit but ``exceptions``. The store keeps
records, the gate makes them, review checks and shows them.
"""

__all__: list[str] = []
