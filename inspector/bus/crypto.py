"""Encryption at rest for frames and evidence in Redis: AES-GCM with a rotating key ring.

Blob format (everything but the ciphertext is authenticated as associated data, together
with the Redis key the blob is stored under, so a blob moved to another key does not open)::

    b"INSE" | version (1 byte, =1) | len(kid) (1 byte) | kid (ASCII) | nonce (12 bytes)
    | AES-GCM ciphertext + 16-byte tag

Keys: ``kid:base64key`` entries (16, 24 or 32 bytes: AES-128/192/256), comma- or
newline-separated, from the ``INSPECTOR_STORE_KEYS`` environment variable or the file
named by ``frames.encryption.keys_file`` (a mounted secret). The first key encrypts, every
listed key decrypts: rotate by putting a new key first, retire an old one by removing it
once nothing it sealed is still stored (after ``frames.evidence_ttl_s``).

No key configured = plaintext, the default. A blob without the ``INSE`` header is read as
plaintext in either mode, so switching encryption on does not fault frames stored before.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from inspector.config import PlantConfig

MAGIC = b"INSE"
VERSION = 1
NONCE_BYTES = 12
ENV_VAR = "INSPECTOR_STORE_KEYS"
KID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class KeyringError(Exception):
    """The configured keys cannot be used; the message is one actionable line."""


class BlobError(Exception):
    """A stored blob cannot be opened (the stage turns this into a FAULT or a 410)."""


class UnknownKey(BlobError):
    """The blob was sealed with a key id that is not (or no longer) configured."""


class BlobTampered(BlobError):
    """The blob does not authenticate: altered, truncated, or stored under another key."""


def parse_keys(text: str, source: str) -> dict[str, AESGCM]:
    """``kid:base64`` entries → ciphers, in order (the first is the active one)."""
    keys: dict[str, AESGCM] = {}
    entries = [e.strip() for e in re.split(r"[,\n]", text)]
    for n, entry in enumerate(e for e in entries if e and not e.startswith("#")):
        kid, sep, b64 = entry.partition(":")
        kid, b64 = kid.strip(), b64.strip()
        if not sep or not KID.match(kid):
            raise KeyringError(
                f"{source}: entry {n + 1} must be 'kid:base64key' with a kid of "
                "letters, digits, '.', '_' or '-' (at most 64)"
            )
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise KeyringError(f"{source}: key {kid!r} is not valid base64") from None
        if len(raw) not in (16, 24, 32):
            raise KeyringError(
                f"{source}: key {kid!r} has {len(raw)} bytes; AES-GCM needs 16, 24 or 32 "
                "(e.g. `openssl rand -base64 32`)"
            )
        if kid in keys:
            raise KeyringError(f"{source}: key id {kid!r} is listed twice")
        keys[kid] = AESGCM(raw)
    if not keys:
        raise KeyringError(f"{source}: no keys listed")
    return keys


class Sealer:
    """Seals blobs with the active key and opens them with any listed key.

    ``Sealer(None)`` is the plaintext store: seal returns the data as it is.
    """

    def __init__(self, keys: dict[str, AESGCM] | None) -> None:
        self.keys = keys or {}
        self.active = next(iter(self.keys), None)

    @property
    def encrypts(self) -> bool:
        return self.active is not None

    @staticmethod
    def _header(kid: str) -> bytes:
        k = kid.encode("ascii")
        return MAGIC + bytes([VERSION, len(k)]) + k

    def seal(self, key: str, data: bytes) -> bytes:
        if self.active is None:
            return data
        header = self._header(self.active)
        nonce = os.urandom(NONCE_BYTES)
        ct = self.keys[self.active].encrypt(nonce, data, header + b"\x00" + key.encode())
        return header + nonce + ct

    def open(self, key: str, blob: bytes) -> bytes:
        """The plaintext of ``blob`` stored under ``key``; BlobError if it cannot be had."""
        if not is_sealed(blob):
            return blob  # plaintext (encryption off, or written before it was switched on)
        if len(blob) < 6:
            raise BlobTampered(f"{key}: sealed blob is truncated")
        if blob[4] != VERSION:
            raise BlobError(f"{key}: sealed with unsupported format version {blob[4:5].hex()}")
        end = 6 + blob[5]
        try:
            kid = blob[6:end].decode("ascii")
        except UnicodeDecodeError:
            raise BlobTampered(f"{key}: sealed blob has a corrupt key id") from None
        cipher = self.keys.get(kid)
        if cipher is None:
            known = ", ".join(self.keys) or "none configured"
            raise UnknownKey(
                f"{key}: sealed with key id {kid!r}, which is not configured "
                f"(known: {known}); a retired key's blobs cannot be read"
            )
        nonce, ct = blob[end : end + NONCE_BYTES], blob[end + NONCE_BYTES :]
        try:
            return cipher.decrypt(nonce, ct, blob[:end] + b"\x00" + key.encode())
        except (InvalidTag, ValueError):
            raise BlobTampered(
                f"{key}: sealed blob does not authenticate (altered, truncated or moved)"
            ) from None


def is_sealed(blob: bytes) -> bool:
    return blob[:4] == MAGIC


def load_keys(
    keys_file: str | None, env: Mapping[str, str] | None = None
) -> dict[str, AESGCM] | None:
    """Keys from the environment or the mounted secret; None when neither is set."""
    env = os.environ if env is None else env
    from_env = env.get(ENV_VAR, "").strip()
    if from_env and keys_file:
        raise KeyringError(
            f"both {ENV_VAR} and frames.encryption.keys_file are set; use one source of keys"
        )
    if from_env:
        return parse_keys(from_env, ENV_VAR)
    if keys_file:
        try:
            text = Path(keys_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise KeyringError(
                f"frames.encryption.keys_file {keys_file}: cannot read ({exc.strerror})"
            ) from None
        return parse_keys(text, keys_file)
    return None


def store_sealer(cfg: PlantConfig, env: Mapping[str, str] | None = None) -> Sealer:
    """The sealer every stage uses for frames and evidence (KeyringError if misconfigured)."""
    return Sealer(load_keys(cfg.frames.encryption.keys_file, env))
