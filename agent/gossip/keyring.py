"""Gossip encryption keys (Consul's ``encrypt`` / ``consul keyring``): AES-GCM, memberlist's layout.

Keys are base64 (standard alphabet, padded) strings of 16, 24 or 32 bytes: AES-128/192/256 in GCM
mode. ``consul keygen`` prints 32-byte keys, and so does :func:`generate_key`.

Wire format of a sealed packet or stream frame (memberlist ``security.go`` layout)::

    version:u8 | nonce:12 bytes | ciphertext | tag:16 bytes

- version **1**: GCM, plaintext as is (what :meth:`Keyring.seal` writes; 29 bytes of overhead);
- version **0**: GCM over the plaintext PKCS#7-padded to the 16-byte AES block (what old
  memberlists wrote); accepted by :meth:`Keyring.open`, never written.

No associated data is authenticated (memberlist uses the optional gossip *label*, which ctk does
not have). The bytes inside are ctk's own gossip format, so ctk agents talk only to ctk agents;
the key strings and the keyring file are interchangeable with Consul's.

:class:`Keyring` holds one *primary* key that seals everything sent, plus extra keys that are only
tried when opening: that is what makes rotation (install → use → remove, ``consul keyring``) safe
while a cluster converges. A message no installed key authenticates raises :class:`DecryptError`,
a :class:`~agent.gossip.errors.DecodeError`, so the core drops it untouched and the driver counts
it; it is never parsed.

Persistence is ``<data-dir>/serf/local.keyring``: a JSON list of base64 keys, primary first, file
mode 0600, rewritten on every keyring operation (serf's ``KeyringFile``). :func:`setup_keyring`
applies Consul's start-up rule: ``-encrypt`` seeds the file on first start; once the file exists
it wins and a different ``-encrypt`` is ignored with a warning.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.gossip.errors import DecodeError, GossipError

__all__ = [
    "KEY_SIZES",
    "NONCE_BYTES",
    "TAG_BYTES",
    "OVERHEAD_BYTES",
    "KEYRING_FILE",
    "KeyringError",
    "DecryptError",
    "Keyring",
    "generate_key",
    "decode_key",
    "encode_key",
    "encrypt_payload",
    "decrypt_payload",
    "setup_keyring",
]

log = logging.getLogger(__name__)

KEY_SIZES = (16, 24, 32)
"""Accepted key lengths in bytes: AES-128, AES-192, AES-256."""

NONCE_BYTES = 12
TAG_BYTES = 16
_BLOCK_BYTES = 16
VERSION_PADDED = 0
VERSION_GCM = 1
OVERHEAD_BYTES = 1 + NONCE_BYTES + TAG_BYTES
"""Bytes a version-1 seal adds: version byte + nonce + GCM tag (29, as memberlist's)."""

KEYRING_FILE = Path("serf") / "local.keyring"
"""The LAN keyring file, relative to the data dir (Consul's ``serf/local.keyring``)."""


class KeyringError(GossipError, ValueError):
    """A key is malformed, or a keyring operation was refused (the operator's fault)."""


class DecryptError(DecodeError):
    """No installed key authenticates a received message (wrong key, tampering, or plaintext)."""


def generate_key() -> str:
    """A new random 32-byte key, base64: what ``consul keygen`` / ``ctk keygen`` print."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def decode_key(key: str | bytes) -> bytes:
    """Raw key bytes from a base64 string (or raw bytes, checked); ``KeyringError`` if invalid."""
    if isinstance(key, bytes):
        raw = key
    else:
        try:
            raw = base64.b64decode(key.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise KeyringError(f"encryption key is not valid base64: {exc}") from None
    if len(raw) not in KEY_SIZES:
        raise KeyringError(f"encryption key must be 16, 24 or 32 bytes (AES-128/192/256), got {len(raw)}")
    return raw


def encode_key(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def encrypt_payload(key: bytes, data: bytes, *, version: int = VERSION_GCM, nonce: bytes | None = None) -> bytes:
    """Seal ``data`` with ``key`` in wire format ``version`` (1, or 0 for tests of old peers)."""
    if version not in (VERSION_PADDED, VERSION_GCM):
        raise KeyringError(f"unknown encryption version {version}")
    if version == VERSION_PADDED:
        pad = _BLOCK_BYTES - len(data) % _BLOCK_BYTES  # PKCS#7: always 1..16 bytes
        data = data + bytes((pad,)) * pad
    nonce = secrets.token_bytes(NONCE_BYTES) if nonce is None else nonce
    return bytes((version,)) + nonce + AESGCM(decode_key(key)).encrypt(nonce, data, None)


def _open_with(aead: AESGCM, data: bytes) -> bytes | None:
    """Plaintext, or None if this key does not authenticate ``data`` (already length-checked)."""
    try:
        plain = aead.decrypt(data[1 : 1 + NONCE_BYTES], data[1 + NONCE_BYTES :], None)
    except InvalidTag:
        return None
    if data[0] == VERSION_PADDED:
        pad = plain[-1] if plain else 0
        if not 1 <= pad <= _BLOCK_BYTES or len(plain) < pad or plain[-pad:] != bytes((pad,)) * pad:
            raise DecryptError("decrypted message has invalid PKCS#7 padding")
        plain = plain[:-pad]
    return plain


def _check_envelope(data: bytes) -> None:
    if len(data) < OVERHEAD_BYTES:
        raise DecryptError(f"encrypted message too short ({len(data)} bytes, need {OVERHEAD_BYTES})")
    if data[0] not in (VERSION_PADDED, VERSION_GCM):
        raise DecryptError(f"unsupported encryption version {data[0]} (unencrypted sender?)")


def decrypt_payload(keys: Iterable[bytes], data: bytes) -> bytes:
    """Open ``data`` with the first of ``keys`` that authenticates it; ``DecryptError`` if none."""
    _check_envelope(data)
    for key in keys:
        plain = _open_with(AESGCM(decode_key(key)), data)
        if plain is not None:
            return plain
    raise DecryptError("no installed key could decrypt the message")


class Keyring:
    """A primary key plus extra keys; implements the core's ``PacketSeal`` (see module docstring).

    Operations mirror ``consul keyring``: :meth:`install` adds a key, :meth:`use` makes an
    installed key primary, :meth:`remove` drops a non-primary key, :meth:`list_keys` lists them
    (primary first). With a ``path`` every change is written to the keyring file at once.
    """

    def __init__(self, primary: str | bytes, keys: Iterable[str | bytes] = (), *, path: Path | None = None) -> None:
        first = decode_key(primary)
        self._keys: list[bytes] = [first]
        self._aead: dict[bytes, AESGCM] = {first: AESGCM(first)}
        for key in keys:
            raw = decode_key(key)
            if raw not in self._aead:
                self._keys.append(raw)
                self._aead[raw] = AESGCM(raw)
        self.path = path

    # --- PacketSeal ---------------------------------------------------------------------------

    @property
    def overhead_bytes(self) -> int:
        return OVERHEAD_BYTES

    def seal(self, data: bytes) -> bytes:
        """Encrypt with the primary key, version 1 (GCM, no padding), fresh random nonce."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return bytes((VERSION_GCM,)) + nonce + self._aead[self._keys[0]].encrypt(nonce, data, None)

    def open(self, data: bytes) -> bytes:
        """Decrypt with whichever installed key authenticates ``data`` (primary tried first).

        Raises :class:`DecryptError` if none does; accepts versions 0 and 1.
        """
        _check_envelope(data)
        for key in self._keys:
            plain = _open_with(self._aead[key], data)
            if plain is not None:
                return plain
        raise DecryptError("no installed key could decrypt the message")

    # --- keyring operations (consul keyring -install/-use/-remove/-list) ----------------------

    @property
    def primary_key(self) -> str:
        return encode_key(self._keys[0])

    def list_keys(self) -> list[str]:
        """Installed keys, base64, the primary first (``consul keyring -list``)."""
        return [encode_key(k) for k in self._keys]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str | bytes):
            return False
        try:
            return decode_key(key) in self._aead
        except KeyringError:
            return False

    def __len__(self) -> int:
        return len(self._keys)

    def install(self, key: str | bytes) -> None:
        """Add a key used only for opening until :meth:`use` makes it primary. Idempotent."""
        raw = decode_key(key)
        if raw not in self._aead:
            self._keys.append(raw)
            self._aead[raw] = AESGCM(raw)
            self._persist()

    def use(self, key: str | bytes) -> None:
        """Make an installed key the primary (the one that seals); ``KeyringError`` if not installed."""
        raw = decode_key(key)
        if raw not in self._aead:
            raise KeyringError("Requested key is not in the keyring")
        if self._keys[0] != raw:
            self._keys.remove(raw)
            self._keys.insert(0, raw)
            self._persist()

    def remove(self, key: str | bytes) -> None:
        """Uninstall a key. The primary cannot be removed (as in Consul); unknown keys are a no-op."""
        raw = decode_key(key)
        if raw == self._keys[0]:
            raise KeyringError("Removing the primary key is not allowed")
        if raw in self._aead:
            self._keys.remove(raw)
            del self._aead[raw]
            self._persist()

    # --- persistence --------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> Keyring:
        """Read a keyring file (JSON list of base64 keys, primary first); ``KeyringError`` if bad."""
        try:
            keys = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise KeyringError(f"cannot read keyring file {path}: {exc}") from None
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise KeyringError(f"keyring file {path} must hold a non-empty JSON list of base64 keys")
        return cls(keys[0], keys[1:], path=Path(path))

    def save(self, path: Path | None = None) -> None:
        """Write the keyring file atomically with mode 0600 (to ``path`` or ``self.path``)."""
        target = Path(path or self.path or "")
        if not target.name:
            raise KeyringError("keyring has no file to save to")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.list_keys(), fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _persist(self) -> None:
        if self.path is not None:
            self.save()


