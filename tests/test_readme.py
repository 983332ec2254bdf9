"""The README's Python example runs as written, and its CLI commands exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from accessaudit import SqlStore, load_key, verify_store

if TYPE_CHECKING:
    import pytest

README = Path(__file__).parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_library_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every python block in the README executes and leaves a verified log behind."""
    monkeypatch.chdir(tmp_path)
    blocks = _python_blocks()
    assert blocks
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})  # noqa: S102
    with SqlStore("sqlite:///example.db") as store:
        assert store.count() >= 1
        assert verify_store(store, load_key(Path("example.key"))).intact


def test_readme_opens_with_the_two_commands() -> None:
    """The first code block holds the demo and the test command, in that order."""
    first = re.search(r"```(?:bash|sh)?\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert first is not None
    lines = [line for line in first.group(1).splitlines() if line and not line.startswith("#")]
    assert lines == ["./scripts/demo", "./scripts/test"]
    for script in ("demo", "test"):
        assert (README.parent / "scripts" / script).stat().st_mode & 0o111
