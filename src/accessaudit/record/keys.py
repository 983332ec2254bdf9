"""The HMAC key that seals each chain link. It never enters the database.

Sources, first match wins: an explicit key file path, the ``ACCESSAUDIT_HMAC_KEY``
environment variable (64+ hex characters), the ``ACCESSAUDIT_KEY_FILE`` environment variable,
then ``./accessaudit.key``. ``accessaudit init`` creates the file with mode 0600.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, Union

from accessaudit.exceptions import MacKeyError
from accessaudit.record._files import read_private, write_new

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "DEFAULT_KEY_FILE",
    "FROM_STORE",
    "KEY_BYTES",
    "KEY_ENV",
    "KEY_FILE_ENV",
    "KeyChoice",
    "MacKey",
    "create_key_file",
    "key_file_path",
    "key_for",
    "load_key",
]

KEY_ENV: Final = "ACCESSAUDIT_HMAC_KEY"
KEY_FILE_ENV: Final = "ACCESSAUDIT_KEY_FILE"
DEFAULT_KEY_FILE: Final = Path("accessaudit.key")
KEY_BYTES: Final = 32
_MAC_DOMAIN: Final = b"accessaudit/mac/v1\x00"
_SHA256_BLOCK: Final = 64


@dataclass(frozen=True, slots=True, repr=False)
class MacKey:
    """A secret HMAC-SHA256 key and its public id (so verify can tell which key sealed a row)."""

    secret: bytes = field(repr=False)
    # Derived once: every append reads the id and seals a link.
    _id: str = field(init=False, repr=False, compare=False)
    _sealer: Callable[[bytes], bytes] = field(init=False, repr=False, compare=False)

    def __repr__(self) -> str:
        return f"MacKey(key_id={self.key_id!r})"

    def __post_init__(self) -> None:
        if len(self.secret) < KEY_BYTES:
            raise MacKeyError(f"the HMAC key must be at least {KEY_BYTES} bytes")
        key_id = hashlib.sha256(b"accessaudit/key-id\x00" + self.secret).hexdigest()[:16]
        object.__setattr__(self, "_id", key_id)
        object.__setattr__(self, "_sealer", self.link_sealer())

    @property
    def key_id(self) -> str:
        """16 hex characters identifying the key without revealing it."""
        return self._id

    def seal(self, chain_hash: str) -> str:
        """The MAC of one chain link, as hex."""
        return self._sealer(bytes.fromhex(chain_hash)).hex()

    def link_sealer(self) -> Callable[[bytes], bytes]:
        """``seal`` for checking many links: a raw chain hash in, the raw MAC out.

        The same HMAC-SHA-256 (RFC 2104), with the key's pads and the MAC's domain prefix
        hashed once up front, so each link costs two hash continuations instead of a new
        HMAC (which is most of a MAC's cost for a 32-byte message).
        """
        secret = self.secret
        if len(secret) > _SHA256_BLOCK:
            secret = hashlib.sha256(secret).digest()
        secret = secret.ljust(_SHA256_BLOCK, b"\x00")
        inner = hashlib.sha256(bytes(b ^ 0x36 for b in secret) + _MAC_DOMAIN)
        outer = hashlib.sha256(bytes(b ^ 0x5C for b in secret))

        def seal(chain_hash: bytes) -> bytes:
            inner_hash = inner.copy()
            inner_hash.update(chain_hash)
            outer_hash = outer.copy()
            outer_hash.update(inner_hash.digest())
            return outer_hash.digest()

        return seal

    def seal_manifest(self, digest: str) -> str:
        """The MAC of an export manifest's SHA-256 digest (its own domain), as hex."""
        message = b"accessaudit/manifest/v1\x00" + bytes.fromhex(digest)
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    @classmethod
    def from_hex(cls, text: str, source: str) -> MacKey:
        """Parse a hex key; ``source`` names where it came from for the error message."""
        try:
            return cls(bytes.fromhex(text.strip()))
        except (ValueError, MacKeyError) as e:
            raise MacKeyError(
                f"{source} does not hold a key of at least {KEY_BYTES * 2} hex characters; "
                "create one with `accessaudit init`"
            ) from e


class _FromStore(Enum):
    KEY = "the store's own key"


#: The default of ``key=`` where a function works on a store: the key is given once, to the
#: store (``SqlStore(url, key=load_key())``); passing one here checks with that one instead.
FROM_STORE: Final = _FromStore.KEY
KeyChoice = Union["MacKey", None, Literal[_FromStore.KEY]]


def key_for(store_key: MacKey | None, key: KeyChoice, doing: str) -> MacKey | None:
    """The key to use: ``key`` if given (None: none), else the store's, which must exist."""
    if key is not FROM_STORE:
        return key
    if store_key is None:
        raise MacKeyError(
            f"{doing} needs the HMAC key: open the store with it (key=load_key()); the CLI "
            "finds it with --key-file, $ACCESSAUDIT_HMAC_KEY or ./accessaudit.key"
        )
    return store_key


def key_file_path(path: Path | None = None) -> Path:
    """The key file that would be used: ``path``, else $ACCESSAUDIT_KEY_FILE, else the default."""
    if path is not None:
        return path
    return Path(os.environ.get(KEY_FILE_ENV) or DEFAULT_KEY_FILE)


def load_key(path: Path | None = None) -> MacKey:
    """Load the key from the first source that has one; raise ``MacKeyError`` if none does."""
    if path is None and os.environ.get(KEY_ENV):
        return MacKey.from_hex(os.environ[KEY_ENV], f"${KEY_ENV}")
    file = key_file_path(path)
    missing = (
        f"no HMAC key: {file} does not exist and ${KEY_ENV} is not set; "
        "run `accessaudit init` or set one of them"
    )
    text = read_private(file, "the key file", missing, MacKeyError)
    return MacKey.from_hex(text, f"the key file {file}")


def create_key_file(path: Path) -> bool:
    """Write a new random key to ``path`` with mode 0600; False if the file already exists.

    Written whole or not at all (see ``_files.write_new``), so two concurrent ``init`` runs
    cannot both create a key.
    """
    try:
        return write_new(path, secrets.token_hex(KEY_BYTES) + "\n", 0o600)
    except OSError as e:
        raise MacKeyError(f"cannot create the key file {path}: {e}") from e
