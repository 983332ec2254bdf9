"""Where modules moved when the package was split into layers: old paths still import.

``import accessaudit.report`` (and ``from accessaudit.report import ReportFilter``) keep
working, with a ``DeprecationWarning`` naming the new path, and give the very module that
now lives at ``accessaudit.review.report``: one module object, not a copy. Only the public
modules of the old layout are listed; private ones (``accessaudit._chain``...) were never
promised to anyone.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType

#: Old module path -> new module path (removed in a later release).
MOVED: Final = {
    f"accessaudit.{old}": f"accessaudit.{new}"
    for old, new in {
        "bootstrap": "store.bootstrap",
        "cli_evidence": "cli.evidence",
        "cli_recover": "cli.recover",
        "cli_report": "cli.report",
        "context": "gate.context",
        "decisions": "gate.decisions",
        "demo": "cli.demo",
        "encoding": "record.encoding",
        "events": "record.events",
        "evidence": "gate.evidence",
        "export": "review.export",
        "fields": "record.fields",
        "findings": "record.findings",
        "integrity": "record.integrity",
        "keys": "record.keys",
        "log": "record.log",
        "policy": "gate.policy",
        "purposes": "gate.purposes",
        "recovery": "review.recovery",
        "registry": "gate.registry",
        "report": "review.report",
        "tail": "review.tail",
        "transparency": "review.transparency",
        "verify": "review.verify",
    }.items()
}


class _MovedLoader(importlib.abc.Loader):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new
        self.real_spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.new)
        self.real_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run (it ran under its new name); warn, and undo the import's relabel.

        The import machinery sets ``__spec__`` on the module it is handed, which is the
        module at the new path: put its own spec back, so that ``importlib.reload`` and
        anything else reading it see the real module.
        """
        module.__spec__ = self.real_spec
        warnings.warn(
            f"{self.old} moved to {self.new}; import it from there (the old path goes away "
            "in a later release)",
            DeprecationWarning,
            stacklevel=2,
        )


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds an old module path and hands back the module at its new one, with a warning.

    Only importing warns: looking for the module (``importlib.util.find_spec``) does not.
    """

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedLoader(fullname, new))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(finder, MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedFinder())
