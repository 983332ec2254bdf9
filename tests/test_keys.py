"""The HMAC key: created private, loaded from a file or the environment, never guessed."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

import pytest

from accessaudit import (
    MacKey,
    MacKeyError,
    SqlStore,
    create_key_file,
    export_log,
    load_key,
    verify_store,
)
from accessaudit.record.keys import KEY_ENV, KEY_FILE_ENV
from tests.strategies import make_event

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import Backend


def test_key_file_is_created_private_and_not_overwritten(tmp_path: Path) -> None:
    """A new key file has mode 0600; a second create keeps the first key."""
    path = tmp_path / "hmac.key"
    assert create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = load_key(path)
    assert not create_key_file(path)
    assert load_key(path) == first
    assert len(first.secret) == 32


def test_environment_key_wins_over_default_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$ACCESSAUDIT_HMAC_KEY (hex) is used when no file is named."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(KEY_ENV, "ab" * 32)
    assert load_key() == MacKey(bytes.fromhex("ab" * 32))


def test_key_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$ACCESSAUDIT_KEY_FILE names the file when the key itself is not in the environment."""
    path = tmp_path / "k"
    create_key_file(path)
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv(KEY_FILE_ENV, str(path))
    assert load_key() == load_key(path)


def test_missing_key_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No key anywhere: the error names the file, the variable and `accessaudit init`."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    with pytest.raises(MacKeyError, match=r"accessaudit.key does not exist.*accessaudit init"):
        load_key()


def test_group_readable_key_file_is_refused(tmp_path: Path) -> None:
    """A key others can read is refused with the chmod that fixes it."""
    path = tmp_path / "k"
    create_key_file(path)
    path.chmod(0o640)
    with pytest.raises(MacKeyError, match="chmod 600"):
        load_key(path)


@pytest.mark.parametrize("content", ["", "zz" * 32, "ab" * 16, "\x00"])
def test_malformed_key_is_refused(tmp_path: Path, content: str) -> None:
    """Short, empty or non-hex keys are refused, naming where they came from."""
    path = tmp_path / "k"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content.encode())
    os.close(fd)
    with pytest.raises(MacKeyError, match="key file"):
        load_key(path)


def test_key_id_and_repr_do_not_reveal_the_secret() -> None:
    """The key id is a one-way digest and repr never shows the key."""
    key = MacKey(b"\x01" * 32)
    assert key.key_id not in (b"\x01" * 32).hex()
    assert "01010101" not in repr(key)
    assert len(key.key_id) == 16


def test_seal_depends_on_key_and_link() -> None:
    """Different keys or links give different MACs."""
    link = "ab" * 32
    assert MacKey(b"\x01" * 32).seal(link) != MacKey(b"\x02" * 32).seal(link)
    assert MacKey(b"\x01" * 32).seal(link) != MacKey(b"\x01" * 32).seal("cd" * 32)


def test_the_key_is_given_once_to_the_store(
    backend: Backend, store: SqlStore, tmp_path: Path
) -> None:
    """verify_store and export_log use the store's key; without one, MacKeyError says so."""
    store.append([make_event() for _ in range(3)])
    assert verify_store(store).mac_checked
    assert verify_store(store).intact
    assert not verify_store(store, None).mac_checked  # asked for: hashes and links only
    assert export_log(store, tmp_path / "out", actor="auditor").rows == 3
    with SqlStore(backend.url) as keyless:
        with pytest.raises(MacKeyError, match="verifying the MACs needs the HMAC key"):
            verify_store(keyless)
        with pytest.raises(MacKeyError, match="exporting needs the HMAC key"):
            export_log(keyless, tmp_path / "other", actor="auditor")
    assert not (tmp_path / "other").exists()
