"""The ``accessaudit`` command line: a thin shell over the library (see ``app``)."""

from accessaudit.cli.app import app, main

__all__ = ["app", "main"]
