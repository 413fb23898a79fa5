"""The drive key: one random 256-bit key per encrypted drive, kept wrapped by a key
derived from the owner's passphrase (Argon2id), so a new machine needs only the
passphrase and the store.

Subkeys are derived from it with HKDF-SHA256 for one purpose each: a chunk's own key
(from the chunk's plaintext ChunkHash, so equal content gives equal ciphertext and the
drive still stores it once), and the key that seals each chunk's record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from davfs.errors import WrongPassphrase

KEY_FORMAT = "davfs-key/1"
ARGON2 = {"iterations": 3, "lanes": 4, "memory_cost": 64 * 1024}
"""Argon2id cost (RFC 9106's second recommendation: 64 MiB, 3 passes)."""


@dataclass(frozen=True)
class DriveKey:
    secret: bytes

    @property
    def id(self) -> str:
        """Names the key without revealing it (so a catalog can say which key it needs)."""
        return hmac.new(self.secret, b"davfs key id", hashlib.sha256).hexdigest()[:16]

    def derive(self, purpose: bytes, length: int = 32) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose).derive(self.secret)

    @classmethod
    def new(cls) -> DriveKey:
        return cls(secrets.token_bytes(32))


def wrap(key: DriveKey, passphrase: str) -> bytes:
    """The key sealed under the passphrase, as kept in the data folder and in the store."""
    salt = os.urandom(16)
    nonce = os.urandom(12)
    kek = _kek(passphrase, salt, ARGON2)
    sealed = AESGCM(kek).encrypt(nonce, key.secret, KEY_FORMAT.encode())
    record = {
        "format": KEY_FORMAT,
        "kdf": "argon2id",
        **ARGON2,
        "salt": salt.hex(),
        "nonce": nonce.hex(),
        "key": sealed.hex(),
    }
    return json.dumps(record, sort_keys=True).encode()


def unwrap(blob: bytes, passphrase: str) -> DriveKey:
    """The key in a wrapped record; :class:`WrongPassphrase` if the passphrase is not its own."""
    try:
        record = json.loads(blob)
        if record.get("format") != KEY_FORMAT or record.get("kdf") != "argon2id":
            raise ValueError(f"unknown key record {record.get('format')!r}")
        params = {name: int(record[name]) for name in ARGON2}
        kek = _kek(passphrase, bytes.fromhex(record["salt"]), params)
        secret = AESGCM(kek).decrypt(
            bytes.fromhex(record["nonce"]), bytes.fromhex(record["key"]), KEY_FORMAT.encode()
        )
    except InvalidTag:
        raise WrongPassphrase() from None
    except (ValueError, KeyError, TypeError) as exc:
        raise WrongPassphrase(f"the key record is damaged ({exc})") from None
    return DriveKey(secret)


def _kek(passphrase: str, salt: bytes, params: dict[str, int]) -> bytes:
    kdf = Argon2id(
        salt=salt,
        length=32,
        iterations=params["iterations"],
        lanes=params["lanes"],
        memory_cost=params["memory_cost"],
    )
    return kdf.derive(passphrase.encode("utf-8"))
