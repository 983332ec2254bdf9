r"""Signed checkpoints: the C2SP tlog-checkpoint body in a C2SP signed note, Ed25519 keys.

A checkpoint states a chain's tree (``origin``, tree size, RFC 6962 root) and is signed
with an Ed25519 key that only the checkpointer holds; anyone with the public key can check
it. Formats, as https://c2sp.org/tlog-checkpoint and https://c2sp.org/signed-note define:

- body: ``<origin>\\n<size>\\n<base64 root>\\n`` and extension lines (ours: ``time <UTC>``
  and ``chain <hex chain hash at size>``, which binds the tree to the HMAC chain);
- note: the body, a blank line, then one line per signature:
  ``\\u2014 <key name> <base64(4-byte key id || Ed25519 signature of the body)>``;
- key id: the first 4 bytes of ``SHA-256(name || "\\n" || 0x01 || public key)``;
- public key (verifier key): ``<name>+<key id hex>+<base64(0x01 || public key)>``;
- private key file: ``PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 || seed)>``.

Ed25519 is ``cryptography``'s (OpenSSL's), not hand-written.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from accessaudit.exceptions import ConfigurationError, IntegrityError
from accessaudit.record._clock import from_iso, to_iso
from accessaudit.record._files import read_private, write_new

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime
    from pathlib import Path

__all__ = [
    "Checkpoint",
    "NoteError",
    "SigningKey",
    "VerifierKey",
    "create_signing_key",
    "load_signing_key",
    "load_verifier_keys",
    "open_note",
]

_ED25519: Final = b"\x01"
_DASH: Final = "\u2014 "
_KEY_NAME: Final = re.compile(r"[^\s+]{1,128}")
_DECIMAL: Final = re.compile(r"0|[1-9][0-9]{0,18}")


class NoteError(IntegrityError):
    """A checkpoint note that is malformed, unsigned or signed by no trusted key."""


def _key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + public).digest()[:4]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise NoteError(f"{what} is not base64") from e


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A public key that checks checkpoint signatures."""

    name: str
    public: Ed25519PublicKey
    key_id: bytes

    @classmethod
    def parse(cls, text: str, where: str = "the public key") -> VerifierKey:
        """A verifier key from its ``name+id+base64`` text form."""
        parts = text.strip().split("+", 2)  # base64 may hold '+' itself
        if len(parts) != 3 or not _KEY_NAME.fullmatch(parts[0]):
            raise ConfigurationError(f"{where} is not an accessaudit public key (name+id+key)")
        name, id_hex, blob = parts
        raw = _unb64(blob, where)
        if len(raw) != 33 or raw[:1] != _ED25519:
            raise ConfigurationError(f"{where} is not an Ed25519 key")
        public = Ed25519PublicKey.from_public_bytes(raw[1:])
        key_id = _key_id(name, raw[1:])
        if key_id.hex() != id_hex.lower():
            raise ConfigurationError(f"{where}: its key id does not match the key")
        return cls(name, public, key_id)

    @property
    def text(self) -> str:
        """The ``name+id+base64`` form, as written to ``PATH.pub``."""
        raw = self.public.public_bytes_raw()
        return f"{self.name}+{self.key_id.hex()}+{_b64(_ED25519 + raw)}"


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The checkpointer's private key."""

    name: str
    private: Ed25519PrivateKey

    @property
    def verifier(self) -> VerifierKey:
        """The matching public key."""
        public = self.private.public_key()
        return VerifierKey(self.name, public, _key_id(self.name, public.public_bytes_raw()))

    def sign(self, body: str) -> str:
        """The signed note: ``body``, a blank line and this key's signature line."""
        signature = self.private.sign(body.encode("utf-8"))
        return f"{body}\n{_DASH}{self.name} {_b64(self.verifier.key_id + signature)}\n"


def create_signing_key(path: Path, name: str = "accessaudit") -> SigningKey:
    """Write a new key at ``path`` (0600, atomically) and its public key at ``path.pub``.

    Refuses to overwrite either file: a lost signing key cannot be recovered, and an
    overwritten one would orphan every checkpoint it signed.
    """
    if not _KEY_NAME.fullmatch(name):
        raise ConfigurationError(f"key name {name!r} must be 1-128 characters, no blanks or '+'")
    if not path.name or path.is_dir():
        raise ConfigurationError(f"{str(path)!r} is a directory: give the key file's path")
    if not path.parent.is_dir():
        raise ConfigurationError(f"{path.parent} does not exist: create it first")
    public_path = path.with_name(path.name + ".pub")
    for target in (path, public_path):
        if target.exists():
            raise ConfigurationError(f"{target} exists; refusing to overwrite a key")
    key = SigningKey(name, Ed25519PrivateKey.generate())
    seed = key.private.private_bytes_raw()
    verifier = key.verifier
    secret = f"PRIVATE+KEY+{name}+{verifier.key_id.hex()}+{_b64(_ED25519 + seed)}\n"
    _write_new(path, secret, 0o600)
    _write_new(public_path, verifier.text + "\n", 0o644)
    return key


