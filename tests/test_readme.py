"""The README's Python example runs as written, and its CLI commands exist."""

from __future__ import annotations

import re
import sys
import tomllib
import types
from pathlib import Path

import pytest

from accessaudit import EventType, Policy, SqlStore, load_key, verify_store

README = Path(__file__).parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def _named_files() -> dict[str, str]:
    """The README's TOML blocks whose first line names a file (``# policy.toml``)."""
    blocks = re.findall(r"```toml\n# (\S+)\n(.*?)```", README.read_text(), flags=re.DOTALL)
    return dict(blocks)


def _run(block: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Execute a block as the body of a module ``readme``, as a reader's script would run.

    A real module in ``sys.modules``: SQLAlchemy resolves a mapped class's annotations
    (``Mapped[int]``) through the module that defines it.
    """
    module = types.ModuleType("readme")
    monkeypatch.setitem(sys.modules, "readme", module)
    exec(compile(block, str(README), "exec"), module.__dict__)  # noqa: S102


def test_readme_policy_is_valid() -> None:
    """The policy shown in the README loads."""
    files = _named_files()
    assert "policy.toml" in files
    assert Policy.from_dict(tomllib.loads(files["policy.toml"])).roles


def test_readme_library_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every python block in the README executes and leaves a verified log behind."""
    monkeypatch.chdir(tmp_path)
    for name, body in _named_files().items():
        (tmp_path / name).write_text(body)
    blocks = _python_blocks()
    assert blocks
    for block in blocks:
        _run(block, monkeypatch)
    with SqlStore("sqlite:///example.db") as store:
        types = [r.event.event_type for r in store.read()]
        assert verify_store(store, load_key(Path("example.key"))).intact
    # The gate example: a grant, an allowed read, a denied one, a service read; the
    # SQLAlchemy example: an ungated read refused, a gated read, a forgotten WHERE withheld;
    # then the directly appended event.
    assert types == [
        EventType.GRANT_ISSUED,
        EventType.ACCESS_ALLOWED,
        EventType.ACCESS_COMPLETED,
        EventType.ACCESS_DENIED,
        EventType.ACCESS_ALLOWED,
        EventType.ACCESS_COMPLETED,
        EventType.ACCESS_DENIED,
        EventType.ACCESS_ALLOWED,
        EventType.ACCESS_COMPLETED,
        EventType.ACCESS_ALLOWED,
        EventType.ACCESS_FAILED,
        EventType.ACCESS_ALLOWED,
    ]


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_each_readme_example_runs_on_its_own(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader can run any one Python block alone, in an empty directory, and get a sound log."""
    monkeypatch.chdir(tmp_path)
    for name, body in _named_files().items():
        (tmp_path / name).write_text(body)
    _run(_python_blocks()[index], monkeypatch)
    with SqlStore("sqlite:///example.db") as store:
        assert verify_store(store, load_key(Path("example.key"))).intact


def test_readme_opens_with_the_two_commands() -> None:
    """The first code block holds the demo and the test command, in that order."""
    first = re.search(r"```(?:bash|sh)?\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert first is not None
    lines = [line for line in first.group(1).splitlines() if line and not line.startswith("#")]
    assert lines == ["./scripts/demo", "./scripts/test"]
    for script in ("demo", "test"):
        assert (README.parent / "scripts" / script).stat().st_mode & 0o111
