"""The store's boundary: nothing outside ``accessaudit/store/`` imports its private modules.

Everything else reaches the store through ``accessaudit.store``'s public names (``__all__``):
the ``AuditStore`` protocol, ``SqlStore`` and the types their methods take and return.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import accessaudit

PACKAGE = Path(accessaudit.__file__).parent
STORE = PACKAGE / "store"
PRIVATE_PREFIX = "accessaudit.store._"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` names, resolving relative imports."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def private_store_imports(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """Each import in ``source`` that reaches a private module of ``accessaudit.store``.

    Every spelling counts: ``import accessaudit.store._x``, ``from accessaudit.store._x
    import y``, ``from accessaudit.store import _x`` and their relative forms, wherever they
    stand (module level, ``if TYPE_CHECKING:``, inside a function).
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: import {alias.name}"
                for alias in node.names
                if alias.name.startswith(PRIVATE_PREFIX)
            ]
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(node, module, is_package)
            names = [alias.name for alias in node.names]
            if target.startswith(PRIVATE_PREFIX) or (
                target == "accessaudit.store" and any(n.startswith("_") for n in names)
            ):
                found.append(f"line {node.lineno}: from {target} import {', '.join(names)}")
    return found


def _outside_store() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if STORE not in p.parents)


def test_nothing_outside_the_store_imports_its_private_modules() -> None:
    """Modules outside store/ use accessaudit.store's public names, never store._anything."""
    offenders = [
        f"{path.relative_to(PACKAGE.parent)} {found}"
        for path in _outside_store()
        for found in private_store_imports(
            path.read_text(encoding="utf-8"),
            _module_name(path),
            is_package=path.name == "__init__.py",
        )
    ]
    assert not offenders, (
        "private modules of accessaudit.store imported from outside the store package "
        "(use or add a public name in accessaudit.store instead):\n  " + "\n  ".join(offenders)
    )


def test_the_walk_covers_the_package() -> None:
    """The check reads every module outside the store, e.g. the CLI and the report."""
    names = {_module_name(path) for path in _outside_store()}
    assert {"accessaudit", "accessaudit.review.report", "accessaudit.review.verify"} <= names
    assert not any(name.startswith("accessaudit.store") for name in names)


@pytest.mark.parametrize(
    ("source", "module", "is_package", "named"),
    [
        ("import accessaudit.store._schema", "accessaudit.report", False, "store._schema"),
        ("import accessaudit.store._schema as s", "accessaudit.report", False, "store._schema"),
        ("from accessaudit.store._schema import t", "accessaudit.report", False, "store._schema"),
        ("from accessaudit.store import SqlStore, _review", "accessaudit.x", False, "_review"),
        ("from .store._schema import events", "accessaudit.report", False, "store._schema"),
        ("from .store import _review", "accessaudit.report", False, "import _review"),
        ("from ..store._append import Tail", "accessaudit.review.recovery", False, "_append"),
        ("from .._rows import x\nfrom ..store import _rows", "accessaudit.review", True, "_rows"),
        (
            "if TYPE_CHECKING:\n    from accessaudit.store._engine import URL",
            "a.x",
            False,
            "_engine",
        ),
        ("def f():\n    from accessaudit.store._deadline import budget", "a.x", False, "_deadline"),
    ],
)
def test_every_spelling_of_a_private_import_is_caught(
    source: str, module: str, *, is_package: bool, named: str
) -> None:
    """Absolute, relative, aliased, deferred and TYPE_CHECKING imports are all found."""
    (found,) = private_store_imports(source, module, is_package=is_package)
    assert named in found
    assert "accessaudit.store" in found


@pytest.mark.parametrize(
    "source",
    [
        "from accessaudit.store import DEFAULT_URL, AuditStore, SqlStore",
        "import accessaudit.store",
        "from accessaudit import _rows",
        "from accessaudit._chain import check_chain",
        "from .store import SqlStore",
    ],
)
def test_public_store_names_and_other_private_modules_pass(source: str) -> None:
    """The public store package, and private modules outside the store, are not flagged."""
    assert private_store_imports(source, "accessaudit.report") == []
