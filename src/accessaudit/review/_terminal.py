"""Stored text made safe to show: on a terminal, and in a spreadsheet.

Whoever can write a record (an actor id, a case id, a justification) chooses its text, and
the log keeps it exactly. Shown raw on a terminal, a newline would forge a line of output
and an escape sequence would move the cursor, recolour or hide what follows; opened in a
spreadsheet, a cell starting with ``=`` would run as a formula. The CLI passes every stored
value it prints through one of the functions here. JSON output needs neither: it escapes
control characters itself and must stay exact.
"""

from __future__ import annotations

import unicodedata
from typing import Final

__all__ = ["spreadsheet_safe", "terminal_safe"]

_SHORT: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    short = _SHORT.get(char)
    if short is not None:
        return short
    point = ord(char)
    if point <= 0xFF:
        return f"\\x{point:02x}"
    if point <= 0xFFFF:
        return f"\\u{point:04x}"
    return f"\\U{point:08x}"


def terminal_safe(text: str) -> str:
    """``text`` with every character that is not plain printable text escaped as in repr().

    Escaped: C0 and C1 controls (ESC, CSI and so newline, tab, NUL), DEL, Unicode format
    characters (bidi overrides and isolates, zero-width characters), line and paragraph
    separators, lone surrogates, private-use and unassigned code points. Printable text and
    spaces (including non-ASCII ones) are kept, and so is the backslash: the result is for
    reading, not for parsing back (use JSON output for exact values).
    """
    if text.isprintable():  # the common case: nothing to escape
        return text
    return "".join(
        char if char.isprintable() or unicodedata.category(char) == "Zs" else _escape(char)
        for char in text
    )


# OWASP, "CSV Injection": a cell starting with one of these is read as a formula (or, for
# tab and carriage return, can be shifted into one) by Excel, LibreOffice or Google Sheets.
_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: str) -> str:
    """``value`` with a ``'`` in front if a spreadsheet would take it for a formula."""
    return f"'{value}" if value.startswith(_FORMULA_STARTS) else value