def _write_new(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to a new file ``path`` with ``mode``, complete or not at all."""
    try:
        written = write_new(path, text, mode)
    except OSError as e:
        raise ConfigurationError(f"cannot write {path}: {e.strerror or e}") from e
    if not written:
        raise ConfigurationError(f"{path} exists; refusing to overwrite a key")


def load_signing_key(path: Path) -> SigningKey:
    """The signing key in ``path``; it must not be readable by other users."""
    missing = f"no signing key at {path}; create one with `accessaudit key new-signing-key`"
    text = read_private(path, "the signing key", missing, ConfigurationError).strip()
    parts = text.split("+", 4)  # base64 may hold '+' itself
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"] or not _KEY_NAME.fullmatch(parts[2]):
        raise ConfigurationError(f"{path} is not an accessaudit signing key")
    raw = _unb64(parts[4], str(path))
    if len(raw) != 33 or raw[:1] != _ED25519:
        raise ConfigurationError(f"{path} is not an Ed25519 signing key")
    key = SigningKey(parts[2], Ed25519PrivateKey.from_private_bytes(raw[1:]))
    if key.verifier.key_id.hex() != parts[3].lower():
        raise ConfigurationError(f"{path}: its key id does not match the key")
    return key


def load_verifier_keys(paths: Iterable[Path]) -> list[VerifierKey]:
    """Trusted public keys, one per file (``PATH.pub`` as ``new-signing-key`` wrote it)."""
    keys = []
    for path in paths:
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigurationError(f"cannot read the public key {path}: {e}") from e
        keys.append(VerifierKey.parse(text, f"the public key {path}"))
    if not keys:
        raise ConfigurationError("no public key given (--public-key PATH.pub)")
    return keys


# -- checkpoints ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A chain's tree at ``size`` leaves, as a checkpoint states it."""

    origin: str
    size: int
    root: bytes
    time: datetime | None = None
    chain_hash: str | None = None

    @property
    def body(self) -> str:
        """The tlog-checkpoint text (what is signed)."""
        lines = [self.origin, str(self.size), _b64(self.root)]
        if self.time is not None:
            lines.append(f"time {to_iso(self.time)}")
        if self.chain_hash is not None:
            lines.append(f"chain {self.chain_hash}")
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        """A checkpoint from its body; ``NoteError`` naming what is wrong."""
        lines = body.split("\n")
        if len(lines) < 4 or lines[-1] != "" or not lines[0]:
            raise NoteError("the checkpoint must have an origin, a size and a root, one per line")
        origin, size, encoded, *extensions = lines[:-1]
        if not _DECIMAL.fullmatch(size):
            raise NoteError(f"the checkpoint's size {size!r} is not a decimal number")
        root = _unb64(encoded, "the checkpoint's root")
        if len(root) != 32:
            raise NoteError("the checkpoint's root is not a SHA-256 hash")
        found: dict[str, str] = {}
        for line in extensions:
            word, _, value = line.partition(" ")
            found.setdefault(word, value)
        try:
            when = from_iso(found["time"]) if "time" in found else None
        except ValueError as e:
            raise NoteError(f"the checkpoint's time {found['time']!r} is not a time") from e
        return cls(origin, int(size), root, when, found.get("chain"))


def open_note(note: str, keys: Iterable[VerifierKey]) -> tuple[Checkpoint, VerifierKey]:
    """The checkpoint a signed note states, and the trusted key that signed it.

    ``NoteError`` if the note is malformed, or no signature on it is a valid one by one of
    ``keys`` (signatures by unknown keys are ignored, as the signed-note spec says).
    """
    body, separator, signatures = note.rpartition("\n\n")
    if not separator or not signatures.endswith("\n"):
        raise NoteError("not a signed note: no blank line before the signatures")
    body += "\n"
    by_id = {key.key_id: key for key in keys}
    for line in signatures[:-1].split("\n"):
        if not line.startswith(_DASH):
            raise NoteError("a signature line must start with an em dash and a space")
        name, _, blob = line[len(_DASH) :].partition(" ")
        raw = _unb64(blob, "a signature")
        key = by_id.get(raw[:4])
        if key is None or key.name != name or len(raw) != 68:
            continue
        try:
            key.public.verify(raw[4:], body.encode("utf-8"))
        except InvalidSignature as e:
            raise NoteError(f"the signature by {name} does not match the checkpoint") from e
        return Checkpoint.parse(body), key
    raise NoteError("no signature by a trusted key")
