"""Setting up a log: the HMAC key file, the schema and triggers, optionally a writer role."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from accessaudit.record.keys import KEY_ENV, create_key_file, key_file_path, load_key
from accessaudit.store import DEFAULT_TIMEOUT, SqlStore

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["init_store"]


def init_store(
    url: str,
    *,
    key_file: Path | None = None,
    writer_role: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    ddl_guard: bool = False,
) -> list[str]:
    """Create whatever is missing, upgrade an older log in place; one line per change.

    Idempotent. Arguments are checked before anything is created. The key file is skipped
    when ``$ACCESSAUDIT_HMAC_KEY`` supplies the key and no file was named explicitly.
    ``ddl_guard``: also install PostgreSQL's guard against DROP and ALTER of the log.
    """
    with SqlStore(url, timeout=timeout, must_exist=False) as store:
        if writer_role is not None:
            store.check_writer_role(writer_role)
        done: list[str] = []
        if key_file is None and os.environ.get(KEY_ENV):
            done.append(f"key: using ${KEY_ENV} (no key file written)")
        else:
            path = key_file_path(key_file)
            created = create_key_file(path)
            if not created:
                load_key(path)  # an existing file must hold a usable key, or init says so
            done.append(f"key file {path}: {'created (mode 0600)' if created else 'exists, kept'}")
        made = store.create_schema(ddl_guard=ddl_guard)
        done += [f"created {item}" for item in made] or [f"schema in {store.url}: exists, kept"]
        if writer_role is not None:
            store.grant_writer_role(writer_role)
            done.append(f"role {writer_role}: may SELECT and INSERT only")
    return done
