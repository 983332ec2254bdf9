"""Small files: written whole or not at all, and secrets read only if kept private.

Written and synced under a temporary name, then linked into place: the file is either
absent or complete, even after a crash, and ``os.link`` fails if the name was taken
meanwhile, so nothing is ever written over (two concurrent writers cannot both win).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


def write_new(path: Path, text: str, mode: int) -> bool:
    """Write ``text`` to a new file ``path`` with ``mode``; False if ``path`` exists.

    ``OSError`` for anything else (a missing directory, no space): callers say what it was.
    """
    if path.exists():
        return False
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        sync_directory(path.parent)
        return True
    finally:
        temporary.unlink(missing_ok=True)


def sync_directory(directory: Path) -> None:
    """Fsync a directory, so that a new name in it survives a crash."""
    fd = os.open(directory or Path(), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_private(path: Path, what: str, missing: str, error: type[Exception]) -> str:
    """The text of a secret's file, refused (``error``) unless only its owner can read it.

    ``what`` names the file in messages ("the key file"); ``missing`` is the message when
    there is none.
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except FileNotFoundError as e:
        raise error(missing) from e
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"cannot read {what} {path}: {e}") from e
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise error(
            f"{what} {path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}`"
        )
    return text
