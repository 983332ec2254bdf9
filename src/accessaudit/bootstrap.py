"""Setting up a log: the HMAC key file, the schema and triggers, optionally a writer role."""

from __future__ import annotations

import os
from pathlib import Path

from accessaudit.keys import KEY_ENV, create_key_file, key_file_path
from accessaudit.store import SqlStore


def init_store(
    url: str,
    *,
    key_file: Path | None = None,
    writer_role: str | None = None,
    timeout: float = 5.0,
) -> list[str]:
    """Create whatever is missing; return one line per thing created or kept. Idempotent.

    The key file is skipped when ``$ACCESSAUDIT_HMAC_KEY`` supplies the key and no file was
    named explicitly.
    """
    done: list[str] = []
    if key_file is None and os.environ.get(KEY_ENV):
        done.append(f"key: using ${KEY_ENV} (no key file written)")
    else:
        path = key_file_path(key_file)
        created = create_key_file(path)
        done.append(f"key file {path}: {'created (mode 0600)' if created else 'exists, kept'}")
    with SqlStore(url, timeout=timeout, must_exist=False) as store:
        made = store.create_schema()
        done += [f"created {item}" for item in made] or [f"schema in {store.url}: exists, kept"]
        if writer_role is not None:
            store.grant_writer_role(writer_role)
            done.append(f"role {writer_role}: may SELECT and INSERT only")
    return done
