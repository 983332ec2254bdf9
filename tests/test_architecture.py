"""The package's layers: the map in ARCHITECTURE.md, the import direction, public names.

``record`` <- ``store`` <- ``gate`` <- ``sqlalchemy`` <- ``asgi`` <- ``review`` <- ``cli``:
a module imports only from its own layer and the ones before it (and from
``accessaudit.exceptions``), so the layers the code has stay visible in the tree.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
import warnings
from pathlib import Path

import pytest

import accessaudit
from accessaudit._moved import MOVED

PACKAGE = Path(accessaudit.__file__).parent
ROOT = PACKAGE.parent.parent
LAYERS = ("record", "store", "gate", "sqlalchemy", "asgi", "review", "cli")


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _layer(path: Path) -> str | None:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else None


def _imported(path: Path) -> list[tuple[int, str]]:
    """Absolute accessaudit modules a file imports (the code uses absolute imports only)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name.startswith("accessaudit.")]


def test_the_module_map_lists_exactly_the_modules_in_the_tree() -> None:
    """ARCHITECTURE.md names every module under src/accessaudit, and no other."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    mapped = set(re.findall(r"^(accessaudit/\S+\.py)\s", text, flags=re.MULTILINE))
    present = {str(p.relative_to(PACKAGE.parent)) for p in _modules()}
    assert sorted(present - mapped) == [], "modules missing from ARCHITECTURE.md's map"
    assert sorted(mapped - present) == [], "ARCHITECTURE.md's map names modules that are gone"


def test_each_layer_imports_only_from_the_layers_before_it() -> None:
    """No module reaches up: record < store < gate < sqlalchemy < asgi < review < cli."""
    upward = []
    for path in _modules():
        layer = _layer(path)
        if layer is None:
            continue
        for line, name in _imported(path):
            target = name.split(".")[1]
            if target in LAYERS and LAYERS.index(target) > LAYERS.index(layer):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert upward == []


def test_every_public_module_says_what_it_offers() -> None:
    """Each module whose name does not start with _ has an __all__ of names it defines."""
    missing = []
    for path in _modules():
        if path.name.startswith("_") and path.name != "__init__.py":
            continue
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        module = importlib.import_module(".".join(parts))
        names = getattr(module, "__all__", None)
        if names is None:
            missing.append(".".join(parts))
            continue
        assert all(hasattr(module, name) for name in names), module.__name__
    assert missing == []


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_a_moved_module_still_imports_from_its_old_path(old: str, new: str) -> None:
    """The old path warns, naming the new one, and gives the very same module object."""
    sys.modules.pop(old, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert importlib.util.find_spec(old) is not None  # looking for it does not warn
    with pytest.warns(DeprecationWarning, match=rf"{re.escape(old)} moved to {re.escape(new)}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    spec = module.__spec__
    assert spec is not None
    assert spec.name == new  # still the module's own spec: reload and tools see the real one
    assert spec.origin is not None
    assert spec.origin.endswith(new.replace(".", "/") + ".py")


def test_the_new_paths_import_without_warnings() -> None:
    """Code on the new layout never meets a deprecation warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for new in MOVED.values():
            importlib.import_module(new)
