"""The README's Python example runs as written, and its CLI commands exist."""

from __future__ import annotations

import re
import tomllib
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
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})  # noqa: S102
    with SqlStore("sqlite:///example.db") as store:
        types = [r.event.event_type for r in store.read()]
        assert verify_store(store, load_key(Path("example.key"))).intact
    # The gate example: a grant, an allowed read, a denied one, a service read, then the
    # directly appended event.
    assert types == [
        EventType.GRANT_ISSUED,
        EventType.ACCESS_ALLOWED,
        EventType.ACCESS_COMPLETED,
        EventType.ACCESS_DENIED,
        EventType.ACCESS_ALLOWED,
        EventType.ACCESS_COMPLETED,
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
    block = _python_blocks()[index]
    exec(compile(block, str(README), "exec"), {"__name__": "readme"})  # noqa: S102
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