def setup_keyring(
    data_dir: Path | None, encrypt: str | None, *, disable_keyring_file: bool = False
) -> Keyring | None:
    """The LAN keyring at agent start, by Consul's rules; None means gossip is not encrypted.

    - ``disable_keyring_file`` (or no data dir, as in ``-dev``): the ``-encrypt`` key alone, never
      written to disk.
    - No keyring file yet: ``-encrypt`` (if given) seeds ``<data-dir>/serf/local.keyring``.
    - A keyring file exists: it wins. A different ``-encrypt`` is ignored with a warning
      ("LAN keyring exists but -encrypt given, using keyring"), since keyring operations may have
      rotated the key since the config was written.

    Raises ``KeyringError`` for a malformed key or keyring file.
    """
    if encrypt:
        decode_key(encrypt)  # validate even when the file will win
    if disable_keyring_file or data_dir is None:
        return Keyring(encrypt) if encrypt else None
    path = Path(data_dir) / KEYRING_FILE
    if path.exists():
        ring = Keyring.load(path)
        if encrypt and decode_key(encrypt) != decode_key(ring.primary_key):
            log.warning("LAN keyring exists but -encrypt given, using keyring (%s)", path)
        return ring
    if not encrypt:
        return None
    ring = Keyring(encrypt, path=path)
    ring.save()
    return ring
