"""Encryption at rest: a store in front of the real one that keeps nothing readable in it.

Every chunk is stored as an *object*: its bytes, padded with zeros to whole 64 KiB
blocks, each block sealed with AES-256-GCM under the drive's data key, with the block's
index as associated data (a block moved to another place fails) and a nonce derived
from the chunk's plaintext ChunkHash and that index, stored before the block; then the
chunk's record (ChunkHash, size, BlockHashes, kind, format) sealed under the drive's
record key, then 8 bytes giving that sealed record's length. The real store sees only
the object, under the object's own hash: no name, no plaintext hash, no kind; its
captions, trailers and sidecars describe the ciphertext. A range of a chunk costs
reading and opening the blocks it covers.

Equal content gives an equal object (the nonces are derived, not random: a nonce
repeats only with the same block of the same content, which seals to the same bytes),
so a drive still stores content once, and the store cannot tell which known file it
holds (everything depends on the drive key). A block of another chunk put in a block's
place opens, but fails the catalog's BlockHash in the reader. What the store can see: how many objects
there are, their sizes (rounded up to 64 KiB), and when they are written and read.

The reader above still checks every block against the catalog's BlockHashes; a block
that fails its authentication here is an :class:`~davfs.errors.IntegrityError` before
that (a flipped byte, a swapped block, an object of another drive).
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from davfs.chunk import BLOCK_SIZES, FORMAT_BLAKE3, ChunkHasher, ChunkMeta
from davfs.crypto import DriveKey
from davfs.errors import IntegrityError, StoreError, WrongPassphrase
from davfs.stores.base import FOREIGN, ChunkStore, store_error, write_private_file

log = logging.getLogger(__name__)

BLOCK = BLOCK_SIZES[FORMAT_BLAKE3]
"""Plaintext bytes per sealed block."""
NONCE = 12
TAG = 16
SEALED_BLOCK = NONCE + BLOCK + TAG
FOOTER = 8
KEY_OBJECT = "key"
"""Kind of the one object kept in the clear: the drive key, wrapped by the passphrase."""


class SealedStore:
    """A ChunkStore that encrypts into ``inner`` (see the module docstring)."""

    def __init__(self, inner: ChunkStore, key: DriveKey) -> None:
        self.inner = inner
        self._data_key = AESGCM(key.derive(b"davfs chunk data"))
        self._nonce_key = key.derive(b"davfs chunk nonce")
        self._record_key = AESGCM(key.derive(b"davfs chunk record"))
        props = inner.properties
        self.properties = replace(
            props,
            name=f"sealed {props.name}",
            max_chunk_size=(props.max_chunk_size - 4096) // SEALED_BLOCK * BLOCK,
        )

    # --- writing ---------------------------------------------------------------------

    def put(self, data: bytes | memoryview, meta: ChunkMeta) -> str:
        return self._seal(io.BytesIO(data), meta)  # no plaintext copy on disk

    def put_file(self, path: str, meta: ChunkMeta) -> str:
        try:
            with open(path, "rb") as plain:
                return self._seal(plain, meta)
        except OSError as exc:
            raise store_error(self.properties.name, exc) from exc
        finally:
            Path(path).unlink(missing_ok=True)

    def _seal(self, plain: BinaryIO, meta: ChunkMeta) -> str:
        """Seal the chunk read from ``plain`` into a spool file the inner store takes over."""
        fd, sealed_path = tempfile.mkstemp(prefix="sealed-", suffix=".spool", dir=self.properties.spool_dir)
        try:
            hasher = ChunkHasher(kind="data")
            with os.fdopen(fd, "wb") as sealed:
                index = 0
                while batch := plain.read(16 * BLOCK):
                    view = memoryview(batch)
                    out: list[bytes] = []
                    for start in range(0, len(batch), BLOCK):
                        block = view[start : start + BLOCK]
                        if len(block) < BLOCK:
                            block = memoryview(bytes(block).ljust(BLOCK, b"\0"))
                        nonce = self._nonce(meta.chunk_hash, index)
                        out += (nonce, self._data_key.encrypt(nonce, block, _place(index)))
                        index += 1
                    sealed_batch = b"".join(out)
                    sealed.write(sealed_batch)
                    hasher.update(sealed_batch)
                record = self._seal_record(meta)
                tail = record + len(record).to_bytes(FOOTER, "big")
                sealed.write(tail)
                hasher.update(tail)
        except OSError as exc:
            Path(sealed_path).unlink(missing_ok=True)
            raise store_error(self.properties.name, exc) from exc
        return self.inner.put_file(sealed_path, hasher.meta())

    def _nonce(self, chunk_hash: str, index: int) -> bytes:
        return hmac.new(self._nonce_key, f"{chunk_hash}/{index}".encode(), "sha256").digest()[:NONCE]

    def _seal_record(self, meta: ChunkMeta) -> bytes:
        body = json.dumps(meta.to_dict(), sort_keys=True).encode()
        nonce = hmac.new(self._nonce_key, b"record/" + body, "sha256").digest()[:NONCE]
        return nonce + self._record_key.encrypt(nonce, body, b"davfs chunk record")

    # --- reading ---------------------------------------------------------------------

    def get(self, locator: str, offset: int, length: int) -> bytes:
        """Plaintext bytes [offset, offset+length) of the chunk at ``locator``, from the
        sealed blocks that hold them, each opened (authenticated) first."""
        if locator.startswith(FOREIGN):  # an imported message: its bytes as they are
            return self.inner.get(locator, offset, length)
        if length == 0:
            return b""
        first, last = offset // BLOCK, (offset + length - 1) // BLOCK
        data = memoryview(self.inner.get(locator, first * SEALED_BLOCK, (last - first + 1) * SEALED_BLOCK))
        parts: list[bytes] = []
        for index in range(first, last + 1):
            start = (index - first) * SEALED_BLOCK
            try:
                parts.append(
                    self._data_key.decrypt(
                        data[start : start + NONCE], data[start + NONCE : start + SEALED_BLOCK], _place(index)
                    )
                )
            except InvalidTag:
                raise IntegrityError(
                    index, locator, "a sealed block of this drive", "one that fails its tag"
                ) from None
        skip = offset - first * BLOCK
        end = offset + length - last * BLOCK
        if skip or end != BLOCK:  # trim the ends, then one copy
            if first == last:
                return parts[0][skip:end]
            parts[0], parts[-1] = parts[0][skip:], parts[-1][:end]
        return b"".join(parts)

    def record(self, locator: str, size: int) -> ChunkMeta:
        """The plaintext record sealed in the object at ``locator`` of ``size`` bytes."""
        footer = self.inner.get(locator, size - FOOTER, FOOTER)
        length = int.from_bytes(footer, "big")
        if not NONCE + TAG <= length < size:
            raise IntegrityError(0, locator, "a sealed chunk record", "none")
        sealed = self.inner.get(locator, size - FOOTER - length, length)
        try:
            body = self._record_key.decrypt(sealed[:NONCE], sealed[NONCE:], b"davfs chunk record")
        except InvalidTag:
            raise IntegrityError(
                0, locator, "a chunk record of this drive", "one that fails its tag"
            ) from None
        return ChunkMeta.from_dict(json.loads(body))

    # --- the rest --------------------------------------------------------------------

    def delete(self, locator: str) -> None:
        self.inner.delete(locator)

    def exists(self, locator: str) -> bool:
        return self.inner.exists(locator)

    def iter_chunks(self) -> Iterator[tuple[str, ChunkMeta]]:
        """The chunks as the drive knows them, their records opened."""
        for locator, outer in self.inner.iter_chunks():
            if outer.kind == KEY_OBJECT:
                continue
            try:
                meta = self.record(locator, outer.size)
            except (IntegrityError, ValueError) as exc:  # damaged, or another drive's
                log.warning("object %s does not open with this drive's key (%s); skipped", locator, exc)
                continue
            yield locator, meta

    def close(self) -> None:
        self.inner.close()


def _place(index: int) -> bytes:
    """Associated data of block ``index``: where it belongs."""
    return b"davfs block %d" % index


KEY_FILE = "drive.key"
"""The drive key, wrapped by the passphrase, in the data folder (a copy is in the store)."""
PASSPHRASE_FILE = "passphrase"
"""A passphrase ``davfs login`` made up, kept (mode 0600) so the server starts alone."""


def key_record(store: ChunkStore, data_dir: Path) -> bytes | None:
    """The wrapped drive key: from the data folder, else from the store (a new machine),
    else None."""
    local = data_dir / KEY_FILE
    if local.is_file():
        return local.read_bytes()
    try:
        for locator, meta in store.iter_chunks():
            if meta.kind == KEY_OBJECT:
                record = store.get(locator, 0, meta.size)
                if ChunkMeta.of(record, kind=KEY_OBJECT, format=meta.format).chunk_hash == meta.chunk_hash:
                    return record
    except StoreError as exc:  # a bot cannot list a channel
        raise StoreError(store.properties.name, f"cannot look for the drive key there: {exc}") from None
    return None


def publish_key(store: ChunkStore, data_dir: Path, record: bytes) -> None:
    """Keep the wrapped key in the data folder and in the store (before any chunk the
    key seals, so the store never holds what it alone cannot open)."""
    store.put(record, ChunkMeta.of(record, kind=KEY_OBJECT))
    write_private_file(data_dir / KEY_FILE, record)


def keep_key_record(data_dir: Path, record: bytes) -> None:
    if not (data_dir / KEY_FILE).is_file():
        write_private_file(data_dir / KEY_FILE, record)


def stored_passphrase(data_dir: Path) -> str | None:
    path = data_dir / PASSPHRASE_FILE
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def keep_passphrase(data_dir: Path, passphrase: str) -> None:
    write_private_file(data_dir / PASSPHRASE_FILE, passphrase.encode() + b"\n")


def change_passphrase(store: ChunkStore, data_dir: Path, old: str, new: str) -> int | None:
    """Wrap the drive key under a new passphrase: here, and in the store, where the
    copies wrapped under the old one are deleted (else the old passphrase would still
    open the drive from the store). Returns how many old copies were deleted, or None
    if the store cannot be listed (a bot session): they stay. The key itself, and so
    every chunk, stays as it is."""
    from davfs.crypto import unwrap, wrap

    record = key_record(store, data_dir)
    if record is None:
        raise WrongPassphrase("this drive has no key (it is not encrypted)")
    fresh = wrap(unwrap(record, old), new)
    fresh_meta = ChunkMeta.of(fresh, kind=KEY_OBJECT)
    store.put(fresh, fresh_meta)
    write_private_file(data_dir / KEY_FILE, fresh)
    if (data_dir / PASSPHRASE_FILE).is_file():
        keep_passphrase(data_dir, new)
    try:
        old_copies = [
            locator
            for locator, meta in store.iter_chunks()
            if meta.kind == KEY_OBJECT and meta.chunk_hash != fresh_meta.chunk_hash
        ]
    except StoreError as exc:
        log.warning("the copies of the key under the old passphrase stay in the store: %s", exc)
        return None
    for locator in old_copies:
        store.delete(locator)
    return len(old_copies)
